//! Fencing end to end: what a lease-holder removes or writes can never hit what a newer
//! holder of the same upload committed.
//!
//! - A slow S3 under the leftovers sweep: two `tusk` nodes (S3 on moto, Redis) reach moto
//!   through [`S3Proxy`], which holds one listing of the sweep for four lease TTLs. Meanwhile
//!   a PATCH commits more of the upload (a new tail; or the first full part, which opens the
//!   multipart upload). Whatever the sweep then sees in the listing, it must not remove what
//!   that PATCH committed: the PATCH was acknowledged with 204, so its bytes must reach the
//!   finished upload. Before the fix the sweep neither renewed its lease nor checked it, and
//!   deleted the new tail from the record it had loaded at the start: every later PATCH
//!   answered 500 and the acknowledged bytes were lost.
//! - An ID used again: a pre-create hook gives every creation the same ID; the upload is
//!   created, written, terminated, purged, and created again. The second incarnation must get
//!   fencing tokens above the first's (fs target names carry them, so a repeated token could
//!   name a file of the first incarnation) and its bytes must come back exact. On the embedded
//!   coordinator and on Redis, where the per-upload counter goes with the purged record.
//!
//! moto (`pip install 'moto[server]==5.1.22'`) and redis-server must be installed
//! (tests/run.sh installs them); a missing one fails the test with the install command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::routing::post;
use axum::Router;
use reqwest::Method;
use tokio::time::Instant;
use tusk_tests::cluster::{unique_name, RedisServer};
use tusk_tests::conformance::util::{
    header_u64, random_bytes, random_id, sha256_hex, upload_id, Ctx,
};
use tusk_tests::harness::{FsEmbedded, NodeOptions, TestServer};
use tusk_tests::s3::{aws_env, MotoServer, S3Inspector};
use tusk_tests::s3proxy::{S3Proxy, SeenRequest};

const MIB: usize = 1024 * 1024;

/// The smallest part S3 allows, so an upload of a few MiB crosses a part boundary.
const PART_SIZE: usize = 5 * MIB;

/// Short enough that the held listing outlasts it four times over.
const LEASE_TTL: &str = "1s";

/// Longer than the lease TTL (the node requires it), short enough that an upload's first tail
/// becomes a sweep suspect within seconds.
const LEFTOVER_GRACE: &str = "2s";

/// The sweeper's leadership lasts three intervals; at 2 s that outlives the held pass, so the
/// node that started it stays the only sweeper and its next pass starts only after this one
/// ended (what the test waits for).
const SWEEP_INTERVAL: &str = "2s";

/// A request waits for the lease as long as by default, well past the 1 s TTL: a lease
/// granted after such a wait must count its TTL from the grant, not from the start of the
/// wait (it once did, and such a PATCH lost its lease at the first renewal: 409).
const LEASE_WAIT: &str = "3s";

/// How long the proxy holds the sweep's listing: four lease TTLs.
const HOLD: Duration = Duration::from_secs(4);

// ---------------------------------------------------------------------------------------------
// A slow S3 under the leftovers sweep

/// Two nodes on one bucket of moto, which they reach only through the proxy; Redis for
/// records and leases.
struct SlowS3 {
    nodes: Vec<TestServer>,
    proxy: S3Proxy,
    /// A client on the bucket that talks to moto directly, never held.
    bucket: S3Inspector,
    /// `--s3-object-prefix` of the nodes.
    prefix: String,
    _redis: RedisServer,
    _moto: MotoServer,
    _dir: tempfile::TempDir,
}

impl SlowS3 {
    async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tusk-fencing-").tempdir()?;
        let moto = MotoServer::start(&dir.path().join("moto")).await?;
        let redis = RedisServer::start(&dir.path().join("redis")).await?;
        let bucket_name = unique_name("tusk-test-");
        let bucket = moto.create_bucket(&bucket_name).await?;
        let proxy = S3Proxy::start(&moto.endpoint()).await?;
        let prefix = unique_name("uploads-") + "/";
        let args: Vec<String> = [
            "--storage",
            "s3",
            "--s3-bucket",
            &bucket_name,
            "--s3-endpoint",
            &proxy.endpoint(),
            "--s3-object-prefix",
            &prefix,
            "--s3-path-style",
            "--s3-part-size",
            &PART_SIZE.to_string(),
            "--coordinator",
            "redis",
            "--redis-url",
            &redis.url(),
            "--redis-prefix",
            &(unique_name("tusk-test-") + ":"),
            "--lease-ttl",
            LEASE_TTL,
            "--sweep-interval",
            SWEEP_INTERVAL,
            "--lease-wait",
            LEASE_WAIT,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut env = aws_env();
        env.push((
            "TUSK_STORAGE__S3__LEFTOVER_GRACE".into(),
            LEFTOVER_GRACE.into(),
        ));
        let mut nodes = Vec::new();
        for i in 0..2 {
            nodes.push(
                TestServer::start_with(NodeOptions {
                    args: args.clone(),
                    env: env.clone(),
                    label: format!("node{i}"),
                })
                .await
                .with_context(|| format!("starting node {i} with {args:?}"))?,
            );
        }
        Ok(SlowS3 {
            nodes,
            proxy,
            bucket,
            prefix,
            _redis: redis,
            _moto: moto,
            _dir: dir,
        })
    }

