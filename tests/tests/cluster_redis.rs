//! Cluster mode on Redis (issue 3): three `tusk` nodes sharing one upload directory and one
//! Redis, behind a real load balancer (nginx running deploy/nginx.conf; one test through
//! HAProxy running deploy/haproxy.cfg), started on loopback by `tusk_tests::cluster`.
//!
//! - kill -9 of the node serving a PATCH mid-body, resume through the balancer;
//! - a zombie writer (SIGSTOP past its lease, SIGCONT after another node finished the upload);
//! - two clients PATCHing one upload at once through different nodes;
//! - Redis killed and restarted (AOF) during uploads;
//! - HAProxy in front, round-robin over every node.
//!
//! What must hold throughout: nothing acknowledged (204) is lost or changed, no byte is
//! committed twice, and every upload ends byte-identical (sha256) to what the client sent.
//!
//! redis-server, nginx and haproxy must be installed (tests/run.sh installs them); a missing
//! one fails the test with the `apt-get install` command.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::time::Instant;
use tusk_tests::cluster::{Balancer, Cluster, FsRedis};
use tusk_tests::conformance::util::{random_bytes, Ctx};
use tusk_tests::faults::{self, check_exact};
use tusk_tests::rawpatch::RawPatch;

const MIB: usize = 1024 * 1024;

async fn start_cluster(balancer: Balancer, extra: &[&str]) -> Result<Cluster> {
    let cluster = Cluster::start(&FsRedis, balancer, 3, extra).await?;
    eprintln!(
        "cluster {}: balancer {} -> nodes {:?}, redis {:?}",
        cluster.name(),
        cluster.endpoint,
        cluster.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>(),
        cluster.redis.as_ref().map(|r| r.url())
    );
    Ok(cluster)
}

tusk_tests::cluster_fault_suite!(FsRedis);

/// Redis killed (kill -9) and started again on the same port and AOF while three clients
/// upload through the balancer: clients see 503 with Retry-After meanwhile, /readyz fails
/// while Redis is down and recovers, every upload finishes exact (scenario in
/// `tusk_tests::faults`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_uploads() -> Result<()> {
    let mut cluster = start_cluster(Balancer::Nginx, &[]).await?;
    faults::coordinator_restart_during_uploads(&mut cluster).await
}

/// HAProxy (deploy/haproxy.cfg) in front of three nodes: a set of conformance cases and a
/// chunked upload through it, and round-robin really reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_three_nodes() -> Result<()> {
    let cluster = start_cluster(Balancer::Haproxy, &[]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    tusk_tests::run_cases!(
        t,
        creation_basic,
        patch_chunks_roundtrip,
        creation_with_upload,
        concatenation_final,
        get_range,
        location_ignores_forwarded_without_flag,
        concurrent_patches_are_consistent,
        disconnect_commits_received_bytes,
    );

    let data = random_bytes(3 * MIB + 17);
    let url = t.create(data.len() as u64).await?;
    let mut offset = 0;
    for chunk in data.chunks(256 * 1024) {
        offset = t.patch_ok(&url, offset, chunk.to_vec()).await?;
    }
    check_exact(&t, &url, &data).await?;
    let log = cluster.lb.access_log();
    for i in 1..=3 {
        ensure!(
            log.contains(&format!("tusk/tusk{i} ")),
            "HAProxy's log shows no request to tusk{i}: round-robin should reach every node; \
             log:\n{log}"
        );
    }
    Ok(())
}

/// SIGTERM on the node serving a PATCH: readiness fails at once, the PATCH commits what
/// arrived and lets go of its lease, the node exits 0, and another node resumes at once —
/// with a lease TTL of a minute, any wait for the TTL would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_releases_the_lease_and_another_node_resumes_at_once() -> Result<()> {
    let mut cluster = start_cluster(Balancer::Nginx, &["--lease-ttl", "60s"]).await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    let data = random_bytes(4 * MIB + 3);
    let url = t.create(data.len() as u64).await?;
    let node = 1;
    let mut patch = RawPatch::open(&cluster.at_node(node, &url)?, 0, data.len()).await?;
    patch.send(&data[..MIB], 64 * 1024, Duration::ZERO).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = cluster.nodes[node]
        .admin
        .clone()
        .context("no admin address")?;
    let ready = reqwest::get(format!("{admin}readyz")).await?.status();
    ensure!(ready == 200, "/readyz before SIGTERM answered {ready}");

    cluster.nodes[node].signal("TERM")?;
    // Not ready once the node has seen the signal (delivery is asynchronous, so a read
    // right after kill(2) may still find it ready): it must flip within 2 s, or be gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let draining = tokio::time::timeout(
            Duration::from_secs(2),
            reqwest::get(format!("{admin}readyz")),
        )
        .await
        .context("/readyz hung during the drain")?;
        match draining {
            Ok(response) if response.status() == 200 => ensure!(
                tokio::time::Instant::now() < deadline,
                "/readyz still answered 200 two seconds into the drain"
            ),
            Ok(response) => {
                ensure!(
                    response.status() == 503,
                    "/readyz while draining answered {}",
                    response.status()
                );
                break;
            }
            Err(_) => break, // the listener is already closed
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = patch.response(Duration::from_secs(20)).await?;
    let exit = cluster.nodes[node]
        .wait_exit(Duration::from_secs(20))
        .await?;
    ensure!(exit == Some(0), "the drained node exited with {exit:?}");
    if let Some((status, head)) = &answer {
        ensure!(
            *status == 204,
            "the drained PATCH answered {status}:\n{head}"
        );
    }

    let started = Instant::now();
    let other = Ctx::for_endpoint(&cluster.nodes[2].endpoint)?;
    let other_url = cluster.at_node(2, &url)?;
    let offset = other.offset(&other_url).await? as usize;
    ensure!(
        offset == MIB,
        "after the drain node 2 shows offset {offset}; the {MIB} bytes sent before SIGTERM \
         must all be committed"
    );
    other
        .patch_ok(&other_url, offset as u64, data[offset..].to_vec())
        .await
        .context("resuming on node 2 right after the drain")?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "resuming took {:?}: the drained node's lease was not released",
        started.elapsed()
    );
    check_exact(&other, &other_url, &data).await
}
