//! The embedded coordinator's log against damage, with the real binary: kill -9, then bytes
//! of the log changed on disk the way a bad disk, a power cut or a second process would.
//!
//! What must hold: a torn tail (an incomplete or damaged last frame, never acknowledged) is
//! cut and everything acknowledged is served; damage followed by intact frames stops the
//! start, naming the file and the byte offset, and leaves the file as it is; `tusk
//! check-data --salvage` then keeps every intact frame; a commit that does not start where
//! its record ends is skipped; and one coordinator directory serves one process at a time.
//!
//! The log's frame format (`[len: u32 LE][crc32: u32 LE][json]`) is the only internal this
//! file knows, to find "the 2nd frame" and to write a torn tail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tusk_tests::conformance::util::Ctx;
use tusk_tests::faults::check_exact;
use tusk_tests::harness::{tusk_binary, NodeOptions, TestServer};

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// A node on `root/data` with its embedded coordinator in the default place,
/// `root/data/.tusk`, as `tusk --upload-dir DIR` runs it.
fn node_args(root: &Path) -> Vec<String> {
    vec![
        "--upload-dir".into(),
        root.join("data").display().to_string(),
        "--coordinator".into(),
        "embedded".into(),
    ]
}

fn coordinator_dir(root: &Path) -> PathBuf {
    root.join("data").join(".tusk")
}

/// The coordinator's one log file.
fn log_file(root: &Path) -> Result<PathBuf> {
    let dir = coordinator_dir(root);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    logs.pop()
        .with_context(|| format!("no wal-*.log in {}", dir.display()))
}

/// Where each frame of a log starts and ends.
fn frames(log: &[u8]) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let header = log
            .get(at..at + 8)
            .with_context(|| format!("incomplete frame header at byte {at}"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = at + 8 + len;
        ensure!(end <= log.len(), "frame at byte {at} runs past the end");
        out.push((at, end));
        at = end;
    }
    Ok(out)
}

/// How a `tusk` run that was expected not to serve ended.
struct Refused {
    code: Option<i32>,
    stderr: String,
}

/// Runs `tusk args` with `env`; fails if it starts serving, else returns how it exited.
async fn run_refused(args: &[String], env: &[(String, String)]) -> Result<Refused> {
    let mut command = tokio::process::Command::new(tusk_binary()?);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("TUSK_TEST_") || name == "TUSK_BIN" {
            command.env_remove(&key);
        }
    }
    let mut child = command
        .args(["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning tusk")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("listening on ") {
                return Ok::<_, anyhow::Error>(Some(line));
            }
        }
        Ok(None)
    })
    .await
    .context("tusk neither served nor exited within 30s")??;
    if let Some(line) = outcome {
        let _ = child.start_kill();
        let _ = child.wait().await;
        bail!("tusk started serving ({line}) where it had to refuse to start");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .context("tusk did not exit within 30s")??;
    let stderr = stderr_text.await.context("reading stderr")?;
    Ok(Refused {
        code: status.code(),
        stderr,
    })
}

/// Runs `tusk check-data ...`: its exit code and everything it printed.
async fn check_data(args: &[&str]) -> Result<(Option<i32>, String)> {
    let output = tokio::process::Command::new(tusk_binary()?)
        .arg("check-data")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running tusk check-data")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.code(), text))
}

/// `count` finished uploads of odd sizes: their URLs and bytes.
async fn finished_uploads(t: &Ctx, count: usize) -> Result<Vec<(String, Vec<u8>)>> {
    let mut uploads = Vec::new();
    for i in 0..count {
        let data = random_bytes(100 * 1024 + 97 * i + 1);
        let url = t.upload(&data).await?;
        uploads.push((url, data));
    }
    Ok(uploads)
}

