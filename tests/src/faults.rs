//! The cluster fault scenarios and the resuming client they use, shared by every cluster
//! backend (tests/tests/cluster_redis.rs on a shared directory, tests/tests/cluster_s3.rs on
//! S3): kill -9 of the node serving a PATCH, a zombie writer that lost its lease, two clients
//! PATCHing one upload through different nodes.
//!
//! A scenario talks HTTP only and returns the upload's URL and bytes, so each backend's test
//! adds its own checks of the storage afterwards (Redis keys, the objects in the bucket).
//! Where the backend cannot read an unfinished upload ([`Cluster::reads_unfinished`] false),
//! GET of the committed prefix is replaced by "GET answers 409"; every upload still ends with
//! a GET of the finished bytes compared by sha256.
//!
//! What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
//! committed twice, and every upload ends byte-identical (sha256) to what the client sent.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::StreamExt as _;
use reqwest::Method;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::conformance::util::{
    header, header_u64, random_bytes, sha256_hex, Ctx, OFFSET_OCTET_STREAM,
};
use crate::rawpatch::RawPatch;

const MIB: usize = 1024 * 1024;

/// What a resuming client saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Every non-200 HEAD and every PATCH status, in order.
    pub statuses: Vec<u16>,
    /// Requests that got no HTTP response.
    pub transport_errors: usize,
    /// 423/503 answers that lacked Retry-After.
    pub missing_retry_after: Vec<u16>,
}

impl Seen {
    /// How often `status` was seen.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }
}

