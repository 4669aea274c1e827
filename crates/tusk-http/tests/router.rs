//! The whole router in-process (embedded coordinator, fs storage in a temp dir): what clients
//! see for each tus rule (status, headers, body) and what the metrics count, as one transcript
//! compared with `router.transcript`.
//!
//! A change there is a change clients see: when it is meant, regenerate the file with
//! `TUSK_HTTP_BLESS=1 cargo test -p tusk-http --test router` and review the diff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::{Engine, EngineConfig, Observer};
use tusk_http::{CorsPolicy, CorsSettings, HttpConfig};
use tusk_store_fs::FsStorage;

/// The metric events the HTTP layer reports.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl Events {
    fn push(&self, event: String) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

impl Observer for Events {
    fn request(&self, method: &'static str, status: u16) {
        self.push(format!("request {method} {status}"));
    }
    fn error(&self, kind: &'static str) {
        self.push(format!("error {kind}"));
    }
}

struct Server {
    router: Router,
    events: Arc<Events>,
    /// Upload IDs in the order they were created, to print them as `<id0>`, `<id1>`...
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

/// One answer as a client sees it, with the upload IDs and dates replaced.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    events: Vec<String>,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  -> {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "  {name}: {value}")?;
        }
        writeln!(f, "  body: {:?}", self.body)?;
        writeln!(f, "  metrics: {}", self.events.join(", "))
    }
}

const ORIGIN: &str = "https://app.example";

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FsStorage::new(dir.path().join("files"), 64 * 1024).expect("fs storage");
        let coord = EmbeddedCoordinator::open(dir.path().join("coord"))
            .await
            .expect("embedded coordinator");
        let events = Arc::new(Events::default());
        let engine = Engine::observed(
            Arc::new(storage),
            coord,
            EngineConfig {
                max_size: Some(1000),
                ..EngineConfig::default()
            },
            events.clone(),
        );
        let router = tusk_http::router(
            Arc::new(engine),
            HttpConfig {
                base_path: "/files/".into(),
                proxy: None,
                cors: Some(Arc::new(
                    CorsPolicy::new(&CorsSettings {
                        allow_origins: vec![ORIGIN.into()],
                        allow_credentials: false,
                        max_age: Duration::from_secs(86400),
                        extra_allow_headers: Vec::new(),
                        extra_expose_headers: Vec::new(),
                    })
                    .expect("valid CORS settings"),
                )),
                max_metadata_bytes: 100,
                max_header_bytes: 2048,
                presigned_get: None,
                download: true,
            },
        );
        Self {
            router,
            events,
            ids: Vec::new(),
            _dir: dir,
        }
    }

    /// `path` and header values may name earlier uploads as `<id0>`, `<id1>`...
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(self.expand(path));
        for (name, value) in headers {
            let value = match std::str::from_utf8(value) {
                Ok(text) => self.expand(text).into_bytes(),
                Err(_) => value.to_vec(),
            };
            request = request.header(*name, value);
        }
        let request = request
            .body(Body::from(body.to_vec()))
            .expect("valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        if let Some(location) = parts.headers.get("location").and_then(|v| v.to_str().ok()) {
            if let Some(id) = location.rsplit('/').next() {
                if !self.ids.iter().any(|known| known == id) {
                    self.ids.push(id.to_string());
                }
            }
        }
        Answer {
            status: parts.status.as_u16(),
            headers: self.printable(&parts.headers),
            body: self.hide_ids(&String::from_utf8_lossy(&body)),
            events: self.events.take(),
        }
    }

    fn expand(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (i, id) in self.ids.iter().enumerate() {
            text = text.replace(&format!("<id{i}>"), id);
        }
        text
    }

    fn hide_ids(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (i, id) in self.ids.iter().enumerate() {
            text = text.replace(id, &format!("<id{i}>"));
        }
        text
    }

    fn printable(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        let mut printable: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| {
                let value = match name.as_str() {
                    "upload-expires" => "<date>".to_string(),
                    _ => self.hide_ids(&String::from_utf8_lossy(value.as_bytes())),
                };
                (name.to_string(), value)
            })
            .collect();
        // The order of different header names carries no meaning (RFC 9110, 5.3).
        printable.sort();
        printable
    }
}

