//! Child processes of the end-to-end tests: finding a server binary (or failing with the
//! command that installs it), loopback ports, unique names, and stopping a child for sure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::net::TcpStream;
use tokio::process::Child;

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
///
/// Chosen below Linux's ephemeral range (32768 and up): a port the kernel handed out for
/// a probe goes back to the pool that outgoing connections draw from, and with many tests
/// connecting at once one of them took it before the server bound it ("address already in
/// use", seen with etcd's peer port).
pub fn free_port() -> Result<u16> {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between 20000 and 32000 on 127.0.0.1 after 1000 tries")
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
pub(crate) fn stop_child(child: &mut Option<Child>) {
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
