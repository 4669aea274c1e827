//! Cluster mode on etcd: three `tusk` nodes sharing one upload directory and one etcd, behind
//! nginx running deploy/nginx.conf, started on loopback by `tusk_tests::cluster`. The fault
//! scenarios of `tusk_tests::faults`, as on Redis:
//!
//! - kill -9 of the node serving a PATCH mid-body, resume through the balancer;
//! - a zombie writer (SIGSTOP past its lease, SIGCONT after another node finished the upload);
//! - two clients PATCHing one upload at once through different nodes;
//! - etcd killed and restarted (its fsynced log) during uploads.
//!
//! What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
//! committed twice, and every upload ends byte-identical (sha256) to what the client sent.
//!
//! etcd (Debian's etcd-server) and nginx must be installed (tests/run.sh installs them); a
//! missing one fails the test with the `apt-get install` command.

use anyhow::Result;
use tusk_tests::cluster::{Balancer, Cluster, FS_ETCD_NGINX};
use tusk_tests::faults;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_patch_then_resume_through_balancer() -> Result<()> {
    let mut cluster = start_cluster(&["--lease-ttl", "2s"]).await?;
    faults::kill9_mid_patch_then_resume(&mut cluster, 24 * MIB + 777).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_writer_cannot_commit_after_losing_its_lease() -> Result<()> {
    let cluster = start_cluster(&["--lease-ttl", "2s"]).await?;
    faults::zombie_writer_cannot_commit(&cluster, 8 * MIB + 5).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_patch_one_upload_through_different_nodes() -> Result<()> {
    let cluster = start_cluster(&[]).await?;
    faults::two_clients_patch_one_upload(&cluster, 6 * MIB + 321).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_during_uploads() -> Result<()> {
    let mut cluster = start_cluster(&[]).await?;
    faults::coordinator_restart_during_uploads(&mut cluster).await
}
