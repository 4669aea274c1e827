//! The etcd coordinator against a real etcd (Debian's `etcd-server`, 3.4) started here on
//! loopback ports: the coordinator contract, and etcd going away and coming back.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tusk_coord_etcd::{EtcdCoordinator, EtcdSettings};
use tusk_core::contract::{commit_and_release, coordinator_contract, record, CoordinatorFixture};
use tusk_core::{Commit, CoordError, Coordinator, Segment};

/// A single-member etcd on free loopback ports, with its data in a temporary directory,
/// killed on drop. Short heartbeat and election timeouts so that it elects itself at once.
struct Etcd {
    child: std::process::Child,
    client_port: u16,
    peer_port: u16,
    extra: &'static [&'static str],
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
        Self::start_with(&[])
    }

    /// etcd started with `extra` arguments (each start, restarts too).
    fn start_with(extra: &'static [&'static str]) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client_port, peer_port) = (free_port(), free_port());
        let child = Self::spawn(dir.path(), client_port, peer_port, extra);
        let etcd = Etcd {
            child,
            client_port,
            peer_port,
            extra,
            dir,
        };
        etcd.wait_listening();
        etcd
    }

    fn spawn(
        dir: &std::path::Path,
        client_port: u16,
        peer_port: u16,
        extra: &[&str],
    ) -> std::process::Child {
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
            .args(extra)
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
        self.child = Self::spawn(
            self.dir.path(),
            self.client_port,
            self.peer_port,
            self.extra,
        );
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
        EtcdCoordinator::connect(self.settings(lease_ttl))
            .await
            .expect("connect to etcd")
    }

    fn settings(&self, lease_ttl: Duration) -> EtcdSettings {
        EtcdSettings {
            endpoints: vec![self.endpoint()],
            prefix: "test/".into(),
            lease_ttl,
            timeout: Duration::from_millis(1000),
            credentials: None,
            tls: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Turns etcd's authentication on, with `root` as the only user (what `etcdctl user add
    /// root` and `etcdctl auth enable` do).
    async fn enable_auth(&self, password: &str) {
        let mut admin = etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("admin client");
        for _ in 0..100 {
            if admin.user_add("root", password, None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin.role_add("root").await.expect("role root");
        admin
            .user_grant_role("root", "root")
            .await
            .expect("grant root");
        admin.auth_enable().await.expect("auth enable");
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
    node.create(&record(id, Some(10), None))
        .await
        .expect("create");
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

/// With a user and password, a node starts while etcd is down, answers unavailable, and
/// serves once etcd is back, also after its token expired (5 minutes idle by default, 1 s
/// here); a password etcd refuses stops the start, naming the cause.
#[tokio::test]
async fn a_node_with_credentials_starts_while_etcd_is_down() {
    let mut etcd = Etcd::start_with(&["--auth-token-ttl", "1"]);
    etcd.enable_auth("right horse").await;
    etcd.kill();
    let settings = etcd.settings(Duration::from_secs(30));
    let with = |password: &str| EtcdSettings {
        credentials: Some(("root".into(), password.into())),
        ..settings.clone()
    };
    let node = EtcdCoordinator::connect(with("right horse"))
        .await
        .expect("a node with credentials starts while etcd is down");
    let id = "EtcdAuthEtcdAuthEtcdAu01";
    let answer = node.create(&record(id, Some(10), None)).await;
    assert!(
        matches!(answer, Err(CoordError::Unavailable(_))),
        "create with etcd down: {answer:?}"
    );

    etcd.restart();
    let mut served = None;
    for _ in 0..100 {
        served = Some(node.create(&record(id, Some(10), None)).await);
        if matches!(served, Some(Ok(()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(served, Some(Ok(()))),
        "create once etcd is back: {served:?}"
    );
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease");
    lease.release().await.expect("release");

    // The node's token expires while it is idle: it authenticates again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut loaded = None;
    for _ in 0..100 {
        loaded = Some(node.load(id).await);
        if matches!(loaded, Some(Ok(Some(_)))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(loaded, Some(Ok(Some(_)))),
        "load after the node's token expired: {loaded:?}"
    );

    let refused = EtcdCoordinator::connect(with("wrong horse")).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("authentication failed"),
        "a node with a password etcd refuses must not start: {message:?}"
    );
}

impl Etcd {
    /// Requests etcd's key-value service has started so far (its own Prometheus metrics):
    /// every call a coordinator makes to it is one round trip.
    fn kv_requests(&self) -> u64 {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.client_port)).expect("metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("ask for metrics");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("metrics");
        text.lines()
            .filter(|line| {
                line.starts_with("grpc_server_started_total{")
                    && line.contains("grpc_service=\"etcdserverpb.KV\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// A PATCH that writes one target costs two round trips: taking the lease reserves its
/// first target, and the commit lets go of the lease.
#[tokio::test]
async fn a_patch_of_one_target_costs_two_round_trips() {
    let etcd = Etcd::start();
    let node = etcd.node(Duration::from_secs(30)).await;
    let id = "RoundTripsRoundTrips0000";
    node.create(&record(id, Some(10), None))
        .await
        .expect("create");
    for offset in 0..3 {
        let before = etcd.kv_requests();
        let lease = node
            .acquire_to_write(id, Duration::ZERO)
            .await
            .expect("lease");
        let target = lease.reserve().await.expect("reserve");
        let commit = Commit {
            expected_offset: offset,
            added: 1,
            append: vec![Segment::new(target, 1)],
            fold: 0,
            session: None,
            declare_length: None,
            expires_at: None,
            notice: None,
            stamp: None,
        };
        commit_and_release(lease, &commit).await.expect("commit");
        assert_eq!(
            etcd.kv_requests() - before,
            2,
            "etcd round trips for PATCH {offset}"
        );
    }
}
