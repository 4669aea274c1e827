//! Crash tests against a real `tusk` process: kill -9 in the middle of a PATCH body and right
//! after a 204, SIGTERM with and without a PATCH in flight, then restart on the same port and
//! check what survived.
//!
//! What must hold after any crash: HEAD answers an offset that is at least everything
//! acknowledged with a 204 and at most everything sent (no alignment is promised), every byte
//! up to it is exactly the byte that was sent there, and the upload can be finished from
//! that offset, ending byte-identical (sha256) to the data.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::rawpatch::RawPatch;

const MIB: usize = 1024 * 1024;

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A small tus client over reqwest that checks every status it gets.
struct Tus {
    http: reqwest::Client,
}

impl Tus {
    fn new() -> Self {
        Tus {
            http: reqwest::Client::new(),
        }
    }

    /// POST: creates an upload of `len` bytes and returns its absolute URL.
    async fn create(&self, endpoint: &str, len: usize) -> Result<String> {
        let resp = self
            .http
            .post(endpoint)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", len.to_string())
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        ensure!(
            resp.status() == 201,
            "POST {endpoint}: status {}, expected 201",
            resp.status()
        );
        let location = resp
            .headers()
            .get("Location")
            .context("201 without Location")?
            .to_str()
            .context("Location is not text")?;
        Ok(location.to_string())
    }

    /// HEAD: the upload's offset.
    async fn offset(&self, url: &str) -> Result<usize> {
        let resp = self
            .http
            .head(url)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .with_context(|| format!("HEAD {url}"))?;
        ensure!(resp.status() == 200, "HEAD {url}: status {}", resp.status());
        offset_header(&resp).with_context(|| format!("HEAD {url}"))
    }

    /// PATCH `body` at `offset`; expects 204 and returns the new offset.
    async fn patch(&self, url: &str, offset: usize, body: Vec<u8>) -> Result<usize> {
        let len = body.len();
        let resp = self
            .http
            .patch(url)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .with_context(|| format!("PATCH {url} at {offset} ({len} bytes)"))?;
        let status = resp.status();
        if status != 204 {
            let text = resp.text().await.unwrap_or_default();
            bail!("PATCH {url} at {offset} ({len} bytes): status {status}, expected 204: {text}");
        }
        offset_header(&resp).with_context(|| format!("PATCH {url} at {offset}"))
    }

    /// GET: the committed bytes.
    async fn get(&self, url: &str) -> Result<Vec<u8>> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        ensure!(resp.status() == 200, "GET {url}: status {}", resp.status());
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading body"))?;
        Ok(body.to_vec())
    }

    /// The upload holds exactly `data[..offset]`: HEAD says `offset`, GET returns those bytes.
    async fn check_prefix(&self, url: &str, data: &[u8], offset: usize) -> Result<()> {
        tusk_tests::faults::ensure_prefix(url, &self.get(url).await?, data, offset)
    }

    /// Sends the rest from the server's offset, then checks the whole upload by sha256.
    async fn finish_and_verify(&self, url: &str, data: &[u8]) -> Result<()> {
        let offset = self.offset(url).await?;
        if offset < data.len() {
            let done = self.patch(url, offset, data[offset..].to_vec()).await?;
            ensure!(
                done == data.len(),
                "final PATCH ended at {done}, expected {}",
                data.len()
            );
        }
        ensure!(
            self.offset(url).await? == data.len(),
            "HEAD after finishing"
        );
        let body = self.get(url).await?;
        ensure!(
            body.len() == data.len(),
            "GET: {} bytes, expected {}",
            body.len(),
            data.len()
        );
        ensure!(
            sha(&body) == sha(data),
            "GET: sha256 {} differs from the data's {}",
            sha(&body),
            sha(data)
        );
        Ok(())
    }
}

fn offset_header(resp: &reqwest::Response) -> Result<usize> {
    resp.headers()
        .get("Upload-Offset")
        .context("no Upload-Offset")?
        .to_str()
        .context("Upload-Offset is not text")?
        .parse()
        .context("Upload-Offset is not a number")
}

