//! Cluster mode on S3: three `tusk` nodes storing upload bytes in one bucket of a real
//! S3-compatible server (moto's, started on loopback by `tusk_tests::s3`) with records and
//! leases in one Redis, behind nginx running deploy/nginx.conf.
//!
//! - the fault scenarios of `tusk_tests::faults` (kill -9 mid-PATCH, a zombie writer, two
//!   clients on one upload), with 5 MiB parts so every upload spans several of them, on
//!   Redis and again on etcd;
//! - termination: nothing of a terminated upload stays in the bucket;
//! - exactness: many small PATCHes of mixed sizes across part boundaries, and 1 GiB in one
//!   streamed PATCH.
//!
//! Each test ends with the sha256 of a GET equal to the source's, and with a look into the
//! bucket: the finished upload is exactly one object `<prefix><id>` holding the source's
//! bytes, with no multipart upload and no tail object left of it.
//!
//! moto (`pip install 'moto[server]==5.1.22'`), redis-server, etcd-server and nginx must be installed
//! (tests/run.sh installs them); a missing one fails the test with the install command.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::Method;
use sha2::Digest as _;
use tusk_tests::cluster::{Balancer, Cluster, ClusterBackend};
use tusk_tests::conformance::util::{
    expect, expect_status, header_u64, random_bytes, upload_id, Ctx, OFFSET_OCTET_STREAM,
};
use tusk_tests::deploy::Pair;
use tusk_tests::etcd::Etcd;
use tusk_tests::faults::{self, check_exact};
use tusk_tests::s3::{S3Redis, S3Storage};

const MIB: usize = 1024 * 1024;

/// The smallest part S3 allows, which the node is configured with unless a test says
/// otherwise, so that every upload of a few MiB spans several parts.
const PART_SIZE: u64 = 5 * 1024 * 1024;

/// 5 MiB parts; leftovers (tail objects and multipart uploads no record refers to) are swept
/// once they are 3 s old: for the tests where a node dies or is fenced off mid-write, or an
/// upload is terminated, and what is left must go. The node requires the grace to be longer
/// than the lease TTL, so these tests run with [`SWEEP_ARGS`].
const SWEEPING: S3Redis = S3Redis {
    part_size: Some(PART_SIZE),
    leftover_grace: Some("3s"),
};

/// A 2 s lease TTL (a dead node's uploads free up fast; shorter than the leftover grace) and a
/// sweep every second.
const SWEEP_ARGS: &[&str] = &["--lease-ttl", "2s", "--sweep-interval", "1s"];

/// 5 MiB parts, the default leftover grace: whatever is clean afterwards was cleaned by the
/// node's own commit path, not by the sweeper.
const NO_SWEEP: S3Redis = S3Redis {
    part_size: Some(PART_SIZE),
    leftover_grace: None,
};

/// The counter of bytes a storage backend sent a second time (S3: tail bytes folded into a
/// part), labelled by `backend`.
const REWRITTEN: &str = "tusk_storage_bytes_rewritten_total";

/// How long a finished upload's tail objects may take to go (they are removed in the
/// background right after the finishing commit).
const CLEANUP: Duration = Duration::from_secs(10);

/// How long a leftover may take to be swept (3 s grace, 1 s interval, and slack).
const SWEEP: Duration = Duration::from_secs(20);

async fn start_cluster(backend: S3Redis, extra: &[&str]) -> Result<Cluster> {
    start_on(&backend, extra).await
}

/// The same cluster on any coordinator.
async fn start_on(backend: &dyn ClusterBackend, extra: &[&str]) -> Result<Cluster> {
    let cluster = Cluster::start(backend, Balancer::Nginx, 3, extra).await?;
    let s3 = cluster.s3()?;
    eprintln!(
        "cluster {}: balancer {} -> nodes {:?}, redis {:?}, etcd {:?}, moto {} {} bucket {} prefix {}",
        cluster.name(),
        cluster.endpoint,
        cluster.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>(),
        cluster.redis.as_ref().map(|r| r.url()),
        cluster.etcd.as_ref().map(|e| e.url()),
        s3.moto.version,
        s3.moto.endpoint(),
        s3.bucket,
        s3.prefix
    );
    Ok(cluster)
}

