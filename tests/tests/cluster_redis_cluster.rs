//! Cluster mode on a Redis Cluster: three `tusk` nodes sharing one upload directory and a
//! Redis Cluster of three masters with a replica each (`wait_replicas = 1`), behind nginx.
//! The fault scenarios of `tusk_tests::cluster_fault_suite` (kill -9 mid-PATCH, the
//! zombie, two writers), as on one Redis and on etcd, and:
//!
//! - kill -9 of the Redis master holding the most uploads while clients upload: its replica
//!   takes over, the killed master comes back as a replica.
//!
//! What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
//! committed twice, and every upload ends byte-identical (sha256) to what the client sent.
//!
//! redis-server (with redis-cli) and nginx must be installed (tests/run.sh installs them); a
//! missing one fails the test with the `apt-get install` command.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::time::Instant;
use tusk_tests::cluster::FS_REDIS_CLUSTER_NGINX;
use tusk_tests::conformance::util::Ctx;
use tusk_tests::faults::{self, ResilientUploads};

const MIB: usize = 1024 * 1024;

tusk_tests::cluster_fault_suite!(FS_REDIS_CLUSTER_NGINX.backend);

/// Six clients upload through the balancer; the Redis master holding the most of their
/// records is killed (kill -9). Its replica is promoted within about the node timeout (1 s
/// here); the uploads on that shard see 503s (with Retry-After) until then and until the
/// killed member is back as the new master's replica (each change waits for one replica);
/// the uploads on the other shards see no 503 at all. Every upload finishes sha256-exact, and an upload after is exact too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_master_killed_during_uploads() -> Result<()> {
    let mut cluster = start_for_faults(&[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let uploads = ResilientUploads::start(&t, 6, 8 * MIB + 99, Duration::from_secs(90)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let redis = cluster.redis_cluster()?;
    let masters = redis.masters().await?;
    ensure!(
        masters.len() == 3,
        "three masters before the kill: {masters:?}"
    );
    let mut victim = (masters[0], 0);
    for &m in &masters {
        let held = redis.keys_on(m, "tusk-test-*:up:*").await?.len();
        if held > victim.1 {
            victim = (m, held);
        }
    }
    let (victim, held) = victim;
    ensure!(held > 0, "no master holds an upload record");
    let on_victim: Vec<bool> = {
        let records = redis.keys_on(victim, "tusk-test-*:up:*").await?;
        uploads
            .uploads
            .iter()
            .map(|(url, _)| {
                let id = url.rsplit('/').next().unwrap_or_default();
                records
                    .iter()
                    .any(|key| key.ends_with(&format!(":up:{id}")))
            })
            .collect()
    };
    redis.kill9(victim).await?;
    let killed_at = Instant::now();
    loop {
        let now_masters = redis.masters().await?;
        if now_masters.len() == 3 && !now_masters.contains(&victim) {
            break;
        }
        ensure!(
            killed_at.elapsed() < Duration::from_secs(15),
            "no replica promoted 15 s after master {victim} was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "master {victim} (holding {held} of the records) killed; a replica took over after {:?}",
        killed_at.elapsed()
    );
    redis.start_again(victim).await?;
    redis.wait_state_ok().await?;
    let masters = redis.masters().await?;
    ensure!(
        !masters.contains(&victim),
        "the killed master came back as a replica: masters now {masters:?}"
    );

    let each_503 = uploads
        .finish_each(&t)
        .await
        .context("after a Redis master was killed")?;
    eprintln!("503s per upload while the shard failed over: {each_503:?}, on it: {on_victim:?}");
    for (i, (&seen, &on)) in each_503.iter().zip(&on_victim).enumerate() {
        ensure!(
            on || seen == 0,
            "upload {i}, on a shard that kept its master, saw {seen} 503s: a dead shard must \
             block only its own uploads"
        );
    }

    faults::a_new_upload_is_exact(&t, 3 * MIB + 7).await
}
