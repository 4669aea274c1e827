//! Cluster mode on etcd: three `tusk` nodes sharing one upload directory and one etcd, behind
//! nginx running deploy/nginx.conf, started on loopback by `tusk_tests::cluster`. The fault
//! scenarios of `tusk_tests::faults`, as on Redis:
//!
//! - kill -9 of the node serving a PATCH mid-body, resume through the balancer;
//! - a zombie writer (SIGSTOP past its lease, SIGCONT after another node finished the upload);
//! - two clients PATCHing one upload at once through different nodes;
//! - etcd killed and restarted (its fsynced log) during uploads;
//! - the leader of a three-member etcd killed during uploads.
//!
//! What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
//! committed twice, and every upload ends byte-identical (sha256) to what the client sent.
//!
//! etcd (Debian's etcd-server) and nginx must be installed (tests/run.sh installs them); a
//! missing one fails the test with the `apt-get install` command.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::time::Instant;
use tusk_tests::cluster::{Balancer, Cluster, FS_ETCD_NGINX};
use tusk_tests::conformance::util::Ctx;
use tusk_tests::deploy::{FsShared, Pair};
use tusk_tests::etcd::Etcd3;
use tusk_tests::faults::{self, ResilientUploads};

const MIB: usize = 1024 * 1024;

async fn start_cluster(extra: &[&str]) -> Result<Cluster> {
    let cluster = Cluster::start(&FS_ETCD_NGINX.backend, Balancer::Nginx, 3, extra).await?;
    eprintln!(
        "cluster {}: balancer {} -> nodes {:?}, etcd {:?}",
        cluster.name(),
        cluster.endpoint,
        cluster.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>(),
        cluster.etcd.as_ref().map(|e| e.url())
    );
    Ok(cluster)
}

tusk_tests::cluster_fault_suite!(FS_ETCD_NGINX.backend);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_during_uploads() -> Result<()> {
    let mut cluster = start_cluster(&[]).await?;
    faults::coordinator_restart_during_uploads(&mut cluster).await
}

/// A three-member etcd whose leader is killed (kill -9) while three clients upload through
/// the balancer: the other two elect a new leader, the clients see at most a few 503s (with
/// Retry-After) meanwhile, and every upload finishes exact; the killed member then comes
/// back on its data and an upload after that is exact too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_killed_during_uploads() -> Result<()> {
    let backend = Pair {
        storage: FsShared,
        coordinator: Etcd3,
    };
    let mut cluster = Cluster::start(&backend, Balancer::Nginx, 3, &[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let uploads = ResilientUploads::start(&t, 3, 8 * MIB + 99, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let leader = cluster.etcd()?.leader().await?;
    cluster.etcd()?.kill9_member(leader).await?;
    let killed_at = Instant::now();
    let new_leader = loop {
        if let Ok(found) = cluster.etcd()?.leader().await {
            break found;
        }
        ensure!(
            killed_at.elapsed() < Duration::from_secs(10),
            "no new etcd leader 10 s after member {leader} was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "etcd leader m{leader} killed; m{new_leader} leads after {:?}",
        killed_at.elapsed()
    );
    ensure!(new_leader != leader, "the killed member still leads");

    let total_503 = uploads
        .finish(&t)
        .await
        .context("after the etcd leader was killed")?;
    eprintln!("503s across the uploads while the leader changed: {total_503}");

    cluster.etcd()?.start_member_again(leader).await?;
    faults::a_new_upload_is_exact(&t, 3 * MIB + 7).await
}