/// HEAD until it answers 200 (riding out 5xx, 423 and transport errors): the offset.
pub async fn head_offset(t: &Ctx, url: &str, deadline: Instant, seen: &mut Seen) -> Result<usize> {
    loop {
        match t.head(url).await {
            Ok(resp) if resp.status() == 200 => {
                return Ok(
                    header_u64(&resp, "Upload-Offset", "HEAD 200 carries Upload-Offset")? as usize,
                )
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                seen.statuses.push(status);
                ensure!(
                    status >= 500 || status == 423,
                    "HEAD {url}: unexpected status {status}"
                );
                if matches!(status, 503 | 423) && header(&resp, "Retry-After").is_none() {
                    seen.missing_retry_after.push(status);
                }
            }
            Err(_) => seen.transport_errors += 1,
        }
        ensure!(
            Instant::now() < deadline,
            "HEAD {url}: no 200 before the deadline; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finishes `data` at `url` from the server's offset in `chunk`-sized PATCHes, the way a tus
/// client does: 409 → HEAD again; 423/5xx/transport errors → wait and retry. `pause` between
/// PATCHes. Returns what it saw.
pub async fn upload_resiliently(
    t: &Ctx,
    url: &str,
    data: &[u8],
    chunk: usize,
    pause: Duration,
    within: Duration,
) -> Result<Seen> {
    let deadline = Instant::now() + within;
    let mut seen = Seen::default();
    let mut offset = head_offset(t, url, deadline, &mut seen).await?;
    while offset < data.len() {
        ensure!(
            Instant::now() < deadline,
            "{url}: not finished within {within:?} (offset {offset} of {}); saw {seen:?}",
            data.len()
        );
        let end = (offset + chunk).min(data.len());
        match t
            .patch(url, offset as u64, data[offset..end].to_vec())
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                seen.statuses.push(status);
                match status {
                    204 => {
                        let new =
                            header_u64(&resp, "Upload-Offset", "PATCH 204 carries Upload-Offset")?
                                as usize;
                        ensure!(
                            new > offset && new <= end,
                            "PATCH {offset}..{end}: 204 with Upload-Offset {new}"
                        );
                        offset = new;
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    409 => {}
                    423 | 503 => {
                        if header(&resp, "Retry-After").is_none() {
                            seen.missing_retry_after.push(status);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    500..=599 => tokio::time::sleep(Duration::from_millis(200)).await,
                    _ => {
                        let text = resp.text().await.unwrap_or_default();
                        bail!("PATCH {url} at {offset}: unexpected status {status}: {text}");
                    }
                }
            }
            Err(_) => {
                seen.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let head = head_offset(t, url, deadline, &mut seen).await?;
        ensure!(
            head >= offset,
            "{url}: HEAD says offset {head}, below the acknowledged {offset}"
        );
        offset = head;
    }
    Ok(seen)
}

/// GET (riding out a node that is down) until 200: the body.
pub async fn download(t: &Ctx, url: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match t.get(url).await {
            Ok(resp) if resp.status() == 200 => {
                return Ok(resp
                    .bytes()
                    .await
                    .with_context(|| format!("GET {url}: reading the body"))?
                    .to_vec())
            }
            Ok(resp) => ensure!(
                resp.status().as_u16() >= 500,
                "GET {url}: status {}",
                resp.status()
            ),
            Err(_) => {}
        }
        ensure!(Instant::now() < deadline, "GET {url}: no 200 within 20s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The upload at `url` holds exactly `data[..offset]`.
pub async fn check_prefix(t: &Ctx, url: &str, data: &[u8], offset: usize) -> Result<()> {
    ensure_prefix(url, &download(t, url).await?, data, offset)
}

/// `body`, downloaded from `url`, is exactly `data[..offset]`.
pub fn ensure_prefix(url: &str, body: &[u8], data: &[u8], offset: usize) -> Result<()> {
    ensure!(
        body.len() == offset,
        "GET {url}: {} bytes, but HEAD said offset {offset}",
        body.len()
    );
    if let Some(at) = body.iter().zip(data).position(|(a, b)| a != b) {
        bail!("GET {url}: byte {at} differs from what was sent (offset {offset})");
    }
    Ok(())
}

/// Where unfinished uploads can be read (or it is finished), [`check_prefix`]; otherwise a
/// GET of the unfinished upload answers 409 (riding out a node that is down).
pub async fn check_committed(
    t: &Ctx,
    url: &str,
    data: &[u8],
    offset: usize,
    reads_unfinished: bool,
) -> Result<()> {
    if reads_unfinished || offset == data.len() {
        return check_prefix(t, url, data, offset).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = t.get(url).await {
            let status = resp.status().as_u16();
            if status == 409 {
                return Ok(());
            }
            ensure!(
                status >= 500,
                "GET {url} of an unfinished upload (offset {offset} of {}) on storage that \
                 cannot read it: expected 409, got {status}",
                data.len()
            );
        }
        ensure!(Instant::now() < deadline, "GET {url}: no answer within 20s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The upload at `url` is complete and byte-identical to `data`.
pub async fn check_exact(t: &Ctx, url: &str, data: &[u8]) -> Result<()> {
    let body = download(t, url).await?;
    ensure!(
        body.len() == data.len() && sha256_hex(&body) == sha256_hex(data),
        "GET {url}: {} bytes with sha256 {}, expected {} bytes with sha256 {}",
        body.len(),
        sha256_hex(&body),
        data.len(),
        sha256_hex(data)
    );
    Ok(())
}

/// A body sent in `piece`-sized chunks with a pause between them.
pub fn slow_body(data: Vec<u8>, piece: usize, pause: Duration) -> reqwest::Body {
    let chunks: Vec<Vec<u8>> = data.chunks(piece).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks).then(move |c| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, std::io::Error>(c)
    });
    reqwest::Body::wrap_stream(stream)
}

/// kill -9 of the node serving a PATCH mid-body, twice (once while the client pauses, once
/// while it is still writing), each time resuming through the balancer: the acknowledged
/// prefix survives, nothing unsent appears, the upload of `size` bytes (at least 16 MiB)
/// finishes exact on the nodes left. The cluster needs a short `--lease-ttl` (2s).
///
/// Returns the upload's URL and bytes.
pub async fn kill9_mid_patch_then_resume(
    cluster: &mut Cluster,
    size: usize,
) -> Result<(String, Vec<u8>)> {
    ensure!(
        size >= 16 * MIB,
        "the kill -9 scenario needs 16 MiB or more"
    );
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let data = random_bytes(size);
    let url = t.create(data.len() as u64).await?;
    let mut acknowledged = t.patch_ok(&url, 0, data[..MIB + 1].to_vec()).await? as usize;

    for (round, victim) in [(1, 1usize), (2, 2usize)] {
        let start = acknowledged;
        let direct = cluster.at_node(victim, &url)?;
        let mut patch = RawPatch::open(&direct, start, data.len() - start).await?;
        let counter = patch.sent.clone();
        let want = 5 * MIB + 12_345;
        if round == 1 {
            // 5 MiB, then a pause long enough for the node to read it all, then kill -9.
            patch
                .send(
                    &data[start..start + want],
                    256 * 1024,
                    Duration::from_millis(10),
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.nodes[victim].kill9().await?;
            drop(patch);
        } else {
            // Keep writing while the node is killed under the client.
            let body = data[start..].to_vec();
            let writer = tokio::spawn(async move {
                let _ = patch.send(&body, 64 * 1024, Duration::from_millis(2)).await;
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while (counter.load(Ordering::SeqCst) as usize) < want {
                ensure!(
                    Instant::now() < deadline,
                    "could not send {want} bytes in 30s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cluster.nodes[victim].kill9().await?;
            tokio::time::timeout(Duration::from_secs(30), writer)
                .await
                .context("the writer did not notice the killed node")??;
        }
        let sent = counter.load(Ordering::SeqCst) as usize;
        let mut seen = Seen::default();
        let offset = head_offset(
            &t,
            &url,
            Instant::now() + Duration::from_secs(20),
            &mut seen,
        )
        .await
        .with_context(|| format!("round {round}: HEAD through the balancer"))?;
        ensure!(
            offset >= start && offset <= start + sent,
            "round {round}: after kill -9 of node {victim} the offset is {offset}; expected \
             between the acknowledged {start} and the {} bytes sent",
            start + sent
        );
        check_committed(&t, &url, &data, offset, cluster.reads_unfinished)
            .await
            .with_context(|| format!("round {round}: after kill -9 of node {victim}"))?;
        eprintln!(
            "round {round}: node {victim} killed after {sent} bytes of {start}..; offset now \
             {offset}; HEAD saw {seen:?}"
        );
        // Some progress through the balancer before the next round (the dead node's lease
        // runs out first: 423 meanwhile).
        let next = (offset + 2 * MIB + 3).min(data.len());
        let seen = upload_resiliently(
            &t,
            &url,
            &data[..next],
            MIB,
            Duration::ZERO,
            Duration::from_secs(30),
        )
        .await
        .with_context(|| format!("round {round}: resuming through the balancer"))?;
        eprintln!("round {round}: resumed to {next}, saw {seen:?}");
        acknowledged = next;
    }

    let seen = upload_resiliently(
        &t,
        &url,
        &data,
        4 * MIB,
        Duration::ZERO,
        Duration::from_secs(40),
    )
    .await?;
    eprintln!("finished through the balancer, saw {seen:?}");
    check_exact(&t, &url, &data).await?;
    // The node left answers the same bytes directly.
    let direct = Ctx::for_endpoint(&cluster.nodes[0].endpoint)?;
    check_exact(&direct, &cluster.at_node(0, &url)?, &data).await?;
    // The records live in the shared coordinator under the cluster's prefix.
    let keys = cluster.coordinator_keys().await?;
    ensure!(
        !keys.is_empty(),
        "no key under the cluster's prefix in its coordinator: are the nodes using it?"
    );
    Ok((url, data))
}

/// The zombie: SIGSTOP the node serving a PATCH of `size` bytes (at least 4 MiB) until its
/// lease expired, finish the upload through another node, SIGCONT the stopped node and let
/// its request (of other bytes) run to the end. Its commit is refused, the final bytes are
/// exactly the client's, and nothing acknowledged changed. The cluster needs a short
/// `--lease-ttl` (2s).
///
/// Returns the upload's URL and bytes.
pub async fn zombie_writer_cannot_commit(
    cluster: &Cluster,
    size: usize,
) -> Result<(String, Vec<u8>)> {
    ensure!(size >= 4 * MIB, "the zombie scenario needs 4 MiB or more");
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let data = random_bytes(size);
    let zombie_data = random_bytes(data.len());
    let url = t.create(data.len() as u64).await?;
    let acknowledged = t.patch_ok(&url, 0, data[..MIB].to_vec()).await? as usize;

    // Node 1 gets a slow PATCH of *different* bytes (so any of them showing up is visible).
    let zombie = 1;
    let mut patch = RawPatch::open(
        &cluster.at_node(zombie, &url)?,
        acknowledged,
        data.len() - acknowledged,
    )
    .await?;
    let first = 2 * MIB;
    patch
        .send(
            &zombie_data[acknowledged..acknowledged + first],
            64 * 1024,
            Duration::from_millis(5),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[zombie].signal("STOP")?;
    eprintln!("node {zombie} stopped after {first} bytes of its PATCH");
    // Past the 2s lease.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // Node 2 resumes and finishes the upload with the client's real bytes.
    let other = Ctx::for_endpoint(&cluster.nodes[2].endpoint)?;
    let other_url = cluster.at_node(2, &url)?;
    let mut seen = Seen::default();
    let offset = head_offset(
        &other,
        &other_url,
        Instant::now() + Duration::from_secs(10),
        &mut seen,
    )
    .await?;
    ensure!(
        offset == acknowledged,
        "with node {zombie} stopped mid-PATCH, node 2 says offset {offset}; expected the \
         acknowledged {acknowledged} (the stopped node cannot have committed)"
    );
    let seen = upload_resiliently(
        &other,
        &other_url,
        &data,
        2 * MIB,
        Duration::ZERO,
        Duration::from_secs(20),
    )
    .await
    .context("finishing the upload on node 2 while node 1 is stopped")?;
    eprintln!("node 2 finished the upload, saw {seen:?}");
    check_exact(&other, &other_url, &data).await?;
    // Through node 2: the balancer may pick the stopped node, and that GET would hang.
    let before = download(&other, &other_url).await?;

    // Wake the zombie and let its request run to the end.
    cluster.nodes[zombie].signal("CONT")?;
    let rest = zombie_data[acknowledged + first..].to_vec();
    let writer = async {
        // The node may stop reading (lease lost): a failed write is fine.
        let _ = patch.send(&rest, 64 * 1024, Duration::from_millis(1)).await;
        patch.response(Duration::from_secs(30)).await
    };
    let response = writer.await.context("the resumed zombie's response")?;
    eprintln!(
        "zombie node {zombie} answered: {:?}",
        response.as_ref().map(|(s, h)| (s, h.lines().next()))
    );
    if let Some((status, head)) = &response {
        ensure!(
            !(200..300).contains(status),
            "DESIGN (fencing): the zombie node's PATCH, whose lease expired while it was \
             stopped, must not commit; it answered {status}:\n{head}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nothing changed, whichever node answers.
    for (name, ctx, u) in [
        ("the balancer", &t, url.clone()),
        (
            "the zombie node",
            &Ctx::for_endpoint(&cluster.nodes[zombie].endpoint)?,
            cluster.at_node(zombie, &url)?,
        ),
        ("node 2", &other, other_url.clone()),
    ] {
        let after = download(ctx, &u).await?;
        ensure!(
            after == before,
            "DESIGN (fencing): after SIGCONT of the zombie, GET via {name} returns {} bytes \
             (sha256 {}), before it returned {} bytes (sha256 {})",
            after.len(),
            sha256_hex(&after),
            before.len(),
            sha256_hex(&before)
        );
        ensure!(
            ctx.offset(&u).await? as usize == data.len(),
            "HEAD via {name} after SIGCONT"
        );
    }
    check_exact(&t, &url, &data).await?;
    Ok((url, data))
}

/// Two clients PATCH the same upload of `size` bytes at the same offset at once, through
/// different nodes, round after round: each gets 204, 409 or 423; at most one of them moves
/// the offset; the committed bytes are always a prefix of the data (where they can be read
/// before the end); the result is exact.
///
/// Returns the upload's URL and bytes.
pub async fn two_clients_patch_one_upload(
    cluster: &Cluster,
    size: usize,
) -> Result<(String, Vec<u8>)> {
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let data = random_bytes(size);
    let url = t.create(data.len() as u64).await?;
    let clients = [
        (
            Ctx::for_endpoint(&cluster.nodes[0].endpoint)?,
            cluster.at_node(0, &url)?,
        ),
        (
            Ctx::for_endpoint(&cluster.nodes[1].endpoint)?,
            cluster.at_node(1, &url)?,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut rounds = 0;
    loop {
        let offset = t.offset(&url).await? as usize;
        if offset == data.len() {
            break;
        }
        rounds += 1;
        ensure!(
            Instant::now() < deadline && rounds <= 30,
            "not finished after {rounds} rounds (offset {offset})"
        );
        // At most 2 MiB per round, at ~12 MiB/s each, the second starting 100 ms later.
        let end = (offset + 2 * MIB).min(data.len());
        let send = |i: usize| {
            let (ctx, u) = &clients[i];
            let body = data[offset..end].to_vec();
            let len = body.len();
            let delay = Duration::from_millis(100 * i as u64);
            async move {
                tokio::time::sleep(delay).await;
                ctx.tus(Method::PATCH, u)
                    .header("Content-Type", OFFSET_OCTET_STREAM)
                    .header("Upload-Offset", offset.to_string())
                    .header("Content-Length", len.to_string())
                    .body(slow_body(body, 64 * 1024, Duration::from_millis(5)))
                    .send()
                    .await
            }
        };
        let (a, b) = tokio::join!(send(0), send(1));
        let mut advanced = Vec::new();
        let mut outcome = Vec::new();
        for (name, r) in [("node 0", a), ("node 1", b)] {
            let resp = r.with_context(|| {
                format!("round {rounds}: the PATCH through {name} got no HTTP response")
            })?;
            let status = resp.status().as_u16();
            outcome.push(format!(
                "{name}: {status} {:?}",
                header(&resp, "Upload-Offset")
            ));
            ensure!(
                matches!(status, 204 | 409 | 423),
                "round {rounds}: concurrent PATCH through {name} answered {status}; expected \
                 204, 409 or 423"
            );
            if status == 423 {
                ensure!(
                    header(&resp, "Retry-After").is_some(),
                    "423 without Retry-After"
                );
            }
            if status == 204 {
                let new = header_u64(&resp, "Upload-Offset", "PATCH 204 Upload-Offset")? as usize;
                ensure!(
                    new >= offset && new <= end,
                    "round {rounds}: {name} 204 with Upload-Offset {new} outside {offset}..={end}"
                );
                if new > offset {
                    advanced.push((name, new));
                }
            }
        }
        eprintln!("round {rounds} at {offset}: {}", outcome.join(", "));
        ensure!(
            advanced.len() <= 1,
            "DESIGN (one writer per offset): both writers committed from offset {offset}: \
             {advanced:?}"
        );
        let now = t.offset(&url).await? as usize;
        ensure!(
            now >= offset && now <= end,
            "round {rounds}: offset {now} after PATCHes of {offset}..{end}"
        );
        if let Some((_, new)) = advanced.first() {
            ensure!(
                now == *new,
                "round {rounds}: acknowledged {new}, HEAD says {now}"
            );
        }
        check_committed(&t, &url, &data, now, cluster.reads_unfinished).await?;
    }
    check_exact(&t, &url, &data).await?;
    Ok((url, data))
}

/// The shared coordinator (Redis, etcd) killed (kill -9) and started again on the same port
/// and data while three clients upload through the balancer: clients see 503 with
/// Retry-After meanwhile, /readyz fails while it is down and recovers, every upload
/// finishes exact.
pub async fn coordinator_restart_during_uploads(cluster: &mut Cluster) -> Result<()> {
    let admin: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.admin
                .clone()
                .context("the node printed no `admin on` line (is --admin-port supported?)")
        })
        .collect::<Result<_>>()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let ready = |i: usize| {
        let url = format!("{}readyz", admin[i]);
        let http = http.clone();
        async move { http.get(&url).send().await.map(|r| r.status().as_u16()) }
    };
    for (i, base) in admin.iter().enumerate() {
        ensure!(
            ready(i).await.context("/readyz")? == 200,
            "node {i}: /readyz before the coordinator restart"
        );
        let health = http.get(format!("{base}healthz")).send().await?;
        ensure!(health.status() == 200, "node {i}: /healthz");
    }

    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let uploads = ResilientUploads::start(&t, 3, 8 * MIB + 99, Duration::from_secs(50)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let offsets_before: Vec<usize> = {
        let mut v = Vec::new();
        for (url, _) in &uploads.uploads {
            v.push(t.offset(url).await? as usize);
        }
        v
    };
    cluster.kill_coordinator().await?;
    let down_at = Instant::now();
    eprintln!("coordinator killed; upload offsets then: {offsets_before:?}");

    // /readyz fails on every node while the coordinator is down.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ready(i).await {
                Ok(200) => {}
                Ok(_) | Err(_) => break,
            }
            ensure!(
                Instant::now() < deadline,
                "node {i}: /readyz still answers 200 10s after the coordinator was killed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A request that needs the coordinator answers 503 with Retry-After.
    let resp = t.head(&uploads.uploads[0].0).await?;
    ensure!(
        resp.status() == 503,
        "HEAD through the balancer while the coordinator is down: expected 503, got {}",
        resp.status()
    );
    ensure!(
        header(&resp, "Retry-After").is_some(),
        "503 while the coordinator is down must carry Retry-After"
    );
    let resp = t.patch(&uploads.uploads[0].0, 0, b"x".to_vec()).await?;
    ensure!(
        resp.status() == 503 && header(&resp, "Retry-After").is_some(),
        "PATCH while the coordinator is down: expected 503 with Retry-After, got {} {:?}",
        resp.status(),
        header(&resp, "Retry-After")
    );
    let wait = Duration::from_secs(2).saturating_sub(down_at.elapsed());
    tokio::time::sleep(wait).await;

    cluster.start_coordinator_again().await?;
    eprintln!("coordinator started again after {:?}", down_at.elapsed());
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(ready(i).await, Ok(200)) {
            ensure!(
                Instant::now() < deadline,
                "node {i}: /readyz not 200 within 20s of the coordinator being back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let total_503 = uploads
        .finish(&t)
        .await
        .context("after the coordinator restart")?;
    ensure!(
        total_503 > 0,
        "no uploader saw a 503 while the coordinator was down"
    );
    Ok(())
}

/// A new upload of `size` bytes through `t`, sent by a resuming client in 1 MiB PATCHes
/// within 30 s, then read back sha256-exact: that the cluster serves again after a fault.
pub async fn a_new_upload_is_exact(t: &Ctx, size: usize) -> Result<()> {
    let data = random_bytes(size);
    let url = t.create(data.len() as u64).await?;
    upload_resiliently(t, &url, &data, MIB, Duration::ZERO, Duration::from_secs(30)).await?;
    check_exact(t, &url, &data).await
}

/// Uploads sent at once by resuming clients ([`upload_resiliently`]), each in 128 KiB
/// PATCHes 40 ms apart, so that a fault injected meanwhile meets them all.
pub struct ResilientUploads {
    /// Each upload's URL and bytes.
    pub uploads: Vec<(String, Vec<u8>)>,
    clients: Vec<tokio::task::JoinHandle<Result<Seen>>>,
}

impl ResilientUploads {
    /// Creates `count` uploads of `size` random bytes through `t` and starts their clients,
    /// each of which gives up after `within`.
    pub async fn start(t: &Ctx, count: usize, size: usize, within: Duration) -> Result<Self> {
        let mut uploads = Vec::new();
        for _ in 0..count {
            let data = random_bytes(size);
            let url = t.create(data.len() as u64).await?;
            uploads.push((url, data));
        }
        let clients = uploads
            .iter()
            .cloned()
            .map(|(url, data)| {
                let t = t.clone();
                tokio::spawn(async move {
                    upload_resiliently(
                        &t,
                        &url,
                        &data,
                        128 * 1024,
                        Duration::from_millis(40),
                        within,
                    )
                    .await
                })
            })
            .collect();
        Ok(Self { uploads, clients })
    }

    /// Waits for every client and checks every upload sha256-exact; a 423 or 503 without
    /// Retry-After fails. Returns how many 503s the clients saw in all.
    pub async fn finish(self, t: &Ctx) -> Result<usize> {
        Ok(self.finish_each(t).await?.iter().sum())
    }

    /// [`ResilientUploads::finish`], returning how many 503s each upload's client saw.
    pub async fn finish_each(self, t: &Ctx) -> Result<Vec<usize>> {
        let mut each_503 = Vec::new();
        for (i, client) in self.clients.into_iter().enumerate() {
            let seen = client.await.context("uploader task")??;
            eprintln!(
                "upload {i}: 503 x{}, other statuses {:?}, transport errors {}",
                seen.count(503),
                seen.statuses
                    .iter()
                    .filter(|s| !matches!(**s, 204 | 503))
                    .collect::<Vec<_>>(),
                seen.transport_errors
            );
            ensure!(
                seen.missing_retry_after.is_empty(),
                "upload {i}: responses without Retry-After: {:?}",
                seen.missing_retry_after
            );
            each_503.push(seen.count(503));
        }
        for (i, (url, data)) in self.uploads.iter().enumerate() {
            check_exact(t, url, data)
                .await
                .with_context(|| format!("upload {i}"))?;
        }
        Ok(each_503)
    }
}

/// The fault scenarios every shared coordinator must survive, as tests of a cluster of three
/// nodes of `$backend` behind nginx, with the lease TTL at 2 s where a scenario waits past
/// it:
///
/// - kill -9 of the node serving a PATCH mid-body, twice, each time resuming through the
///   balancer ([`kill9_mid_patch_then_resume`]);
/// - the zombie: the node serving a PATCH SIGSTOPped past its lease, the upload finished
///   through another node, the zombie resumed: its commit is refused
///   ([`zombie_writer_cannot_commit`]);
/// - two clients PATCHing one upload at once through different nodes
///   ([`two_clients_patch_one_upload`]).
///
/// What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
/// committed twice, and every upload ends byte-identical (sha256) to what the client sent.
#[macro_export]
macro_rules! cluster_fault_suite {
    ($backend:expr) => {
        async fn start_for_faults(extra: &[&str]) -> ::anyhow::Result<$crate::cluster::Cluster> {
            let cluster = $crate::cluster::Cluster::start(
                &$backend,
                $crate::cluster::Balancer::Nginx,
                3,
                extra,
            )
            .await?;
            eprintln!("cluster {}: balancer {}", cluster.name(), cluster.endpoint);
            Ok(cluster)
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kill9_mid_patch_then_resume_through_balancer() -> ::anyhow::Result<()> {
            let mut cluster = start_for_faults(&["--lease-ttl", "2s"]).await?;
            $crate::faults::kill9_mid_patch_then_resume(&mut cluster, 24 * 1024 * 1024 + 777)
                .await?;
            Ok(())
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn zombie_writer_cannot_commit_after_losing_its_lease() -> ::anyhow::Result<()> {
            let cluster = start_for_faults(&["--lease-ttl", "2s"]).await?;
            $crate::faults::zombie_writer_cannot_commit(&cluster, 8 * 1024 * 1024 + 5).await?;
            Ok(())
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_clients_patch_one_upload_through_different_nodes() -> ::anyhow::Result<()> {
            let cluster = start_for_faults(&[]).await?;
            $crate::faults::two_clients_patch_one_upload(&cluster, 6 * 1024 * 1024 + 321).await?;
            Ok(())
        }
    };
}