/// The bucket holds upload `url` as exactly one object with `data`'s bytes and nothing else
/// of it (no multipart upload, no tail object), within `within`.
async fn assert_bucket_holds(
    cluster: &Cluster,
    url: &str,
    data: &[u8],
    within: Duration,
) -> Result<()> {
    let s3 = cluster.s3()?;
    let id = upload_id(url)?;
    s3.wait_finished_clean(id, data, within)
        .await
        .with_context(|| format!("the bucket after upload {id} finished"))
}

/// kill -9 of the node serving a PATCH mid-body, twice, resuming through the balancer each
/// time (see `faults::kill9_mid_patch_then_resume`): the offset never goes below what was
/// acknowledged nor beyond what was sent, a GET of the unfinished upload answers 409, and the
/// ~17 MiB upload (four 5 MiB parts and a short one) finishes with exact bytes. The bucket
/// then holds exactly the final object: whatever the killed nodes left (parts, tails) is
/// gone once swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_patch_then_resume_through_balancer() -> Result<()> {
    let mut cluster = start_cluster(SWEEPING, SWEEP_ARGS).await?;
    let (url, data) = faults::kill9_mid_patch_then_resume(&mut cluster, 17 * MIB + 777).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// The zombie on S3 (see `faults::zombie_writer_cannot_commit`): a node SIGSTOPped mid-PATCH
/// past its lease, the ~12 MiB upload finished through another node, then SIGCONT: the
/// zombie's PATCH (of other bytes, 9 MiB more, enough for parts of its own) is refused, GETs
/// through every node return the client's bytes, and the bucket's object holds exactly them
/// with nothing else of the upload left once swept: the zombie can neither overwrite the
/// object nor leave parts or tails behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_writer_cannot_commit_after_losing_its_lease() -> Result<()> {
    let cluster = start_cluster(SWEEPING, SWEEP_ARGS).await?;
    let (url, data) = faults::zombie_writer_cannot_commit(&cluster, 12 * MIB + 5).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// Two clients PATCH one ~11 MiB upload at the same offset at once through different nodes,
/// round after round (see `faults::two_clients_patch_one_upload`): at most one commits per
/// round and the result is exact. No sweeping: the losers must leave nothing in the bucket,
/// and the winners' tails go right after the finishing commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_patch_one_upload_through_different_nodes() -> Result<()> {
    let cluster = start_cluster(NO_SWEEP, &[]).await?;
    let (url, data) = faults::two_clients_patch_one_upload(&cluster, 11 * MIB + 321).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await
}

/// S3 storage with etcd for the records and leases: 5 MiB parts, leftovers swept after 3 s.
const SWEEPING_ON_ETCD: Pair<S3Storage, Etcd> = Pair {
    storage: S3Storage {
        part_size: Some(PART_SIZE),
        leftover_grace: Some("3s"),
    },
    coordinator: Etcd,
};

/// The kill -9 scenario above with etcd as the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_patch_then_resume_on_etcd() -> Result<()> {
    let mut cluster = start_on(&SWEEPING_ON_ETCD, SWEEP_ARGS).await?;
    let (url, data) = faults::kill9_mid_patch_then_resume(&mut cluster, 17 * MIB + 777).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// The zombie scenario above with etcd as the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_writer_cannot_commit_on_etcd() -> Result<()> {
    let cluster = start_on(&SWEEPING_ON_ETCD, SWEEP_ARGS).await?;
    let (url, data) = faults::zombie_writer_cannot_commit(&cluster, 12 * MIB + 5).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// Two clients on one upload through different nodes, with etcd as the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_patch_one_upload_on_etcd() -> Result<()> {
    let cluster = start_on(
        &Pair {
            storage: S3Storage {
                part_size: Some(PART_SIZE),
                leftover_grace: None,
            },
            coordinator: Etcd,
        },
        &[],
    )
    .await?;
    let (url, data) = faults::two_clients_patch_one_upload(&cluster, 11 * MIB + 321).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await
}

