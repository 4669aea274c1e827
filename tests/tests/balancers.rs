//! The cluster infrastructure on its own: deploy/nginx.conf and deploy/haproxy.cfg render
//! (only upstreams, listen address and paths change) and validate, Redis keeps its data across
//! a kill -9 (AOF), and both balancers carry tus traffic to a single node correctly.

use anyhow::{ensure, Context, Result};
use tusk_tests::cluster::{render_config, require_binary, Balancer, RedisServer, SingleBehind};
use tusk_tests::conformance::Ctx;
use tusk_tests::harness::{Deployment, FsEmbedded};

/// Rendering changes only the upstream `server` lines, the listen address and file paths.
#[test]
fn deploy_files_render_only_upstreams_listen_and_paths() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().display().to_string();
    let is_upstream = |l: &&str| {
        let l = l.trim_start();
        l.starts_with("server ") && !l.starts_with("server {")
    };
    let allowed = [
        "listen",
        "bind",
        "pid",
        "pidfile",
        "error_log",
        "access_log",
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ];
    for balancer in [Balancer::Nginx, Balancer::Haproxy] {
        let template = std::fs::read_to_string(balancer.deploy_file())?;
        let upstreams: Vec<String> = (0..5).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
        let out = render_config(
            balancer,
            &template,
            "127.0.0.1:1234",
            &upstreams,
            dir.path(),
        )?;
        let before: Vec<&str> = template.lines().filter(|l| !is_upstream(l)).collect();
        let after: Vec<&str> = out.lines().filter(|l| !is_upstream(l)).collect();
        let rendered: Vec<&str> = out.lines().filter(is_upstream).collect();
        ensure!(
            rendered.len() == 5 && upstreams.iter().zip(&rendered).all(|(u, l)| l.contains(u)),
            "{balancer:?}: expected one upstream line per address, got:\n{out}"
        );
        ensure!(
            before.len() == after.len(),
            "{balancer:?}: rendering added or removed other lines:\n{out}"
        );
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                let directive = a.split_whitespace().next().unwrap_or("");
                ensure!(
                    allowed.contains(&directive)
                        && (b.contains("127.0.0.1:1234") || b.contains(&dir_s)),
                    "{balancer:?}: rendering changed {a:?} into {b:?}"
                );
            }
        }
        ensure!(
            !out.contains("/var/") && !out.contains("/run/"),
            "{balancer:?}: a path outside the temp dir:\n{out}"
        );
    }
    Ok(())
}

/// A missing server binary is an error that names the package to install (never a skip).
#[test]
fn missing_binary_fails_with_the_install_command() {
    let err = require_binary("tusk-no-such-server", "tusk-no-such-package")
        .expect_err("a missing binary must be an error");
    let text = format!("{err:#}");
    assert!(
        text.contains("apt-get install -y --no-install-recommends tusk-no-such-package"),
        "the error names the install command: {text}"
    );
}

/// Redis started with AOF (fsync always) keeps a write across kill -9 and a restart on the
/// same port.
#[tokio::test]
async fn redis_keeps_data_across_kill9_and_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut redis = RedisServer::start(dir.path()).await?;
    ensure!(redis.command(&["SET", "k", "v1"]).await? == "+OK", "SET");
    let port = redis.port;
    redis.kill9().await?;
    ensure!(
        redis.command(&["PING"]).await.is_err(),
        "redis still answers after kill -9"
    );
    redis.start_again().await?;
    ensure!(redis.port == port, "restarted on another port");
    let v = redis.command(&["GET", "k"]).await?;
    ensure!(v == "v1", "GET k after kill -9 and restart: {v:?}");
    ensure!(redis.keys("k*").await? == vec!["k".to_string()], "KEYS");
    Ok(())
}

async fn smoke(balancer: Balancer) -> Result<()> {
    let deployment = SingleBehind {
        backend: FsEmbedded,
        balancer,
    };
    let running = deployment
        .start(&[])
        .await
        .with_context(|| format!("starting {}", deployment.name()))?;
    let t = Ctx::for_endpoint(running.endpoint())?;
    tusk_tests::run_cases!(
        t,
        options_advertises_capabilities,
        creation_basic,
        patch_chunks_roundtrip,
        creation_with_upload,
        get_range,
        hostile_ids_are_4xx,
        location_ignores_forwarded_without_flag,
        concurrent_patches_are_consistent,
        disconnect_commits_received_bytes,
        get_does_not_wait_for_writer,
    );
    Ok(())
}

/// nginx (deploy/nginx.conf) in front of one node carries tus traffic unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_one_node() -> Result<()> {
    smoke(Balancer::Nginx).await
}

/// HAProxy (deploy/haproxy.cfg) in front of one node carries tus traffic unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_one_node() -> Result<()> {
    smoke(Balancer::Haproxy).await
}
