//! Starts real `tusk` processes for the end-to-end tests.
//!
//! A [`Backend`] says how a node is configured (which storage, which coordinator); everything
//! else — spawning, waiting for the listening line, kill -9, restart on the same port — is
//! shared, so a new backend pair runs every existing test by adding one `Backend` value.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How one node of a backend pair is configured.
pub trait Backend: Send + Sync {
    /// Short name used in test output, e.g. `fs+embedded`.
    fn name(&self) -> &'static str;
    /// Extra command-line arguments for a node whose private scratch directory is `dir`.
    fn node_args(&self, dir: &Path) -> Vec<String>;
}

/// Local disk for bytes, the embedded coordinator for records and leases.
pub struct FsEmbedded;

impl Backend for FsEmbedded {
    fn name(&self) -> &'static str {
        "fs+embedded"
    }
    fn node_args(&self, dir: &Path) -> Vec<String> {
        vec![
            "--upload-dir".into(),
            dir.join("data").display().to_string(),
        ]
    }
}

/// Path of the `tusk` binary built in the same profile as the running test.
pub fn tusk_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TUSK_BIN") {
        return Ok(PathBuf::from(path));
    }
    // The test executable lives in target/<profile>/deps/; the binary in target/<profile>/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile> parent")?;
    let bin = profile_dir.join("tusk");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --locked -p tusk` in the same \
             profile as the tests (the README's test command does), or set TUSK_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// One running `tusk` process.
pub struct TestServer {
    child: Option<Child>,
    args: Vec<String>,
    /// The scratch directory this node keeps its data in; kept across restarts.
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    /// `127.0.0.1:PORT` the node listens on (the same across restarts).
    pub addr: String,
    /// The upload endpoint, e.g. `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
}

impl TestServer {
    /// Starts a node of `backend` with a fresh scratch directory and any extra arguments.
    pub async fn start(backend: &dyn Backend, extra_args: &[&str]) -> Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("tusk-test-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let mut args = backend.node_args(&dir);
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut server = TestServer {
            child: None,
            args,
            dir,
            _tempdir: Some(tempdir),
            addr: String::new(),
            endpoint: String::new(),
        };
        server.spawn("0").await?;
        Ok(server)
    }

    /// The `tusk` arguments this node was started with (without host/port).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Keeps the scratch directory after the test, for debugging a failure.
    pub fn keep_dir(&mut self) {
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
    }

    async fn spawn(&mut self, port: &str) -> Result<()> {
        let mut child = Command::new(tusk_binary()?)
            .args(["--host", "127.0.0.1", "--port", port])
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TUSK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning tusk")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The server prints `listening on http://HOST:PORT/BASE/` once it accepts connections.
        let line = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_string());
                }
            }
            bail!("tusk exited before it listened")
        })
        .await
        .context("tusk did not print its listening line within 30s")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = line
            .trim_start_matches("http://")
            .split('/')
            .next()
            .context("listening line without an address")?
            .to_string();
        self.endpoint = line;
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the node: no shutdown code runs, as in a crash or an OOM kill.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Sends a signal (e.g. `libc`-free "STOP", "CONT", "TERM") with the `kill` command.
    pub fn signal(&self, name: &str) -> Result<()> {
        let pid = self.pid().context("node is not running")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    /// Process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Waits for the node to exit by itself and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>> {
        let mut child = self.child.take().context("node is not running")?;
        let status = tokio::time::timeout(within, child.wait())
            .await
            .context("node did not exit in time")??;
        Ok(status.code())
    }

    /// Starts the node again on the same port with the same data (after [`kill9`]).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9().await?;
        let port = self.addr.rsplit(':').next().context("no port")?.to_string();
        self.spawn(&port).await
    }
}