fn upload_id(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

async fn start(root: &Path) -> Result<TestServer> {
    TestServer::start_with(NodeOptions {
        args: node_args(root),
        ..Default::default()
    })
    .await
}

/// One flipped bit in the 2nd of the log's frames: the start is refused, naming the file
/// and the byte offset, and the file is left byte-identical; `tusk check-data` reports the
/// same; `--salvage` keeps every intact frame (the damaged file is kept aside unchanged) and
/// the node then serves the four uploads the damage did not touch, sha256-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_frame_mid_log_stops_the_start_and_salvage_keeps_the_rest() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut server = start(root.path()).await?;
    let t = Ctx::new(&server)?;
    let uploads = finished_uploads(&t, 5).await?;
    server.kill9().await?;

    let log_path = log_file(root.path())?;
    let mut log = std::fs::read(&log_path)?;
    let all = frames(&log)?;
    ensure!(
        all.len() >= 6,
        "expected frames for 5 uploads, found {}",
        all.len()
    );
    let (start_of_2nd, end_of_2nd) = all[1];
    let named: Vec<&str> = uploads
        .iter()
        .map(|(url, _)| upload_id(url))
        .filter(|id| {
            log[start_of_2nd + 8..end_of_2nd]
                .windows(id.len())
                .any(|w| w == id.as_bytes())
        })
        .collect();
    ensure!(
        named.len() <= 1,
        "the 2nd frame names several uploads: {named:?}"
    );
    // One bit in the middle of the 2nd frame's payload.
    let at = start_of_2nd + 8 + (end_of_2nd - start_of_2nd - 8) / 2;
    log[at] ^= 0x10;
    std::fs::write(&log_path, &log)?;

    let refused = run_refused(&node_args(root.path()), &[]).await?;
    ensure!(
        refused.code.is_some_and(|c| c != 0),
        "a damaged log: tusk exited with {:?}, expected a non-zero code; stderr:\n{}",
        refused.code,
        refused.stderr
    );
    let log_name = log_path.display().to_string();
    ensure!(
        refused.stderr.contains(&log_name)
            && refused.stderr.contains(&format!("byte {start_of_2nd}")),
        "the refusal must name {log_name} and byte {start_of_2nd}; stderr:\n{}",
        refused.stderr
    );
    ensure!(
        std::fs::read(&log_path)? == log,
        "a refused start changed the damaged log"
    );

    let dir = coordinator_dir(root.path()).display().to_string();
    let (code, report) = check_data(&["--dir", &dir]).await?;
    ensure!(
        code.is_some_and(|c| c != 0) && report.contains(&format!("byte {start_of_2nd}")),
        "check-data on a damaged log: exit {code:?}, expected non-zero naming byte \
         {start_of_2nd}:\n{report}"
    );
    ensure!(
        std::fs::read(&log_path)? == log,
        "check-data without --salvage changed the log"
    );

    let (code, report) = check_data(&["--dir", &dir, "--salvage"]).await?;
    ensure!(
        code == Some(0) && report.contains(&format!("byte {start_of_2nd}")),
        "check-data --salvage: exit {code:?}, expected 0 and the dropped byte range:\n{report}"
    );
    let aside: Vec<PathBuf> = std::fs::read_dir(coordinator_dir(root.path()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".damaged"))
        })
        .collect();
    ensure!(
        aside.len() == 1 && std::fs::read(&aside[0])? == log,
        "salvage must keep the damaged log aside unchanged; found {aside:?}"
    );
    eprintln!("check-data --salvage said:\n{report}");

    server.restart().await?;
    let t = Ctx::new(&server)?;
    let mut intact = 0;
    for (url, data) in &uploads {
        if named.contains(&upload_id(url)) {
            continue;
        }
        check_exact(&t, url, data)
            .await
            .with_context(|| format!("{url} after salvage"))?;
        intact += 1;
    }
    ensure!(
        intact >= 4,
        "after salvage only {intact} uploads are served exactly, expected the 4 intact ones"
    );
    // The salvaged directory takes new uploads and keeps them across a kill -9.
    let more = random_bytes(5000);
    let url = t.upload(&more).await?;
    server.kill9().await?;
    server.restart().await?;
    check_exact(&Ctx::new(&server)?, &url, &more).await
}

