//! A Tusk cluster on loopback for the end-to-end tests: the shared services (Redis from
//! Debian's `redis-server`, a shared upload directory or an S3 bucket on moto's server, see
//! [`crate::s3`]), several `tusk` nodes, and a real load balancer in front (nginx or HAProxy,
//! running deploy/nginx.conf or deploy/haproxy.cfg with only the upstream lines, the listen
//! address and the file paths changed).
//!
//! A [`ClusterBackend`] says what the nodes share and how a node is configured; the rest
//! (nodes, balancer, faults) is the same for every backend: [`FsRedis`] and
//! [`S3Redis`](crate::s3::S3Redis) run the same cluster tests, and an etcd or GCS backend
//! would by adding one `ClusterBackend` value.
//!
//! Every server this needs must be installed: a missing one fails the test with the command
//! that installs it (`apt-get install`, or pip for moto; tests/run.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::harness::{BoxFuture, Deployment, NodeOptions, Running, TestServer};
use crate::s3::{S3Bucket, S3Redis};

/// Finds a server binary or fails with the command that installs it.
pub fn require_binary(name: &str, package: &str) -> Result<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/sbin").join(name),
        PathBuf::from("/usr/bin").join(name),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(path) => Ok(path),
        None => bail!(
            "`{name}` is not installed; the cluster tests need it. Install it with \
             `sudo apt-get update && sudo apt-get install -y --no-install-recommends {package}` \
             (tests/run.sh does this)"
        ),
    }
}

/// A port that was free a moment ago on 127.0.0.1 (for servers that cannot bind port 0 and
/// report it back).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("probing a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A name no other test (in this process or another) uses, e.g. for a Redis key prefix.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    )
}

