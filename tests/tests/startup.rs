//! Start-up checks against real backends: a bucket that does not exist stops the start with
//! one line naming the setting; Redis down at start leaves the node alive and unready (its
//! admin listener says what it waits for, its upload port not yet open) until Redis comes up,
//! then it serves.
//!
//! moto (`pip install 'moto[server]==5.1.22'`) and redis-server must be installed
//! (tests/run.sh installs them); a missing one fails the test with the command to run.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tusk_tests::harness::tusk_binary;
use tusk_tests::process::free_port;
use tusk_tests::redis::RedisServer;
use tusk_tests::s3::{aws_env, MotoServer};

/// `tusk` with `args` on free ports, stdout piped; backtraces off, as a user runs it.
fn tusk(args: &[&str], env: &[(String, String)]) -> Result<(Command, u16)> {
    let admin_port = free_port()?;
    let admin = admin_port.to_string();
    let mut cmd = Command::new(tusk_binary()?);
    cmd.args(["--port", "0", "--admin-port", admin.as_str()])
        .args(args)
        .envs(env.iter().cloned())
        .env("RUST_BACKTRACE", "0")
        .env("TUSK_LOG__FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok((cmd, admin_port))
}

async fn get(url: &str) -> Result<(u16, String)> {
    let answer = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

#[tokio::test]
async fn a_bucket_that_does_not_exist_stops_the_start_naming_the_setting() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let moto = MotoServer::start(&scratch.path().join("moto")).await?;
    let data = scratch.path().join("data").display().to_string();
    let endpoint = moto.endpoint();
    let (mut cmd, _) = tusk(
        &[
            "--storage",
            "s3",
            "--s3-bucket",
            "no-such-bucket",
            "--s3-endpoint",
            endpoint.as_str(),
            "--s3-path-style",
            "--upload-dir",
            data.as_str(),
        ],
        &aws_env(),
    )?;
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("tusk kept running with a bucket that does not exist")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "tusk exited 0 with a missing bucket: {stderr}"
    );
    ensure!(
        !stdout.contains("listening on"),
        "the upload port opened for a bucket that does not exist: {stdout}"
    );
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no-such-bucket"))
        .collect();
    ensure!(
        named.len() == 1 && named[0].contains("fix storage.s3.bucket"),
        "expected one line naming the bucket and storage.s3.bucket, got:\n{stderr}"
    );
    ensure!(
        stderr.lines().all(|l| l.len() < 400),
        "a log line carries a dump:\n{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn redis_down_at_start_leaves_the_node_unready_until_it_comes_up() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut redis = RedisServer::start(&scratch.path().join("redis")).await?;
    let url = redis.url();
    redis.kill9().await?;
    let data = scratch.path().join("data").display().to_string();
    let (mut cmd, admin_port) = tusk(
        &[
            "--coordinator",
            "redis",
            "--redis-url",
            url.as_str(),
            "--upload-dir",
            data.as_str(),
        ],
        &[],
    )?;
    let mut node = cmd.spawn()?;
    let mut lines = BufReader::new(node.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("no admin line")??
        .unwrap_or_default();
    ensure!(first.starts_with("admin on "), "first line: {first:?}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    // The first try of Redis fails within its timeout; from then on /readyz says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !get(&format!("{admin}/readyz")).await?.1.contains("redis") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said it waits for Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Alive and unready for a while, saying why.
    for _ in 0..3 {
        let (health, _) = get(&format!("{admin}/healthz")).await?;
        let (ready, why) = get(&format!("{admin}/readyz")).await?;
        ensure!(
            health == 200 && ready == 503 && why.contains("redis"),
            "Redis down: /healthz {health}, /readyz {ready} {why:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    redis.start_again().await?;
    let listening = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("the node did not start serving once Redis was up")??
        .unwrap_or_default();
    let endpoint = listening
        .strip_prefix("listening on ")
        .with_context(|| format!("second line: {listening:?}"))?
        .to_owned();
    let (ready, why) = get(&format!("{admin}/readyz")).await?;
    ensure!(ready == 200, "Redis up: /readyz {ready} {why:?}");
    let created = reqwest::Client::new()
        .post(&endpoint)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "5")
        .send()
        .await?;
    ensure!(
        created.status() == 201,
        "creation after Redis came up: {}",
        created.status()
    );
    node.kill().await?;
    let stderr = node.wait_with_output().await?.stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    let waits = stderr
        .lines()
        .filter(|l| l.contains("not ready: waiting for"))
        .count();
    ensure!(
        waits == 1,
        "a few seconds of waiting should log one line, got {waits}:\n{stderr}"
    );
    Ok(())
}
