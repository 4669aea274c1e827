//! The `104 Upload Resumption Supported` interim response as a client's socket sees it, and
//! a creation cut off mid-body resumed from the URL the 104 gave. reqwest (hyper) hides
//! interim responses, so these cases speak HTTP/1.1 on a raw socket.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::draft::{Draft, VERSIONS};
use crate::conformance::util::random_bytes;
use crate::conformance::Ctx;

/// How long a raw read waits for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One response head read off the socket.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 connection that reads response heads one at a time.
struct Wire {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Wire {
    async fn open(ctx: &Ctx) -> Result<Self> {
        let stream = TcpStream::connect(&ctx.addr)
            .await
            .with_context(|| format!("connecting to {}", ctx.addr))?;
        Ok(Self {
            stream,
            buffered: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .context("writing to the server")
    }

    /// The next response head (interim or final); a final one's body is left unread.
    async fn next_head(&mut self) -> Result<Head> {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return parse_head(&raw);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .context("no response head within 20 s")??;
            if n == 0 {
                bail!(
                    "the server closed the connection; had {:?}",
                    String::from_utf8_lossy(&self.buffered)
                );
            }
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }
}

fn parse_head(raw: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(raw).context("a response head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().context("empty head")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// The head of a creation request of `version` whose body is `length` bytes.
fn creation_head(ctx: &Ctx, draft: &Draft, length: usize, extra: &str, http: &str) -> String {
    format!(
        "POST {} {http}\r\nHost: {}\r\nUpload-Draft-Interop-Version: {}\r\n{}: {}\r\nContent-Length: {length}\r\n{extra}\r\n",
        ctx.base_path,
        ctx.addr,
        draft.version,
        draft.completeness_header(),
        draft.completeness(true),
    )
}

/// With `--interim-responses`: the 104 comes first, with the upload's Location, the interop
/// version and (from 6) `Upload-Limit`; then the final 201 with the same Location. With
/// `Expect: 100-continue` the 104 comes before the 100. HTTP/1.0 clients and tus requests
/// get no 104.
pub async fn draft_interim_on_the_wire(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let body = random_bytes(1000);
        let mut wire = Wire::open(&ctx).await?;
        wire.send(creation_head(&ctx, &draft, body.len(), "", "HTTP/1.1").as_bytes())
            .await?;
        wire.send(&body).await?;
        let interim = wire.next_head().await?;
        ensure!(
            interim.status == 104,
            "v{version}: first head {interim:?}, expected a 104"
        );
        ensure!(
            interim.get("Upload-Draft-Interop-Version") == Some(version.to_string().as_str()),
            "v{version}: the 104 names the interop version: {interim:?}"
        );
        let location = interim
            .get("Location")
            .context("the 104 carries Location")?
            .to_string();
        ensure!(
            (version >= 6) == interim.get("Upload-Limit").is_some(),
            "v{version}: Upload-Limit in the 104 from version 6 on: {interim:?}"
        );
        let last = wire.next_head().await?;
        ensure!(
            last.status == 201,
            "v{version}: final head {last:?}, expected 201"
        );
        ensure!(
            last.get("Location") == Some(location.as_str()),
            "v{version}: the 201 names the 104's upload"
        );
        ctx.assert_content(&location, &body, "the 104's upload holds the body")
            .await?;

        let mut wire = Wire::open(&ctx).await?;
        let head = creation_head(
            &ctx,
            &draft,
            body.len(),
            "Expect: 100-continue\r\n",
            "HTTP/1.1",
        );
        wire.send(head.as_bytes()).await?;
        let first = wire.next_head().await?;
        ensure!(
            first.status == 104,
            "v{version}: with Expect, first head {first:?}"
        );
        let second = wire.next_head().await?;
        ensure!(
            second.status == 100,
            "v{version}: then 100 Continue, got {second:?}"
        );
        wire.send(&body).await?;
        let last = wire.next_head().await?;
        ensure!(last.status == 201, "v{version}: then 201, got {last:?}");
    }
    let draft = Draft::new(&ctx, 8);
    let mut wire = Wire::open(&ctx).await?;
    wire.send(creation_head(&ctx, &draft, 3, "", "HTTP/1.0").as_bytes())
        .await?;
    wire.send(b"abc").await?;
    let head = wire.next_head().await?;
    ensure!(
        head.status == 201,
        "HTTP/1.0: no interim response, got {head:?}"
    );
    let mut wire = Wire::open(&ctx).await?;
    let tus = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 3\r\nContent-Length: 0\r\n\r\n",
        ctx.base_path, ctx.addr
    );
    wire.send(tus.as_bytes()).await?;
    let head = wire.next_head().await?;
    ensure!(
        head.status == 201,
        "tus creation: no interim response, got {head:?}"
    );
    Ok(())
}

/// Without `--interim-responses` (the default) the first head is the final one.
pub async fn draft_interim_off_by_default(ctx: Ctx) -> Result<()> {
    let draft = Draft::new(&ctx, 6);
    let mut wire = Wire::open(&ctx).await?;
    wire.send(creation_head(&ctx, &draft, 3, "", "HTTP/1.1").as_bytes())
        .await?;
    wire.send(b"abc").await?;
    let head = wire.next_head().await?;
    ensure!(
        head.status == 201,
        "first head {head:?}, expected the final 201"
    );
    Ok(())
}

/// A creation cut off mid-body: the client learnt the URL from the 104, asks for the offset,
/// appends the rest, and the upload is exact. (A load balancer may drop bytes it held when
/// the client went away, so any offset up to what was sent is right.)
pub async fn draft_interrupted_creation_resumes(ctx: Ctx) -> Result<()> {
    for version in VERSIONS {
        let draft = Draft::new(&ctx, version);
        let data = random_bytes(3 << 20);
        let sent = (1 << 20) + 12_345;
        let mut wire = Wire::open(&ctx).await?;
        wire.send(creation_head(&ctx, &draft, data.len(), "", "HTTP/1.1").as_bytes())
            .await?;
        let interim = wire.next_head().await?;
        ensure!(interim.status == 104, "v{version}: {interim:?}");
        let url = interim
            .get("Location")
            .context("the 104 carries Location")?
            .to_string();
        wire.send(&data[..sent]).await?;
        drop(wire);
        resume(&ctx, &draft, &url, &data, sent as u64).await?;
        ctx.assert_content(&url, &data, "a creation resumed after a cut is exact")
            .await?;
    }
    Ok(())
}

/// Resumes as a client does: asks the offset, appends the rest from there, and asks again
/// after an append refused because the cut request was still committing (409) or stopped
/// early because that request, arriving late, asked it to (an incomplete answer).
async fn resume(ctx: &Ctx, draft: &Draft, url: &str, data: &[u8], sent: u64) -> Result<()> {
    let version = draft.version;
    // What the server can have received: the cut request's bytes, then, once an append was
    // sent, all of them (an append that stopped early may have stored past the cut).
    let mut sent = sent;
    for _attempt in 0..20 {
        let resp = ctx
            .send(
                draft.request(reqwest::Method::HEAD, url),
                "offset retrieval",
            )
            .await?;
        let offset = crate::conformance::util::header_u64(&resp, "Upload-Offset", "HEAD")?;
        ensure!(
            offset <= sent,
            "v{version}: offset {offset} past the {sent} bytes sent"
        );
        let rest = data
            .get(usize::try_from(offset)?..)
            .context("offset inside the data")?;
        let resp = ctx
            .send(draft.append(url, offset, rest, true), "resuming append")
            .await?;
        sent = data.len() as u64;
        let complete = crate::conformance::util::header(&resp, draft.completeness_header());
        match resp.status().as_u16() {
            204 if complete.as_deref() == Some(draft.completeness(true)) => return Ok(()),
            // Stopped early (the cut request, starting late, asked it to stop): go on.
            201 | 204 => {}
            409 => tokio::time::sleep(Duration::from_millis(100)).await,
            status => bail!("v{version}: resuming append at {offset}: {status}"),
        }
    }
    bail!("v{version}: the append kept conflicting")
}
