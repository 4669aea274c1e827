//! Hostile clients against the real tus router: each input is a short sequence of requests
//! (method, path, headers, body) sent through `tusk_http::router` with the local-disk
//! storage and the embedded coordinator in a temporary directory (on tmpfs under
//! `fuzz/run.sh`), as `services/tusk` builds them by default: one server per process, one
//! tokio runtime per process, each input's uploads deleted at its end.
//!
//! Besides "no panic", every answer is checked against what the server may say:
//! - the status is one of the tus statuses (a 500 is a finding unless the engine reported a
//!   storage failure; `TUSK_FUZZ_STRICT=1` flags those too);
//! - an upload's acknowledged offset (a 204 PATCH, a 201 creation-with-upload, a HEAD) never
//!   goes backwards;
//! - a HEAD right after a 204 PATCH shows the offset that PATCH acknowledged.
//!
//! The structure comes from `arbitrary`; values are either raw bytes or well-formed tus
//! values (the tracked offset, a correct checksum, a concatenation of earlier uploads), so
//! the fuzzer gets past the header parsers into the engine.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sha1::Digest;
use tower::ServiceExt;
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::{Engine, EngineConfig, Observer};
use tusk_http::{CorsPolicy, CorsSettings, HttpConfig, ProxyHeaders, TrustedProxy};
use tusk_store_fs::FsStorage;

const BASE: &str = "/files/";
/// Bounds on one input, so an iteration stays in milliseconds.
const MAX_REQUESTS: usize = 12;
const MAX_HEADERS: usize = 10;
/// Largest generated body: past the fs store's 64 KiB small-write threshold, so both the
/// journal and the streaming file path are reached.
const MAX_FILLER: usize = 96 << 10;
/// The engine's largest upload: small, so 413 is reachable and memory stays bounded.
const MAX_SIZE: u64 = 128 << 10;
/// A request that takes longer than this is a finding (nothing here waits on a network).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Arbitrary, Debug)]
struct Input {
    requests: Vec<Req>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: MethodChoice,
    path: PathChoice,
    /// Tus-Resumable is needed by every tus method: mostly right, sometimes not.
    tus_resumable: TusResumable,
    /// Headers of a well-formed request, set before the arbitrary ones: without them the
    /// fuzzer seldom gets a PATCH past the header checks, and the offset checks never run.
    preset: Preset,
    headers: Vec<(Name, Value)>,
    body: BodyChoice,
    framing: Framing,
}

