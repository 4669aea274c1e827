//! A real Redis Cluster on loopback (Debian's `redis-server` and `redis-cli`): three masters
//! and three replicas made with `redis-cli --cluster create`, and the [`RedisCluster`]
//! coordinator half.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::process::Command;

use crate::deploy::{CoordinatorHalf, Shared, SharedByNodes};
use crate::harness::BoxFuture;
use crate::process::{free_port, require_binary, unique_name};
use crate::redis::RedisServer;

/// Six cluster members, each a [`RedisServer`] (AOF, fsync always) that can be killed and
/// started again on its port and data; one replica per master.
pub struct RedisClusterServer {
    members: Vec<RedisServer>,
}

impl RedisClusterServer {
    /// Starts six members with their data under `dir` and makes them one cluster.
    pub async fn start(dir: &Path) -> Result<Self> {
        let cli = require_binary("redis-cli", "redis-server")?;
        let mut members = Vec::new();
        for i in 0..6 {
            let member = RedisServer::start_with(&dir.join(format!("member{i}")), || {
                Ok(format!(
                    "cluster-enabled yes\ncluster-port {}\ncluster-node-timeout 1000\n\
                     cluster-config-file nodes.conf\n",
                    free_port()?
                ))
            })
            .await?;
            members.push(member);
        }
        let made = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(members.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        let said = String::from_utf8_lossy(&made.stdout);
        ensure!(
            said.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create: {said}{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let cluster = Self { members };
        cluster.wait_state_ok().await?;
        Ok(cluster)
    }

    /// The members' URLs, comma-separated (what `--redis-cluster-nodes` takes).
    pub fn seeds(&self) -> String {
        self.members
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Until every running member says `cluster_state:ok` and every running replica is in
    /// sync with its master (a change is acknowledged only once a replica has it).
    pub async fn wait_state_ok(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut all_ok = true;
            for member in self.members.iter().filter(|m| m.is_running()) {
                let info = member
                    .command(&["CLUSTER", "INFO"])
                    .await
                    .unwrap_or_default();
                let replication = member
                    .command(&["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                all_ok &= info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"));
            }
            if all_ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the redis cluster did not reach cluster_state:ok with its replicas in sync in 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Indexes of the running members that are masters.
    pub async fn masters(&self) -> Result<Vec<usize>> {
        let mut masters = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            if member.is_running()
                && member
                    .command(&["INFO", "replication"])
                    .await?
                    .contains("role:master")
            {
                masters.push(i);
            }
        }
        Ok(masters)
    }

    /// Keys matching `pattern` on every master.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for i in self.masters().await? {
            keys.extend(self.members[i].keys(pattern).await?);
        }
        Ok(keys)
    }

    /// Keys matching `pattern` on member `i` alone.
    pub async fn keys_on(&self, i: usize, pattern: &str) -> Result<Vec<String>> {
        self.members[i].keys(pattern).await
    }

    /// SIGKILLs member `i`.
    pub async fn kill9(&mut self, i: usize) -> Result<()> {
        self.members[i].kill9().await
    }

    /// Starts member `i` again on its port and data; it rejoins the cluster (a killed master
    /// comes back as a replica of the one promoted in its place).
    pub async fn start_again(&mut self, i: usize) -> Result<()> {
        self.members[i].start_again().await
    }
}

/// Records and leases in a Redis Cluster every node shares, each node given every member as
/// a seed and `wait_replicas = 1`: a change is acknowledged once its shard's replica has it,
/// so a failover keeps every acknowledged commit.
#[derive(Clone, Copy, Debug)]
pub struct RedisCluster;

impl CoordinatorHalf for RedisCluster {
    fn name(&self) -> &'static str {
        "redis-cluster"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let cluster = RedisClusterServer::start(&dir.join("redis-cluster")).await?;
            Ok(Shared {
                node_args: vec![
                    "--coordinator".into(),
                    "redis".into(),
                    "--redis-cluster-nodes".into(),
                    cluster.seeds(),
                    "--redis-prefix".into(),
                    unique_name("tusk-test-") + ":",
                ],
                env: vec![("TUSK_COORDINATOR__REDIS__WAIT_REPLICAS".into(), "1".into())],
                redis_cluster: Some(cluster),
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for RedisCluster {}
