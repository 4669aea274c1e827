//! Runs the scenarios (tiny sizes) against an in-memory tus server that can misbehave, and
//! checks that tusk bench passes a correct server and fails loudly on a wrong one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    NoGet,
    CorruptGet,
    WrongOffset,
}

type Store = Arc<Mutex<HashMap<String, (u64, Vec<u8>)>>>;

fn reply(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(status)
        .header("tus-resumable", "1.0.0");
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(
    req: Request<Incoming>,
    store: Store,
    mode: Mode,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if header("tus-resumable").as_deref() != Some("1.0.0") {
        return Ok(reply(StatusCode::PRECONDITION_FAILED, &[], vec![]));
    }
    let id = path.trim_start_matches("/files/").to_string();
    match *req.method() {
        Method::POST if path == "/files/" => {
            let len: u64 = header("upload-length").unwrap().parse().unwrap();
            let id = format!("u{}", store.lock().unwrap().len());
            store.lock().unwrap().insert(id.clone(), (len, Vec::new()));
            // Relative Location, to exercise resolution.
            Ok(reply(
                StatusCode::CREATED,
                &[("location", format!("/files/{id}"))],
                vec![],
            ))
        }
        Method::HEAD => match store.lock().unwrap().get(&id) {
            Some((len, data)) => Ok(reply(
                StatusCode::OK,
                &[
                    ("upload-offset", data.len().to_string()),
                    ("upload-length", len.to_string()),
                ],
                vec![],
            )),
            None => Ok(reply(StatusCode::NOT_FOUND, &[], vec![])),
        },
        Method::PATCH => {
            assert_eq!(
                header("content-type").as_deref(),
                Some("application/offset+octet-stream")
            );
            let offset: usize = header("upload-offset").unwrap().parse().unwrap();
            let current = store.lock().unwrap().get(&id).map(|(_, d)| d.len());
            if current != Some(offset) {
                return Ok(reply(
                    StatusCode::CONFLICT,
                    &[],
                    b"offset mismatch".to_vec(),
                ));
            }
            let mut body = req.into_body();
            // Commit every frame as it arrives: a cut connection keeps what was received.
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    store
                        .lock()
                        .unwrap()
                        .get_mut(&id)
                        .unwrap()
                        .1
                        .extend_from_slice(&data);
                }
            }
            let mut new = store.lock().unwrap().get(&id).unwrap().1.len();
            if mode == Mode::WrongOffset {
                new += 1;
            }
            Ok(reply(
                StatusCode::NO_CONTENT,
                &[("upload-offset", new.to_string())],
                vec![],
            ))
        }
        Method::GET => {
            if mode == Mode::NoGet {
                return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, &[], vec![]));
            }
            let mut data = store.lock().unwrap().get(&id).unwrap().1.clone();
            if mode == Mode::CorruptGet {
                let mid = data.len() / 2;
                data[mid] ^= 1;
            }
            Ok(reply(StatusCode::OK, &[], data))
        }
        _ => Ok(reply(StatusCode::METHOD_NOT_ALLOWED, &[], vec![])),
    }
}

async fn serve(mode: Mode) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store: Store = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, store.clone(), mode));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/files/")
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: tusk_bench::BenchArgs,
}

fn tiny(url: &str, scenario: &str) -> tusk_bench::BenchArgs {
    use clap::Parser;
    Cli::try_parse_from([
        "tusk-bench",
        "--scenario",
        scenario,
        "--big-size",
        "3000000",
        "--big-chunk",
        "1MiB",
        "--small-count",
        "50",
        "--concurrency",
        "4",
        "--parallel-uploads",
        "3",
        "--parallel-size",
        "1000001",
        "--parallel-chunk",
        "300KiB",
        "--resume-size",
        "2MiB",
        "--resume-cut",
        "777777",
        "--resume-settle",
        "0.3",
        "--timeout",
        "30",
        url,
    ])
    .unwrap()
    .args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_scenarios_pass_against_a_correct_server() {
    let url = serve(Mode::Good).await;
    tusk_bench::run(tiny(&url, "all")).await.unwrap();
    let mut args = tiny(&url, "resume");
    args.resume_rst = true;
    tusk_bench::run(args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_get_is_reported_not_fatal() {
    let url = serve(Mode::NoGet).await;
    tusk_bench::run(tiny(&url, "big")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_fail() {
    let url = serve(Mode::CorruptGet).await;
    let err = tusk_bench::run(tiny(&url, "big")).await.unwrap_err();
    assert!(format!("{err:#}").contains("sha256"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_offset_fails_naming_the_request() {
    let url = serve(Mode::WrongOffset).await;
    let err = tusk_bench::run(tiny(&url, "small")).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("PATCH http://") && msg.contains("Upload-Offset 4097"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_status_fails() {
    let url = serve(Mode::Good).await;
    let bad = url.replace("/files/", "/elsewhere/");
    let err = tusk_bench::run(tiny(&bad, "big")).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("POST") && msg.contains("405"), "{msg}");
}
