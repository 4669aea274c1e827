//! The open connections of one listener: how many, which are idle, and the limit.
//!
//! A connection is *in flight* from the moment hyper hands it a request until the response
//! body is sent or dropped, and *idle* otherwise (before its first request too). Past the
//! limit, a new connection closes the connection idle longest rather than being refused:
//! idle sockets held open by a hostile client then cannot lock out the node, and a client
//! whose idle keep-alive connection is closed simply opens a new one. Only when every
//! connection has a request in flight is the new one refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The connections of one listener.
pub(crate) struct Connections {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// What one connection is doing, shared by its task, its requests and the registry.
pub(crate) struct Activity {
    opened: Instant,
    epoch: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `epoch` when the last request in flight ended (or the connection
    /// opened).
    idle_since: AtomicU64,
    evicted: AtomicBool,
    /// Woken on every change above; one waiter (the connection's task), so `notify_one`'s
    /// stored permit means no change is missed.
    changed: Notify,
}

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// No complete first request head within the header read timeout.
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    /// An HTTP/2 keep-alive ping went unanswered (a vanished peer).
    PingTimeout,
    /// Closed to make room for a new connection past the limit.
    Evicted,
}

impl Cut {
    pub fn label(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::IdleTimeout => "idle_timeout",
            Cut::PingTimeout => "ping_timeout",
            Cut::Evicted => "evicted",
        }
    }
}

/// A place among the open connections; leaving it (dropping) frees it.
pub(crate) struct Slot {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

/// The answer to a new connection.
pub(crate) enum Admission {
    Admitted(Slot),
    /// At the limit with every connection in flight.
    Refused,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a new connection, first closing the one idle longest if the limit is reached.
    /// An evicted connection counts until its task ends (at once: it is idle), so the
    /// number open passes the limit by the evictions under way, never past twice the limit.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let evicting = open
                .values()
                .filter(|a| a.evicted.load(Ordering::Acquire))
                .count();
            if open.len() - evicting >= self.max {
                if open.len() >= self.max.saturating_mul(2) {
                    return Admission::Refused;
                }
                let victim = open
                    .values()
                    .filter(|a| a.is_idle() && !a.evicted.load(Ordering::Acquire))
                    .min_by_key(|a| a.idle_since.load(Ordering::Acquire));
                let Some(victim) = victim else {
                    return Admission::Refused;
                };
                victim.evicted.store(true, Ordering::Release);
                victim.changed.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let activity = Arc::new(Activity {
            opened: now,
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch, now)),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        });
        open.insert(id, activity.clone());
        Admission::Admitted(Slot {
            connections: self.clone(),
            id,
            activity,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Slot {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

fn millis_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A request starts; it is in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight {
            activity: self.clone(),
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Resolves when the connection must be closed: evicted, or idle past its timeout
    /// (before its first request, `first_head`; after, `idle`).
    pub async fn until_cut(&self, first_head: Duration, idle: Duration) -> Cut {
        loop {
            let changed = self.changed.notified();
            if self.evicted.load(Ordering::Acquire) {
                return Cut::Evicted;
            }
            if !self.is_idle() {
                changed.await;
                continue;
            }
            let (deadline, cut) = if self.requests.load(Ordering::Acquire) == 0 {
                (self.opened + first_head, Cut::HeaderTimeout)
            } else {
                let since =
                    self.epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
                (since + idle, Cut::IdleTimeout)
            };
            if Instant::now() >= deadline {
                return cut;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }

    /// Resolves once nothing has been in flight for `grace` in a row.
    pub async fn idle_for(&self, grace: Duration) {
        loop {
            let changed = self.changed.notified();
            if self.is_idle() {
                tokio::select! {
                    () = tokio::time::sleep(grace) => if self.is_idle() { return },
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// A request in flight on a connection; dropping it ends it.
pub(crate) struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(
                millis_since(activity.epoch, Instant::now()),
                Ordering::Release,
            );
        }
        activity.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it is sent or dropped (a long
/// download is not idle).
pub(crate) struct Tracked<B> {
    pub body: B,
    pub _in_flight: InFlight,
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) => slot,
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_the_longest_idle_is_evicted_and_busy_ones_never() {
        let connections = Connections::new(3);
        let first = admitted(connections.admit());
        tokio::time::advance(Duration::from_millis(10)).await;
        let busy = admitted(connections.admit());
        let _request = busy.activity().begin();
        tokio::time::advance(Duration::from_millis(10)).await;
        let third = admitted(connections.admit());
        tokio::time::advance(Duration::from_millis(10)).await;
        let _fourth = admitted(connections.admit());
        assert!(first.activity().evicted.load(Ordering::Acquire));
        assert!(!busy.activity().evicted.load(Ordering::Acquire));
        assert!(!third.activity().evicted.load(Ordering::Acquire));
        // The evicted one leaves; the next new one evicts the next idle one.
        drop(first);
        let _fifth = admitted(connections.admit());
        assert!(third.activity().evicted.load(Ordering::Acquire));
        assert_eq!(connections.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_with_every_connection_busy_a_new_one_is_refused() {
        let connections = Connections::new(2);
        let a = admitted(connections.admit());
        let b = admitted(connections.admit());
        let _ra = a.activity().begin();
        let _rb = b.activity().begin();
        assert!(matches!(connections.admit(), Admission::Refused));
        drop(_rb);
        assert!(matches!(connections.admit(), Admission::Admitted(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_cut_by_the_first_head_then_the_idle_timeout_never_in_flight() {
        let connections = Connections::new(8);
        let slot = admitted(connections.admit());
        let activity = slot.activity().clone();
        let first_head = Duration::from_secs(5);
        let idle = Duration::from_secs(2);
        let started = Instant::now();
        assert_eq!(
            activity.until_cut(first_head, idle).await,
            Cut::HeaderTimeout
        );
        assert_eq!(started.elapsed(), first_head);

        let request = activity.begin();
        let waiting = tokio::time::timeout(
            Duration::from_secs(60),
            activity.until_cut(first_head, idle),
        );
        assert!(waiting.await.is_err(), "cut while a request was in flight");
        drop(request);
        let ended = Instant::now();
        assert_eq!(activity.until_cut(first_head, idle).await, Cut::IdleTimeout);
        assert_eq!(ended.elapsed(), idle);
    }
}