/// Method, path, headers, body.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a [u8])>, &'a [u8]);

const TUS: (&str, &[u8]) = ("tus-resumable", b"1.0.0");
const STREAM: (&str, &[u8]) = ("content-type", b"application/offset+octet-stream");

/// Every case as one transcript, so a change in any answer shows as a diff.
async fn transcript() -> String {
    let mut server = Server::start().await;
    let mut out = String::new();
    let big = vec![b'x'; 3000];
    let cases: Vec<Case> = vec![
        (
            "OPTIONS",
            "/files/",
            vec![("origin", ORIGIN.as_bytes())],
            b"",
        ),
        ("OPTIONS", "/anywhere", vec![], b""),
        (
            "OPTIONS",
            "/files/",
            vec![("origin", ORIGIN.as_bytes()), ("x-big", &big)],
            b"",
        ),
        ("GET", "/elsewhere", vec![], b""),
        ("GET", "/files/..%2Fetc", vec![], b""),
        ("POST", "/files/", vec![("upload-length", b"10")], b""),
        (
            "POST",
            "/files/",
            vec![("tus-resumable", b"0.2.2"), ("upload-length", b"10")],
            b"",
        ),
        ("POST", "/files/", vec![TUS], b""),
        ("POST", "/files/", vec![TUS, ("upload-length", b"x")], b""),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-length", b"1"), ("upload-defer-length", b"1")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-defer-length", b"2")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-length", b"5000")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-length", b"10"), ("upload-metadata", b"k !!!")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-length", b"10"),
                ("upload-metadata", b"k \xe9"),
            ],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-length", b"10"),
                ("upload-metadata", &[b'k'; 200]),
            ],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-concat", b"final;/other/a")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-concat", b"final;/files/\xe9")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-concat", b"sometimes")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"final;/other/a"),
                ("upload-metadata", b"bad !!!"),
            ],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"final;/files/aaaaaaaaaaaaaaaaaaaaaaaa"),
                ("upload-length", b"3"),
            ],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"final;/files/aaaaaaaaaaaaaaaaaaaaaaaa"),
                ("content-length", b"3"),
                STREAM,
            ],
            b"abc",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"final;/files/aaaaaaaaaaaaaaaaaaaaaaaa"),
            ],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-length", b"10"), ("content-length", b"3")],
            b"abc",
        ),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-length", b"10"), ("content-length", b"three")],
            b"",
        ),
        // <id0>: created empty.
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-length", b"10"),
                ("upload-metadata", b"filename YS50eHQ=,flag"),
            ],
            b"",
        ),
        // <id1>: created with its first bytes.
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-length", b"10"),
                ("content-length", b"3"),
                STREAM,
            ],
            b"abc",
        ),
        // <id2>: created with a first chunk whose checksum is wrong: 201 carrying the 460.
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-length", b"10"),
                ("content-length", b"3"),
                STREAM,
                ("upload-checksum", b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![TUS, ("upload-offset", b"0")],
            b"abc",
        ),
        ("PATCH", "/files/<id0>", vec![TUS, STREAM], b"abc"),
        (
            "PATCH",
            "/files/<id0>",
            vec![TUS, STREAM, ("upload-offset", b"-1")],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("upload-checksum", b"sha1"),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("upload-checksum", b"whirlpool AAAA"),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("upload-checksum", b"sha1 \xe9"),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("content-length", b"x"),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("upload-checksum", b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                STREAM,
                ("upload-offset", b"0"),
                ("content-length", b"3"),
            ],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![TUS, STREAM, ("upload-offset", b"0")],
            b"abc",
        ),
        (
            "PATCH",
            "/files/<id0>",
            vec![
                TUS,
                ("content-type", b"Application/Offset+Octet-Stream; x=1"),
                ("upload-offset", b"3"),
            ],
            b"defghij",
        ),
        (
            "PATCH",
            "/files/",
            vec![TUS, STREAM, ("upload-offset", b"0")],
            b"",
        ),
        ("PUT", "/files/<id0>", vec![TUS], b""),
        (
            "HEAD",
            "/files/<id0>",
            vec![TUS, ("origin", ORIGIN.as_bytes())],
            b"",
        ),
        (
            "POST",
            "/files/<id1>",
            vec![TUS, ("x-http-method-override", b"HEAD")],
            b"",
        ),
        (
            "POST",
            "/files/<id1>",
            vec![TUS, ("x-http-method-override", b"PUT")],
            b"",
        ),
        ("GET", "/files/<id0>", vec![], b""),
        ("GET", "/files/<id0>", vec![("range", b"bytes=2-4")], b""),
        ("GET", "/files/<id0>", vec![("range", b"bytes=100-")], b""),
        ("GET", "/files/<id0>", vec![("range", b"pages=1")], b""),
        (
            "POST",
            "/files/<id0>",
            vec![TUS, ("x-http-method-override", b"GET")],
            b"",
        ),
        ("GET", "/files/aaaaaaaaaaaaaaaaaaaaaaaa", vec![], b""),
        // Concatenation: <id3>, <id4> partial, <id5> final.
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"partial"),
                ("upload-length", b"2"),
                ("content-length", b"2"),
                STREAM,
            ],
            b"ab",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"partial"),
                ("upload-length", b"2"),
                ("content-length", b"2"),
                STREAM,
            ],
            b"cd",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                (
                    "upload-concat",
                    b"final;/files/<id3> http://example.com/files/<id4>",
                ),
            ],
            b"",
        ),
        ("HEAD", "/files/<id5>", vec![TUS], b""),
        (
            "PATCH",
            "/files/<id5>",
            vec![TUS, STREAM, ("upload-offset", b"4")],
            b"x",
        ),
        ("GET", "/files/<id5>", vec![], b""),
        ("DELETE", "/files/<id1>", vec![TUS], b""),
        ("HEAD", "/files/<id1>", vec![TUS], b""),
        (
            "POST",
            "/files/",
            vec![TUS, ("upload-concat", b"partial")],
            b"",
        ),
        (
            "POST",
            "/files/",
            vec![
                TUS,
                ("upload-concat", b"partial"),
                ("upload-defer-length", b"1"),
            ],
            b"",
        ),
    ];
    for (method, path, headers, body) in cases {
        let shown: Vec<String> = headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v);
                let v = if v.len() > 60 {
                    format!("<{} bytes>", v.len())
                } else {
                    v.into_owned()
                };
                format!("{n}: {v}")
            })
            .collect();
        out.push_str(&format!(
            "{method} {path} [{}] body {}\n",
            shown.join("; "),
            body.len()
        ));
        let answer = server.send(method, path, &headers, body).await;
        out.push_str(&answer.to_string());
    }
    out
}

#[tokio::test]
async fn clients_see_what_the_transcript_says() {
    let transcript = transcript().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/router.transcript");
    if std::env::var_os("TUSK_HTTP_BLESS").is_some() {
        std::fs::write(&path, &transcript).expect("write the transcript");
        return;
    }
    let expected = std::fs::read_to_string(&path).expect("read the transcript");
    if transcript != expected {
        let first_difference = transcript
            .lines()
            .zip(expected.lines())
            .position(|(got, want)| got != want)
            .unwrap_or(transcript.lines().count().min(expected.lines().count()));
        panic!(
            "answers differ from tests/router.transcript from line {}:\n{}",
            first_difference + 1,
            transcript
                .lines()
                .skip(first_difference.saturating_sub(3))
                .take(12)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