/// DELETE of an unfinished upload that has a part and a tail in the bucket, and of a
/// finished one: afterwards (and after sweeping) nothing named after either upload is left,
/// neither an object nor a multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_leaves_nothing_in_the_bucket() -> Result<()> {
    let cluster = start_cluster(SWEEPING, SWEEP_ARGS).await?;
    let s3 = cluster.s3()?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;

    // Unfinished: 5 MiB + 1000 bytes (a part's worth and more), then 2 MiB + 3 more.
    let data = random_bytes(12 * MIB);
    let url = t.create(data.len() as u64).await?;
    let first = 5 * MIB + 1000;
    let second = first + 2 * MIB + 3;
    t.patch_ok(&url, 0, data[..first].to_vec()).await?;
    t.patch_ok(&url, first as u64, data[first..second].to_vec())
        .await?;
    let id = upload_id(&url)?;
    let before = s3.upload_objects(id).await?;
    eprintln!("unfinished upload {id} at {second} bytes in the bucket: {before}");
    ensure!(
        !before.is_empty(),
        "S3: an unfinished upload with {second} bytes committed has nothing in the bucket \
         (expected a multipart upload on {} and/or tail objects)",
        before.key
    );
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE of an unfinished upload").await?;
    s3.wait_nothing_left(id, SWEEP)
        .await
        .context("after DELETE of the unfinished upload")?;

    // Finished: one part and a short last one.
    let data = random_bytes(6 * MIB + 1);
    let url = t.upload(&data).await?;
    check_exact(&t, &url, &data).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await?;
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE of a finished upload").await?;
    s3.wait_nothing_left(upload_id(&url)?, SWEEP)
        .await
        .context("after DELETE of the finished upload")?;
    Ok(())
}

/// Sums the samples of `series` (a metric name with its exact labels, e.g.
/// `tusk_storage_bytes_rewritten_total{backend="s3"}`) over the nodes' admin /metrics; fails if
/// a node does not declare the metric `name` (a node that never counted anything may have no
/// sample of a labelled counter yet).
async fn metric_total(cluster: &Cluster, name: &str, series: &str) -> Result<f64> {
    let mut total = 0.0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let admin = node
            .admin
            .as_ref()
            .with_context(|| format!("node {i} printed no `admin on` line"))?;
        let scrape = reqwest::get(format!("{admin}metrics"))
            .await
            .with_context(|| format!("node {i}: GET /metrics"))?
            .text()
            .await?;
        ensure!(
            scrape.contains(&format!("# TYPE {name} counter")),
            "node {i}: /metrics does not declare the counter {name}"
        );
        total += scrape
            .lines()
            .filter_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .sum::<f64>();
    }
    Ok(total)
}

