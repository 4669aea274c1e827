//! Progress commits: while one long PATCH streams, what arrived is committed every
//! `uploads.commit_interval_bytes` (S3: at the next part boundary), keeping the lease. So a
//! client polling HEAD sees the upload grow, and a node killed mid-PATCH keeps all but the
//! last interval: checked by kill -9, restart, HEAD, resume, sha256 of the whole upload.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tusk_tests::cluster::{Balancer, Cluster, FsRedis, FS_ETCD_NGINX};
use tusk_tests::conformance::util::{random_bytes, Ctx};
use tusk_tests::deploy::{Embedded, FsEmbedded, Pair, SingleNode, StorageHalf};
use tusk_tests::faults;
use tusk_tests::rawpatch::RawPatch;
use tusk_tests::s3::S3Storage;

const MIB: usize = 1024 * 1024;
const INTERVAL: usize = 4 * MIB;

/// A config file with a small commit interval (the default, 64 MiB, would make these tests
/// send hundreds of MiB) and a long time interval, so only bytes cut the stretches.
fn interval_config(dir: &Path) -> Result<String> {
    let path = dir.join("progress.toml");
    std::fs::write(
        &path,
        format!("[uploads]\ncommit_interval_bytes = {INTERVAL}\ncommit_interval = \"1h\"\n"),
    )?;
    Ok(path.display().to_string())
}

/// Sends the rest from the server's offset in one PATCH, then compares sha256 of a GET.
async fn finish_and_verify(t: &Ctx, url: &str, data: &[u8]) -> Result<()> {
    let from = t.offset(url).await?;
    t.patch_ok(url, from, data[from as usize..].to_vec())
        .await?;
    faults::check_exact(t, url, data).await
}

/// Streams most of a long PATCH, waits until the node has read it, kills it with -9,
/// restarts it: HEAD must show all but at most `interval` of what was sent (before progress
/// commits: 0), and the upload must finish byte-exact from there.
async fn kill9_keeps_all_but_the_last_interval<S: StorageHalf>(
    pair: &Pair<S, Embedded>,
    interval: usize,
) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = interval_config(scratch.path())?;
    let mut single = SingleNode::start(pair, &["--config", &config]).await?;
    let data = random_bytes(40 * MIB + 123);
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let url = t.create(data.len() as u64).await?;

    let sent = 30 * MIB + 4321;
    let mut patch = RawPatch::open(&url, 0, data.len()).await?;
    patch
        .send(&data[..sent], 256 * 1024, Duration::ZERO)
        .await?;
    // Long enough for the node to read and store everything sent; not a progress deadline
    // (the time interval is an hour).
    tokio::time::sleep(Duration::from_secs(2)).await;
    single.node.kill9().await?;
    drop(patch);

    single.node.restart().await?;
    let kept = t.offset(&url).await? as usize;
    eprintln!(
        "{}: sent {sent}, kill -9, kept {kept} ({} MiB of {} MiB)",
        pair.name(),
        kept / MIB,
        sent / MIB
    );
    ensure!(
        kept <= sent && kept + interval >= sent,
        "{}: after kill -9 the offset is {kept}; {sent} bytes were sent and at most one \
         interval ({interval}) may be lost",
        pair.name()
    );
    finish_and_verify(&t, &url, &data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_kill9_mid_patch_keeps_all_but_the_last_interval() -> Result<()> {
    kill9_keeps_all_but_the_last_interval(&FsEmbedded, INTERVAL).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_kill9_mid_patch_keeps_all_but_the_last_interval() -> Result<()> {
    // Parts of 5 MiB: stretches end at the first part boundary after 4 MiB, so one is lost
    // at most.
    let part = 5 * MIB;
    let pair = Pair {
        storage: S3Storage {
            part_size: Some(part as u64),
            ..S3Storage::DEFAULT
        },
        coordinator: Embedded,
    };
    kill9_keeps_all_but_the_last_interval(&pair, 2 * part).await
}

/// A client polling HEAD while its PATCH streams sees the committed progress, and the PATCH
/// still ends with 204 at the full offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_during_a_long_patch_shows_progress() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = interval_config(scratch.path())?;
    let single = SingleNode::start(&FsEmbedded, &["--config", &config]).await?;
    let data = random_bytes(20 * MIB);
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let url = t.create(data.len() as u64).await?;

    let mut patch = RawPatch::open(&url, 0, data.len()).await?;
    let sent = 3 * INTERVAL + 1000;
    patch
        .send(&data[..sent], 256 * 1024, Duration::ZERO)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = t.offset(&url).await? as usize;
    while seen < 3 * INTERVAL && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = t.offset(&url).await? as usize;
    }
    ensure!(
        seen >= 3 * INTERVAL && seen <= sent,
        "HEAD during the PATCH answered {seen}; {sent} were sent, progress commits every \
         {INTERVAL} should show at least {}",
        3 * INTERVAL
    );
    patch
        .send(&data[sent..], 256 * 1024, Duration::ZERO)
        .await?;
    let (status, head) = patch
        .response(Duration::from_secs(20))
        .await?
        .context("no response to the PATCH")?;
    ensure!(status == 204, "PATCH answered {status}: {head}");
    finish_and_verify(&t, &url, &data).await
}

