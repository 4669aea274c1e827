//! HTTP helpers shared by the conformance cases: a tus-aware client context, status and
//! header assertions that name the rule they check, checksums, and a raw HTTP/1.1 client for
//! requests reqwest would normalise (hostile paths, huge headers, aborted bodies).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::Rng as _;
use reqwest::{Method, RequestBuilder, Response};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestServer;

/// The media type of PATCH bodies (tus core).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// What a case gets: an HTTP client and the node's upload endpoint. Nothing else.
#[derive(Clone)]
pub struct Ctx {
    /// A plain HTTP client (no redirects followed, no TLS).
    pub client: reqwest::Client,
    /// The upload endpoint, e.g. `http://127.0.0.1:PORT/files/` (always ends with `/`).
    pub endpoint: String,
    /// `host:port` of the endpoint, for raw requests.
    pub addr: String,
    /// Path of the endpoint, e.g. `/files/`.
    pub base_path: String,
    /// Whether a GET of an unfinished upload streams its committed bytes (true, the default)
    /// or answers 409 Conflict (storage that cannot read an unfinished upload, S3); set from
    /// [`Deployment::reads_unfinished`](crate::harness::Deployment::reads_unfinished).
    pub reads_unfinished: bool,
}

impl Ctx {
    /// Context for a running node.
    pub fn new(server: &TestServer) -> Result<Self> {
        Self::for_endpoint(&server.endpoint)
    }