/// A torn tail, as a power cut leaves it: half a frame of a write that was never
/// acknowledged, then (on another restart) a run of zero bytes where the file system
/// extended the file but never wrote the data. Each is cut and every acknowledged upload is
/// served exactly; the log then takes new frames after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_everything_acknowledged_is_served() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut server = start(root.path()).await?;
    let t = Ctx::new(&server)?;
    let mut uploads = finished_uploads(&t, 5).await?;

    for (round, tail) in ["half a frame", "zero bytes"].into_iter().enumerate() {
        server.kill9().await?;
        let log_path = log_file(root.path())?;
        let mut log = std::fs::read(&log_path)?;
        let acknowledged = log.len();
        match round {
            0 => {
                // The first half of a copy of the last frame: a write cut short.
                let (start, end) = *frames(&log)?.last().context("an empty log")?;
                let torn = log[start..start + (end - start) / 2].to_vec();
                log.extend_from_slice(&torn);
            }
            _ => log.extend_from_slice(&[0u8; 4096]),
        }
        std::fs::write(&log_path, &log)?;

        server
            .restart()
            .await
            .with_context(|| format!("restart over a torn tail of {tail}"))?;
        ensure!(
            std::fs::metadata(&log_path)?.len() >= acknowledged as u64,
            "{tail}: the cut went below the acknowledged frames"
        );
        let t = Ctx::new(&server)?;
        for (url, data) in &uploads {
            check_exact(&t, url, data)
                .await
                .with_context(|| format!("{url} after a torn tail of {tail}"))?;
        }
        let data = random_bytes(3000 + round);
        let url = t.upload(&data).await?;
        uploads.push((url, data));
    }
    server.kill9().await?;
    server.restart().await?;
    let t = Ctx::new(&server)?;
    for (url, data) in &uploads {
        check_exact(&t, url, data).await?;
    }
    Ok(())
}

/// A commit frame written twice (two processes appending the same change, or a replayed
/// write): replay applies it once and skips the copy, whose expected offset no longer
/// matches the record, so the upload reads its bytes once and can be finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_at_a_stale_offset_is_skipped_on_replay() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut server = start(root.path()).await?;
    let t = Ctx::new(&server)?;
    let data = random_bytes(20_000);
    let url = t.create(data.len() as u64).await?;
    t.patch_ok(&url, 0, data[..7000].to_vec()).await?;
    server.kill9().await?;

    let log_path = log_file(root.path())?;
    let mut log = std::fs::read(&log_path)?;
    let (start, end) = *frames(&log)?.last().context("an empty log")?;
    ensure!(
        log[start + 8..end].starts_with(b"{\"Commit\""),
        "the last frame is not the PATCH's commit: {}",
        String::from_utf8_lossy(&log[start + 8..end])
    );
    let copy = log[start..end].to_vec();
    log.extend_from_slice(&copy);
    std::fs::write(&log_path, &log)?;

    server.restart().await?;
    let t = Ctx::new(&server)?;
    t.assert_offset(&url, 7000, "a commit replayed twice counts once")
        .await?;
    t.patch_ok(&url, 7000, data[7000..].to_vec()).await?;
    check_exact(&t, &url, &data).await
}

/// A second process on the same upload directory (so the same coordinator directory) exits
/// non-zero at once, naming the directory and the pid of the process that holds it; the
/// first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_directory_is_refused() -> Result<()> {
    let root = tempfile::tempdir()?;
    let server = start(root.path()).await?;
    let pid = server.pid().context("no pid")?;

    let refused = run_refused(&node_args(root.path()), &[]).await?;
    ensure!(
        refused.code.is_some_and(|c| c != 0),
        "a second process exited with {:?}, expected a non-zero code; stderr:\n{}",
        refused.code,
        refused.stderr
    );
    let dir = coordinator_dir(root.path()).display().to_string();
    ensure!(
        refused.stderr.contains(&dir) && refused.stderr.contains(&format!("pid {pid}")),
        "the refusal must name {dir} and pid {pid}; stderr:\n{}",
        refused.stderr
    );

    let t = Ctx::new(&server)?;
    let data = random_bytes(4321);
    let url = t.upload(&data).await?;
    check_exact(&t, &url, &data).await
}
