//! A minimal tus client over one HTTP/1.1 keep-alive connection per `Conn`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::payload::{Payload, PayloadBody};
use crate::util::{resolve, Target};

pub const TUS_VERSION: &str = "1.0.0";
pub const OCTET: &str = "application/offset+octet-stream";

/// One keep-alive HTTP/1.1 connection, reopened if the server closes it between requests.
pub struct Conn {
    authority: String,
    sender: Option<SendRequest<PayloadBody>>,
    /// Connections opened so far.
    pub opened: u64,
    timeout: Duration,
}

/// Status, headers and (at most 64 KiB of) body of a response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails with the request named, the status and the start of the body.
    pub fn expect(&self, what: &str, ok: &[StatusCode]) -> Result<()> {
        if ok.contains(&self.status) {
            return Ok(());
        }
        bail!(
            "{what}: unexpected status {} (expected {}); body: {:?}",
            self.status,
            ok.iter()
                .map(|s| s.as_u16().to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            snippet(&self.body)
        )
    }

    pub fn offset(&self, what: &str) -> Result<u64> {
        let v = self
            .header("upload-offset")
            .ok_or_else(|| anyhow!("{what}: {} without Upload-Offset", self.status))?;
        v.trim()
            .parse()
            .map_err(|_| anyhow!("{what}: malformed Upload-Offset {v:?}"))
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.trim().to_string()
}

/// Outcome of GET + sha256 of an upload.
pub enum Fetched {
    /// 200 with exactly the expected number of bytes.
    Body { sha256: [u8; 32], seconds: f64 },
    /// The server does not serve GET on upload URLs (404, 405 or 501).
    Unsupported(StatusCode),
}

impl Conn {
    pub fn new(timeout: Duration) -> Conn {
        Conn {
            authority: String::new(),
            sender: None,
            opened: 0,
            timeout,
        }
    }

    async fn connect(&mut self, t: &Target) -> Result<()> {
        self.sender = None;
        let stream =
            tokio::time::timeout(self.timeout, TcpStream::connect((t.host.as_str(), t.port)))
                .await
                .map_err(|_| anyhow!("connecting to {}: timed out", t.authority))?
                .with_context(|| format!("connecting to {}", t.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {}", t.authority))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        self.authority = t.authority.clone();
        self.opened += 1;
        Ok(())
    }

    async fn ready(&mut self, t: &Target) -> Result<&mut SendRequest<PayloadBody>> {
        let reusable = match self.sender.as_mut() {
            Some(s) if self.authority == t.authority && !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            self.connect(t).await?;
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection to {}", t.authority))?;
        sender
            .ready()
            .await
            .with_context(|| format!("connection to {}", t.authority))?;
        Ok(sender)
    }

    /// Sends a request with the tus headers and returns the response head and body stream.
    pub async fn send(
        &mut self,
        what: &str,
        method: Method,
        t: &Target,
        headers: &[(&str, String)],
        body: PayloadBody,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(t.path_and_query.as_str())
            .header("host", t.authority.as_str())
            .header("tus-resumable", TUS_VERSION);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(body)
            .with_context(|| format!("{what}: building request"))?;
        let timeout = self.timeout;
        let sender = self.ready(t).await.with_context(|| what.to_string())?;
        tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| anyhow!("{what}: no response within {timeout:?}"))?
            .with_context(|| format!("{what}: request failed"))
    }

    /// Sends a request and reads the whole (small) response body.
    pub async fn call(
        &mut self,
        what: &str,
        method: Method,
        t: &Target,
        headers: &[(&str, String)],
        body: PayloadBody,
    ) -> Result<Reply> {
        let resp = self.send(what, method, t, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(self.timeout, Limited::new(body, 64 * 1024).collect())
            .await
            .map_err(|_| anyhow!("{what}: response body timed out"))?
            .map_err(|e| anyhow!("{what}: reading response body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// POST to the creation endpoint; returns the absolute upload URL.
    pub async fn create(&mut self, endpoint: &Target, length: u64) -> Result<Target> {
        let what = format!("POST {} (Upload-Length {length})", endpoint.url);
        let reply = self
            .call(
                &what,
                Method::POST,
                endpoint,
                &[("upload-length", length.to_string())],
                PayloadBody::empty(),
            )
            .await?;
        reply.expect(&what, &[StatusCode::CREATED])?;
        let location = reply
            .header("location")
            .ok_or_else(|| anyhow!("{what}: 201 without a Location header"))?;
        let url = resolve(&endpoint.url, location)
            .with_context(|| format!("{what}: resolving Location {location:?}"))?;
        Target::parse(&url).with_context(|| format!("{what}: Location {location:?}"))
    }

    /// One PATCH of `len` payload bytes at `offset`; returns the raw reply.
    pub async fn patch_reply(
        &mut self,
        upload: &Target,
        payload: &Payload,
        offset: u64,
        len: u64,
    ) -> Result<(String, Reply)> {
        let what = format!("PATCH {} (Upload-Offset {offset}, {len} bytes)", upload.url);
        let reply = self
            .call(
                &what,
                Method::PATCH,
                upload,
                &[
                    ("content-type", OCTET.to_string()),
                    ("upload-offset", offset.to_string()),
                    ("content-length", len.to_string()),
                ],
                payload.body(offset, len),
            )
            .await?;
        Ok((what, reply))
    }

    /// One PATCH that must answer 204 with `Upload-Offset: offset + len`.
    pub async fn patch(
        &mut self,
        upload: &Target,
        payload: &Payload,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let (what, reply) = self.patch_reply(upload, payload, offset, len).await?;
        reply.expect(&what, &[StatusCode::NO_CONTENT])?;
        let got = reply.offset(&what)?;
        if got != offset + len {
            bail!(
                "{what}: server answered Upload-Offset {got}, expected {}",
                offset + len
            );
        }
        Ok(())
    }

    /// Uploads `len` payload bytes from `offset` in PATCHes of at most `chunk` bytes.
    pub async fn upload(
        &mut self,
        upload: &Target,
        payload: &Payload,
        offset: u64,
        len: u64,
        chunk: u64,
    ) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = chunk.min(end - pos);
            self.patch(upload, payload, pos, n).await?;
            pos += n;
        }
        Ok(())
    }

    /// HEAD: `Ok(Ok(offset))` on 200, `Ok(Err(retry_after))` on 423 Locked.
    pub async fn head(&mut self, upload: &Target) -> Result<std::result::Result<u64, Duration>> {
        let what = format!("HEAD {}", upload.url);
        let reply = self
            .call(&what, Method::HEAD, upload, &[], PayloadBody::empty())
            .await?;
        if reply.status == StatusCode::LOCKED {
            let secs = reply
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Ok(Err(Duration::from_secs(secs.clamp(1, 10))));
        }
        reply.expect(&what, &[StatusCode::OK])?;
        Ok(Ok(reply.offset(&what)?))
    }

    /// GET the upload and sha256 what comes back, checking the length.
    pub async fn fetch_sha256(&mut self, upload: &Target, expected_len: u64) -> Result<Fetched> {
        let what = format!("GET {}", upload.url);
        let start = Instant::now();
        let resp = self
            .send(&what, Method::GET, upload, &[], PayloadBody::empty())
            .await?;
        let status = resp.status();
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
            return Ok(Fetched::Unsupported(status));
        }
        if status != StatusCode::OK {
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bail!(
                "{what}: unexpected status {status} (expected 200); body: {:?}",
                snippet(&body)
            );
        }
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| anyhow!("{what}: body not complete within {:?}", self.timeout))?;
            let Some(frame) = frame else { break };
            let frame = frame.with_context(|| format!("{what}: reading body after {got} bytes"))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                if got > expected_len {
                    bail!("{what}: body longer than the {expected_len} bytes uploaded");
                }
                hasher.update(&data);
            }
        }
        if got != expected_len {
            bail!("{what}: body has {got} bytes, expected {expected_len}");
        }
        Ok(Fetched::Body {
            sha256: hasher.finalize().into(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