    fn node(&self, i: usize) -> Result<Ctx> {
        Ctx::for_endpoint(&self.nodes[i].endpoint)
    }

    /// The URL of upload `id` on node `i`.
    fn url(&self, i: usize, id: &str) -> String {
        format!("{}{id}", self.nodes[i].endpoint)
    }
}

/// Which of the sweep's listings of one upload the proxy holds.
#[derive(Clone, Copy, Debug)]
enum HeldListing {
    /// ListObjectsV2 of the upload's tails.
    Tails,
    /// ListMultipartUploads of the upload's object key.
    MultipartUploads,
}

/// One run of the scenario: the upload is `first` + `concurrent` + the rest.
#[derive(Clone, Copy, Debug)]
struct SlowSweep {
    held: HeldListing,
    /// The first PATCH: leaves a tail, which the sweep later suspects once it is old.
    first: usize,
    /// The PATCH sent while the sweep's listing is held.
    concurrent: usize,
    total: usize,
}

async fn sweep_outlasting_its_lease(case: SlowSweep) -> Result<()> {
    let s3 = SlowS3::start().await?;
    let started = Instant::now();
    let (a, b) = (s3.node(0)?, s3.node(1)?);
    let data = random_bytes(case.total);
    let url_a = a.create(case.total as u64).await?;
    let id = upload_id(&url_a)?.to_string();
    let url_b = s3.url(1, &id);
    a.patch_ok(&url_a, 0, data[..case.first].to_vec()).await?;

    // A committed tail older than the grace makes the upload a sweep suspect by itself: the
    // sweep takes the lease and lists what is stored, which is the call held here.
    let (tails, object) = (
        format!("{}.tails/{id}/", s3.prefix),
        format!("{}{id}", s3.prefix),
    );
    match case.held {
        HeldListing::Tails => s3
            .proxy
            .hold_next(HOLD, move |r: &SeenRequest| r.is_list_objects(&tails)),
        HeldListing::MultipartUploads => s3.proxy.hold_next(HOLD, move |r: &SeenRequest| {
            r.is_list_multipart_uploads(&object)
        }),
    }
    let caught = s3.proxy.wait_caught(Duration::from_secs(20)).await?;
    eprintln!(
        "{:?}: holding the sweep's {caught} for {HOLD:?} ({:?} after the first PATCH)",
        case.held,
        caught.at - started
    );

    // The sweeper holds the lease: a PATCH waits, and answers 423 once it has waited
    // lease_wait; a tus client sends it again. It must succeed in the end, and what it
    // committed must stay.
    let (from, to) = (case.first, case.first + case.concurrent);
    // What the PATCH commits is what appears during it: the tail it folds (variant two) was
    // there before and goes with the PATCH's own tidying, not the sweep's.
    let earlier = s3.bucket.upload_objects(&s3.prefix, &id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut statuses = Vec::new();
    loop {
        let resp = b
            .patch(&url_b, from as u64, data[from..to].to_vec())
            .await?;
        let status = resp.status().as_u16();
        statuses.push(status);
        if status == 204 {
            let offset = header_u64(&resp, "Upload-Offset", "PATCH 204 carries Upload-Offset")?;
            ensure!(
                offset == to as u64,
                "the concurrent PATCH {from}..{to} answered 204 with Upload-Offset {offset}"
            );
            break;
        }
        ensure!(
            status == 423 && Instant::now() < deadline,
            "the PATCH {from}..{to} sent while the sweep was slow answered {statuses:?}: {}; \
             S3 calls since the hold began:\n{}",
            resp.text().await.unwrap_or_default(),
            timeline(&s3.proxy.seen(), caught.at)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = Instant::now();
    let committed = s3.bucket.upload_objects(&s3.prefix, &id).await?;
    let held = s3
        .proxy
        .wait_answered(HOLD + Duration::from_secs(20))
        .await?;
    eprintln!(
        "{:?}: the concurrent PATCH answered 423 {} times, then 204 {:?} after the hold began, \
         {} the held listing was answered ({:?} after the hold began)",
        case.held,
        statuses.len() - 1,
        acknowledged - caught.at,
        if held.answered.is_some_and(|t| t > acknowledged) {
            "before"
        } else {
            "after"
        },
        held.answered.map(|t| t - caught.at),
    );

    // The sweeper's next pass begins with its suspect listing; the pass held here is over.
    let answered_at = held.answered.context("held listing not answered")?;
    let suspects = s3.prefix.clone();
    s3.proxy
        .wait_for(
            "suspect listing of a later sweep pass",
            Duration::from_secs(20),
            |seen, _| {
                seen.iter()
                    .find(|r| r.at > answered_at && r.is_list_multipart_uploads(&suspects))
                    .map(|_| ())
            },
        )
        .await?;
    let after = s3.bucket.upload_objects(&s3.prefix, &id).await?;
    let removed: Vec<&String> = committed
        .keys
        .iter()
        .filter(|k| !earlier.keys.contains(k) && !after.keys.contains(k))
        .collect();
    let aborted: Vec<_> = committed
        .multipart
        .iter()
        .filter(|m| !earlier.multipart.contains(m) && !after.multipart.contains(m))
        .collect();
    ensure!(
        removed.is_empty() && aborted.is_empty(),
        "{:?}: the leftovers sweep removed what the PATCH {from}..{to} (204) had committed: \
         objects {removed:?}, multipart uploads {aborted:?}; before the PATCH the bucket held \
         {earlier}, after its 204 {committed}, after the sweep {after}",
        case.held
    );
    a.assert_offset(&url_a, to as u64, "the acknowledged offset")
        .await?;

    // The rest, through the first node. The sweeper may hold the lease for a moment on
    // each pass (the upload stays a suspect while its tails are old): 423 is sent again;
    // anything else is a failure, since no fault is injected any more.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut statuses = Vec::new();
    loop {
        let resp = a.patch(&url_a, to as u64, data[to..].to_vec()).await?;
        let status = resp.status().as_u16();
        statuses.push(status);
        if status == 204 {
            break;
        }
        let body = resp.text().await.unwrap_or_default();
        if status != 423 || Instant::now() >= deadline {
            bail!(
                "{:?}: acknowledged bytes lost: the PATCH finishing the upload at offset {to} \
                 answered {statuses:?} ({body}); the bucket holds {}",
                case.held,
                s3.bucket.upload_objects(&s3.prefix, &id).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = b.download(&url_b).await?;
    ensure!(
        sha256_hex(&got) == sha256_hex(&data),
        "{:?}: GET returned {} bytes with sha256 {}, the client sent {} with sha256 {}",
        case.held,
        got.len(),
        sha256_hex(&got),
        data.len(),
        sha256_hex(&data)
    );
    s3.bucket
        .wait_finished_clean(
            &s3.prefix,
            &id,
            data.len() as u64,
            &sha256_hex(&data),
            Duration::from_secs(15),
        )
        .await?;
    eprintln!("{:?}: done in {:?}", case.held, started.elapsed());
    Ok(())
}

/// The S3 calls from `since` on, one a line, with their time after it.
fn timeline(seen: &[SeenRequest], since: Instant) -> String {
    seen.iter()
        .filter(|r| r.at >= since)
        .map(|r| format!("{:>8.3}s {r}", (r.at - since).as_secs_f64()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The concurrent PATCH leaves a second tail; the held listing is the one of the tails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sweep_keeps_a_tail_committed_meanwhile() -> Result<()> {
    sweep_outlasting_its_lease(SlowSweep {
        held: HeldListing::Tails,
        first: MIB,
        concurrent: MIB,
        total: 6 * MIB + 7,
    })
    .await
}

/// The concurrent PATCH is the first to fill a part, so it opens the multipart upload (and
/// folds the first tail into it); the held listing is the one of the multipart uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sweep_keeps_a_multipart_upload_opened_meanwhile() -> Result<()> {
    sweep_outlasting_its_lease(SlowSweep {
        held: HeldListing::MultipartUploads,
        first: MIB,
        concurrent: PART_SIZE,
        total: 8 * MIB + 3,
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// An ID used again after its purge

/// A hook receiver that gives every creation the ID `id`.
async fn fixed_id_hook(id: &str) -> Result<String> {
    let answer = serde_json::json!({ "change": { "id": id } }).to_string();
    let app = Router::new().route("/hooks", post(move || async move { answer.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The fencing tokens in the names of upload `id`'s part files under `root`
/// (`<shard>/<id>.<token hex>-<seq hex>.part`), by file name.
fn part_tokens(root: &Path, id: &str) -> Result<Vec<(String, u64)>> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir:?}"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let Some(rest) = name
                .strip_prefix(id)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_suffix(".part"))
            else {
                continue;
            };
            let token = rest
                .split('-')
                .next()
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .with_context(|| format!("part file {name:?} names no token"))?;
            found.push((name, token));
        }
    }
    Ok(found)
}

/// Creates, writes part of, terminates and (after its purge) creates again the upload
/// `<endpoint>` gives the fixed ID, on a node whose upload directory is `root`.
async fn recreate_after_purge(node: &TestServer, root: &Path, id: &str) -> Result<()> {
    let t = Ctx::new(node)?;
    let len = 300_000;
    let (first, second) = (random_bytes(len), random_bytes(len));

    let url = t.create(len as u64).await?;
    ensure!(
        upload_id(&url)? == id,
        "the pre-create hook chose the ID {id}, the node created {url}"
    );
    // Two PATCHes, two leases: the first incarnation's tokens.
    let mut offset = t.patch_ok(&url, 0, first[..100_000].to_vec()).await?;
    offset = t
        .patch_ok(&url, offset, first[100_000..200_000].to_vec())
        .await?;
    let before = part_tokens(root, id)?;
    ensure!(
        !before.is_empty(),
        "no part file of {id} under {root:?} after {offset} bytes were committed"
    );
    let newest_before = before.iter().map(|(_, t)| *t).max().unwrap_or(0);

    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    ensure!(resp.status() == 204, "DELETE answered {}", resp.status());
    // Gone (410) until the tombstone is purged, then unknown (404): only then may the ID be
    // created again.
    let terminated = Instant::now();
    let deadline = terminated + Duration::from_secs(20);
    loop {
        let status = t.head(&url).await?.status().as_u16();
        if status == 404 {
            break;
        }
        ensure!(
            status == 410 && Instant::now() < deadline,
            "HEAD of the terminated upload answered {status} (410 until purged, then 404)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{id}: purged {:?} after its termination",
        terminated.elapsed()
    );
    let leftover: Vec<String> = part_tokens(root, id)?.into_iter().map(|(n, _)| n).collect();

    let again = t.create(len as u64).await?;
    ensure!(again == url, "created again as {again}, first as {url}");
    let mut offset = t.patch_ok(&url, 0, second[..150_000].to_vec()).await?;
    let fresh: Vec<(String, u64)> = part_tokens(root, id)?
        .into_iter()
        .filter(|(name, _)| !leftover.contains(name))
        .collect();
    ensure!(
        !fresh.is_empty(),
        "no new part file of {id} after the second incarnation committed {offset} bytes \
         (files of the first still there: {leftover:?})"
    );
    let oldest_after = fresh.iter().map(|(_, t)| *t).min().unwrap_or(0);
    ensure!(
        oldest_after > newest_before,
        "the second incarnation of {id} writes under token {oldest_after:#x}, not above the \
         first incarnation's {newest_before:#x}: first {before:?}, second {fresh:?}"
    );
    offset = t.patch_ok(&url, offset, second[150_000..].to_vec()).await?;
    ensure!(offset == len as u64, "finished at {offset}");
    let got = t.download(&url).await?;
    ensure!(
        sha256_hex(&got) == sha256_hex(&second),
        "GET of the second incarnation returned {} bytes with sha256 {} (the second sent \
         sha256 {}, the first {})",
        got.len(),
        sha256_hex(&got),
        sha256_hex(&second),
        sha256_hex(&first)
    );
    eprintln!(
        "{id}: tokens of the first incarnation {:?}, of the second {:?}",
        before.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        fresh.iter().map(|(_, t)| *t).collect::<Vec<_>>()
    );
    Ok(())
}

/// The node arguments of the ID test: the fixed-ID hook, tombstones purged after a second.
fn recreate_args(hook: &str) -> Vec<String> {
    [
        "--hooks-http",
        hook,
        "--hooks-enabled-events",
        "pre-create",
        "--tombstone-ttl",
        "1s",
        "--sweep-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn a_purged_id_created_again_gets_newer_tokens_on_embedded() -> Result<()> {
    let id = random_id();
    let hook = fixed_id_hook(&id).await?;
    let args = recreate_args(&hook);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = TestServer::start(&FsEmbedded, &args).await?;
    let root = node.dir.join("data");
    recreate_after_purge(&node, &root, &id).await
}

#[tokio::test]
async fn a_purged_id_created_again_gets_newer_tokens_on_redis() -> Result<()> {
    let id = random_id();
    let hook = fixed_id_hook(&id).await?;
    let dir = tempfile::Builder::new().prefix("tusk-fencing-").tempdir()?;
    let redis = RedisServer::start(&dir.path().join("redis")).await?;
    let root = dir.path().join("uploads");
    std::fs::create_dir_all(&root)?;
    let mut args: Vec<String> = [
        "--upload-dir",
        &root.display().to_string(),
        "--coordinator",
        "redis",
        "--redis-url",
        &redis.url(),
        "--redis-prefix",
        &(unique_name("tusk-test-") + ":"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(recreate_args(&hook));
    let node = TestServer::start_with(NodeOptions {
        args,
        env: Vec::new(),
        label: String::new(),
    })
    .await?;
    recreate_after_purge(&node, &root, &id).await
}