    /// Context for any `http://host:port/base/` endpoint.
    pub fn for_endpoint(endpoint: &str) -> Result<Self> {
        let mut endpoint = endpoint.to_string();
        if !endpoint.ends_with('/') {
            endpoint.push('/');
        }
        let rest = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("endpoint {endpoint} is not http://"))?;
        let (addr, path) = rest.split_at(rest.find('/').context("endpoint without a path")?);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Ctx {
            client,
            addr: addr.to_string(),
            base_path: path.to_string(),
            endpoint,
            reads_unfinished: true,
        })
    }

    /// The same context for a deployment that does (true) or does not (false) read
    /// unfinished uploads.
    pub fn with_reads_unfinished(mut self, reads_unfinished: bool) -> Self {
        self.reads_unfinished = reads_unfinished;
        self
    }

    /// A request carrying `Tus-Resumable: 1.0.0`.
    pub fn tus(&self, method: Method, url: &str) -> RequestBuilder {
        self.client
            .request(method, url)
            .header("Tus-Resumable", "1.0.0")
    }

    /// A request without any tus header.
    pub fn plain(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request, naming what it was for when it fails at the transport level.
    pub async fn send(&self, rb: RequestBuilder, what: &str) -> Result<Response> {
        rb.send()
            .await
            .with_context(|| format!("{what}: the request failed without an HTTP response"))
    }

    /// `POST` with the given headers; asserts 201 and a usable absolute Location.
    pub async fn create_with(&self, headers: &[(&str, &str)]) -> Result<String> {
        let mut rb = self.tus(Method::POST, &self.endpoint);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = self.send(rb, "creation POST").await?;
        let resp = expect(resp, 201, "creation: POST answers 201 Created").await?;
        location(&resp)
    }

    /// Creates an upload of `length` bytes.
    pub async fn create(&self, length: u64) -> Result<String> {
        self.create_with(&[("Upload-Length", &length.to_string())])
            .await
    }

    /// Creates an upload with deferred length.
    pub async fn create_deferred(&self) -> Result<String> {
        self.create_with(&[("Upload-Defer-Length", "1")]).await
    }

    /// Creates an upload of `data.len()` bytes and uploads `data` in one PATCH.
    pub async fn upload(&self, data: &[u8]) -> Result<String> {
        let url = self.create(data.len() as u64).await?;
        if !data.is_empty() {
            self.patch_ok(&url, 0, data.to_vec()).await?;
        }
        Ok(url)
    }

    /// A PATCH request with the tus content type and offset, not yet sent.
    pub fn patch_req(&self, url: &str, offset: u64, body: Vec<u8>) -> RequestBuilder {
        self.tus(Method::PATCH, url)
            .header("Content-Type", OFFSET_OCTET_STREAM)
            .header("Upload-Offset", offset.to_string())
            .body(body)
    }

    /// Sends a PATCH of `body` at `offset`.
    pub async fn patch(&self, url: &str, offset: u64, body: Vec<u8>) -> Result<Response> {
        self.send(self.patch_req(url, offset, body), "PATCH").await
    }

    /// PATCH that must succeed: asserts 204 and `Upload-Offset = offset + body length`.
    pub async fn patch_ok(&self, url: &str, offset: u64, body: Vec<u8>) -> Result<u64> {
        let len = body.len() as u64;
        let resp = self.patch(url, offset, body).await?;
        let resp = expect(resp, 204, "core: a successful PATCH answers 204 No Content").await?;
        let new = header_u64(
            &resp,
            "Upload-Offset",
            "core: PATCH 204 carries Upload-Offset",
        )?;
        ensure!(
            new == offset + len,
            "core: PATCH 204 Upload-Offset must be the new offset {} (sent {len} bytes at {offset}), got {new}",
            offset + len
        );
        Ok(new)
    }

    /// HEAD on an upload.
    pub async fn head(&self, url: &str) -> Result<Response> {
        self.send(self.tus(Method::HEAD, url), "HEAD").await
    }

    /// HEAD that must answer 200.
    pub async fn head_ok(&self, url: &str) -> Result<Response> {
        let resp = self.head(url).await?;
        expect(resp, 200, "core: HEAD on an existing upload answers 200").await
    }

    /// The upload's current offset from HEAD.
    pub async fn offset(&self, url: &str) -> Result<u64> {
        let resp = self.head_ok(url).await?;
        header_u64(&resp, "Upload-Offset", "core: HEAD carries Upload-Offset")
    }

    /// Asserts the upload's offset through HEAD.
    pub async fn assert_offset(&self, url: &str, want: u64, rule: &str) -> Result<()> {
        let got = self.offset(url).await?;
        ensure!(
            got == want,
            "{rule}: HEAD Upload-Offset expected {want}, got {got}"
        );
        Ok(())
    }

    /// GET without tus headers (downloads do not need Tus-Resumable).
    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send(self.plain(Method::GET, url), "GET").await
    }

    /// GET that must answer 200 with exactly Content-Length bytes; returns them.
    pub async fn download(&self, url: &str) -> Result<Vec<u8>> {
        let resp = self.get(url).await?;
        let resp = expect_status(resp, 200, "GET: download of an upload answers 200").await?;
        let declared = header(&resp, "Content-Length");
        let body = resp
            .bytes()
            .await
            .context("GET: reading the body")?
            .to_vec();
        if let Some(cl) = declared {
            ensure!(
                cl == body.len().to_string(),
                "GET: Content-Length {cl} must equal the body length {}",
                body.len()
            );
        }
        Ok(body)
    }

    /// Asserts GET returns exactly `want` (compared by sha256).
    pub async fn assert_content(&self, url: &str, want: &[u8], rule: &str) -> Result<()> {
        let got = self.download(url).await?;
        ensure!(
            sha256_hex(&got) == sha256_hex(want),
            "{rule}: GET returned {} bytes with sha256 {}, expected {} bytes with sha256 {}",
            got.len(),
            sha256_hex(&got),
            want.len(),
            sha256_hex(want)
        );
        Ok(())
    }

    /// GET of an unfinished upload that holds exactly `committed`: on a deployment that reads
    /// unfinished uploads it returns exactly those bytes (`rule`); on one that cannot (S3) it
    /// answers 409 Conflict with a one-line text error.
    pub async fn assert_unfinished_content(
        &self,
        url: &str,
        committed: &[u8],
        rule: &str,
    ) -> Result<()> {
        if self.reads_unfinished {
            return self.assert_content(url, committed, rule).await;
        }
        let resp = self.get(url).await?;
        expect_error(
            resp,
            409,
            &format!(
                "contract (GET, storage that cannot read unfinished uploads): GET of an \
                 unfinished upload answers 409 Conflict (where other storage checks: {rule})"
            ),
        )
        .await
    }

    /// GET of an upload of `length` bytes that holds exactly `committed`: the bytes once it
    /// is finished (`committed` is all of it), otherwise as
    /// [`assert_unfinished_content`](Ctx::assert_unfinished_content).
    pub async fn assert_committed(
        &self,
        url: &str,
        committed: &[u8],
        length: u64,
        rule: &str,
    ) -> Result<()> {
        if committed.len() as u64 == length {
            self.assert_content(url, committed, rule).await
        } else {
            self.assert_unfinished_content(url, committed, rule).await
        }
    }

    /// URL of an upload that does not exist but has a well-formed id.
    pub fn unknown_url(&self) -> String {
        format!("{}{}", self.endpoint, random_id())
    }

    /// The path part of an upload URL (for Upload-Concat with paths).
    pub fn path_of(&self, url: &str) -> Result<String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .with_context(|| format!("{url} is not absolute"))?;
        Ok(rest[rest.find('/').context("URL without path")?..].to_string())
    }

    /// Sends a raw HTTP/1.1 request to the node; see [`raw_request`].
    pub async fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawResponse> {
        raw_request(&self.addr, method, target, headers, body).await
    }
}

