//! A PATCH (tus's, or the IETF draft's append) written by hand on a raw TCP connection, for
//! the fault tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conformance::util::OFFSET_OCTET_STREAM;

/// A PATCH written by hand on a raw TCP connection, so the body can be sent slowly, paused,
/// left unfinished, and its response read later.
pub struct RawPatch {
    stream: TcpStream,
    /// Body bytes handed to the kernel so far: an upper bound of what the server received.
    pub sent: Arc<AtomicU64>,
}

impl RawPatch {
    /// Opens a tus `PATCH url` at `offset` announcing `body_len` bytes.
    pub async fn open(url: &str, offset: usize, body_len: usize) -> Result<Self> {
        let headers = format!("Tus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_OCTET_STREAM}\r\n");
        Self::open_with(url, offset, body_len, &headers).await
    }

    /// Opens an append of the IETF draft's interop `version` (6 on) at `offset` announcing
    /// `body_len` bytes, which leaves the upload incomplete.
    pub async fn open_draft(
        url: &str,
        offset: usize,
        body_len: usize,
        version: u8,
    ) -> Result<Self> {
        let headers = format!(
            "Upload-Draft-Interop-Version: {version}\r\nUpload-Complete: ?0\r\n\
             Content-Type: application/partial-upload\r\n"
        );
        Self::open_with(url, offset, body_len, &headers).await
    }

    /// Opens `PATCH url` with `Upload-Offset`, `Content-Length` and `headers` (complete
    /// lines, each ending in CRLF).
    async fn open_with(url: &str, offset: usize, body_len: usize, headers: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url:?} is not http://"))?;
        let (addr, path) = rest.split_at(rest.find('/').context("URL without a path")?);
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\
             Upload-Offset: {offset}\r\nContent-Length: {body_len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        Ok(RawPatch {
            stream,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Writes `body` in `piece`-sized writes, pausing `pause` between them.
    pub async fn send(&mut self, body: &[u8], piece: usize, pause: Duration) -> Result<()> {
        for part in body.chunks(piece) {
            self.stream
                .write_all(part)
                .await
                .context("writing the PATCH body")?;
            self.sent.fetch_add(part.len() as u64, Ordering::SeqCst);
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Reads the response head: `Ok(Some(status, head))`, or `Ok(None)` when the connection
    /// closed without a response.
    pub async fn response(&mut self, within: Duration) -> Result<Option<(u16, String)>> {
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                let n = match self.stream.read(&mut chunk).await {
                    Ok(n) => n,
                    Err(_) if buf.is_empty() => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("malformed response head {head:?}"))?;
            Ok::<_, anyhow::Error>(Some((status, head)))
        };
        tokio::time::timeout(within, read)
            .await
            .context("no response in time")?
    }
}
