//! The embedded coordinator's directory against a second process, with the real binary:
//! one coordinator directory serves one process at a time.

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

async fn start(root: &Path) -> Result<TestServer> {
    TestServer::start_with(NodeOptions {
        args: node_args(root),
        ..Default::default()
    })
    .await
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
