//! A real browser as a tus client: `tests/clients/browser/drive.mjs` runs Debian's Chromium
//! (playwright-core drives it; never a downloaded browser) through a tus-js-client or Uppy
//! page it serves on `http://localhost:<page port>`, another origin than the node's. The
//! driver prints what happens as JSON lines; [`Drive`] hands them over one at a time so a
//! test can act on the server mid-upload (kill it, restart it) and then read the result.
//!
//! Chromium and the driver's packages must be installed; a missing one fails the test with
//! the command to run (tests/run.sh runs both).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_CHROMIUM: &str = "apt-get install chromium";
const INSTALL_DRIVER: &str = "npm ci --prefix tests/clients/browser";

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/browser")
}

/// Where a browser test keeps what it saw (screenshots): `target/test-artifacts/`.
pub fn artifacts_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Fails (never skips) when the browser or the driver cannot run, saying how to install it.
pub fn require() -> Result<()> {
    ensure!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's Chromium (`{INSTALL_CHROMIUM}`; tests/run.sh \
         does it)"
    );
    let module = driver_dir().join("node_modules/playwright-core/package.json");
    ensure!(
        module.exists(),
        "the browser driver's packages are not installed ({} is missing): run \
         `{INSTALL_DRIVER}` from the repository root",
        module.display()
    );
    Ok(())
}

/// The node's upload endpoint as the browser addresses it: `localhost`, so the page
/// (`http://localhost:<page port>`) is another origin but the same site, as an app at
/// app.example.com is to uploads.example.com (cookies go along with `withCredentials`).
pub fn endpoint_for_browser(endpoint: &str) -> String {
    endpoint.replacen("://127.0.0.1:", "://localhost:", 1)
}

/// The origin the driver serves its pages on.
pub fn page_origin(page_port: u16) -> String {
    format!("http://localhost:{page_port}")
}

/// One running browser upload.
pub struct Drive {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Drive {
    /// Starts the driver with `settings` (see drive.mjs: page, pagePort, endpoint, file,
    /// options, cookie, throttle, screenshot).
    pub fn start(settings: &Value) -> Result<Self> {
        require()?;
        let mut child = Command::new("node")
            .arg(driver_dir().join("drive.mjs"))
            .arg(settings.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (install Node.js 20) for tests/clients/browser/drive.mjs")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next event the page reported (console lines are passed to stderr), within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Value> {
        loop {
            let line = tokio::time::timeout(wait, self.lines.next_line())
                .await
                .context("the browser reported nothing in time")??
                .context("the browser driver exited without a result")?;
            let event: Value = serde_json::from_str(&line)
                .with_context(|| format!("driver line is not JSON: {line}"))?;
            match event["event"].as_str() {
                Some("console") | Some("pageerror") => eprintln!("browser: {line}"),
                _ => return Ok(event),
            }
        }
    }

    /// Events until one named `name` (returned), within `wait` in all.
    pub async fn until(&mut self, name: &str, wait: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            if event["event"] == name {
                return Ok(event);
            }
            if event["event"] == "result" {
                bail!("the upload ended before `{name}`: {event}");
            }
        }
    }

    /// Every event up to the result; returns them, the result last.
    pub async fn finish(mut self, wait: Duration) -> Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            let done = event["event"] == "result";
            events.push(event);
            if done {
                let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
                return Ok(events);
            }
        }
    }
}

/// Runs one browser upload to the end and returns its result line.
pub async fn run(settings: &Value, wait: Duration) -> Result<Value> {
    let events = Drive::start(settings)?.finish(wait).await?;
    events.last().cloned().context("no result")
}
