//! tusd's command line on the real binary, one group of flags per test, each checked by its
//! effect over HTTP: listening and protocol, TLS (modes, HTTP/2, a certificate reloaded on
//! SIGHUP under a running upload), a unix socket, CORS, file hooks, the HTTP hook flags, and
//! the flags Tusk refuses with advice.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tusk_tests::tusd_cli::{self, client_tls, connect_tls, hook_service, tus, unix_request};

fn dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("tusk-tusd-").tempdir()?)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `127.0.0.1:PORT` of a `listening on` URL.
fn host_port(endpoint: &str) -> String {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[tokio::test]
async fn protocol_and_operation_flags_in_tusd_spelling() -> Result<()> {
    let data = dir()?;
    let node = tusd_cli::start(&format!(
        "-host 127.0.0.1 -port 0 -admin-port 0 -upload-dir {} -base-path /up/ -disable-download -disable-termination -disable-concatenation -max-size=100 -acquire-lock-timeout 2s -shutdown-timeout=5s -verbose=false -enable-experimental-protocol -expose-metrics -metrics-path /m -filelock-holder-poll-interval 3s",
        path(data.path())
    ))
    .await?;
    assert!(node.endpoint.ends_with("/up/"), "{}", node.endpoint);
    let http = reqwest::Client::new();
    let options = http
        .request(reqwest::Method::OPTIONS, &node.endpoint)
        .header("tus-resumable", "1.0.0")
        .send()
        .await?;
    let extensions = options.headers()["tus-extension"].to_str()?.to_string();
    assert!(extensions.contains("creation"), "{extensions}");
    assert!(!extensions.contains("termination"), "{extensions}");
    assert!(!extensions.contains("concatenation"), "{extensions}");
    assert_eq!(options.headers()["tus-max-size"], "100");

    let created = http
        .post(&node.endpoint)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "5")
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str()?.to_string();
    let patched = http
        .patch(&location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body("hello")
        .send()
        .await?;
    assert_eq!(patched.status(), 204);
    let get = http.get(&location).send().await?;
    assert_eq!(get.status(), 405, "-disable-download");
    let delete = http
        .delete(&location)
        .header("tus-resumable", "1.0.0")
        .send()
        .await?;
    assert_eq!(delete.status(), 405, "-disable-termination");
    let head = http
        .head(&location)
        .header("tus-resumable", "1.0.0")
        .send()
        .await?;
    assert_eq!(
        head.headers()["upload-offset"],
        "5",
        "the upload is still there"
    );
    let too_big = http
        .post(&node.endpoint)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "101")
        .send()
        .await?;
    assert_eq!(too_big.status(), 413, "-max-size");
    let partial = http
        .post(&node.endpoint)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "1")
        .header("upload-concat", "partial")
        .send()
        .await?;
    assert_eq!(partial.status(), 400, "-disable-concatenation");

    let admin = node.admin.clone().context("admin line")?;
    let metrics = http.get(format!("{admin}m")).send().await?;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.text().await?.contains("tusk_"),
        "-metrics-path serves the metrics"
    );
    assert_eq!(
        http.get(format!("{admin}metrics")).send().await?.status(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn flags_tusk_does_not_have_are_refused_with_advice() -> Result<()> {
    for (line, advice) in [
        ("-azure-storage uploads", "S3"),
        ("-hooks-plugin ./hook.so", "-hooks-http"),
        ("-hooks-grpc-secure", "not supported"),
        ("-expose-pprof", "perf"),
        ("-s3-disable-ssl", "http://"),
        (
            "-cors-allow-origin ^https://app\\.example$",
            "list of origins",
        ),
        ("-file-perms 0644", "umask"),
    ] {
        let (code, output) = tusd_cli::run_to_end(line).await?;
        let flag = line.split(' ').next().unwrap_or(line);
        assert_eq!(code, 2, "{line}: {output}");
        assert!(
            output.contains(flag) && output.contains(advice),
            "{line} should name the flag and advise {advice:?}: {output}"
        );
    }
    let (code, output) = tusd_cli::run_to_end("-version").await?;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("(git "),
        "-version names the commit: {output}"
    );
    Ok(())
}

#[tokio::test]
async fn a_unix_socket_in_tusd_spelling() -> Result<()> {
    let data = dir()?;
    let socket = data.path().join("tusk.sock");
    let node = tusd_cli::start(&format!(
        "-unix-sock {} -upload-dir {} -admin-port 0",
        path(&socket),
        path(&data.path().join("up"))
    ))
    .await?;
    assert_eq!(node.endpoint, format!("unix:{}/files/", socket.display()));
    let created = unix_request(
        &socket,
        tus("POST", "/files/", &[("upload-length", "3")], b""),
    )
    .await?;
    assert_eq!(created.status, 201);
    let location = created.headers["location"].to_str()?;
    let path_only = location
        .split_once("/files/")
        .map(|(_, id)| format!("/files/{id}"));
    let patch = tus(
        "PATCH",
        &path_only.context("location")?,
        &[
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        b"abc",
    );
    assert_eq!(unix_request(&socket, patch).await?.status, 204);
    // A second node on the same socket is refused while the first lives.
    let (code, output) = tusd_cli::run_to_end(&format!(
        "-unix-sock {} -upload-dir {} -admin-port 0",
        path(&socket),
        path(&data.path().join("up2"))
    ))
    .await?;
    assert_ne!(code, 0);
    assert!(output.contains("another process listens"), "{output}");
    Ok(())
}

#[tokio::test]
async fn cors_flags_in_tusd_spelling() -> Result<()> {
    let data = dir()?;
    let node = tusd_cli::start(&format!(
        "-port 0 -admin-port 0 -upload-dir {} -cors-allow-origin https://app.example -cors-allow-credentials -cors-max-age 600 -cors-expose-headers X-Extra -cors-allow-methods PURGE",
        path(data.path())
    ))
    .await?;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &node.endpoint)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await?;
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600", "tusd's seconds");
    let created = reqwest::Client::new()
        .post(&node.endpoint)
        .header("origin", "https://app.example")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "1")
        .send()
        .await?;
    let expose = created.headers()["access-control-expose-headers"].to_str()?;
    assert!(
        expose.contains("X-Extra") && expose.contains("Location"),
        "{expose}"
    );
    Ok(())
}