/// Sends `kill -<signal> <pid>`.
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `addr` accepts TCP connections, failing early if `child` exits.
pub(crate) async fn wait_listening(
    child: &mut Child,
    addr: &str,
    what: &str,
    log: &Path,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited with {status} before listening on {addr}; its log:\n{}",
                tail(log, 30)
            );
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{what} did not listen on {addr} within 15s; its log:\n{}",
                tail(log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a child politely (SIGTERM, so nginx's master takes its workers down), then for sure.
fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        if let Some(pid) = c.id() {
            let _ = send_signal(pid, "CONT");
            let _ = send_signal(pid, "TERM");
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = c.start_kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

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
}

impl RedisServer {
    /// Starts Redis with its data in `dir` (created if needed) on a free port.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = require_binary("redis-server", "redis-server")?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..3 {
            let mut redis = RedisServer {
                child: None,
                binary: binary.clone(),
                dir: dir.to_path_buf(),
                port: free_port()?,
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
                 save \"\"\ndaemonize no\nlogfile {}\n",
                self.port,
                self.dir.display(),
                log.display()
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

// ---------------------------------------------------------------------------------------------
// Load balancers

/// Which load balancer runs in front of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    /// nginx with deploy/nginx.conf.
    Nginx,
    /// HAProxy with deploy/haproxy.cfg.
    Haproxy,
}

impl Balancer {
    /// The config file in deploy/ this balancer runs.
    pub fn deploy_file(self) -> PathBuf {
        let name = match self {
            Balancer::Nginx => "nginx.conf",
            Balancer::Haproxy => "haproxy.cfg",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("deploy")
            .join(name)
    }

    fn binary(self) -> Result<PathBuf> {
        match self {
            Balancer::Nginx => require_binary("nginx", "nginx"),
            Balancer::Haproxy => require_binary("haproxy", "haproxy"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Balancer::Nginx => "nginx",
            Balancer::Haproxy => "haproxy",
        }
    }
}

const BEGIN_UPSTREAMS: &str = "# BEGIN tusk upstreams";
const END_UPSTREAMS: &str = "# END tusk upstreams";

/// Renders the deploy file of `balancer` for a test: the `server` lines between the
/// `# BEGIN tusk upstreams` / `# END tusk upstreams` markers become one line per address in
/// `upstreams` (keeping the first line's options), the listen address becomes `listen`, and
/// every file path (pid, logs, temp directories) moves into `dir`. Nothing else changes.
pub fn render_config(
    balancer: Balancer,
    template: &str,
    listen: &str,
    upstreams: &[String],
    dir: &Path,
) -> Result<String> {
    ensure!(!upstreams.is_empty(), "no upstreams to render");
    let mut out = Vec::new();
    let mut in_block = false;
    let (mut saw_block, mut saw_listen) = (false, false);
    let mut template_server: Option<String> = None;
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with(BEGIN_UPSTREAMS) {
            in_block = true;
            saw_block = true;
            out.push(line.to_string());
            continue;
        }
        if trimmed.starts_with(END_UPSTREAMS) {
            ensure!(in_block, "{END_UPSTREAMS} without {BEGIN_UPSTREAMS}");
            let first = template_server
                .take()
                .context("no `server` line between the upstream markers")?;
            for (i, addr) in upstreams.iter().enumerate() {
                out.push(render_server(balancer, &first, i, addr)?);
            }
            in_block = false;
            out.push(line.to_string());
            continue;
        }
        if in_block {
            if trimmed.starts_with("server ") && template_server.is_none() {
                template_server = Some(line.to_string());
            }
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let directive = words.next().unwrap_or("");
        let rendered = match (balancer, directive) {
            (Balancer::Nginx, "listen") | (Balancer::Haproxy, "bind") => {
                saw_listen = true;
                let end = if balancer == Balancer::Nginx { ";" } else { "" };
                format!("{indent}{directive} {listen}{end}")
            }
            (Balancer::Nginx, "pid" | "error_log" | "access_log")
            | (Balancer::Nginx, "client_body_temp_path" | "proxy_temp_path")
            | (Balancer::Nginx, "fastcgi_temp_path" | "uwsgi_temp_path" | "scgi_temp_path")
            | (Balancer::Haproxy, "pidfile") => {
                let path = words
                    .next()
                    .with_context(|| format!("`{directive}` without a path"))?;
                let file = Path::new(path.trim_end_matches(';'))
                    .file_name()
                    .with_context(|| format!("`{directive} {path}` has no file name"))?;
                let rest: Vec<&str> = words.collect();
                let mut l = format!("{indent}{directive} {}", dir.join(file).display());
                for w in &rest {
                    l.push(' ');
                    l.push_str(w);
                }
                if path.ends_with(';') {
                    l.push(';');
                }
                l
            }
            _ => line.to_string(),
        };
        out.push(rendered);
    }
    ensure!(
        saw_block && !in_block,
        "{BEGIN_UPSTREAMS} ... {END_UPSTREAMS} markers missing or unbalanced"
    );
    ensure!(saw_listen, "no listen/bind line");
    Ok(out.join("\n") + "\n")
}

/// One upstream line like the template's first, for replica `i` at `addr`.
fn render_server(balancer: Balancer, first: &str, i: usize, addr: &str) -> Result<String> {
    let trimmed = first.trim_start();
    let indent = &first[..first.len() - trimmed.len()];
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    Ok(match balancer {
        // server ADDR [options];
        Balancer::Nginx => {
            let old = words.get(1).context("`server` without an address")?;
            let mut l = format!("{indent}server {addr}");
            if old.ends_with(';') {
                l.push(';');
            }
            for w in &words[2..] {
                l.push(' ');
                l.push_str(w);
            }
            l
        }
        // server NAME ADDR [options]
        Balancer::Haproxy => {
            ensure!(words.len() >= 3, "`server` needs a name and an address");
            let mut l = format!("{indent}server tusk{} {addr}", i + 1);
            for w in &words[3..] {
                l.push(' ');
                l.push_str(w);
            }
            l
        }
    })
}

/// A load balancer process (not a daemon) on a loopback port, running the rendered deploy
/// file; its pid file, logs and temp files are in a directory of its own.
pub struct LoadBalancer {
    child: Option<Child>,
    /// Which balancer.
    pub kind: Balancer,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    /// Directory holding the rendered config, pid file and logs.
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl LoadBalancer {
    /// Renders and validates (`nginx -t` / `haproxy -c`) the deploy file, then runs it.
    pub async fn start(kind: Balancer, upstreams: &[String]) -> Result<Self> {
        let binary = kind.binary()?;
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("tusk-{}-", kind.name()))
            .tempdir()?;
        let dir = tempdir.path().to_path_buf();
        // nginx's workers run as nobody when the tests run as root: let them in.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let template_path = kind.deploy_file();
        let template = std::fs::read_to_string(&template_path)
            .with_context(|| format!("reading {}", template_path.display()))?;
        let mut last = None;
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let config = render_config(kind, &template, &addr, upstreams, &dir)
                .with_context(|| format!("rendering {}", template_path.display()))?;
            let mut lb = LoadBalancer {
                child: None,
                kind,
                addr,
                dir: dir.clone(),
                _tempdir: None,
            };
            match lb.run(&binary, &config).await {
                Ok(()) => {
                    lb._tempdir = Some(tempdir);
                    return Ok(lb);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("load balancer did not start")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keeps the directory (config, logs) after the test.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }

    /// The balancer's log (nginx: the access log; HAProxy: its stdout log).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join(match self.kind {
            Balancer::Nginx => "tusk-access.log",
            Balancer::Haproxy => "haproxy.log",
        }))
        .unwrap_or_default()
    }

    async fn run(&mut self, binary: &Path, config: &str) -> Result<()> {
        let (conf, startup_log) = match self.kind {
            Balancer::Nginx => (self.dir.join("nginx.conf"), self.dir.join("startup.log")),
            Balancer::Haproxy => (self.dir.join("haproxy.cfg"), self.dir.join("haproxy.log")),
        };
        std::fs::write(&conf, config)?;
        let conf_s = conf.display().to_string();
        let startup_s = startup_log.display().to_string();
        let check: Vec<&str> = match self.kind {
            Balancer::Nginx => vec!["-t", "-q", "-e", &startup_s, "-c", &conf_s],
            Balancer::Haproxy => vec!["-c", "-q", "-f", &conf_s],
        };
        let out = Command::new(binary)
            .args(&check)
            .output()
            .await
            .with_context(|| format!("running {} {check:?}", binary.display()))?;
        if !out.status.success() {
            bail!(
                "{} {check:?} rejects the rendered config:\n{}{}\n{}",
                binary.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&startup_log, 20)
            );
        }
        let args: Vec<&str> = match self.kind {
            Balancer::Nginx => vec!["-e", &startup_s, "-c", &conf_s, "-g", "daemon off;"],
            Balancer::Haproxy => vec!["-db", "-f", &conf_s],
        };
        let log = std::fs::File::create(self.dir.join(format!("{}.out", self.kind.name())))?;
        let stdout = match self.kind {
            Balancer::Haproxy => std::fs::File::create(&startup_log)?,
            Balancer::Nginx => log.try_clone()?,
        };
        let mut child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let shown_log = match self.kind {
            Balancer::Nginx => self.dir.join("tusk-error.log"),
            Balancer::Haproxy => startup_log.clone(),
        };
        let result = wait_listening(&mut child, &self.addr, self.kind.name(), &shown_log).await;
        self.child = Some(child);
        result
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// Clusters

/// What a cluster's nodes share, started by a [`ClusterBackend`].
pub struct Shared {
    /// Arguments every node gets (storage and coordinator), before a test's own.
    pub node_args: Vec<String>,
    /// Environment variables every node gets (e.g. the AWS credentials of an S3 backend).
    pub env: Vec<(String, String)>,
    /// The Redis the nodes share, when the backend uses one.
    pub redis: Option<RedisServer>,
    /// The S3 bucket the nodes share (and the server holding it), when the backend uses one.
    pub s3: Option<S3Bucket>,
}

/// How the nodes of a cluster are configured: which services they share and which arguments
/// make a node use them.
pub trait ClusterBackend: Send + Sync {
    /// Short name used in test output, e.g. `fs+redis`.
    fn name(&self) -> &'static str;
    /// Starts the shared services with their data under `dir`.
    fn start_shared<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>>;
    /// Whether a GET of an upload that is not finished streams its committed bytes (true),
    /// or answers 409 because the storage cannot read it yet (S3: an unfinished multipart
    /// upload cannot be read).
    fn reads_unfinished(&self) -> bool {
        true
    }
}

/// One upload directory shared by every node (the shape of NFS or a shared volume), Redis
/// for records and leases, a key prefix of its own per cluster.
pub struct FsRedis;

impl ClusterBackend for FsRedis {
    fn name(&self) -> &'static str {
        "fs(shared)+redis"
    }
    fn start_shared<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let uploads = dir.join("uploads");
            std::fs::create_dir_all(&uploads)?;
            let redis = RedisServer::start(&dir.join("redis")).await?;
            let node_args = vec![
                "--upload-dir".into(),
                uploads.display().to_string(),
                "--coordinator".into(),
                "redis".into(),
                "--redis-url".into(),
                redis.url(),
                "--redis-prefix".into(),
                unique_name("tusk-test-") + ":",
            ];
            Ok(Shared {
                node_args,
                env: Vec::new(),
                redis: Some(redis),
                s3: None,
            })
        })
    }
}