/// A header's value as a string (None when absent or not visible ASCII).
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A header that must be present and a non-negative decimal.
pub fn header_u64(resp: &Response, name: &str, rule: &str) -> Result<u64> {
    let v = header(resp, name).with_context(|| format!("{rule}: header {name} is missing"))?;
    v.trim()
        .parse()
        .with_context(|| format!("{rule}: header {name}: {v:?} is not a non-negative integer"))
}

/// Asserts a header is absent.
pub fn ensure_absent(resp: &Response, name: &str, rule: &str) -> Result<()> {
    if let Some(v) = header(resp, name) {
        bail!("{rule}: header {name} must be absent, got {v:?}");
    }
    Ok(())
}

/// Asserts a header equals `want` exactly.
pub fn ensure_header(resp: &Response, name: &str, want: &str, rule: &str) -> Result<()> {
    let got = header(resp, name);
    ensure!(
        got.as_deref() == Some(want),
        "{rule}: header {name} expected {want:?}, got {got:?}"
    );
    Ok(())
}

/// Asserts the status and `Tus-Resumable: 1.0.0` (carried by every response); returns the
/// response for more checks. On a wrong status the error shows the body.
pub async fn expect(resp: Response, want: u16, rule: &str) -> Result<Response> {
    let resp = expect_status(resp, want, rule).await?;
    let status = resp.status().as_u16();
    let tr = header(&resp, "Tus-Resumable");
    ensure!(
        tr.as_deref() == Some("1.0.0"),
        "contract (every response): Tus-Resumable: 1.0.0 expected on this {status} response \
         ({rule}), got {tr:?}"
    );
    Ok(resp)
}

/// Asserts only the status (no tus headers); on a wrong status the error shows the body.
pub async fn expect_status(resp: Response, want: u16, rule: &str) -> Result<Response> {
    let status = resp.status().as_u16();
    if status != want {
        let url = resp.url().to_string();
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        bail!("{rule}: expected status {want}, got {status} (url {url}, body {body:?})");
    }
    Ok(resp)
}

/// Like [`expect`] for an error with a body: also asserts the body is one line of
/// `text/plain`.
pub async fn expect_error(resp: Response, want: u16, rule: &str) -> Result<()> {
    let resp = expect(resp, want, rule).await?;
    let ct = header(&resp, "Content-Type").unwrap_or_default();
    ensure!(
        ct.starts_with("text/plain"),
        "contract (every response): error bodies are text/plain; this {want} ({rule}) has \
         Content-Type {ct:?}"
    );
    let body = resp.text().await.context("reading error body")?;
    ensure!(
        !body.trim().is_empty() && !body.trim_end().contains('\n'),
        "contract (every response): an error body is one line of text; this {want} ({rule}) \
         has {body:?}"
    );
    Ok(())
}

