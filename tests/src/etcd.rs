//! A real etcd on loopback for the cluster tests (Debian's `etcd-server`; a missing one fails
//! the test with the `apt-get install` command): one member, or three that elect a leader
//! among themselves; and the [`Etcd`] and [`Etcd3`] coordinator halves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::deploy::{CoordinatorHalf, Shared, SharedByNodes};
use crate::harness::BoxFuture;
use crate::process::{free_port, require_binary, tail, unique_name, wait_listening};

/// One member: its ports and data directory stay the same across restarts.
struct Member {
    child: Option<Child>,
    name: String,
    dir: PathBuf,
    port: u16,
    peer_port: u16,
}

impl Member {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// An etcd of one or more members on loopback ports, each with its data in a directory of
/// its own (fsync on, as etcd always does). Members can be killed and started again on the
/// same ports and data.
pub struct EtcdServer {
    binary: PathBuf,
    members: Vec<Member>,
    /// `name=peer-url,...` of every member.
    initial_cluster: String,
}

impl EtcdServer {
    /// Starts a single-member etcd with its data under `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_members(dir, 1).await
    }

    /// Starts `count` members that form one cluster, with their data under `dir`.
    pub async fn start_members(dir: &Path, count: usize) -> Result<Self> {
        let binary = require_binary("etcd", "etcd-server")?;
        let mut members = Vec::new();
        for i in 0..count {
            let dir = dir.join(format!("member{i}"));
            std::fs::create_dir_all(&dir)?;
            members.push(Member {
                child: None,
                name: format!("m{i}"),
                dir,
                port: free_port()?,
                peer_port: free_port()?,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = EtcdServer {
            binary,
            members,
            initial_cluster,
        };
        // Members wait for each other to elect a leader: start them all, then wait.
        for i in 0..count {
            etcd.spawn(i).await?;
        }
        etcd.wait_serving().await?;
        Ok(etcd)
    }

    /// The client URLs of every member, comma-separated (what `--etcd-endpoints` takes).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    async fn spawn(&mut self, i: usize) -> Result<()> {
        let member = &self.members[i];
        let log = member.dir.join("etcd.log");
        let (client, peer) = (member.url(), member.peer_url());
        let mut child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(member.dir.join("data"))
            .args(["--name", &member.name])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
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
            &format!("127.0.0.1:{}", member.port),
            "etcd",
            &log,
        )
        .await?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until etcd answers (listening is not serving: it answers once it has a leader).
    async fn wait_serving(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.keys("").await {
                Ok(_) => return Ok(()),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    let logs: Vec<String> = self
                        .members
                        .iter()
                        .map(|m| tail(&m.dir.join("etcd.log"), 20))
                        .collect();
                    bail!("etcd does not answer: {e:#}; logs:\n{}", logs.join("\n"))
                }
            }
        }
    }

    async fn client(endpoints: Vec<String>) -> Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(2));
        Ok(etcd_client::Client::connect(endpoints, Some(options)).await?)
    }

    /// Keys under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut client = Self::client(self.urls()).await?;
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

    /// Which member leads now, asking each member that runs.
    pub async fn leader(&self) -> Result<usize> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let Ok(mut client) = Self::client(vec![member.url()]).await else {
                continue;
            };
            let Ok(status) = client.status().await else {
                continue;
            };
            let Some(id) = status.header().map(|h| h.member_id()) else {
                continue;
            };
            if status.leader() == id {
                let index = self.members.iter().position(|m| m.name == member.name);
                return index.context("the leader is one of the members");
            }
        }
        bail!("no member says it leads")
    }

    /// SIGKILLs member `i`.
    pub async fn kill9_member(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGKILLs every member (what etcd acknowledged is in their fsynced logs).
    pub async fn kill9(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.kill9_member(i).await?;
        }
        Ok(())
    }

    /// Starts member `i` again on its ports and data (after [`EtcdServer::kill9_member`]).
    pub async fn start_member_again(&mut self, i: usize) -> Result<()> {
        self.kill9_member(i).await?;
        self.spawn(i).await
    }

    /// Starts every member again on the same ports with the same data (after [`kill9`]).
    ///
    /// [`kill9`]: EtcdServer::kill9
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill9().await?;
        for i in 0..self.members.len() {
            self.spawn(i).await?;
        }
        self.wait_serving().await
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut c) = member.child.take() {
                let _ = c.start_kill();
            }
        }
    }
}

/// What the nodes of a deployment on `etcd` are given: every member's URL and a key prefix
/// of their own.
fn shared(etcd: EtcdServer) -> Shared {
    Shared {
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
    }
}

/// Records and leases in one single-member etcd every node shares.
#[derive(Clone, Copy, Debug)]
pub struct Etcd;

impl CoordinatorHalf for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move { Ok(shared(EtcdServer::start(&dir.join("etcd")).await?)) })
    }
}

impl SharedByNodes for Etcd {}

/// Records and leases in a three-member etcd every node shares, each node given every
/// member's URL.
#[derive(Clone, Copy, Debug)]
pub struct Etcd3;

impl CoordinatorHalf for Etcd3 {
    fn name(&self) -> &'static str {
        "etcd(3 members)"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            Ok(shared(
                EtcdServer::start_members(&dir.join("etcd"), 3).await?,
            ))
        })
    }
}

impl SharedByNodes for Etcd3 {}
