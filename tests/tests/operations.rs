//! What an operator sees: exact metric values after a known sequence of requests, the health
//! endpoints and `tusk healthcheck`, and `tusk inspect` / `tusk uploads` on a live upload.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use tusk_tests::conformance::util::{random_bytes, Ctx};
use tusk_tests::faults;
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::rawpatch::RawPatch;

/// The value of one sample line `name{labels} value` (exact label text) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn expect(scrape: &str, series: &str, want: f64) -> Result<()> {
    let got = sample(scrape, series);
    ensure!(
        got == Some(want),
        "{series}: expected {want}, scraped {got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let admin = server
        .admin
        .clone()
        .context("the node printed no admin address")?;
    let t = Ctx::new(&server)?;

    t.send(t.plain(Method::OPTIONS, &t.endpoint), "OPTIONS")
        .await?;
    let finished = t.create(10).await?;
    let terminated = t.create(10).await?;
    t.patch_ok(&finished, 0, vec![7u8; 10]).await?;
    let conflict = t.patch(&terminated, 3, vec![1u8; 2]).await?;
    ensure!(
        conflict.status() == 409,
        "wrong offset answered {}",
        conflict.status()
    );
    let deleted = t.send(t.tus(Method::DELETE, &terminated), "DELETE").await?;
    ensure!(
        deleted.status() == 204,
        "DELETE answered {}",
        deleted.status()
    );
    let missing = t.head(&t.unknown_url()).await?;
    ensure!(
        missing.status() == 404,
        "HEAD of an unknown upload answered {}",
        missing.status()
    );

    let scrape = reqwest::get(format!("{admin}metrics"))
        .await?
        .text()
        .await?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="OPTIONS",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="POST",status="201"}"#,
        2.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="PATCH",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="PATCH",status="409"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="DELETE",status="204"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_requests_total{method="HEAD",status="404"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_request_errors_total{kind="offset_mismatch"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_request_errors_total{kind="not_found"}"#,
        1.0,
    )?;
    expect(&scrape, "tusk_uploads_created_total", 2.0)?;
    expect(&scrape, "tusk_uploads_finished_total", 1.0)?;
    expect(&scrape, "tusk_uploads_terminated_total", 1.0)?;
    expect(&scrape, "tusk_bytes_received_total", 10.0)?;
    expect(&scrape, "tusk_leases_held", 0.0)?;
    expect(&scrape, "tusk_lease_losses_total", 0.0)?;
    // Both PATCHes reached the engine (the 409 one was refused under the lease).
    expect(&scrape, "tusk_patch_duration_seconds_count", 2.0)?;
    expect(
        &scrape,
        r#"tusk_coordinator_call_duration_seconds_count{backend="embedded",op="commit_and_release"}"#,
        1.0,
    )?;
    expect(
        &scrape,
        r#"tusk_storage_call_duration_seconds_count{backend="fs",op="write"}"#,
        1.0,
    )?;
    ensure!(
        sample(&scrape, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "no process metrics"
    );
    ensure!(
        !scrape.contains(&finished[finished.len() - 24..]),
        "an upload ID leaked into a label"
    );

    for path in ["healthz", "readyz"] {
        let status = reqwest::get(format!("{admin}{path}")).await?.status();
        ensure!(status == 200, "/{path} answered {status}");
    }
    Ok(())
}

/// `tusk healthcheck` (the image's HEALTHCHECK, with no curl in the image) against a live
/// node: exit 0 with the answer while it serves, non-zero naming the address once it is gone.
#[tokio::test]
async fn the_healthcheck_subcommand_probes_a_live_node() -> Result<()> {
    let mut server = TestServer::start(&FsEmbedded, &[]).await?;
    let admin = server
        .admin
        .clone()
        .context("the node printed no admin address")?;
    let addr = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let probe = |ready: bool| {
        let mut cmd = std::process::Command::new(tusk_tests::harness::tusk_binary()?);
        cmd.args(["healthcheck", "--admin-addr", addr.as_str()]);
        if ready {
            cmd.arg("--ready");
        }
        cmd.output().context("running tusk healthcheck")
    };
    for (ready, answer) in [(false, "ok"), (true, "ready")] {
        let out = probe(ready)?;
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == answer,
            "healthcheck (ready: {ready}) on a live node: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.kill9().await?;
    let out = probe(false)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains(&addr),
        "healthcheck on a dead node must fail naming {addr}: {:?} {stderr}",
        out.status
    );
    Ok(())
}

/// Runs `tusk <args> --admin-addr <admin> --json` and parses what it printed.
fn admin_json(admin: &str, args: &[&str]) -> Result<serde_json::Value> {
    let (command, operands) = args.split_first().context("no subcommand")?;
    // An upload ID may start with '-': after `--` it is never taken for a flag.
    let out = std::process::Command::new(tusk_tests::harness::tusk_binary()?)
        .arg(command)
        .args(["--admin-addr", admin, "--json", "--"])
        .args(operands)
        .output()
        .context("running tusk")?;
    ensure!(
        out.status.success(),
        "tusk {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("tusk printed no JSON")
}

/// `tusk inspect` and `tusk uploads` on an upload mid-PATCH: the committed progress, the
/// node and lease token of its last commit, and that this node is writing it; once the PATCH
/// ends the node no longer lists it, and the record keeps the last commit's stamp.
#[tokio::test]
async fn inspect_shows_an_upload_mid_patch() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("tusk.toml");
    std::fs::write(&config, "[uploads]\ncommit_interval = \"100ms\"\n")?;
    let config = config.display().to_string();
    let server = TestServer::start(&FsEmbedded, &["--config", config.as_str()]).await?;
    let admin = server
        .admin
        .clone()
        .context("the node printed no admin address")?;
    let admin = admin.trim_start_matches("http://").trim_end_matches('/');
    let t = Ctx::new(&server)?;
    let url = t.create(1 << 20).await?;
    let id = url.rsplit('/').next().context("no ID")?.to_owned();
    let before = admin_json(admin, &["inspect", id.as_str()])?;
    ensure!(
        before["offset"] == 0
            && before["last_commit"].is_null()
            && before["writing_here"].is_null(),
        "a fresh upload: {before}"
    );
    let mut patch = RawPatch::open(&url, 0, 1 << 20).await?;
    patch
        .send(&vec![7u8; 300_000], 100_000, Duration::from_millis(50))
        .await?;
    // The 100 ms progress commit makes the bytes visible.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = admin_json(admin, &["inspect", id.as_str()])?;
        if seen["offset"].as_u64() == Some(300_000) {
            break seen;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no progress commit of the 300000 bytes sent: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        seen["length"] == 1 << 20
            && seen["state"] == "active"
            && seen["segments"].as_u64() >= Some(1),
        "mid-PATCH: {seen}"
    );
    let last = &seen["last_commit"];
    let node = seen["writing_here"]["node"].as_str().unwrap_or_default();
    ensure!(
        !node.is_empty() && last["node"] == node && last["token"].as_u64() >= Some(1),
        "mid-PATCH the last commit names this node and a token: {seen}"
    );
    ensure!(
        seen["writing_here"]["phase"] == "awaiting-client",
        "the PATCH waits for its client: {seen}"
    );
    let listed = admin_json(admin, &["uploads"])?;
    ensure!(
        listed["uploads"]
            .as_array()
            .is_some_and(|l| l.len() == 1 && l[0]["id"] == id.as_str()),
        "tusk uploads lists the upload being written: {listed}"
    );
    drop(patch);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = admin_json(admin, &["uploads"])?;
        if listed["uploads"].as_array().is_some_and(|l| l.is_empty()) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the ended PATCH is still listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = admin_json(admin, &["inspect", id.as_str()])?;
    ensure!(
        after["writing_here"].is_null() && after["last_commit"]["node"] == node,
        "after the PATCH: {after}"
    );
    Ok(())
}

/// Nanoseconds each thread of process `pid` has run, by thread id, with its name.
fn thread_run_times(pid: u32) -> Result<std::collections::HashMap<u32, (String, u64)>> {
    let mut threads = std::collections::HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = entry?.path();
        let Some(tid) = task.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the reads.
        let (Ok(name), Ok(schedstat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("schedstat")),
        ) else {
            continue;
        };
        let ran = schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .context("schedstat without run time")?;
        threads.insert(tid, (name.trim().to_string(), ran));
    }
    Ok(threads)
}