/// The same in a cluster: the node serving the PATCH is killed and stays dead; another node
/// answers HEAD with all but the last interval and finishes the upload byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill9_mid_patch_keeps_all_but_the_last_interval() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = interval_config(scratch.path())?;
    let mut cluster = Cluster::start(
        &FsRedis,
        Balancer::Nginx,
        2,
        &["--lease-ttl", "2s", "--config", &config],
    )
    .await?;
    let data = random_bytes(40 * MIB + 123);
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let url = t.create(data.len() as u64).await?;

    let sent = 30 * MIB + 4321;
    let mut patch = RawPatch::open(&cluster.at_node(1, &url)?, 0, data.len()).await?;
    patch
        .send(&data[..sent], 256 * 1024, Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[1].kill9().await?;
    drop(patch);

    let survivor = cluster.at_node(0, &url)?;
    let kept = t.offset(&survivor).await? as usize;
    eprintln!(
        "{}: sent {sent}, kill -9 of node 1, node 0 says {kept}",
        cluster.name()
    );
    ensure!(
        kept <= sent && kept + INTERVAL >= sent,
        "after kill -9 of the writing node the offset is {kept}; {sent} bytes were sent and \
         at most one interval ({INTERVAL}) may be lost"
    );
    finish_and_verify(&t, &survivor, &data).await
}

/// A client whose connection drops mid-PATCH and resumes at once (HEAD, then PATCH from the
/// offset it got) must be told every byte the server received: the HEAD waits for the
/// dropped PATCH to read what was buffered and commit it (before: it answered the offset
/// from before the PATCH). With the default interval (64 MiB) no progress commit helps here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_right_after_a_cut_sees_every_byte_received() -> Result<()> {
    let single = SingleNode::start(&FsEmbedded, &[]).await?;
    let data = random_bytes(48 * MIB);
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    cut_three_times_and_resume(&t, &url, &url, &data).await
}

/// The same through a cluster, where the client's next connection reaches another node: the
/// HEAD on node 1 right after the PATCH to node 0 was cut asks node 0 to settle that PATCH
/// first (before: node 1 answered the offset from before the PATCH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_right_after_a_cut_sees_every_byte_received_on_another_node() -> Result<()> {
    let cluster = Cluster::start(&FsRedis, Balancer::Nginx, 2, &[]).await?;
    let data = random_bytes(48 * MIB);
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    let (writer, reader) = (cluster.at_node(0, &url)?, cluster.at_node(1, &url)?);
    cut_three_times_and_resume(&t, &writer, &reader, &data).await
}

/// The same on etcd: the settle request goes through etcd (before: the etcd coordinator had
/// no way to reach the other node, and the HEAD answered the offset from before the PATCH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_right_after_a_cut_sees_every_byte_received_on_another_node_on_etcd() -> Result<()> {
    let cluster = Cluster::start(&FS_ETCD_NGINX.backend, Balancer::Nginx, 2, &[]).await?;
    let data = random_bytes(48 * MIB);
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    let (writer, reader) = (cluster.at_node(0, &url)?, cluster.at_node(1, &url)?);
    cut_three_times_and_resume(&t, &writer, &reader, &data).await
}

/// Three rounds of: about 10 MiB sent to `writer` in one PATCH, the connection dropped, HEAD
/// at once on `reader`, which must show at least 99.9% of what was sent; then the rest, and
/// sha256 of the whole upload.
async fn cut_three_times_and_resume(
    t: &Ctx,
    writer: &str,
    reader: &str,
    data: &[u8],
) -> Result<()> {
    let mut acknowledged = 0;
    for round in 1..=3 {
        let mut patch = RawPatch::open(writer, acknowledged, data.len() - acknowledged).await?;
        let sent = acknowledged + 10 * MIB + 1234 * round;
        patch
            .send(&data[acknowledged..sent], 256 * 1024, Duration::ZERO)
            .await?;
        drop(patch);
        let seen = t.offset(reader).await? as usize;
        eprintln!("round {round}: sent up to {sent}, HEAD right after the cut: {seen}");
        ensure!(
            seen <= sent && (seen - acknowledged) as f64 >= 0.999 * (sent - acknowledged) as f64,
            "round {round}: HEAD on {reader} right after the cut answered {seen}; {sent} were \
             sent to {writer} (from {acknowledged}): less than 99.9% kept"
        );
        acknowledged = seen;
    }
    finish_and_verify(t, reader, data).await
}