/// kill -9 while a PATCH body is arriving, restart, check the committed prefix, finish.
/// Each round first sends an acknowledged PATCH (so there are bytes that must survive), then
/// a slow one that is killed: round 1 while the sender pauses (the server has read everything
/// sent), round 2 while the sender is still writing; both in the same upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_patch_keeps_a_consistent_prefix() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let tus = Tus::new();
    let data = random_bytes(32 * MIB + 777);
    let url = tus.create(&server.endpoint, data.len()).await?;
    let mut acknowledged = 0usize;

    for round in 1..=2 {
        let before = tus.offset(&url).await?;
        ensure!(
            before >= acknowledged,
            "round {round}: offset {before} is below the acknowledged {acknowledged}"
        );
        let start = tus
            .patch(&url, before, data[before..before + MIB + round].to_vec())
            .await?;
        ensure!(
            start == before + MIB + round,
            "round {round}: 204 with Upload-Offset {start}, expected {}",
            before + MIB + round
        );
        let mut patch = RawPatch::open(&url, start, data.len() - start).await?;
        let sent_counter = patch.sent.clone();
        let want = (6 * MIB + 12_345).min(data.len() - start - 1);
        let sent = if round == 1 {
            // 6 MiB at ~25 MiB/s, then a pause long enough for the server to read it all.
            patch
                .send(
                    &data[start..start + want],
                    256 * 1024,
                    Duration::from_millis(10),
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.kill9().await?;
            drop(patch);
            sent_counter.load(Ordering::SeqCst) as usize
        } else {
            // Keep writing the rest while the node is killed under it.
            let body = data[start..].to_vec();
            let writer = tokio::spawn(async move {
                // The write fails once the node is gone; that is the point.
                let _ = patch.send(&body, 64 * 1024, Duration::from_millis(2)).await;
            });
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while (sent_counter.load(Ordering::SeqCst) as usize) < want {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: only {} bytes of the body could be sent in 60s",
                    sent_counter.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.kill9().await?;
            tokio::time::timeout(Duration::from_secs(30), writer)
                .await
                .context("the writer did not notice the killed node")?
                .context("writer task")?;
            sent_counter.load(Ordering::SeqCst) as usize
        };

        server.restart().await?;
        let offset = tus.offset(&url).await?;
        ensure!(
            offset >= start && offset <= start + sent,
            "round {round}: after kill -9 the offset is {offset}; expected between the \
             acknowledged {start} and the {} bytes sent",
            start + sent
        );
        tus.check_prefix(&url, &data, offset)
            .await
            .with_context(|| format!("round {round}, after kill -9 and restart"))?;
        eprintln!(
            "round {round}: sent {start}..{}, kill -9, offset after restart {offset}",
            start + sent
        );
        acknowledged = offset;
    }

    tus.finish_and_verify(&url, &data).await
}

/// An upload of the IETF draft (interop 8) through kill -9: the creation's acknowledged
/// bytes survive a kill right after its 201, an append killed mid-body keeps a consistent
/// prefix, and the upload completes through the draft, sha256-exact (read back by tus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_an_upload_of_the_ietf_draft() -> Result<()> {
    const VERSION: &str = "8";
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let tus = Tus::new();
    let http = reqwest::Client::new();
    let data = random_bytes(16 * MIB + 321);
    let first = MIB + 5;
    let resp = http
        .post(&server.endpoint)
        .header("Upload-Draft-Interop-Version", VERSION)
        .header("Upload-Complete", "?0")
        .body(data[..first].to_vec())
        .send()
        .await?;
    ensure!(resp.status() == 201, "creation: {}", resp.status());
    ensure!(offset_header(&resp)? == first, "creation's Upload-Offset");
    let url = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("creation: no Location")?
        .to_string();
    server.kill9().await?;
    server.restart().await?;
    let draft_offset = || async {
        let resp = http
            .head(&url)
            .header("Upload-Draft-Interop-Version", VERSION)
            .send()
            .await?;
        ensure!(resp.status() == 204, "offset retrieval: {}", resp.status());
        offset_header(&resp)
    };
    ensure!(
        draft_offset().await? == first,
        "the acknowledged creation's bytes survive kill -9"
    );

    let mut append = RawPatch::open_draft(&url, first, data.len() - first, 8).await?;
    let sent_counter = append.sent.clone();
    append
        .send(
            &data[first..first + 6 * MIB],
            256 * 1024,
            Duration::from_millis(10),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9().await?;
    drop(append);
    let sent = sent_counter.load(Ordering::SeqCst) as usize;
    server.restart().await?;
    let offset = draft_offset().await?;
    ensure!(
        offset >= first && offset <= first + sent,
        "after kill -9 mid-append the offset is {offset}; expected between {first} and {}",
        first + sent
    );
    tus.check_prefix(&url, &data, offset).await?;

    let resp = http
        .patch(&url)
        .header("Upload-Draft-Interop-Version", VERSION)
        .header("Upload-Complete", "?1")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/partial-upload")
        .body(data[offset..].to_vec())
        .send()
        .await?;
    ensure!(resp.status() == 204, "completing append: {}", resp.status());
    let complete = resp.headers().get("upload-complete").cloned();
    ensure!(
        complete.as_ref().and_then(|v| v.to_str().ok()) == Some("?1"),
        "the completing append's answer says complete: {complete:?}"
    );
    tus.finish_and_verify(&url, &data).await
}

/// kill -9 right after a PATCH got its 204, several times: the acknowledged offset and its
/// bytes are always there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_204_never_loses_acknowledged_bytes() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let tus = Tus::new();
    let rounds = 6;
    let data = random_bytes(rounds * 700 * 1024 + 3);
    let url = tus.create(&server.endpoint, data.len()).await?;
    let mut offset = 0;
    for round in 1..=rounds {
        let end = if round == rounds {
            data.len()
        } else {
            // Odd sizes, so nothing lines up with a block or part size by luck.
            (offset + rand::rng().random_range(300 * 1024..1000 * 1024)).min(data.len())
        };
        let acknowledged = tus.patch(&url, offset, data[offset..end].to_vec()).await?;
        ensure!(
            acknowledged == end,
            "round {round}: 204 with Upload-Offset {acknowledged}, expected {end}"
        );
        server.kill9().await?;
        server.restart().await?;
        let after = tus.offset(&url).await?;
        ensure!(
            after == acknowledged,
            "round {round}: acknowledged offset {acknowledged}, but {after} after kill -9 \
             and restart"
        );
        tus.check_prefix(&url, &data, after)
            .await
            .with_context(|| format!("round {round}, after kill -9 and restart"))?;
        offset = after;
        if offset == data.len() {
            break;
        }
    }
    tus.finish_and_verify(&url, &data).await
}