/// A connection thread's name: `tusk-conn-N` (its blocking helpers are `tusk-conn-N-io`).
fn is_connection_thread(name: &str) -> bool {
    name.strip_prefix("tusk-conn-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Each connection is served on one connection thread, one per CPU, and uploads at once are
/// spread over them: while two PATCHes stream 256 MiB each, two connection threads do the
/// receiving, and the shared runtime's workers (`tokio-rt-worker`, where every body was
/// read before) do next to nothing. What `top -H` shows an operator, and what keeps a body's
/// reads from waking a second thread (see `connection_threads.rs` for the figures).
#[tokio::test]
async fn uploads_at_once_stream_on_their_own_connection_threads() -> Result<()> {
    const BODY: usize = 256 << 20;
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let pid = server.pid().context("no pid")?;
    let t = Ctx::new(&server)?;
    let data = random_bytes(BODY);
    let mut patches = Vec::new();
    for _ in 0..2 {
        let url = t.create(BODY as u64).await?;
        patches.push((url.clone(), RawPatch::open(&url, 0, BODY).await?));
    }
    let started = thread_run_times(pid)?;
    let answers = futures_util::future::join_all(patches.iter_mut().map(|(_, patch)| {
        let data = &data;
        async move {
            patch.send(data, 1 << 20, Duration::ZERO).await?;
            patch.response(Duration::from_secs(120)).await
        }
    }))
    .await;
    let ended = thread_run_times(pid)?;
    // Counted once they have surely started (they are started with the listener).
    let cpus = std::thread::available_parallelism()?.get();
    let connection_threads = ended
        .values()
        .filter(|(name, _)| is_connection_thread(name))
        .count();
    ensure!(
        connection_threads == cpus,
        "{connection_threads} connection threads on {cpus} CPUs: {ended:?}"
    );
    for answer in answers {
        let (status, head) = answer?.context("a PATCH got no answer")?;
        ensure!(status == 204, "a PATCH was answered {head:?}");
    }
    let ran: Vec<(&str, u64)> = ended
        .iter()
        .map(|(tid, (name, at_end))| {
            let at_start = started.get(tid).map_or(0, |(_, ns)| *ns);
            (name.as_str(), at_end.saturating_sub(at_start))
        })
        .collect();
    let mut receiving: Vec<u64> = ran
        .iter()
        .filter(|(name, _)| is_connection_thread(name))
        .map(|(_, ns)| *ns)
        .collect();
    receiving.sort_unstable_by(|a, b| b.cmp(a));
    let shared: u64 = ran
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-"))
        .map(|(_, ns)| *ns)
        .sum();
    eprintln!("connection threads ran {receiving:?} ns, the shared runtime {shared} ns");
    let busy = receiving.iter().filter(|ns| **ns >= 10_000_000).count();
    ensure!(
        busy >= cpus.min(2),
        "two bodies at once kept {busy} connection threads busy (ran {receiving:?} ns)"
    );
    let received: u64 = receiving.iter().sum();
    ensure!(
        shared * 4 < received,
        "the shared runtime ran {shared} ns while the connection threads ran {received} ns"
    );
    for (url, _) in &patches {
        faults::check_exact(&t, url, &data).await?;
    }
    Ok(())
}
