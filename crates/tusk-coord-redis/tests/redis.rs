//! What is particular to the Redis coordinator, against a real redis-server: leases that
//! expire, fencing across nodes, release requests across nodes, and Redis going away.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tusk_coord_redis::{RedisCoordinator, RedisSettings};
use tusk_core::contract::{commit_and_release, coordinator_contract, CoordinatorFixture};
use tusk_core::{Commit, CoordError, Coordinator, Segment, UploadRecord, UploadState};

/// A redis-server child on a free port, killed on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(&[])
    }

    /// A redis-server with extra arguments. `--sentinel` followed by configuration lines
    /// starts a Sentinel with those lines as its (writable) configuration file.
    fn start_with(extra: &[String]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut command = std::process::Command::new("redis-server");
        match extra.split_first() {
            Some((first, lines)) if first == "--sentinel" => {
                let config = dir.path().join("sentinel.conf");
                std::fs::write(&config, lines.join("\n") + "\n").expect("sentinel.conf");
                command.arg(&config).arg("--sentinel");
            }
            _ => {
                command.args(["--save", ""]).args(extra);
            }
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is needed ({e}): apt-get install -y redis-server")
            });
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }

    /// Kills the server and starts an empty one on the same port: a restart without
    /// persistence, which forgets every key.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = std::process::Command::new("redis-server")
            .args(["--save", "", "--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server again");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen again on {}", self.port);
    }

    async fn node(&self, lease_ttl: Duration) -> Arc<RedisCoordinator> {
        RedisCoordinator::connect(RedisSettings {
            url: format!("redis://127.0.0.1:{}/", self.port),
            prefix: "test:".into(),
            lease_ttl,
            timeout: Duration::from_millis(500),
            sentinel: None,
            wait_replicas: 0,
            cluster_nodes: Vec::new(),
        })
        .await
        .expect("connect")
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(id: &str, length: u64) -> UploadRecord {
    UploadRecord {
        id: id.into(),
        offset: 0,
        length: Some(length),
        metadata: Some("filename YS50eHQ=".into()),
        concat: None,
        created_at: 1,
        expires_at: Some(100),
        state: UploadState::Active,
        segments: vec![],
        session: None,
        notice: None,
        expected_digest: None,
        last_commit: None,
    }
}

fn commit(expected_offset: u64, target: tusk_core::WriteTarget, len: u64) -> Commit {
    Commit {
        expected_offset,
        added: len,
        append: vec![Segment::new(target, len)],
        fold: 0,
        session: None,
        declare_length: None,
        expires_at: Some(200),
        notice: None,
        stamp: None,
    }
}

/// Nodes of one Redis, with short leases so the suite can wait past them.
struct Nodes {
    redis: Redis,
}

#[async_trait::async_trait]
impl CoordinatorFixture for Nodes {
    async fn node(&self) -> Arc<dyn Coordinator> {
        self.redis.node(LEASE_TTL).await
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(LEASE_TTL)
    }
}

const LEASE_TTL: Duration = Duration::from_millis(500);

#[tokio::test]
async fn redis_keeps_the_coordinator_contract() {
    coordinator_contract(&Nodes {
        redis: Redis::start(),
    })
    .await;
}

/// Tokens must keep growing when Redis forgets its counter: a restart without persistence
/// (or a failover to a replica that missed the last changes) loses the upload's hash, and
/// the same ID created again must still get tokens above the old ones.
#[tokio::test]
async fn tokens_keep_growing_when_redis_forgets() {
    let mut redis = Redis::start();
    let node = redis.node(LEASE_TTL).await;
    let id = "FFFFFFFFFFFFFFFFFFFFFFFF";
    node.create(&record(id, 10)).await.expect("create");
    let before = node.acquire(id, Duration::ZERO).await.expect("lease");
    let old_token = before.token();
    before.release().await.ok();
    redis.restart_empty();
    let node = redis.node(LEASE_TTL).await;
    node.create(&record(id, 10)).await.expect("create again");
    let after = node.acquire(id, Duration::ZERO).await.expect("lease");
    assert!(
        after.token() > old_token,
        "{} after {old_token}",
        after.token()
    );
}

#[tokio::test]
async fn redis_down_is_unavailable_not_an_error_of_the_upload() {
    let mut redis = Redis::start();
    let node = redis.node(Duration::from_secs(5)).await;
    node.ping().await.expect("ping");
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let result = node.load("DDDDDDDDDDDDDDDDDDDDDDDD").await;
    assert!(
        matches!(result, Err(CoordError::Unavailable(_))),
        "{result:?}"
    );
    assert!(matches!(node.ping().await, Err(CoordError::Unavailable(_))));
}

/// With Sentinel, the coordinator finds the master, follows a failover to the replica, and
/// (waiting for one replica on every change) loses no acknowledged commit in it.
#[tokio::test]
async fn a_sentinel_failover_keeps_every_acknowledged_commit() {
    let master = Redis::start();
    let replica = Redis::start_with(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port.to_string(),
    ]);
    let sentinel = Redis::start_with(&[
        "--sentinel".into(),
        format!("sentinel monitor mymaster 127.0.0.1 {} 1", master.port),
        "sentinel down-after-milliseconds mymaster 1000".into(),
        "sentinel failover-timeout mymaster 5000".into(),
    ]);
    // The replica has synced, and the sentinel learned about it from the master's INFO.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !replica
        .cli(&["info", "replication"])
        .contains("master_link_status:up")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never synced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !sentinel
        .cli(&["sentinel", "replicas", "mymaster"])
        .contains(&replica.port.to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sentinel never saw the replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node = RedisCoordinator::connect(RedisSettings {
        url: "redis://127.0.0.1:1/".into(), // only credentials, database and TLS count
        prefix: "test:".into(),
        lease_ttl: Duration::from_secs(30),
        timeout: Duration::from_millis(500),
        sentinel: Some(tusk_coord_redis::SentinelSettings {
            sentinels: vec![format!("redis://127.0.0.1:{}/", sentinel.port)],
            master: "mymaster".into(),
        }),
        wait_replicas: 1,
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("connect through the sentinel");
    let id = "EEEEEEEEEEEEEEEEEEEEEEEE";
    node.create(&record(id, 10)).await.expect("create");
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease");
    let target = lease.reserve().await.expect("reserve");
    commit_and_release(lease, &commit(0, target, 4))
        .await
        .expect("commit");

    assert!(sentinel
        .cli(&["sentinel", "failover", "mymaster"])
        .contains("OK"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let moved = sentinel
            .cli(&["sentinel", "get-master-addr-by-name", "mymaster"])
            .contains(&replica.port.to_string());
        if moved {
            if let Ok(Some(found)) = node.load(id).await {
                assert_eq!(
                    found.offset, 4,
                    "the acknowledged commit survived the failover"
                );
                if replica.cli(&["role"]).starts_with("master") {
                    break;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failover within 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old master rejoins as a replica of the new one; until it has, a change cannot be
    // acknowledged (it answers unavailable, and clients retry).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !replica
        .cli(&["info", "replication"])
        .contains("state=online")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old master never rejoined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes go to the new master once the coordinator has followed it. A commit the
    // replica did not confirm in time answers unavailable although the master applied it
    // (the client then finds it with HEAD); both count as the write having gone through.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let lease = node.acquire(id, Duration::ZERO).await?;
            let target = lease.reserve().await?;
            commit_and_release(lease, &commit(4, target, 6))
                .await
                .map(|_| ())
        };
        match attempt.await {
            Ok(()) => break,
            Err(CoordError::Unavailable(_))
                if node
                    .load(id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.offset == 10) =>
            {
                break
            }
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "no writes after the failover: {error:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(replica
        .cli(&["hget", "test:{t}:up:EEEEEEEEEEEEEEEEEEEEEEEE", "offset"])
        .contains("10"));
}

/// Scripts Redis has run so far. Every coordinator call on a PATCH's path is one script,
/// one round trip; the commands inside a script are counted apart, as its own.
fn scripts_run(redis: &Redis) -> u64 {
    redis
        .cli(&["info", "commandstats"])
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

/// A PATCH that writes one target costs two round trips: taking the lease reserves its
/// first target, and the commit lets go of the lease.
#[tokio::test]
async fn a_patch_of_one_target_costs_two_round_trips() {
    let redis = Redis::start();
    let node = redis.node(LEASE_TTL).await;
    let id = "RoundTripsRoundTrips0000";
    node.create(&record(id, 10)).await.expect("create");
    let mut offset = 0;
    // The first PATCH loads the scripts; the second is the one measured.
    for _ in 0..2 {
        let before = scripts_run(&redis);
        let lease = node
            .acquire_to_write(id, Duration::ZERO)
            .await
            .expect("lease");
        let target = lease.reserve().await.expect("reserve");
        commit_and_release(lease, &commit(offset, target, 1))
            .await
            .expect("commit");
        offset += 1;
        let served = scripts_run(&redis) - before;
        if offset == 2 {
            assert_eq!(served, 2, "Redis round trips for one PATCH");
        }
    }
}
