//! A real etcd on loopback for the cluster tests (Debian's `etcd-server`; a missing one fails
//! the test with the `apt-get install` command), and the [`Etcd`] coordinator half.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::deploy::{CoordinatorHalf, Shared, SharedByNodes};
use crate::harness::BoxFuture;
use crate::process::{free_port, require_binary, tail, unique_name, wait_listening};

/// A single-member etcd on loopback ports with its data in a directory of its own (fsync
/// on, as etcd always does). It can be killed and started again on the same ports and data.
pub struct EtcdServer {
    child: Option<Child>,
    binary: PathBuf,
    /// The data directory (and etcd.log).
    pub dir: PathBuf,
    /// The client port, the same across restarts.
    pub port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd with its data in `dir` (created if needed) on free ports.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = require_binary("etcd", "etcd-server")?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..3 {
            let mut etcd = EtcdServer {
                child: None,
                binary: binary.clone(),
                dir: dir.to_path_buf(),
                port: free_port()?,
                peer_port: free_port()?,
            };
            match etcd.spawn().await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = self.dir.join("etcd.log");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--name", "tusk-test"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tusk-test={peer}")])
            .args(["--heartbeat-interval", "20", "--election-timeout", "200"])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        wait_listening(
            &mut child,
            &format!("127.0.0.1:{}", self.port),
            "etcd",
            &log,
        )
        .await?;
        self.child = Some(child);
        // Listening is not serving: it answers once it has elected itself.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.keys("").await {
                Ok(_) => return Ok(()),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => bail!("etcd does not answer: {e:#}; log:\n{}", tail(&log, 30)),
            }
        }
    }

    /// Keys under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let options = etcd_client::ConnectOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2));
        let mut client = etcd_client::Client::connect([self.url()], Some(options)).await?;
        let listed = client
            .get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await?;
        Ok(listed
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// SIGKILLs etcd (what it acknowledged is in its fsynced log).
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts etcd again on the same ports with the same data (after [`kill9`]).
    ///
    /// [`kill9`]: EtcdServer::kill9
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill9().await?;
        self.spawn().await
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

/// Records and leases in one etcd every node shares, a key prefix of its own per deployment.
#[derive(Clone, Copy, Debug)]
pub struct Etcd;

impl CoordinatorHalf for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let etcd = EtcdServer::start(&dir.join("etcd")).await?;
            Ok(Shared {
                node_args: vec![
                    "--coordinator".into(),
                    "etcd".into(),
                    "--etcd-endpoints".into(),
                    etcd.url(),
                ],
                env: vec![(
                    "TUSK_COORDINATOR__ETCD__PREFIX".into(),
                    unique_name("tusk-test-") + "/",
                )],
                etcd: Some(etcd),
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for Etcd {}
