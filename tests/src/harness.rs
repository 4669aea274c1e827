//! Starts real `tusk` processes for the end-to-end tests.
//!
//! A [`TestServer`] is one node: spawning, waiting for the listening line, kill -9, restart on
//! the same port. How a node is configured (which storage, which coordinator) comes from the
//! halves of a [`Pair`](crate::deploy::Pair); a [`Deployment`] is whatever the conformance
//! suite runs against.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use crate::deploy::FsEmbedded;

/// How one node of a backend pair that needs no service is configured (a [`Pair`] of
/// [`NodeLocal`] halves): what [`TestServer::start`] and restarts need.
///
/// [`Pair`]: crate::deploy::Pair
/// [`NodeLocal`]: crate::deploy::NodeLocal
pub trait Backend: Send + Sync {
    /// Short name used in test output, e.g. `fs+embedded`.
    fn name(&self) -> String;
    /// Extra command-line arguments for a node whose private scratch directory is `dir`.
    fn node_args(&self, dir: &Path) -> Vec<String>;
    /// Environment variables for a node whose private scratch directory is `dir`.
    fn node_env(&self, _dir: &Path) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Path of the `tusk` binary built in the same profile as the running test.
/// Reads a starting node's stdout until its listening line: the server prints `admin on
/// http://HOST:PORT/` (when it has an admin listener), then `listening on URL/BASE/` once it
/// accepts connections. Returns both URLs, and keeps draining stdout so the node never
/// blocks on a full pipe.
pub async fn await_listening(
    stdout: tokio::process::ChildStdout,
) -> Result<(String, Option<String>)> {
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = None;
    let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("admin on ") {
                admin = Some(url.trim().to_string());
            } else if let Some(url) = line.strip_prefix("listening on ") {
                return Ok::<_, anyhow::Error>(url.trim().to_string());
            }
        }
        bail!("tusk exited before it listened")
    })
    .await
    .context("tusk did not print its listening line within 30s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((endpoint, admin))
}

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

/// Anything the conformance suite can run against: a single node of a
/// [`Pair`](crate::deploy::Pair), or a cluster of nodes behind a load balancer
/// ([`crate::cluster`]).
pub trait Deployment: Send + Sync {
    /// Short name used in test output, e.g. `fs+embedded` or `fs+redis x3 behind nginx`.
    fn name(&self) -> String;
    /// Whether a GET of an upload that is not finished yet streams its committed bytes
    /// (true), or answers 409 Conflict because the storage cannot read an unfinished upload
    /// (S3: an unfinished multipart upload cannot be read). The conformance cases that GET
    /// an unfinished upload expect one or the other accordingly.
    fn reads_unfinished(&self) -> bool {
        true
    }
    /// Starts a fresh deployment whose every node gets `extra_args`.
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>>;
}

/// A future a [`Deployment`] returns (object safe without an async-trait dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started [`Deployment`]; stops everything it started when dropped.
pub trait Running: Send {
    /// The upload endpoint clients use, e.g. `http://127.0.0.1:PORT/files/`.
    fn endpoint(&self) -> &str;
    /// The upload endpoint of one node itself, bypassing any load balancer (for cases that
    /// check how a node reads proxy headers a load balancer would overwrite).
    fn node_endpoint(&self) -> &str {
        self.endpoint()
    }
    /// Keeps the scratch directories after the test, for debugging; returns them.
    fn keep_dirs(&mut self) -> Vec<PathBuf>;
}

impl Running for TestServer {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        self.keep_dir();
        vec![self.dir.clone()]
    }
}

/// One running `tusk` process.
pub struct TestServer {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Prefix for this node's stderr lines (empty: stderr is inherited unchanged).
    label: String,
    /// The scratch directory this node keeps its data in; kept across restarts.
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    /// `127.0.0.1:PORT` the node listens on (the same across restarts).
    pub addr: String,
    /// The upload endpoint, e.g. `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`), e.g. `http://127.0.0.1:PORT/`,
    /// when the node printed an `admin on` line before its listening line.
    pub admin: Option<String>,
}

/// How to start one node without a [`Backend`]: all arguments and environment given
/// explicitly (a cluster node points `--upload-dir` at a shared directory).
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Every `tusk` argument except `--host`/`--port`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Prefix for the node's stderr lines, e.g. `node2`; empty keeps stderr unchanged.
    pub label: String,
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
            env: backend.node_env(&dir),
            label: String::new(),
            dir,
            _tempdir: Some(tempdir),
            addr: String::new(),
            endpoint: String::new(),
            admin: None,
        };
        server.spawn("0").await?;
        Ok(server)
    }

    /// Starts a node with exactly `options` (and a fresh private scratch directory in
    /// [`TestServer::dir`], which the arguments may or may not use).
    pub async fn start_with(options: NodeOptions) -> Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("tusk-node-").tempdir()?;
        let mut server = TestServer {
            child: None,
            args: options.args,
            env: options.env,
            label: options.label,
            dir: tempdir.path().to_path_buf(),
            _tempdir: Some(tempdir),
            addr: String::new(),
            endpoint: String::new(),
            admin: None,
        };
        server.spawn("0").await?;
        Ok(server)
    }

    /// Whether the process is running (not killed or exited through this handle).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
        let mut command = Command::new(tusk_binary()?);
        // The harness's own TUSK_* variables are not node configuration (the node would
        // reject them as unknown keys).
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("TUSK_TEST_") || name == "TUSK_BIN" {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .args(["--host", "127.0.0.1", "--port", port, "--admin-port", "0"])
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TUSK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.label.is_empty() {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .kill_on_drop(true)
            .spawn()
            .context("spawning tusk")?;
        if let Some(stderr) = child.stderr.take() {
            // Prefix every line so the output of several nodes stays readable.
            let label = self.label.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{label}] {line}");
                }
            });
        }
        let stdout = child.stdout.take().context("no stdout")?;
        let (line, admin) = await_listening(stdout).await?;
        self.admin = admin;
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