/// Creates an upload named `filename` of `body`'s length (4 bytes when `body` is empty, to
/// be sent later), with `body` sent along (creation-with-upload) when given.
async fn create_named(
    endpoint: &str,
    filename: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Result<reqwest::Response> {
    let metadata = format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode(filename)
    );
    let length = if body.is_empty() { 4 } else { body.len() };
    let mut request = reqwest::Client::new()
        .post(endpoint)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", metadata);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request
            .header("content-type", "application/offset+octet-stream")
            .body(body);
    }
    Ok(request.send().await?)
}

/// Both tusd-style hooks in these tests refuse `.exe` names with 422 "no executables".
async fn executables_are_refused(endpoint: &str) -> Result<()> {
    let refused = create_named(endpoint, "evil.exe", &[], b"").await?;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.text().await?.trim(), "no executables");
    Ok(())
}

const PRE_CREATE: &str = r#"#!/bin/sh
# tusd's HookRequest on stdin; reject .exe names the tusd way.
cat > last-pre-create.json
if grep -q '"filename":"evil.exe"' last-pre-create.json; then
  echo '{"RejectUpload": true, "HTTPResponse": {"StatusCode": 422, "Body": "no executables"}}'
fi
"#;

const POST_FINISH: &str = r#"#!/bin/sh
cat > /dev/null
echo "$TUS_ID $TUS_SIZE $TUS_OFFSET" >> finished.txt
"#;

fn executable(dir: &Path, name: &str, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(name);
    std::fs::write(&file, text)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[tokio::test]
async fn file_hooks_run_as_tusd_runs_them() -> Result<()> {
    let data = dir()?;
    let hooks = data.path().join("hooks");
    std::fs::create_dir(&hooks)?;
    executable(&hooks, "pre-create", PRE_CREATE)?;
    executable(&hooks, "post-finish", POST_FINISH)?;
    let node = tusd_cli::start(&format!(
        "-port 0 -admin-port 0 -upload-dir {} -hooks-dir {} -hooks-enabled-events pre-create,post-create,post-finish",
        path(&data.path().join("up")), path(&hooks)
    ))
    .await?;
    executables_are_refused(&node.endpoint).await?;
    let created = create_named(&node.endpoint, "photo.jpg", &[], b"").await?;
    assert_eq!(
        created.status(),
        201,
        "no post-create file: the event is skipped"
    );
    let http = reqwest::Client::new();
    let location = created.headers()["location"].to_str()?.to_string();
    let id = location.rsplit('/').next().context("id")?.to_string();
    let request: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hooks.join("last-pre-create.json"))?)?;
    assert_eq!(request["Type"], "pre-create");
    assert_eq!(request["Event"]["Upload"]["Size"], 4);
    assert_eq!(
        request["Event"]["Upload"]["MetaData"]["filename"],
        "photo.jpg"
    );
    assert_eq!(request["Event"]["HTTPRequest"]["Method"], "POST");
    assert_eq!(
        request["Event"]["HTTPRequest"]["Header"]["Upload-Length"][0],
        "4"
    );

    let patched = http
        .patch(&location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body("data")
        .send()
        .await?;
    assert_eq!(patched.status(), 204);
    let finished = hooks.join("finished.txt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&finished) {
            assert_eq!(text.trim(), format!("{id} 4 4"));
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "post-finish never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn http_hook_flags_in_tusd_spelling() -> Result<()> {
    // A receiver that fails the first two calls: with -hooks-http-retry 2 the creation
    // goes through on the third; with 0 it is refused.
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let calls = calls.clone();
            move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (retries, status, calls_made) in [("2", 201, 3), ("0", 503, 1)] {
        calls.store(0, Ordering::SeqCst);
        let data = dir()?;
        let node = tusd_cli::start(&format!(
        "-port 0 -admin-port 0 -upload-dir {} -hooks-http {} -hooks-enabled-events pre-create -hooks-http-retry {} -hooks-http-backoff 10ms -hooks-http-timeout 2s -hooks-http-forward-headers x-app -progress-hooks-interval 0s",
        path(data.path()), url, retries
    ))
        .await?;
        let created = reqwest::Client::new()
            .post(&node.endpoint)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "1")
            .send()
            .await?;
        assert_eq!(created.status(), status, "-hooks-http-retry {retries}");
        assert_eq!(calls.load(Ordering::SeqCst), calls_made);
    }
    Ok(())
}

