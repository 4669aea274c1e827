//! A real `redis-server` on loopback for the cluster tests (Debian's package; a missing one
//! fails the test with the `apt-get install` command), and the [`Redis`] coordinator half.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::deploy::{CoordinatorHalf, Shared, SharedByNodes};
use crate::harness::BoxFuture;
use crate::process::{free_port, require_binary, tail, unique_name, wait_listening};

/// A `redis-server` on a loopback port with its data in a directory of its own: AOF on,
/// fsync on every write, no RDB snapshots. It can be killed and started again on the same port
/// and data (a Redis restart).
pub struct RedisServer {
    child: Option<Child>,
    binary: PathBuf,
    /// The data directory (redis.conf, the AOF, redis.log).
    pub dir: PathBuf,
    /// The port it listens on, the same across restarts.
    pub port: u16,
    /// Configuration lines after the harness's own (a cluster member's, say).
    extra_conf: String,
}

impl RedisServer {
    /// Starts Redis with its data in `dir` (created if needed) on a free port.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, || Ok(String::new())).await
    }

    /// [`RedisServer::start`] with configuration lines of its own after the harness's, made
    /// anew for each attempt (they may name ports).
    pub async fn start_with(dir: &Path, extra_conf: impl Fn() -> Result<String>) -> Result<Self> {
        let binary = require_binary("redis-server", "redis-server")?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..3 {
            let mut redis = RedisServer {
                child: None,
                binary: binary.clone(),
                dir: dir.to_path_buf(),
                port: free_port()?,
                extra_conf: extra_conf()?,
            };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis did not start")))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.join("redis.conf");
        let log = self.dir.join("redis.log");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {}\ndir {}\nappendonly yes\nappendfsync always\n\
                 save \"\"\ndaemonize no\nlogfile {}\n{}",
                self.port,
                self.dir.display(),
                log.display(),
                self.extra_conf,
            ),
        )?;
        let mut child = Command::new(&self.binary)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        wait_listening(&mut child, &self.addr(), "redis-server", &log).await?;
        self.child = Some(child);
        // Listening is not ready: while it loads the AOF, Redis answers -LOADING.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.command(&["PING"]).await {
                Ok(reply) if reply == "+PONG" => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(reply) => bail!(
                    "redis answers PING with {reply:?}; log:\n{}",
                    tail(&log, 30)
                ),
                Err(e) => return Err(e.context(format!("redis PING; log:\n{}", tail(&log, 30)))),
            }
        }
    }

    /// Sends one command and returns the reply: the first line for simple replies, the
    /// elements joined by newlines for an array of bulk strings (e.g. `KEYS`).
    pub async fn command(&self, args: &[&str]) -> Result<String> {
        let mut stream = TcpStream::connect(self.addr())
            .await
            .with_context(|| format!("connecting to redis at {}", self.addr()))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        let read = async {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end().to_string();
            let Some(count) = line.strip_prefix('*') else {
                if let Some(len) = line.strip_prefix('$') {
                    let len: i64 = len.parse().context("redis: bad bulk length")?;
                    if len < 0 {
                        return Ok(String::new());
                    }
                    let mut buf = vec![0u8; len as usize + 2];
                    reader.read_exact(&mut buf).await?;
                    buf.truncate(len as usize);
                    return Ok(String::from_utf8_lossy(&buf).into_owned());
                }
                return Ok::<_, anyhow::Error>(line);
            };
            let count: i64 = count.parse().context("redis: bad array length")?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                let mut head = String::new();
                reader.read_line(&mut head).await?;
                let len: i64 = head
                    .trim_end()
                    .strip_prefix('$')
                    .context("redis: expected a bulk string in the array")?
                    .parse()
                    .context("redis: bad bulk length")?;
                let mut buf = vec![0u8; len.max(0) as usize + 2];
                reader.read_exact(&mut buf).await?;
                buf.truncate(len.max(0) as usize);
                items.push(String::from_utf8_lossy(&buf).into_owned());
            }
            Ok(items.join("\n"))
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .context("redis did not answer within 5s")?
    }

    /// Keys matching `pattern` (`KEYS`; fine for a test's small database).
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        let reply = self.command(&["KEYS", pattern]).await?;
        Ok(reply
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// SIGKILLs Redis (what it acknowledged is in the AOF, fsynced).
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts Redis again on the same port with the same data directory (after [`kill9`]).
    ///
    /// [`kill9`]: RedisServer::kill9
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill9().await?;
        self.spawn().await
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

/// Records and leases in one Redis every node shares, a key prefix of its own per deployment.
#[derive(Clone, Copy, Debug)]
pub struct Redis;

impl CoordinatorHalf for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let redis = RedisServer::start(&dir.join("redis")).await?;
            Ok(Shared {
                node_args: vec![
                    "--coordinator".into(),
                    "redis".into(),
                    "--redis-url".into(),
                    redis.url(),
                    "--redis-prefix".into(),
                    unique_name("tusk-test-") + ":",
                ],
                redis: Some(redis),
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for Redis {}