/// Nodes of a [`ClusterBackend`] behind a load balancer.
pub struct Cluster {
    /// The nodes, each with its own address (and admin address).
    pub nodes: Vec<TestServer>,
    /// The load balancer in front of them.
    pub lb: LoadBalancer,
    /// The shared Redis, if the backend has one.
    pub redis: Option<RedisServer>,
    /// The shared S3 bucket, if the backend has one.
    pub s3: Option<S3Bucket>,
    /// Whether a GET of an unfinished upload streams its committed bytes (see
    /// [`ClusterBackend::reads_unfinished`]).
    pub reads_unfinished: bool,
    /// The upload endpoint through the load balancer, e.g. `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
    /// The directory of the shared services' data (shared uploads, Redis data).
    pub dir: PathBuf,
    name: String,
    _tempdir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the shared services, `nodes` nodes (each with `--behind-proxy` and
    /// `extra_args`; the harness gives each an admin listener on a free port) and the
    /// balancer in front of them.
    pub async fn start(
        backend: &dyn ClusterBackend,
        balancer: Balancer,
        nodes: usize,
        extra_args: &[&str],
    ) -> Result<Self> {
        // Fail on a missing balancer before starting anything else.
        balancer.binary()?;
        let tempdir = tempfile::Builder::new().prefix("tusk-cluster-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let shared = backend
            .start_shared(&dir)
            .await
            .with_context(|| format!("starting the services of {}", backend.name()))?;
        let mut args = shared.node_args.clone();
        if !extra_args.contains(&"--behind-proxy") {
            args.push("--behind-proxy".into());
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut started = Vec::new();
        for i in 0..nodes {
            let node = TestServer::start_with(NodeOptions {
                args: args.clone(),
                env: shared.env.clone(),
                label: format!("node{i}"),
            })
            .await
            .with_context(|| format!("starting node {i} with {args:?}"))?;
            started.push(node);
        }
        let upstreams: Vec<String> = started.iter().map(|n| n.addr.clone()).collect();
        let lb = LoadBalancer::start(balancer, &upstreams).await?;
        let base_path = started[0]
            .endpoint
            .trim_start_matches("http://")
            .find('/')
            .map(|i| started[0].endpoint.trim_start_matches("http://")[i..].to_string())
            .context("node endpoint without a path")?;
        let endpoint = format!("{}{base_path}", lb.base_url());
        Ok(Cluster {
            nodes: started,
            lb,
            redis: shared.redis,
            s3: shared.s3,
            reads_unfinished: backend.reads_unfinished(),
            endpoint,
            dir,
            name: format!("{} x{nodes} behind {}", backend.name(), balancer.name()),
            _tempdir: Some(tempdir),
        })
    }

    /// The shared Redis (fails for a backend without one).
    pub fn redis(&mut self) -> Result<&mut RedisServer> {
        self.redis.as_mut().context("this cluster has no Redis")
    }

    /// The shared S3 bucket (fails for a backend without one).
    pub fn s3(&self) -> Result<&S3Bucket> {
        self.s3.as_ref().context("this cluster has no S3 bucket")
    }

    /// The URL of the same upload on node `i` directly (bypassing the balancer).
    pub fn at_node(&self, i: usize, upload_url: &str) -> Result<String> {
        let id = upload_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .with_context(|| format!("no upload id in {upload_url:?}"))?;
        let node = self.nodes.get(i).context("no such node")?;
        Ok(format!("{}{id}", node.endpoint))
    }

    /// Short description for messages, e.g. `fs(shared)+redis x3 behind nginx`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Running for Cluster {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn node_endpoint(&self) -> &str {
        &self.nodes[0].endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        let mut dirs = vec![];
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
        dirs.push(self.dir.clone());
        dirs.push(self.lb.keep_dir());
        for n in &mut self.nodes {
            n.keep_dir();
            dirs.push(n.dir.clone());
        }
        dirs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped nodes must be continued to die cleanly; kill_on_drop does the rest.
        for n in &self.nodes {
            if n.is_running() {
                let _ = n.signal("CONT");
            }
        }
    }
}

/// A [`Deployment`] of a cluster: the conformance suite through a load balancer, where every
/// request may land on any node.
pub struct ClusterDeployment<B> {
    /// How nodes are configured.
    pub backend: B,
    /// The balancer in front.
    pub balancer: Balancer,
    /// How many nodes.
    pub nodes: usize,
}

/// Three nodes on a shared directory with Redis, behind nginx.
pub const FS_REDIS_NGINX: ClusterDeployment<FsRedis> = ClusterDeployment {
    backend: FsRedis,
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on one S3 bucket (moto) with Redis, behind nginx.
pub const S3_REDIS_NGINX: ClusterDeployment<S3Redis> = ClusterDeployment {
    backend: S3Redis::DEFAULT,
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on a shared directory with Redis, behind HAProxy.
pub const FS_REDIS_HAPROXY: ClusterDeployment<FsRedis> = ClusterDeployment {
    backend: FsRedis,
    balancer: Balancer::Haproxy,
    nodes: 3,
};

impl<B: ClusterBackend> Deployment for ClusterDeployment<B> {
    fn name(&self) -> String {
        format!(
            "{} x{} behind {}",
            self.backend.name(),
            self.nodes,
            self.balancer.name()
        )
    }
    fn reads_unfinished(&self) -> bool {
        self.backend.reads_unfinished()
    }
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let cluster =
                Cluster::start(&self.backend, self.balancer, self.nodes, extra_args).await?;
            Ok(Box::new(cluster) as Box<dyn Running>)
        })
    }
}

/// A single node of any [`Backend`](crate::harness::Backend) behind a balancer: checks the
/// balancer configs against a server without cluster support, and is a smoke test of the
/// deploy files.
pub struct SingleBehind<B> {
    /// How the node is configured.
    pub backend: B,
    /// The balancer in front.
    pub balancer: Balancer,
}

/// A node and the balancer in front of it.
pub struct RunningSingle {
    /// The node.
    pub node: TestServer,
    /// The balancer.
    pub lb: LoadBalancer,
    endpoint: String,
}

impl Running for RunningSingle {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn node_endpoint(&self) -> &str {
        &self.node.endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        self.node.keep_dir();
        vec![self.node.dir.clone(), self.lb.keep_dir()]
    }
}

impl<B: crate::harness::Backend> Deployment for SingleBehind<B> {
    fn name(&self) -> String {
        format!("{} behind {}", self.backend.name(), self.balancer.name())
    }
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>> {
        Box::pin(async move {
            self.balancer.binary()?;
            let mut args = extra_args.to_vec();
            if !args.contains(&"--behind-proxy") {
                args.push("--behind-proxy");
            }
            let node = TestServer::start(&self.backend, &args).await?;
            // Three upstream lines to the one node: the rendered config has its real shape.
            let upstreams = vec![node.addr.clone(); 3];
            let lb = LoadBalancer::start(self.balancer, &upstreams).await?;
            let path = node
                .endpoint
                .trim_start_matches("http://")
                .split_once('/')
                .map(|(_, p)| p.to_string())
                .context("node endpoint without a path")?;
            let endpoint = format!("{}/{path}", lb.base_url());
            Ok(Box::new(RunningSingle { node, lb, endpoint }) as Box<dyn Running>)
        })
    }
}