/// Asserts `Upload-Expires` is an RFC 7231 date in the future (a second of slack for the
/// date's whole-second resolution) and returns it.
pub fn expires_in_future(resp: &Response, rule: &str) -> Result<SystemTime> {
    let v = header(resp, "Upload-Expires")
        .with_context(|| format!("{rule}: Upload-Expires is missing"))?;
    let at = httpdate::parse_http_date(&v)
        .with_context(|| format!("{rule}: Upload-Expires {v:?} is not an RFC 7231 HTTP date"))?;
    let now = SystemTime::now();
    ensure!(
        at + Duration::from_secs(1) > now,
        "{rule}: Upload-Expires {v:?} is not in the future"
    );
    Ok(at)
}

/// Parses an `Upload-Metadata` value into key -> decoded value (None for a key without value).
pub fn parse_metadata(v: &str) -> Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut out = BTreeMap::new();
    for pair in v.split(',') {
        let pair = pair.trim();
        let mut parts = pair.splitn(2, ' ');
        let key = parts.next().unwrap_or_default().to_string();
        ensure!(!key.is_empty(), "empty key in Upload-Metadata {v:?}");
        let value = match parts.next().map(str::trim) {
            None | Some("") => None,
            Some(b) => Some(
                B64.decode(b)
                    .with_context(|| format!("bad base64 {b:?} in Upload-Metadata {v:?}"))?,
            ),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill(&mut v[..]);
    v
}

/// A random well-formed upload id (32 characters of `[A-Za-z0-9]`).
pub fn random_id() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The `Upload-Checksum` value `<algo> <base64 digest>` for `data`; crc32 is the 4-byte
/// big-endian CRC-32 (IEEE).
pub fn checksum_header(algo: &str, data: &[u8]) -> String {
    let digest: Vec<u8> = match algo {
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        "crc32" => crc32fast::hash(data).to_be_bytes().to_vec(),
        other => panic!("no test digest for {other}"),
    };
    format!("{algo} {}", B64.encode(digest))
}

/// Base64 (standard, padded) of `s`, for Upload-Metadata values.
pub fn b64(s: &str) -> String {
    B64.encode(s)
}

/// Splits a comma-separated header value into trimmed, lower-cased items.
pub fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `within`.
pub async fn poll<T, F, Fut>(within: Duration, mut f: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await? {
            return Ok(Some(v));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Status line and header block of a raw HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The response head as text (status line and headers).
    pub head: String,
}

/// Sends a request byte for byte as given (no path normalisation, any header size) with
/// `Connection: close` and reads the response head. A failed write is tolerated when the
/// server answers anyway (it may reject a request before reading all of it).
pub async fn raw_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);

    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let write = stream.write_all(&bytes).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut tmp = [0u8; 8192];
        loop {
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let shown: String = target.chars().take(80).collect();
    match read {
        Err(_) => bail!("{method} {shown}: no response head within 15s"),
        Ok(Err(e)) if buf.is_empty() => {
            bail!("{method} {shown}: connection failed without a response: {e} (write: {write:?})")
        }
        _ => {}
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "{method} {shown}: no HTTP status line in the response (write: {write:?}, got {:?})",
                head.chars().take(200).collect::<String>()
            )
        })?;
    Ok(RawResponse { status, head })
}

/// The upload id of an upload URL: its last path segment.
pub fn upload_id(url: &str) -> Result<&str> {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty() && !id.contains(':'))
        .with_context(|| format!("no upload id in {url:?}"))
}

/// The `Location` of a 201 as an absolute URL (tus creation).
pub fn location(resp: &Response) -> Result<String> {
    let loc = header(resp, "Location")
        .context("creation: 201 must carry a Location header with the upload URL")?;
    ensure!(
        loc.starts_with("http://") || loc.starts_with("https://"),
        "contract (creation): Location must be an absolute URL, got {loc:?}"
    );
    Ok(loc)
}
