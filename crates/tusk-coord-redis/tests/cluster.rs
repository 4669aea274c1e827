//! The Redis coordinator on a real Redis Cluster (Debian's redis-server and redis-cli):
//! three masters and three replicas on loopback, made with `redis-cli --cluster create`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tusk_coord_redis::{RedisCoordinator, RedisSettings};
use tusk_core::contract::{coordinator_contract, record, CoordinatorFixture};
use tusk_core::Coordinator;

/// Six redis-server children in cluster mode, killed on drop.
struct RedisCluster {
    children: Vec<std::process::Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A port below Linux's ephemeral range that was free a moment ago.
fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli is needed ({e}): apt-get install -y redis-server"));
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for i in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-node-timeout", "1000", "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("redis-server is needed ({e}): apt-get install -y redis-server")
                });
            children.push(child);
            ports.push(port);
        }
        let cluster = RedisCluster {
            children,
            ports,
            _dir: dir,
        };
        for &port in &cluster.ports {
            let listening = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            assert!(listening, "redis-server did not listen on {port}");
        }
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        let made = redis_cli(cluster.ports[0], &create);
        assert!(
            made.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create: {made}"
        );
        cluster.wait_state_ok();
        cluster
    }

    /// Until every node says `cluster_state:ok` (the cluster bus needs a moment after
    /// `create` to spread the configuration).
    fn wait_state_ok(&self) {
        for _ in 0..200 {
            if self
                .ports
                .iter()
                .all(|&p| redis_cli(p, &["cluster", "info"]).contains("cluster_state:ok"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the redis cluster did not reach cluster_state:ok");
    }

    /// The ports of the current masters.
    fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|&p| redis_cli(p, &["role"]).starts_with("master"))
            .collect()
    }

    async fn node(&self, lease_ttl: Duration) -> Arc<RedisCoordinator> {
        RedisCoordinator::connect(RedisSettings {
            url: String::new(),
            prefix: "test:".into(),
            lease_ttl,
            timeout: Duration::from_millis(1000),
            sentinel: None,
            wait_replicas: 0,
            cluster_nodes: self
                .ports
                .iter()
                .take(3)
                .map(|p| format!("redis://127.0.0.1:{p}/"))
                .collect(),
        })
        .await
        .expect("connect to the redis cluster")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Nodes {
    cluster: RedisCluster,
}

const LEASE_TTL: Duration = Duration::from_millis(500);

#[async_trait::async_trait]
impl CoordinatorFixture for Nodes {
    async fn node(&self) -> Arc<dyn Coordinator> {
        self.cluster.node(LEASE_TTL).await
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(LEASE_TTL)
    }
}

#[tokio::test]
async fn redis_cluster_keeps_the_coordinator_contract() {
    coordinator_contract(&Nodes {
        cluster: RedisCluster::start(),
    })
    .await;
}

/// Uploads spread: after 60 creations every master holds records, and each upload's keys
/// (record, segments, lease, its bucket's sweep index) sit together on one of them.
#[tokio::test]
async fn uploads_spread_over_every_master() {
    let cluster = RedisCluster::start();
    let node = cluster.node(Duration::from_secs(30)).await;
    for n in 0..60 {
        let id = format!("SpreadSpreadSpreadSp{n:04}");
        node.create(&record(&id, Some(1), Some(100)))
            .await
            .expect("create");
        let lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
        lease.release().await.expect("release");
    }
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let mut total = 0;
    for port in masters {
        let held = redis_cli(port, &["--scan", "--pattern", "test:*:up:*"]);
        let count = held.lines().filter(|l| !l.is_empty()).count();
        assert!(
            count > 0,
            "the master on port {port} holds no upload records: uploads are not spread"
        );
        total += count;
    }
    assert_eq!(total, 60, "every record is on exactly one master");
    assert_eq!(
        node.due_for_sweep(100, 1_000).await.expect("due").len(),
        60,
        "the sweep indexes of every bucket, on every master, list what is due"
    );
}