/// A CA, and leaf certificates for localhost it signs.
struct TestCa {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes a new leaf for localhost and 127.0.0.1 and its key; returns the leaf's DER.
    fn issue(&self, cert_file: &Path, key_file: &Path) -> Result<Vec<u8>> {
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
            .signed_by(&key, &self.ca)?;
        std::fs::write(cert_file, leaf.pem())?;
        std::fs::write(key_file, key.serialize_pem())?;
        Ok(leaf.der().to_vec())
    }
}

fn peer_leaf(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn tls_in_tusd_spelling_serves_h2_and_reloads_under_a_running_upload() -> Result<()> {
    let data = dir()?;
    let ca = TestCa::new()?;
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    let first_leaf = ca.issue(&cert, &key)?;
    let node = tusd_cli::start(&format!(
        "-port 0 -admin-port 0 -upload-dir {} -tls-certificate {} -tls-key {} -tls-mode tls12",
        path(&data.path().join("up")),
        path(&cert),
        path(&key)
    ))
    .await?;
    assert!(node.endpoint.starts_with("https://"), "{}", node.endpoint);
    let addr = host_port(&node.endpoint);

    // HTTP/2 by ALPN over TLS 1.3; TLS 1.2 is served too in this mode.
    let stream = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS13])?).await?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer_leaf(&stream), first_leaf);
    let created = tusd_cli::request(
        stream,
        true,
        tus("POST", "/files/", &[("upload-length", "8")], b""),
    )
    .await?;
    assert_eq!(
        (created.status, created.version),
        (201, http::Version::HTTP_2)
    );
    let location = created.headers["location"].to_str()?.to_string();
    assert!(
        location.starts_with("https://"),
        "a client that came over TLS is sent back over TLS: {location}"
    );
    let upload_path = format!("/files/{}", location.rsplit('/').next().context("id")?);
    assert!(connect_tls(&addr, client_tls(&ca.pem(), &[&TLS12])?)
        .await
        .is_ok());

    // An upload streams on an HTTP/1.1 connection while the certificate is replaced.
    let stream = connect_tls(&addr, {
        let mut config = client_tls(&ca.pem(), &[&TLS13])?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    })
    .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (body_tx, body_rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let patch = http::Request::builder()
        .method("PATCH")
        .uri(&upload_path)
        .header("host", "localhost")
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-length", "8")
        .header("content-type", "application/offset+octet-stream")
        .body(StreamBody::new(tokio_stream_from(body_rx)))?;
    let answer = tokio::spawn(async move { sender.send_request(patch).await });
    body_tx
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"1234"))))
        .await?;

    let second_leaf = ca.issue(&cert, &key)?;
    assert_ne!(first_leaf, second_leaf);
    let pid = node.child.id().context("pid")?;
    let hup = tokio::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .await?;
    assert!(hup.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stream = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS13])?).await?;
        if peer_leaf(&stream) == second_leaf {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    body_tx
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"5678"))))
        .await?;
    drop(body_tx);
    let response = answer.await??;
    assert_eq!(
        response.status(),
        204,
        "the upload streaming across the reload finished"
    );
    let _ = response.into_body().collect().await;
    let stream = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS13])?).await?;
    let head = tusd_cli::request(stream, true, tus("HEAD", &upload_path, &[], b"")).await?;
    assert_eq!(head.headers["upload-offset"], "8");

    // A renewal that only rewrites the files (no signal) is picked up too.
    let third_leaf = ca.issue(&cert, &key)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stream = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS13])?).await?;
        if peer_leaf(&stream) == third_leaf {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the rewritten certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The body stream of a request fed through a channel.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn tls_modes_choose_the_protocol_versions() -> Result<()> {
    let data = dir()?;
    let ca = TestCa::new()?;
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    ca.issue(&cert, &key)?;
    for (mode, tls12, tls13) in [("tls13", false, true), ("tls12-strong", true, false)] {
        let node = tusd_cli::start(&format!(
            "-port 0 -admin-port 0 -upload-dir {} -tls-certificate {} -tls-key {} -tls-mode {}",
            path(&data.path().join(mode)),
            path(&cert),
            path(&key),
            mode
        ))
        .await?;
        let addr = host_port(&node.endpoint);
        let with_12 = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS12])?).await;
        let with_13 = connect_tls(&addr, client_tls(&ca.pem(), &[&TLS13])?).await;
        assert_eq!(with_12.is_ok(), tls12, "{mode} with a TLS 1.2 client");
        assert_eq!(with_13.is_ok(), tls13, "{mode} with a TLS 1.3 client");
        if let Ok(stream) = with_12 {
            let suite = stream
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .context("suite")?;
            assert!(
                format!("{:?}", suite.suite()).contains("AES_256_GCM"),
                "{suite:?}"
            );
        }
    }
    let (code, output) = tusd_cli::run_to_end(&format!(
        "-port 0 -upload-dir {} -tls-certificate {} -tls-key {} -admin-port 0",
        path(data.path()),
        path(&cert),
        path(&cert)
    ))
    .await?;
    assert_ne!(
        code, 0,
        "a certificate given as its own key stops the start"
    );
    assert!(output.contains("tls"), "{output}");
    Ok(())
}