/// A HEAD on another node while the client is still streaming to node 0 does not wait for
/// the PATCH to end: node 0 answers the settle request once its PATCH waits for the client,
/// and node 1 answers the last progress commit (the bound, 3 s, would be a stalled read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_another_node_during_a_live_patch_answers_promptly() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = interval_config(scratch.path())?;
    let cluster = Cluster::start(&FsRedis, Balancer::Nginx, 2, &["--config", &config]).await?;
    let data = random_bytes(12 * MIB);
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    let (writer, reader) = (cluster.at_node(0, &url)?, cluster.at_node(1, &url)?);
    let mut patch = RawPatch::open(&writer, 0, data.len()).await?;
    let sent = INTERVAL + 1000;
    patch
        .send(&data[..sent], 256 * 1024, Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let seen = t.offset(&reader).await? as usize;
        let took = started.elapsed();
        ensure!(
            seen == INTERVAL,
            "HEAD on node 1 during a live PATCH answered {seen}: the progress commit at \
             {INTERVAL} was expected"
        );
        ensure!(
            took < Duration::from_millis(1500),
            "HEAD on node 1 during a live PATCH took {took:?}: it waited for the PATCH"
        );
    }
    patch
        .send(&data[sent..], 256 * 1024, Duration::ZERO)
        .await?;
    let (status, head) = patch
        .response(Duration::from_secs(20))
        .await?
        .context("no response to the PATCH")?;
    ensure!(status == 204, "PATCH answered {status}: {head}");
    faults::check_exact(&t, &reader, &data).await
}

/// A HEAD while the client streams without a pause answers at once: bytes arriving after the
/// PATCH waited for them show the client is alive, so the read does not wait for a gap in
/// the stream (before: it waited for a 50 ms gap or its 3 s bound, on every HEAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_during_a_steady_stream_answers_at_once() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = interval_config(scratch.path())?;
    let single = SingleNode::start(&FsEmbedded, &["--config", &config]).await?;
    let data = random_bytes(48 * MIB);
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    let mut patch = RawPatch::open(&url, 0, data.len()).await?;
    let body = data.clone();
    let streaming = tokio::spawn(async move {
        patch
            .send(&body, 64 * 1024, Duration::from_millis(2))
            .await
            .map(|()| patch)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        t.offset(&url).await?;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut patch = streaming.await??;
    ensure!(
        slowest < Duration::from_millis(1000),
        "a HEAD during a steady stream took {slowest:?}: it waited for a gap in the stream"
    );
    let (status, head) = patch
        .response(Duration::from_secs(30))
        .await?
        .context("no response to the PATCH")?;
    ensure!(status == 204, "PATCH answered {status}: {head}");
    faults::check_exact(&t, &url, &data).await
}

/// A PATCH whose progress commits come faster than lease renewals keeps its lease past many
/// TTLs: with a 1 s lease (renewed every third of it) and a commit every 100 ms, a body
/// trickled over 4 s through a Redis-leased node answers 204 with every byte, sha256-exact.
/// Before, each stretch started its own renewal timer, so stretches shorter than the
/// renewal interval never renewed: the lease ran out one TTL after the PATCH began, and the
/// PATCH answered 409 (seen as the 1 GiB S3 PATCH failing whenever its stretches all took
/// under 3.3 s of the default 10 s TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_committing_faster_than_renewals_keeps_its_lease_past_the_ttl() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("fast-commits.toml");
    std::fs::write(&config, "[uploads]\ncommit_interval = \"100ms\"\n")?;
    let config = config.display().to_string();
    let cluster = Cluster::start(
        &FsRedis,
        Balancer::Nginx,
        1,
        &["--lease-ttl", "1s", "--config", &config],
    )
    .await?;
    let data = random_bytes(80 * 32 * 1024 + 17);
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let url = t.create(data.len() as u64).await?;
    let mut patch = RawPatch::open(&cluster.at_node(0, &url)?, 0, data.len()).await?;
    let started = std::time::Instant::now();
    // A node that gives up mid-body answers and closes: the send fails, the answer says why.
    let sent = patch
        .send(&data, 32 * 1024, Duration::from_millis(50))
        .await;
    let sent = match sent {
        Ok(()) => "all sent".to_string(),
        Err(error) => format!("cut: {error:#}"),
    };
    let answer = patch.response(Duration::from_secs(20)).await?;
    let took = started.elapsed();
    let (status, head) = answer
        .with_context(|| format!("no response to the trickled PATCH after {took:?} ({sent})"))?;
    ensure!(
        status == 204,
        "a PATCH trickled over {took:?} with a 1 s lease answered {status} ({sent}): {head}"
    );
    ensure!(
        took > Duration::from_secs(3),
        "the PATCH took only {took:?}: it must outlast the 1 s lease several times over"
    );
    faults::check_exact(&t, &url, &data).await
}