#[derive(Arbitrary, Debug)]
enum Preset {
    None,
    /// Upload-Length (or Upload-Defer-Length: 1 when `None`).
    Create(Option<u16>),
    /// Content-Type for PATCH and Upload-Offset: the tracked offset plus a small delta.
    Patch(i8),
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Post,
    Head,
    Patch,
    Delete,
    Get,
    Options,
    Put,
    /// Any token: `Method::from_bytes` decides whether it is one.
    Token(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Collection,
    /// An upload created earlier in this input, by index (modulo the count).
    Upload(u8),
    /// An earlier upload's URL with bytes after it (`/..`, `?x`, `%2F`, ...).
    UploadWithSuffix(u8, Vec<u8>),
    /// The collection path with bytes after it.
    UnderCollection(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum TusResumable {
    V1,
    Missing,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Name {
    UploadOffset,
    UploadLength,
    UploadMetadata,
    UploadConcat,
    UploadChecksum,
    UploadDeferLength,
    ContentType,
    Range,
    MethodOverride,
    Host,
    XForwardedHost,
    XForwardedProto,
    TusResumable,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Raw(Vec<u8>),
    Number(u64),
    Small(u16),
    /// The offset acknowledged last for this request's upload (0 if none), plus a small delta.
    TrackedOffset(i8),
    OctetStream,
    Partial,
    /// `final;` and the URLs of earlier uploads, by index.
    Final(Vec<u8>),
    /// A checksum of the body with this algorithm: right, or of other bytes.
    Checksum(Algorithm, bool),
    /// Well-formed Upload-Metadata: keys and base64 values.
    Metadata(Vec<(String, Vec<u8>)>),
    /// `bytes=first-last`, either side optional.
    Range(Option<u32>, Option<u32>),
    Method(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Algorithm {
    Sha1,
    Md5Garbage,
    Unknown,
}

#[derive(Arbitrary, Debug)]
enum BodyChoice {
    Empty,
    Bytes(Vec<Vec<u8>>),
    /// `len` copies of one byte, in chunks of `chunk` bytes: big bodies from small inputs.
    Filler {
        len: u32,
        byte: u8,
        chunk: u16,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Framing {
    /// Content-Length set to the body's length, as hyper hands it on.
    ContentLength,
    /// No length: a stream of chunks.
    Chunked,
    /// A stream that fails after its chunks: the client went away mid-body.
    ChunkedThenCut,
}

/// Error kinds the engine reported for the current request.
#[derive(Default)]
struct Errors(Mutex<Vec<&'static str>>);

impl Errors {
    fn take(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .map(|mut kinds| std::mem::take(&mut *kinds))
            .unwrap_or_default()
    }
}

impl Observer for Errors {
    fn error(&self, kind: &'static str) {
        if let Ok(mut kinds) = self.0.lock() {
            kinds.push(kind);
        }
    }
}

/// One runtime per process: building one per input would dominate an iteration.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Where the server keeps its files: `TUSK_FUZZ_SCRATCH` (run.sh makes one on tmpfs and
/// removes it afterwards), else the system's temporary directory.
fn scratch_root() -> std::path::PathBuf {
    std::env::var_os("TUSK_FUZZ_SCRATCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("TUSK_FUZZ_STRICT").is_some_and(|v| v == "1"))
}

/// The server, one per process: a new fs store creates its 4096 shard directories, which
/// would cost more than the requests. Inputs do not see each other's uploads (IDs are
/// random and each input deletes its own at the end), so an input still replays alone.
struct Server {
    router: Router,
    errors: Arc<Errors>,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| runtime().block_on(Server::start()))
}

/// One input's view: the uploads it created and what was acknowledged of them.
struct Session {
    server: &'static Server,
    /// Upload IDs in creation order.
    ids: Vec<String>,
    /// Highest offset acknowledged so far per upload ID.
    acked: HashMap<String, u64>,
}

/// Statuses the router may answer to any client, whatever it sends (no hooks, no presigned
/// GET, no connection limit in this setup: 302, 502 and 503 would be findings too).
fn allowed(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201
            | 204
            | 206
            | 400
            | 403
            | 404
            | 405
            | 409
            | 410
            | 412
            | 413
            | 415
            | 416
            | 423
            | 431
            | 460
    )
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tusk-fuzz-")
            .tempdir_in(scratch_root())
            .expect("a scratch directory");
        let storage = FsStorage::new(dir.path().join("files"), 64 << 10).expect("fs storage");
        let coord = EmbeddedCoordinator::open(dir.path().join("coord"))
            .await
            .expect("embedded coordinator");
        let errors = Arc::new(Errors::default());
        let engine = Engine::observed(
            Arc::new(storage),
            coord,
            EngineConfig {
                max_size: Some(MAX_SIZE),
                // Nothing runs concurrently here; a short wait keeps a stuck lease cheap.
                lease_wait: Duration::from_millis(200),
                // Small, so the big bodies make progress commits mid-PATCH.
                commit_interval_bytes: 16 << 10,
                ..EngineConfig::default()
            },
            errors.clone(),
        );
        let router = tusk_http::router(
            Arc::new(engine),
            HttpConfig {
                base_path: BASE.into(),
                // Trusted proxy headers and CORS on: more of the header handling is reached.
                proxy: Some(TrustedProxy {
                    headers: ProxyHeaders::XForwarded,
                    hops: 1,
                }),
                cors: Some(Arc::new(
                    CorsPolicy::new(&CorsSettings {
                        allow_origins: vec![
                            "https://app.example".into(),
                            "https://*.example.org".into(),
                        ],
                        allow_credentials: true,
                        max_age: Duration::from_secs(600),
                        extra_allow_headers: Vec::new(),
                        extra_expose_headers: Vec::new(),
                    })
                    .expect("valid CORS settings"),
                )),
                max_metadata_bytes: 1024,
                max_header_bytes: 4096,
                presigned_get: None,
                download: true,
            },
        );
        Self {
            router,
            errors,
            _dir: dir,
        }
    }
}

impl Session {
    fn new() -> Self {
        Self {
            server: server(),
            ids: Vec::new(),
            acked: HashMap::new(),
        }
    }

    /// Creates one upload (deferred length) before the input's requests, so `Upload(i)`
    /// paths name a real upload from the first request on: the fuzzer rarely builds a
    /// creation and a PATCH of it in one input by itself.
    async fn create_first(&mut self) {
        let mut post = Request::new(Body::empty());
        *post.method_mut() = Method::POST;
        *post.uri_mut() = http::Uri::from_static(BASE);
        let headers = post.headers_mut();
        headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
        headers.insert("upload-defer-length", HeaderValue::from_static("1"));
        headers.insert(http::header::HOST, HeaderValue::from_static("tusk.test"));
        let (status, _) = self.exchange(post, "POST of the first upload").await;
        assert_eq!(status, StatusCode::CREATED, "POST of the first upload");
    }

    /// Deletes this input's uploads, so the shared server's disk use stays bounded.
    async fn clean_up(&mut self) {
        for id in std::mem::take(&mut self.ids) {
            let mut delete = Request::new(Body::empty());
            *delete.method_mut() = Method::DELETE;
            if let Ok(uri) = http::Uri::try_from(format!("{BASE}{id}")) {
                *delete.uri_mut() = uri;
            }
            delete
                .headers_mut()
                .insert("tus-resumable", HeaderValue::from_static("1.0.0"));
            delete
                .headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static("tusk.test"));
            self.exchange(delete, "DELETE at the end of the input")
                .await;
        }
    }

    fn id(&self, index: u8) -> Option<&str> {
        match self.ids.len() {
            0 => None,
            n => self.ids.get(usize::from(index) % n).map(String::as_str),
        }
    }

    /// The request's path, and the upload it names exactly (for the offset checks).
    fn path(&self, choice: &PathChoice) -> (Vec<u8>, Option<String>) {
        match choice {
            PathChoice::Collection => (BASE.into(), None),
            PathChoice::Upload(i) => match self.id(*i) {
                Some(id) => (format!("{BASE}{id}").into_bytes(), Some(id.to_string())),
                None => (format!("{BASE}nosuchupload").into_bytes(), None),
            },
            PathChoice::UploadWithSuffix(i, suffix) => {
                let mut path = format!("{BASE}{}", self.id(*i).unwrap_or("x")).into_bytes();
                path.extend_from_slice(suffix);
                (path, None)
            }
            PathChoice::UnderCollection(rest) => {
                let mut path = BASE.as_bytes().to_vec();
                path.extend_from_slice(rest);
                (path, None)
            }
            PathChoice::Raw(bytes) => (bytes.clone(), None),
        }
    }

    fn value(&self, value: &Value, upload: Option<&str>, body: &[u8]) -> Vec<u8> {
        match value {
            Value::Raw(bytes) => bytes.clone(),
            Value::Number(n) => n.to_string().into_bytes(),
            Value::Small(n) => n.to_string().into_bytes(),
            Value::TrackedOffset(delta) => {
                let offset = upload.and_then(|id| self.acked.get(id)).copied();
                let offset = offset.unwrap_or(0);
                offset
                    .saturating_add_signed(i64::from(*delta))
                    .to_string()
                    .into_bytes()
            }
            Value::OctetStream => b"application/offset+octet-stream".to_vec(),
            Value::Partial => b"partial".to_vec(),
            Value::Final(indices) => {
                let urls: Vec<String> = indices
                    .iter()
                    .filter_map(|i| self.id(*i))
                    .map(|id| format!("{BASE}{id}"))
                    .collect();
                format!("final;{}", urls.join(" ")).into_bytes()
            }
            Value::Checksum(algorithm, right) => {
                let summed: &[u8] = if *right { body } else { b"other bytes" };
                let b64 = |digest: &[u8]| base64::engine::general_purpose::STANDARD.encode(digest);
                match algorithm {
                    Algorithm::Sha1 => format!("sha1 {}", b64(&sha1::Sha1::digest(summed))),
                    // A well-formed header whose digest cannot match.
                    Algorithm::Md5Garbage => format!("md5 {}", b64(&[0u8; 16])),
                    Algorithm::Unknown => format!("blake9 {}", b64(summed)),
                }
                .into_bytes()
            }
            Value::Metadata(pairs) => pairs
                .iter()
                .map(|(key, value)| {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                    if encoded.is_empty() {
                        key.clone()
                    } else {
                        format!("{key} {encoded}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            Value::Range(first, last) => {
                let side = |n: &Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
                format!("bytes={}-{}", side(first), side(last)).into_bytes()
            }
            Value::Method(i) => {
                const METHODS: [&str; 7] =
                    ["PATCH", "DELETE", "HEAD", "GET", "OPTIONS", "POST", "PUT"];
                METHODS[usize::from(*i) % METHODS.len()].as_bytes().to_vec()
            }
        }
    }

    /// Sends one request and checks its answer. A request that cannot be put on the wire
    /// (a method or URI hyper would refuse before any handler) is skipped.
    async fn send(&mut self, req: &Req) {
        let method = match &req.method {
            MethodChoice::Post => Method::POST,
            MethodChoice::Head => Method::HEAD,
            MethodChoice::Patch => Method::PATCH,
            MethodChoice::Delete => Method::DELETE,
            MethodChoice::Get => Method::GET,
            MethodChoice::Options => Method::OPTIONS,
            MethodChoice::Put => Method::PUT,
            MethodChoice::Token(token) => match Method::from_bytes(token) {
                Ok(method) => method,
                Err(_) => return,
            },
        };
        let (path, upload) = self.path(&req.path);
        let Ok(uri) = http::Uri::try_from(path) else {
            return;
        };
        let body = body_bytes(&req.body);
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, HeaderValue::from_static("tusk.test"));
        match &req.tus_resumable {
            TusResumable::V1 => {
                headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
            }
            TusResumable::Missing => {}
            TusResumable::Raw(bytes) => {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    headers.insert("tus-resumable", value);
                }
            }
        }
        match req.preset {
            Preset::None => {}
            Preset::Create(Some(length)) => {
                headers.insert("upload-length", HeaderValue::from(length));
            }
            Preset::Create(None) => {
                headers.insert("upload-defer-length", HeaderValue::from_static("1"));
            }
            Preset::Patch(delta) => {
                let offset = self.value(&Value::TrackedOffset(delta), upload.as_deref(), &body);
                if let Ok(offset) = HeaderValue::from_bytes(&offset) {
                    headers.insert("upload-offset", offset);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/offset+octet-stream"),
                );
            }
        }
        for (name, value) in req.headers.iter().take(MAX_HEADERS) {
            let Some(name) = header_name(name) else {
                continue;
            };
            // hyper frames the body itself: a Content-Length or Transfer-Encoding that
            // disagrees with the body never reaches a handler.
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                continue;
            }
            let value = self.value(value, upload.as_deref(), &body);
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(name, value);
            }
        }
        *request.body_mut() = match req.framing {
            Framing::ContentLength => {
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                Body::from(body.clone())
            }
            Framing::Chunked | Framing::ChunkedThenCut => {
                headers.insert(
                    http::header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                Body::from_stream(chunks(
                    &req.body,
                    &body,
                    matches!(req.framing, Framing::ChunkedThenCut),
                ))
            }
        };
        let what = format!("{} {}", request.method(), request.uri());
        let (status, headers) = self.exchange(request, &what).await;
        self.check(&what, status, &headers, upload.as_deref()).await;
    }

    /// One request through the router; panics (a finding) when it hangs or its body fails.
    async fn exchange(
        &mut self,
        request: Request<Body>,
        what: &str,
    ) -> (StatusCode, http::HeaderMap) {
        let exchange = async {
            let response = self.server.router.clone().oneshot(request).await;
            let Ok(response) = response;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes());
            (parts, body)
        };
        let (parts, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => panic!("{what}: no answer within {REQUEST_TIMEOUT:?}"),
        };
        let errors = self.server.errors.take();
        if let Err(e) = body {
            // Only a storage read can fail a body; on a healthy tmpfs it must not.
            panic!(
                "{what}: {} with a body that failed: {e} (errors {errors:?})",
                parts.status
            );
        }
        let status = parts.status;
        if !allowed(status) {
            let storage_failure = status == StatusCode::INTERNAL_SERVER_ERROR
                && !errors.is_empty()
                && errors.iter().all(|kind| *kind == "storage");
            if !storage_failure || strict() {
                panic!(
                    "{what}: status {status} is not one the server may give (errors {errors:?})"
                );
            }
        }
        if let Some(location) = parts.headers.get("location").and_then(|v| v.to_str().ok()) {
            if let Some(id) = location.rsplit('/').next() {
                if !id.is_empty() && !self.ids.iter().any(|known| known == id) {
                    self.ids.push(id.to_string());
                }
            }
        }
        (status, parts.headers)
    }

    /// The offset invariants, for a request that named a known upload exactly.
    async fn check(
        &mut self,
        what: &str,
        status: StatusCode,
        headers: &http::HeaderMap,
        upload: Option<&str>,
    ) {
        let offset = headers.get("upload-offset").map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{what}: Upload-Offset {v:?} is not a number"))
        });
        // A creation with upload: the new upload's offset is known from here on.
        if status == StatusCode::CREATED {
            if let (Some(offset), Some(id)) = (offset, self.ids.last()) {
                self.acked.insert(id.clone(), offset);
            }
            return;
        }
        let (Some(id), Some(offset)) = (upload, offset) else {
            return;
        };
        if !matches!(status, StatusCode::OK | StatusCode::NO_CONTENT) {
            return;
        }
        let before = self.acked.get(id).copied().unwrap_or(0);
        assert!(
            offset >= before,
            "{what}: {status} with Upload-Offset {offset}, but {before} was acknowledged before"
        );
        self.acked.insert(id.to_string(), offset);
        // 204 with an offset is a PATCH's acknowledgement (DELETE and OPTIONS carry none):
        // a HEAD now must show that offset.
        if status == StatusCode::NO_CONTENT {
            let mut head = Request::new(Body::empty());
            *head.method_mut() = Method::HEAD;
            if let Ok(uri) = http::Uri::try_from(format!("{BASE}{id}")) {
                *head.uri_mut() = uri;
            }
            head.headers_mut()
                .insert("tus-resumable", HeaderValue::from_static("1.0.0"));
            head.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static("tusk.test"));
            let check = format!("HEAD after {what}");
            let (status, headers) = self.exchange(head, &check).await;
            let shown = headers.get("upload-offset").and_then(|v| v.to_str().ok());
            assert_eq!(
                (status, shown),
                (StatusCode::OK, Some(offset.to_string().as_str())),
                "{check}: the PATCH acknowledged offset {offset}"
            );
        }
    }
}

fn header_name(name: &Name) -> Option<HeaderName> {
    let known = match name {
        Name::UploadOffset => "upload-offset",
        Name::UploadLength => "upload-length",
        Name::UploadMetadata => "upload-metadata",
        Name::UploadConcat => "upload-concat",
        Name::UploadChecksum => "upload-checksum",
        Name::UploadDeferLength => "upload-defer-length",
        Name::ContentType => "content-type",
        Name::Range => "range",
        Name::MethodOverride => "x-http-method-override",
        Name::Host => "host",
        Name::XForwardedHost => "x-forwarded-host",
        Name::XForwardedProto => "x-forwarded-proto",
        Name::TusResumable => "tus-resumable",
        Name::Raw(bytes) => return HeaderName::from_bytes(bytes).ok(),
    };
    Some(HeaderName::from_static(known))
}

fn body_bytes(choice: &BodyChoice) -> Bytes {
    match choice {
        BodyChoice::Empty => Bytes::new(),
        BodyChoice::Bytes(chunks) => Bytes::from(chunks.concat()),
        BodyChoice::Filler { len, byte, .. } => {
            let len = usize::try_from(*len).unwrap_or(MAX_FILLER) % (MAX_FILLER + 1);
            Bytes::from(vec![*byte; len])
        }
    }
}

/// The body as the chunks the client chose, then optionally a cut connection.
fn chunks(
    choice: &BodyChoice,
    body: &Bytes,
    cut: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut parts: Vec<Result<Bytes, std::io::Error>> = match choice {
        BodyChoice::Empty => Vec::new(),
        BodyChoice::Bytes(chunks) => chunks.iter().map(|c| Ok(Bytes::from(c.clone()))).collect(),
        BodyChoice::Filler { chunk, .. } => {
            let size = usize::from(*chunk).max(1024);
            (0..body.len())
                .step_by(size)
                .map(|start| Ok(body.slice(start..body.len().min(start + size))))
                .collect()
        }
    };
    if cut {
        parts.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )));
    }
    futures_util::stream::iter(parts)
}

fuzz_target!(|input: Input| {
    // Built before the runtime runs: it blocks on the runtime itself.
    let _ = server();
    runtime().block_on(async {
        let mut session = Session::new();
        session.create_first().await;
        for req in input.requests.iter().take(MAX_REQUESTS) {
            session.send(req).await;
        }
        session.clean_up().await;
    });
});