/// A gRPC hook server as a tusd user would have written it: it refuses executables at
/// pre-create and records every call.
#[derive(Default, Clone)]
struct HookServer {
    calls: Arc<std::sync::Mutex<Vec<hook_service::HookRequest>>>,
}

#[tonic::async_trait]
impl hook_service::hook_handler_server::HookHandler for HookServer {
    async fn invoke_hook(
        &self,
        request: tonic::Request<hook_service::HookRequest>,
    ) -> Result<tonic::Response<hook_service::HookResponse>, tonic::Status> {
        let request = request.into_inner();
        let filename = request
            .event
            .as_ref()
            .and_then(|e| e.upload.as_ref())
            .and_then(|u| u.meta_data.get("filename").cloned())
            .unwrap_or_default();
        let refuse = request.r#type == "pre-create" && filename.ends_with(".exe");
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(request);
        }
        let mut answer = hook_service::HookResponse::default();
        if refuse {
            answer.reject_upload = true;
            answer.http_response = Some(hook_service::HttpResponse {
                status_code: 422,
                body: "no executables".into(),
                ..Default::default()
            });
        }
        Ok(tonic::Response::new(answer))
    }
}

#[tokio::test]
async fn grpc_hooks_speak_tusds_hook_service() -> Result<()> {
    let server = HookServer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(hook_service::hook_handler_server::HookHandlerServer::new(
                    server,
                ))
                .serve_with_incoming(tokio_stream_of(listener))
                .await
        }
    });
    let data = dir()?;
    let node = tusd_cli::start(&format!(
        "-port 0 -admin-port 0 -upload-dir {} -hooks-grpc {addr} -hooks-grpc-retry 1 -hooks-grpc-backoff 10ms -hooks-grpc-forward-headers x-app -hooks-enabled-events pre-create,post-finish",
        path(data.path())
    ))
    .await?;
    executables_are_refused(&node.endpoint).await?;
    let created = create_named(&node.endpoint, "notes.txt", &[("x-app", "mobile")], b"ok").await?;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["upload-offset"], "2");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let calls = server.calls.lock().map(|c| c.clone()).unwrap_or_default();
        if calls.iter().any(|c| c.r#type == "post-finish") {
            break calls;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "post-finish never came: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pre_create = calls
        .iter()
        .filter(|c| c.r#type == "pre-create")
        .nth(1)
        .context("the second pre-create")?;
    let event = pre_create.event.as_ref().context("event")?;
    let upload = event.upload.as_ref().context("upload")?;
    assert_eq!(upload.size, 2);
    assert_eq!(upload.meta_data["filename"], "notes.txt");
    let request = event.http_request.as_ref().context("request")?;
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.header["X-App"], "mobile",
        "-hooks-grpc-forward-headers"
    );
    let finish = calls
        .iter()
        .find(|c| c.r#type == "post-finish")
        .context("post-finish")?;
    let finished = finish
        .event
        .as_ref()
        .and_then(|e| e.upload.as_ref())
        .context("upload")?;
    assert_eq!((finished.offset, finished.size), (2, 2));
    Ok(())
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
