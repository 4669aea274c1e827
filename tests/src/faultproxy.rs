//! A TCP proxy that cuts connections for real, so a test can interrupt an upload mid-body.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and relays every connection to an upstream address
//! byte for byte. It counts the client->server bytes of all connections together; once armed
//! with [`FaultProxy::cut_after`] (or a schedule, [`FaultProxy::cut_schedule`]) it forwards
//! exactly up to the planned byte, then closes both sides of the connection carrying it: the
//! server sees its request body end early, the client sees its connection go away, exactly as
//! when a network path breaks. [`FaultProxy::cut_now`] cuts every open connection at once.
//! Cuts are one-shot: after a planned cut the proxy relays untouched until armed again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Counters and plan shared by the accept loop, the connections and the test.
#[derive(Default)]
struct Plan {
    /// Client->server bytes forwarded so far, over all connections.
    up_bytes: u64,
    /// Absolute values of `up_bytes` at which the carrying connection is cut, ascending.
    cut_points: VecDeque<u64>,
    /// Connections cut so far (planned or by `cut_now`).
    cuts: u64,
    /// Connections accepted so far.
    connections: u64,
}

struct Shared {
    plan: Mutex<Plan>,
    /// Bumped by `cut_now`; every connection open at that moment closes.
    cut_all: watch::Sender<u64>,
    /// Woken on every cut.
    cut_event: Notify,
}

