//! The embedded coordinator's log and directory, with the real binary: kill -9, then bytes of
//! the log changed on disk the way a power cut or a second process would, or a second process
//! started.
//!
//! What must hold: a torn tail (an incomplete or damaged last frame, never acknowledged) is
//! cut and everything acknowledged is served; a commit that does not start where its record
//! ends is skipped on replay; and one coordinator directory serves one process at a time.
//!
//! The log's frame format (`[len: u32 LE][crc32: u32 LE][json]`) is the only internal this
//! file knows, to find a frame and to write a torn tail.

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

async fn start(root: &Path) -> Result<TestServer> {
    TestServer::start_with(NodeOptions {
        args: node_args(root),
        ..Default::default()
    })
    .await
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
