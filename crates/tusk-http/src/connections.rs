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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Requests in flight, and the [`EVICTED`] bit: one word, so that choosing an idle
    /// connection for eviction and a request starting on it cannot both succeed.
    state: AtomicU64,
    requests: AtomicU64,
    /// Milliseconds after `epoch` when the last request in flight ended (or the connection
    /// opened).
    idle_since: AtomicU64,
    /// Woken on every change above; one waiter (the connection's task), so `notify_one`'s
    /// stored permit means no change is missed.
    changed: Notify,
}

/// The bit of [`Activity::state`] that marks a connection evicted; the rest counts requests.
const EVICTED: u64 = 1 << 63;

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

    /// Admits a new connection, first closing the one idle longest if the limit is reached
    /// (of two idle since the same moment, the one opened first). An evicted connection
    /// counts until its task ends (at once: it is idle, and a request that arrives on it
    /// anyway is refused), so the number open passes the limit by the evictions under way,
    /// never past twice the limit, and requests in flight never pass the limit.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let evicting = open.values().filter(|a| a.is_evicted()).count();
            if open.len() - evicting >= self.max {
                if open.len() >= self.max.saturating_mul(2) {
                    return Admission::Refused;
                }
                let mut idle: Vec<_> = open
                    .iter()
                    .filter(|(_, a)| a.is_idle() && !a.is_evicted())
                    .map(|(id, a)| (a.idle_since.load(Ordering::Acquire), *id, a))
                    .collect();
                idle.sort_unstable_by_key(|&(since, id, _)| (since, id));
                // A request may start on a candidate meanwhile: it is busy then, try the next.
                let Some((_, _, victim)) = idle.into_iter().find(|(_, _, a)| a.try_evict()) else {
                    return Admission::Refused;
                };
                victim.changed.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let activity = Arc::new(Activity {
            opened: now,
            epoch: self.epoch,
            state: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch, now)),
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
    /// A request starts; it is in flight until the returned guard drops. `None` on an
    /// evicted connection: its place went to a new connection already.
    pub fn begin(self: &Arc<Self>) -> Option<InFlight> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & EVICTED == 0).then_some(state + 1)
            })
            .ok()?;
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        Some(InFlight {
            activity: self.clone(),
        })
    }

    fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) & !EVICTED == 0
    }

    fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) & EVICTED != 0
    }

    /// Marks the connection evicted if it is idle and not evicted yet.
    fn try_evict(&self) -> bool {
        self.state
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Resolves when the connection must be closed: evicted, or idle past its timeout
    /// (before its first request, `first_head`; after, `idle`).
    pub async fn until_cut(&self, first_head: Duration, idle: Duration) -> Cut {
        loop {
            let changed = self.changed.notified();
            if self.is_evicted() {
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
        if activity.state.fetch_sub(1, Ordering::AcqRel) & !EVICTED == 1 {
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
    /// `None` for the refusal of a request on an evicted connection.
    pub _in_flight: Option<InFlight>,
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
        let _request = busy.activity().begin().expect("not evicted");
        tokio::time::advance(Duration::from_millis(10)).await;
        let third = admitted(connections.admit());
        tokio::time::advance(Duration::from_millis(10)).await;
        let _fourth = admitted(connections.admit());
        assert!(first.activity().is_evicted());
        assert!(!busy.activity().is_evicted());
        assert!(!third.activity().is_evicted());
        // The evicted one leaves; the next new one evicts the next idle one.
        drop(first);
        let _fifth = admitted(connections.admit());
        assert!(third.activity().is_evicted());
        assert_eq!(connections.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_with_every_connection_busy_a_new_one_is_refused() {
        let connections = Connections::new(2);
        let a = admitted(connections.admit());
        let b = admitted(connections.admit());
        let _ra = a.activity().begin().expect("not evicted");
        let _rb = b.activity().begin().expect("not evicted");
        assert!(matches!(connections.admit(), Admission::Refused));
        drop(_rb);
        assert!(matches!(connections.admit(), Admission::Admitted(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_whose_request_arrives_late_does_not_pass_the_limit() {
        let connections = Connections::new(2);
        let late = admitted(connections.admit());
        let other = admitted(connections.admit());
        // `late` is idle (its head is still on the way) and opened first: evicted.
        let newcomer = admitted(connections.admit());
        let busy: Vec<_> = [&late, &other, &newcomer]
            .iter()
            .filter_map(|slot| slot.activity().begin())
            .collect();
        assert_eq!(busy.len(), 2);
        assert!(late.activity().is_evicted());
        let in_flight = [&late, &other, &newcomer]
            .iter()
            .filter(|slot| !slot.activity().is_idle())
            .count();
        assert!(in_flight <= 2, "{in_flight} requests in flight, limit 2");
    }

    #[tokio::test(start_paused = true)]
    async fn of_connections_idle_since_the_same_moment_the_one_opened_first_is_evicted() {
        for _ in 0..20 {
            let connections = Connections::new(3);
            let first = admitted(connections.admit());
            let second = admitted(connections.admit());
            let third = admitted(connections.admit());
            let _fourth = admitted(connections.admit());
            assert!(first.activity().is_evicted());
            assert!(!second.activity().is_evicted());
            assert!(!third.activity().is_evicted());
        }
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

        let request = activity.begin().expect("not evicted");
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