impl Shared {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A panic while holding the lock only happens in a failing test; keep the data.
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; dropping it stops accepting and closes every relayed connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`host:port`). The upstream is
    /// dialled per connection, so it may restart (on the same port) while the proxy runs.
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let addr = listener.local_addr()?;
        let (cut_all, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan::default()),
            cut_all,
            cut_event: Notify::new(),
        });
        let upstream = upstream.to_string();
        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        accept_shared.plan().connections += 1;
                        let shared = accept_shared.clone();
                        let upstream = upstream.clone();
                        relays.spawn(async move {
                            // A failed dial closes the client's connection, as an unreachable
                            // server would; the client sees that as a network error.
                            if let Ok(server) = TcpStream::connect(&upstream).await {
                                relay(client, server, shared).await;
                            }
                        });
                    }
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        Ok(FaultProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The proxy's `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path` (e.g. `/files/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Arms one cut: after `n` more client->server bytes (counted over all connections, HTTP
    /// headers included) the connection carrying byte `n` is closed right after forwarding it.
    /// Replaces any cut still planned.
    pub fn cut_after(&self, n: u64) {
        self.cut_schedule(&[n]);
    }

    /// Arms several cuts, each `n` client->server bytes after the previous one (the first
    /// counted from now). Replaces any cut still planned.
    pub fn cut_schedule(&self, gaps: &[u64]) {
        let mut plan = self.shared.plan();
        let mut at = plan.up_bytes;
        plan.cut_points = gaps
            .iter()
            .map(|gap| {
                at += (*gap).max(1);
                at
            })
            .collect();
    }

    /// Drops every planned cut that has not happened yet.
    pub fn disarm(&self) {
        self.shared.plan().cut_points.clear();
    }

    /// Closes every connection open right now (a trigger the test pulls itself).
    pub fn cut_now(&self) {
        self.shared
            .cut_all
            .send_modify(|generation| *generation += 1);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.plan().cuts
    }

    /// Cuts still planned.
    pub fn pending_cuts(&self) -> usize {
        self.shared.plan().cut_points.len()
    }

    /// Client->server bytes relayed so far.
    pub fn up_bytes(&self) -> u64 {
        self.shared.plan().up_bytes
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.plan().connections
    }

    /// Waits until at least `n` connections have been cut, or fails after `within`.
    pub async fn wait_cuts(&self, n: u64, within: Duration) -> Result<()> {
        tokio::time::timeout(within, async {
            loop {
                let notified = self.shared.cut_event.notified();
                if self.cuts() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .with_context(|| {
            format!(
                "fault proxy: {} of {n} cuts within {within:?} ({} bytes relayed upstream)",
                self.cuts(),
                self.up_bytes()
            )
        })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every relay.
        self.accept_task.abort();
    }
}

/// Why a relay ended.
enum UpEnd {
    /// The client finished sending (half-close); keep relaying the answer.
    Eof,
    /// A planned cut: close everything.
    Cut,
    /// An I/O error on either side: close everything.
    Error,
}

/// Relays one connection until either side closes or a cut ends it.
async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let mut cut_all = shared.cut_all.subscribe();
    cut_all.mark_unchanged();

    let up_shared = shared.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) => {
                    let _ = server_w.shutdown().await;
                    return UpEnd::Eof;
                }
                Ok(n) => n,
                Err(_) => return UpEnd::Error,
            };
            // Decide under the lock how much of this read may pass, so that concurrent
            // connections share one byte count and a cut point is hit exactly once.
            let (forward, cut) = {
                let mut plan = up_shared.plan();
                let before = plan.up_bytes;
                match plan.cut_points.front().copied() {
                    Some(at) if at <= before + n as u64 => {
                        plan.cut_points.pop_front();
                        // Later points already passed within this read would cut nothing.
                        let forward = at.saturating_sub(before) as usize;
                        plan.up_bytes = before + forward as u64;
                        while plan.cut_points.front().is_some_and(|p| *p <= plan.up_bytes) {
                            plan.cut_points.pop_front();
                        }
                        (forward, true)
                    }
                    _ => {
                        plan.up_bytes = before + n as u64;
                        (n, false)
                    }
                }
            };
            if server_w.write_all(&buf[..forward]).await.is_err() {
                return UpEnd::Error;
            }
            if cut {
                let _ = server_w.flush().await;
                return UpEnd::Cut;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    tokio::pin!(up, down);

    let mut up_done = false;
    let cut = loop {
        tokio::select! {
            end = &mut up, if !up_done => match end {
                UpEnd::Eof => up_done = true,
                UpEnd::Cut => break true,
                UpEnd::Error => break false,
            },
            () = &mut down => break false,
            // The sender lives in `shared`, which this relay holds: `changed` cannot fail.
            changed = cut_all.changed() => break changed.is_ok(),
        }
    };
    if cut {
        shared.plan().cuts += 1;
        shared.cut_event.notify_waiters();
    }
    // Returning drops both halves of both sockets: the connection closes on both sides.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that counts what it receives until the connection ends.
    async fn counting_upstream() -> Result<(String, tokio::sync::mpsc::Receiver<usize>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut total = 0;
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        total += n;
                    }
                    let _ = tx.send(total).await;
                });
            }
        });
        Ok((addr, rx))
    }

    #[tokio::test]
    async fn cuts_after_exactly_n_bytes_then_relays_untouched() -> Result<()> {
        let (upstream, mut received) = counting_upstream().await?;
        let proxy = FaultProxy::start(&upstream).await?;
        proxy.cut_after(100_000);

        let mut conn = TcpStream::connect(proxy.addr()).await?;
        let payload = vec![7u8; 1_000_000];
        // The write fails or succeeds depending on timing; what arrives upstream is exact.
        let _ = conn.write_all(&payload).await;
        proxy.wait_cuts(1, Duration::from_secs(10)).await?;
        let got = received
            .recv()
            .await
            .context("upstream saw no connection end")?;
        assert_eq!(got, 100_000);
        let mut rest = Vec::new();
        assert_eq!(conn.read_to_end(&mut rest).await.unwrap_or(0), 0);

        // Disarmed now: a second connection passes everything.
        let mut conn = TcpStream::connect(proxy.addr()).await?;
        conn.write_all(&payload).await?;
        conn.shutdown().await?;
        let got = received
            .recv()
            .await
            .context("upstream saw no connection end")?;
        assert_eq!(got, payload.len());
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(proxy.pending_cuts(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn cut_now_closes_open_connections() -> Result<()> {
        let (upstream, mut received) = counting_upstream().await?;
        let proxy = FaultProxy::start(&upstream).await?;
        let mut conn = TcpStream::connect(proxy.addr()).await?;
        conn.write_all(b"hello").await?;
        while proxy.up_bytes() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.cut_now();
        proxy.wait_cuts(1, Duration::from_secs(10)).await?;
        let got = received
            .recv()
            .await
            .context("upstream saw no connection end")?;
        assert_eq!(got, 5);
        let mut rest = Vec::new();
        assert_eq!(conn.read_to_end(&mut rest).await.unwrap_or(0), 0);
        Ok(())
    }
}
