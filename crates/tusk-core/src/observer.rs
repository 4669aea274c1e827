//! What the engine reports as it works, for metrics. The engine knows no metrics library:
//! `tusk-telemetry` implements [`Observer`] with Prometheus.

use std::time::Duration;

/// Receives the engine's and the HTTP layer's events. Every method has a no-op default,
/// so an observer implements only what it records. Labels are bounded: never an upload ID.
pub trait Observer: Send + Sync + 'static {
    /// A response was sent, by method and status. The method is one of a fixed list (the
    /// HTTP layer names any other `other`): a client must not be able to add label values.
    fn request(&self, _method: &'static str, _status: u16) {}
    /// A request was refused or failed, by error kind (see `tusk-http`'s error table).
    fn error(&self, _kind: &'static str) {}
    fn connection_opened(&self) {}
    fn connection_closed(&self) {}
    /// The server closed a connection because it hit a bound: `reason` is one of
    /// header_timeout, idle_timeout, ping_timeout, evicted (to make room past the
    /// connection limit).
    fn connection_cut(&self, _reason: &'static str) {}
    /// A new connection was closed at once: the connection limit was reached and every open
    /// connection had a request in flight.
    fn connection_refused(&self) {}
    /// Bytes of PATCH bodies committed.
    fn bytes_committed(&self, _bytes: u64) {}
    fn upload_created(&self) {}
    fn upload_finished(&self) {}
    fn upload_terminated(&self) {}
    /// A whole PATCH, from its arrival to its answer.
    fn patch_handled(&self, _elapsed: Duration) {}
    fn storage_call(&self, _backend: &'static str, _op: &'static str, _elapsed: Duration) {}
    fn coordinator_call(&self, _backend: &'static str, _op: &'static str, _elapsed: Duration) {}
    fn lease_acquired(&self, _waited: bool) {}
    fn lease_released(&self) {}
    /// A request found an upload leased by another and asked it to let go.
    fn release_requested(&self) {}
    /// A PATCH stopped reading its body because another request asked for the upload.
    fn release_honoured(&self) {}
    /// A commit or renewal was refused because the lease's token was no longer current.
    fn lease_lost(&self) {}
    fn sweep(&self, _expired: usize, _purged: usize) {}
    /// Bytes a storage backend sent a second time (S3: tail bytes folded into a part; fs:
    /// small files folded into a write's file).
    fn bytes_rewritten(&self, _backend: &'static str, _bytes: u64) {}
    /// Stored objects of no record removed by the leftovers sweep.
    fn leftovers_removed(&self, _count: usize) {}
    /// A hook call ended: `outcome` is one of ok, rejected, failed, dropped.
    fn hook_call(&self, _event: &'static str, _outcome: &'static str) {}
}

/// Records nothing.
pub struct NoObserver;

impl Observer for NoObserver {}
