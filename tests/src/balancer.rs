//! The load balancers in front of a cluster: nginx or HAProxy running deploy/nginx.conf or
//! deploy/haproxy.cfg with only the upstream lines, the listen address and the file paths
//! changed ([`render_config`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, ensure, Context, Result};
use tokio::process::{Child, Command};

use crate::process::{free_port, require_binary, stop_child, tail, wait_listening};

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

    pub(crate) fn binary(self) -> Result<PathBuf> {
        match self {
            Balancer::Nginx => require_binary("nginx", "nginx"),
            Balancer::Haproxy => require_binary("haproxy", "haproxy"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
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