/// One ~20 MiB upload sent through the balancer (so through every node) as many PATCHes of
/// mixed sizes — 1 KiB, 100 KiB, 4.9 MiB, 777777 bytes, 1 byte, 64 KiB, 3 bytes, 1 MiB + 7 —
/// that cross the 5 MiB part boundaries at odd places: GET and the bucket's object both have
/// the source's sha256, nothing but the object is left, and the bytes the nodes wrote to tail
/// objects and sent again inside a part (`tusk_storage_bytes_rewritten_total{backend="s3"}`,
/// summed over the nodes) are more than none and at most the upload's size: each byte is
/// sent again at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_patches_across_parts_are_exact() -> Result<()> {
    let cluster = start_cluster(NO_SWEEP, &[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let pattern = [
        1024,
        100 * 1024,
        5_138_022,
        777_777,
        1,
        64 * 1024,
        3,
        MIB + 7,
    ];
    let sizes: Vec<usize> = std::iter::repeat_n(pattern, 3)
        .flatten()
        .chain([4321])
        .collect();
    let total: usize = sizes.iter().sum();
    let data = random_bytes(total);
    let url = t.create(total as u64).await?;
    let mut offset = 0usize;
    for (i, size) in sizes.iter().enumerate() {
        let end = offset + size;
        offset = t
            .patch_ok(&url, offset as u64, data[offset..end].to_vec())
            .await
            .with_context(|| format!("PATCH {i} of {size} bytes at {offset}"))?
            as usize;
    }
    ensure!(
        offset == total,
        "offset {offset} after all PATCHes of {total}"
    );
    check_exact(&t, &url, &data).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await?;
    let resent = metric_total(
        &cluster,
        REWRITTEN,
        &format!("{REWRITTEN}{{backend=\"s3\"}}"),
    )
    .await?;
    eprintln!(
        "{} PATCHes, {total} bytes, {} parts of {PART_SIZE}: tail bytes re-sent {resent}",
        sizes.len(),
        total.div_ceil(PART_SIZE as usize)
    );
    ensure!(
        resent > 0.0,
        "{REWRITTEN}{{backend=\"s3\"}} is 0 over the nodes, yet PATCHes of 1 KiB and 100 KiB \
         can only reach a 5 MiB part through tail objects sent again: is it counted?"
    );
    ensure!(
        resent <= total as f64,
        "{REWRITTEN}{{backend=\"s3\"}} is {resent} over the nodes for one upload of {total} \
         bytes: a byte written to a tail object must be sent again in a part at most once"
    );
    Ok(())
}

/// A deterministic pseudo-random byte source of `len` bytes (SplitMix64 per 8-byte word),
/// produced in 1 MiB chunks on demand so a GiB never sits in memory.
struct PseudoRandom {
    seed: u64,
    len: u64,
}

impl PseudoRandom {
    const CHUNK: u64 = MIB as u64;

    fn chunks(&self) -> u64 {
        self.len.div_ceil(Self::CHUNK)
    }

    fn chunk(&self, i: u64) -> Bytes {
        let start = i * Self::CHUNK;
        let n = (self.len - start).min(Self::CHUNK) as usize;
        let mut buf = vec![0u8; n];
        for (j, word) in buf.chunks_mut(8).enumerate() {
            let w = start / 8 + j as u64;
            let mut z = self
                .seed
                .wrapping_add(w.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
        }
        Bytes::from(buf)
    }

    fn sha256(&self) -> String {
        let mut hasher = sha2::Sha256::new();
        for i in 0..self.chunks() {
            hasher.update(self.chunk(i));
        }
        hex::encode(hasher.finalize())
    }

    fn body(self) -> reqwest::Body {
        let stream = futures_util::stream::iter(0..self.chunks())
            .map(move |i| Ok::<_, std::io::Error>(self.chunk(i)));
        reqwest::Body::wrap_stream(stream)
    }
}

/// 1 GiB (and 4321 bytes, so the last part is short) in a single PATCH through the balancer,
/// streamed from a generated source, with the node's default 16 MiB parts: 204 with the full
/// offset, then the sha256 of a streamed GET and of the bucket's object equal the source's,
/// and nothing but the object is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_in_one_patch_is_exact() -> Result<()> {
    let cluster = start_cluster(S3Redis::DEFAULT, &[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let len: u64 = (1 << 30) + 4321;
    let seed = rand::random::<u64>();
    let want = PseudoRandom { seed, len }.sha256();
    let url = t.create(len).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()?;
    let started = std::time::Instant::now();
    let resp = client
        .request(Method::PATCH, &url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", OFFSET_OCTET_STREAM)
        .header("Upload-Offset", "0")
        .header("Content-Length", len.to_string())
        .body(PseudoRandom { seed, len }.body())
        .send()
        .await
        .context("the 1 GiB PATCH got no HTTP response")?;
    let resp = expect(resp, 204, "core: the 1 GiB PATCH answers 204").await?;
    let offset = header_u64(&resp, "Upload-Offset", "PATCH 204 carries Upload-Offset")?;
    ensure!(
        offset == len,
        "the 1 GiB PATCH: Upload-Offset {offset}, expected {len}"
    );
    eprintln!("1 GiB PATCH took {:?}", started.elapsed());

    let started = std::time::Instant::now();
    let resp = client
        .get(&url)
        .send()
        .await
        .context("GET of the 1 GiB upload")?;
    let resp = expect_status(resp, 200, "GET of the finished 1 GiB upload").await?;
    let mut hasher = sha2::Sha256::new();
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("GET of the 1 GiB upload: reading the body")?;
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let got_sha = hex::encode(hasher.finalize());
    ensure!(
        got == len && got_sha == want,
        "GET of the 1 GiB upload: {got} bytes with sha256 {got_sha}, sent {len} bytes with \
         sha256 {want}"
    );
    eprintln!("1 GiB GET took {:?}", started.elapsed());

    let s3 = cluster.s3()?;
    let id = upload_id(&url)?;
    s3.inspector
        .wait_finished_clean(&s3.prefix, id, len, &want, CLEANUP)
        .await
        .context("the bucket after the 1 GiB upload")?;
    Ok(())
}
