//! The etcd coordinator against a real etcd (Debian's `etcd-server`, 3.4) started here on
//! loopback ports: the coordinator contract, and etcd going away and coming back.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tusk_coord_etcd::{EtcdCoordinator, EtcdSettings};
use tusk_core::contract::{coordinator_contract, CoordinatorFixture};
use tusk_core::{CoordError, Coordinator};

use crate::common::record;

/// A single-member etcd on free loopback ports, with its data in a temporary directory,
/// killed on drop. Short heartbeat and election timeouts so that it elects itself at once.
struct Etcd {
    child: std::process::Child,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client_port, peer_port) = (free_port(), free_port());
        let child = Self::spawn(dir.path(), client_port, peer_port);
        let etcd = Etcd {
            child,
            client_port,
            peer_port,
            dir,
        };
        etcd.wait_listening();
        etcd
    }

    fn spawn(dir: &std::path::Path, client_port: u16, peer_port: u16) -> std::process::Child {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--name", "tusk-test"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tusk-test={peer}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("etcd is needed ({e}): apt-get install -y etcd-server"))
    }

    fn wait_listening(&self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not listen on {}", self.client_port);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same ports and data (after [`Etcd::kill`]).
    fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path(), self.client_port, self.peer_port);
        self.wait_listening();
    }

    /// A node, once etcd answers (it listens before it serves).
    async fn node(&self, lease_ttl: Duration) -> Arc<EtcdCoordinator> {
        let node = self.connect(lease_ttl).await;
        for _ in 0..100 {
            if node.ping().await.is_ok() {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd on port {} does not answer", self.client_port);
    }

    async fn connect(&self, lease_ttl: Duration) -> Arc<EtcdCoordinator> {
        EtcdCoordinator::connect(EtcdSettings {
            endpoints: vec![format!("http://127.0.0.1:{}", self.client_port)],
            prefix: "test/".into(),
            lease_ttl,
            timeout: Duration::from_millis(1000),
            credentials: None,
            tls: None,
        })
        .await
        .expect("connect to etcd")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes of one etcd, with short leases so the suite can wait past them.
struct Nodes {
    etcd: Etcd,
}

const LEASE_TTL: Duration = Duration::from_millis(500);

#[async_trait::async_trait]
impl CoordinatorFixture for Nodes {
    async fn node(&self) -> Arc<dyn Coordinator> {
        self.etcd.node(LEASE_TTL).await
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(LEASE_TTL)
    }
}

#[tokio::test]
async fn etcd_keeps_the_coordinator_contract() {
    coordinator_contract(&Nodes {
        etcd: Etcd::start(),
    })
    .await;
}

/// etcd killed: calls fail as unavailable within the request timeout (the server answers
/// 503), never hang; etcd back on its data: the same node serves again and nothing
/// acknowledged is lost.
#[tokio::test]
async fn etcd_going_away_is_unavailable_and_its_return_serves_again() {
    let mut etcd = Etcd::start();
    let node = etcd.node(Duration::from_secs(30)).await;
    let id = "EtcdRestartEtcdRestart01";
    node.create(&record(id, 10)).await.expect("create");
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease");
    let target = lease.reserve().await.expect("reserve");
    lease.release().await.expect("release");

    etcd.kill();
    let started = std::time::Instant::now();
    let answer = node.load(id).await;
    assert!(
        matches!(answer, Err(CoordError::Unavailable(_))),
        "load with etcd gone: {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the load took {:?} to fail",
        started.elapsed()
    );
    assert!(node.ping().await.is_err(), "ping with etcd gone");

    etcd.restart();
    let mut back = None;
    for _ in 0..100 {
        if let Ok(record) = node.load(id).await {
            back = record;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("the record, once etcd is back");
    assert_eq!(back.id, id);
    node.ping().await.expect("ping once etcd is back");
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease again");
    assert!(lease.token() > target.token, "tokens keep growing");
    let next = lease.reserve().await.expect("reserve");
    assert!(
        next.seq > target.seq,
        "targets never repeat: {next:?} after {target:?}"
    );
    lease.release().await.expect("release");
}
