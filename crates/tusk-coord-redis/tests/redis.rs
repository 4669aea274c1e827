//! What is particular to the Redis coordinator, against a real redis-server: leases that
//! expire, fencing across nodes, release requests across nodes, and Redis going away.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tusk_coord_redis::{RedisCoordinator, RedisSettings};
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

    async fn node(&self, lease_ttl: Duration) -> Arc<RedisCoordinator> {
        RedisCoordinator::connect(RedisSettings {
            url: format!("redis://127.0.0.1:{}/", self.port),
            prefix: "test:".into(),
            lease_ttl,
            timeout: Duration::from_millis(500),
            sentinel: None,
            wait_replicas: 0,
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
    }
}

#[tokio::test]
async fn records_round_trip_and_commits_append() {
    let redis = Redis::start();
    let node = redis.node(Duration::from_secs(5)).await;
    let id = "AAAAAAAAAAAAAAAAAAAAAAAA";
    node.create(&record(id, 10)).await.expect("create");
    assert!(matches!(
        node.create(&record(id, 10)).await,
        Err(CoordError::AlreadyExists)
    ));
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease");
    assert_eq!(
        Some(lease.record.clone()),
        node.load(id).await.expect("load")
    );
    let a = node
        .reserve(&lease.upload_id, lease.token)
        .await
        .expect("reserve");
    let b = node
        .reserve(&lease.upload_id, lease.token)
        .await
        .expect("reserve");
    assert_ne!(a, b);
    node.commit(&lease, &commit(0, a, 4)).await.expect("commit");
    node.commit(&lease, &commit(4, b, 6)).await.expect("commit");
    let stale = node.commit(&lease, &commit(4, b, 6)).await;
    assert!(
        matches!(
            stale,
            Err(CoordError::OffsetChanged {
                expected: 4,
                found: 10
            })
        ),
        "{stale:?}"
    );
    let mut expected = record(id, 10);
    expected.apply_commit(&commit(0, a, 4));
    expected.apply_commit(&commit(4, b, 6));
    assert_eq!(node.load(id).await.expect("load"), Some(expected));
    assert_eq!(
        node.due_for_sweep(199, 10).await.expect("due"),
        Vec::<String>::new()
    );
    assert_eq!(
        node.due_for_sweep(200, 10).await.expect("due"),
        vec![id.to_string()]
    );
    // The last commit of a PATCH lets go of the lease in the same step.
    node.commit_and_release(lease, &commit(10, b, 0))
        .await
        .expect("commit and release");
    let lease = node
        .acquire(id, Duration::ZERO)
        .await
        .expect("free again at once");
    node.mark_gone(&lease, 300).await.expect("gone");
    let gone = node.load(id).await.expect("load").expect("tombstone");
    assert_eq!(
        (gone.state, gone.segments.len()),
        (UploadState::Gone { purge_at: 300 }, 0)
    );
    node.purge(&lease).await.expect("purge");
    assert_eq!(node.load(id).await.expect("load"), None);
}

#[tokio::test]
async fn an_expired_lease_fences_its_holder_on_every_node() {
    let redis = Redis::start();
    let ttl = Duration::from_millis(400);
    let (zombie_node, live_node) = (redis.node(ttl).await, redis.node(ttl).await);
    let id = "BBBBBBBBBBBBBBBBBBBBBBBB";
    zombie_node.create(&record(id, 10)).await.expect("create");
    let zombie = zombie_node
        .acquire(id, Duration::ZERO)
        .await
        .expect("lease");
    let zombie_target = zombie_node
        .reserve(&zombie.upload_id, zombie.token)
        .await
        .expect("reserve");
    // The holder pauses past its TTL (a GC pause, SIGSTOP, a partition)...
    tokio::time::sleep(ttl * 2).await;
    let live = live_node
        .acquire(id, Duration::ZERO)
        .await
        .expect("taken over");
    assert!(live.token > zombie.token);
    let target = live_node
        .reserve(&live.upload_id, live.token)
        .await
        .expect("reserve");
    live_node
        .commit(&live, &commit(0, target, 3))
        .await
        .expect("commit");
    // ...and wakes up: it can neither renew, reserve, commit nor release the new lease.
    assert!(matches!(
        zombie_node.renew(id, zombie.token).await,
        Err(CoordError::LeaseLost)
    ));
    assert!(matches!(
        zombie_node.reserve(&zombie.upload_id, zombie.token).await,
        Err(CoordError::LeaseLost)
    ));
    let late = zombie_node
        .commit(&zombie, &commit(0, zombie_target, 5))
        .await;
    assert!(matches!(late, Err(CoordError::LeaseLost)), "{late:?}");
    zombie_node
        .release(zombie)
        .await
        .expect("release is harmless");
    assert!(
        live_node.renew(id, live.token).await.is_ok(),
        "the live lease survived"
    );
    let record = live_node.load(id).await.expect("load").expect("record");
    assert_eq!(record.offset, 3);
}

#[tokio::test]
async fn a_waiting_node_asks_the_holder_to_release() {
    let redis = Redis::start();
    let ttl = Duration::from_secs(30);
    let (holder_node, waiter_node) = (redis.node(ttl).await, redis.node(ttl).await);
    let id = "CCCCCCCCCCCCCCCCCCCCCCCC";
    holder_node.create(&record(id, 10)).await.expect("create");
    let mut lease = holder_node
        .acquire(id, Duration::ZERO)
        .await
        .expect("lease");
    // Give the holder node's subscription a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holder = tokio::spawn(async move {
        lease.release.requested().await;
        holder_node.release(lease).await.expect("release");
    });
    let started = std::time::Instant::now();
    let taken = waiter_node
        .acquire(id, Duration::from_secs(5))
        .await
        .expect("handed over");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    holder.await.expect("holder");
    assert!(matches!(
        waiter_node.acquire(id, Duration::ZERO).await,
        Err(CoordError::Locked)
    ));
    waiter_node.release(taken).await.expect("release");
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
    })
    .await
    .expect("connect through the sentinel");
    let id = "EEEEEEEEEEEEEEEEEEEEEEEE";
    node.create(&record(id, 10)).await.expect("create");
    let lease = node.acquire(id, Duration::ZERO).await.expect("lease");
    let target = node
        .reserve(&lease.upload_id, lease.token)
        .await
        .expect("reserve");
    node.commit(&lease, &commit(0, target, 4))
        .await
        .expect("commit");
    node.release(lease).await.expect("release");

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
            let target = node.reserve(&lease.upload_id, lease.token).await?;
            node.commit_and_release(lease, &commit(4, target, 6)).await
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