/// SIGTERM with no request in flight, then a restart: a finished and an unfinished upload
/// are both still there, and the unfinished one can be finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_and_restart_keeps_uploads() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let tus = Tus::new();
    let finished = random_bytes(300 * 1024 + 11);
    let unfinished = random_bytes(3 * MIB + 5);
    let finished_url = tus.create(&server.endpoint, finished.len()).await?;
    tus.patch(&finished_url, 0, finished.clone()).await?;
    let unfinished_url = tus.create(&server.endpoint, unfinished.len()).await?;
    let part = MIB + 17;
    tus.patch(&unfinished_url, 0, unfinished[..part].to_vec())
        .await?;

    server.signal("TERM")?;
    let code = server.wait_exit(Duration::from_secs(20)).await?;
    ensure!(
        code == Some(0),
        "after SIGTERM the node exited with {code:?}, expected 0"
    );
    server.restart().await?;

    ensure!(tus.offset(&finished_url).await? == finished.len());
    tus.check_prefix(&finished_url, &finished, finished.len())
        .await?;
    let offset = tus.offset(&unfinished_url).await?;
    ensure!(
        offset == part,
        "unfinished upload: offset {offset} after a clean restart, expected {part}"
    );
    tus.check_prefix(&unfinished_url, &unfinished, part).await?;
    tus.finish_and_verify(&unfinished_url, &unfinished).await?;
    tus.finish_and_verify(&finished_url, &finished).await
}

/// SIGTERM while a PATCH body is half sent: the node commits what it received and exits
/// (it does not wait for the rest of the body); after a restart those bytes are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_patch_commits_received_bytes() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let tus = Tus::new();
    let data = random_bytes(16 * MIB + 99);
    let url = tus.create(&server.endpoint, data.len()).await?;
    let mut patch = RawPatch::open(&url, 0, data.len()).await?;
    let half = 4 * MIB + 4321;
    patch
        .send(&data[..half], 256 * 1024, Duration::from_millis(5))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.signal("TERM")?;
    // The connection stays open and idle: a node that waited for the body would hang here.
    let code = server.wait_exit(Duration::from_secs(20)).await.context(
        "SIGTERM with a PATCH in flight: the node did not exit within 20s (is it waiting \
         for the rest of the body?)",
    )?;
    ensure!(
        code == Some(0),
        "after SIGTERM the node exited with {code:?}, expected 0"
    );
    drop(patch);
    server.restart().await?;
    let offset = tus.offset(&url).await?;
    ensure!(
        offset > 0 && offset <= half,
        "after SIGTERM mid-PATCH the offset is {offset}; expected the received bytes \
         committed (0 < offset <= {half} sent)"
    );
    tus.check_prefix(&url, &data, offset).await?;
    eprintln!("sent {half}, SIGTERM, offset after restart {offset}");
    tus.finish_and_verify(&url, &data).await
}
