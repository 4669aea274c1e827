//! The lease: the one handle through which anything changes an upload.
//!
//! A [`Lease`] is what [`crate::Coordinator::acquire`] hands out. It owns its fencing token,
//! the record as of acquisition, renewal with a deadline, and the channel on which other
//! requests ask its holder to let go. Reserving a write target, committing, marking an upload
//! gone, purging it and every removal from storage take the lease, and what ends the lease
//! consumes it, so nothing can act on an upload from a bare `(id, token)`: there is no such
//! call. Storage backends get `&Lease` and can reserve targets, read its token and record,
//! and confirm it is still current; only the engine commits.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Commit, CoordError, OwedNotice, UploadRecord, WriteTarget};

/// The coordinator's side of one lease it granted: every call is fenced by the lease's
/// token inside the coordinator (a Lua script, a transaction, the embedded log), so a lease
/// that was lost or taken over fails with [`CoordError::LeaseLost`] and changes nothing.
///
/// Implemented by each coordinator and wrapped in a [`Lease`] by [`Lease::grant`]; the
/// engine never sees it.
#[async_trait]
pub trait HeldLease: Send + Sync {
    /// The fencing token: unique per upload ID for all time, larger than every token handed
    /// out for that ID before.
    fn token(&self) -> u64;

    /// How long the lease lives without renewal; `None` if it never expires by itself.
    fn ttl(&self) -> Option<Duration>;

    /// Extends the lease by its TTL.
    async fn renew(&self) -> Result<(), CoordError>;

    /// The next write target: its sequence number is above every one reserved for this
    /// upload before, under any lease.
    async fn reserve(&self) -> Result<WriteTarget, CoordError>;

    /// Compare-and-set: applies `commit` (as [`UploadRecord::apply_commit`] defines it) while
    /// the token is current and the record's offset is `commit.expected_offset`; with
    /// `release`, lets go of the lease in the same step whatever the outcome. Durable when it
    /// returns.
    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError>;

    /// Marks the upload gone (terminated or expired), a tombstone until `purge_at`, owing
    /// `notice` (as [`UploadRecord::mark_gone`] defines it).
    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError>;

    /// Replaces the notice the upload owes: `None` once it was delivered, or the same
    /// notice claimed for another delivery.
    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError>;

    /// Removes the record entirely.
    async fn purge(&self) -> Result<(), CoordError>;

    /// Lets go of the lease; waiting requests proceed at once.
    async fn release(&self) -> Result<(), CoordError>;
}

/// Resolves when another request asks the lease holder to let go of the upload.
#[derive(Clone)]
pub struct ReleaseRequest(watch::Receiver<bool>);

impl ReleaseRequest {
    /// A pair: the sender side asks for release, the receiver side is carried by the lease.
    pub fn channel() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Waits until a release is requested; never resolves if nobody can ask any more.
    pub async fn requested(&mut self) {
        if self.0.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The right to change one upload, for as long as its coordinator says it is current.
///
/// No public fields and no constructor but [`Lease::grant`], which coordinators call from
/// `acquire`. Dropping a lease without [`Lease`]'s release leaves it to expire by itself.
pub struct Lease {
    held: Box<dyn HeldLease>,
    record: UploadRecord,
    release_request: ReleaseRequest,
    waited: bool,
    /// Past this instant the coordinator may have handed the upload to another writer:
    /// the moment the last successful acquire or renewal was sent, plus the TTL.
    valid_until: Mutex<Option<Instant>>,
}

impl Lease {
    /// Wraps a lease a coordinator granted. `requested_at` is when the acquiring call was
    /// sent (the TTL may have started any time after it); `record` is the upload's committed
    /// record as of acquisition; `waited` says whether another holder had to let go first.
    pub fn grant(
        held: Box<dyn HeldLease>,
        record: UploadRecord,
        release_request: ReleaseRequest,
        waited: bool,
        requested_at: Instant,
    ) -> Self {
        let valid_until = held.ttl().map(|ttl| requested_at + ttl);
        Self {
            held,
            record,
            release_request,
            waited,
            valid_until: Mutex::new(valid_until),
        }
    }

    pub fn upload_id(&self) -> &str {
        &self.record.id
    }

    /// The fencing token; storage names what it writes after it.
    pub fn token(&self) -> u64 {
        self.held.token()
    }

    /// The upload's committed record: as of acquisition, plus what this lease committed.
    pub fn record(&self) -> &UploadRecord {
        &self.record
    }

    /// Whether taking the lease meant waiting for another holder to let go.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// Reserves a write target nobody else was or will be given.
    pub async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        // The coordinator may hand out a target it reserved as the lease was taken without
        // asking again, and past its deadline the lease may be another writer's.
        if self
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(CoordError::LeaseLost);
        }
        self.held.reserve().await
    }

    /// Renews the lease now; succeeds only while it is current. Destructive storage calls
    /// confirm their lease right before each removal.
    pub async fn confirm(&self) -> Result<(), CoordError> {
        let sent = Instant::now();
        let deadline = self.deadline();
        let renewed = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.held.renew())
                .await
                .unwrap_or(Err(CoordError::LeaseLost)),
            None => self.held.renew().await,
        };
        match renewed {
            Ok(()) => {
                if let Some(ttl) = self.held.ttl() {
                    *self.lock_deadline() = Some(sent + ttl);
                }
                Ok(())
            }
            // Unproven past its deadline, the lease may be another writer's by now.
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => Err(CoordError::LeaseLost),
            Err(error) => Err(error),
        }
    }

    /// Runs `work` while renewing the lease every `interval`. If the lease is lost, or
    /// cannot be renewed before it expires, `work` is dropped (it stops at its next await)
    /// and the answer is `LeaseLost`: a writer that cannot prove its lease stops writing.
    pub async fn hold_while<T>(
        &self,
        interval: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, CoordError> {
        tokio::select! {
            done = work => Ok(done),
            lost = self.keep_alive(interval) => Err(lost),
        }
    }

    /// Renews every `interval` (at most a third of the TTL); returns once the lease is lost.
    ///
    /// Renewals fall due `interval` after the lease was last proven, not after this call
    /// began: a PATCH holds its lease stretch by stretch, and stretches shorter than the
    /// interval must not put the renewal off until the lease runs out.
    async fn keep_alive(&self, interval: Duration) -> CoordError {
        let interval = match self.held.ttl() {
            Some(ttl) => interval.min(ttl / 3),
            None => interval,
        };
        let mut due = self.renewal_due(interval);
        loop {
            tokio::time::sleep_until(due).await;
            match self.confirm().await {
                Ok(()) => due = self.renewal_due(interval),
                Err(CoordError::LeaseLost) => {
                    tracing::warn!(upload_id = %self.upload_id(), "lost the lease; its writer stops");
                    return CoordError::LeaseLost;
                }
                Err(error) => {
                    tracing::warn!(upload_id = %self.upload_id(), %error, "renewing a lease failed; retrying");
                    due = Instant::now() + interval;
                }
            }
        }
    }

    /// When the next renewal is due: `interval` after the lease was last proven (granted or
    /// renewed). A lease without a TTL has no such moment; it is confirmed every `interval`.
    fn renewal_due(&self, interval: Duration) -> Instant {
        match (self.deadline(), self.held.ttl()) {
            (Some(valid_until), Some(ttl)) => valid_until - ttl + interval,
            _ => Instant::now() + interval,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self.lock_deadline()
    }

    fn lock_deadline(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when another request asks for the upload.
    pub(crate) fn release_request(&self) -> ReleaseRequest {
        self.release_request.clone()
    }

    /// Commits under the lease and keeps it; the lease's record then includes the commit.
    pub(crate) async fn commit(&mut self, commit: &Commit) -> Result<(), CoordError> {
        self.held.commit(commit, false).await?;
        self.record.apply_commit(commit);
        Ok(())
    }

    /// Commits and lets go in one step; returns the committed record.
    pub(crate) async fn commit_and_release(
        self,
        commit: &Commit,
    ) -> Result<UploadRecord, CoordError> {
        self.held.commit(commit, true).await?;
        let mut record = self.record;
        record.apply_commit(commit);
        Ok(record)
    }

    pub(crate) async fn mark_gone(
        &mut self,
        purge_at: u64,
        notice: Option<OwedNotice>,
    ) -> Result<(), CoordError> {
        self.held.mark_gone(purge_at, notice).await?;
        self.record.mark_gone(purge_at, notice);
        Ok(())
    }

    /// Replaces the notice the upload owes (see [`HeldLease::set_notice`]).
    pub(crate) async fn set_notice(
        &mut self,
        notice: Option<OwedNotice>,
    ) -> Result<(), CoordError> {
        self.held.set_notice(notice).await?;
        self.record.notice = notice;
        Ok(())
    }

    pub(crate) async fn purge(self) -> Result<(), CoordError> {
        self.held.purge().await
    }

    /// Lets go of the lease; waiting requests proceed at once.
    pub async fn release(self) -> Result<(), CoordError> {
        self.held.release().await
    }

    /// The same lease with its coordinator side wrapped (for timing and tracing).
    pub(crate) fn wrap_held(
        self,
        wrap: impl FnOnce(Box<dyn HeldLease>) -> Box<dyn HeldLease>,
    ) -> Self {
        Self {
            held: wrap(self.held),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A lease whose coordinator can be made unreachable or say the lease is gone.
    struct Remote {
        ttl: Duration,
        reachable: Arc<AtomicBool>,
        current: Arc<AtomicBool>,
        renewals: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl HeldLease for Remote {
        fn token(&self) -> u64 {
            7
        }
        fn ttl(&self) -> Option<Duration> {
            Some(self.ttl)
        }
        async fn renew(&self) -> Result<(), CoordError> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            if !self.reachable.load(Ordering::SeqCst) {
                return Err(CoordError::Unavailable("unreachable".into()));
            }
            if !self.current.load(Ordering::SeqCst) {
                return Err(CoordError::LeaseLost);
            }
            Ok(())
        }
        async fn reserve(&self) -> Result<WriteTarget, CoordError> {
            Err(CoordError::LeaseLost)
        }
        async fn commit(&self, _: &Commit, _: bool) -> Result<(), CoordError> {
            Err(CoordError::LeaseLost)
        }
        async fn mark_gone(&self, _: u64, _: Option<OwedNotice>) -> Result<(), CoordError> {
            Err(CoordError::LeaseLost)
        }
        async fn set_notice(&self, _: Option<OwedNotice>) -> Result<(), CoordError> {
            Err(CoordError::LeaseLost)
        }
        async fn purge(&self) -> Result<(), CoordError> {
            Err(CoordError::LeaseLost)
        }
        async fn release(&self) -> Result<(), CoordError> {
            Ok(())
        }
    }

    struct Switches {
        reachable: Arc<AtomicBool>,
        current: Arc<AtomicBool>,
        renewals: Arc<AtomicUsize>,
    }

    fn lease(ttl: Duration) -> (Lease, Switches) {
        let switches = Switches {
            reachable: Arc::new(AtomicBool::new(true)),
            current: Arc::new(AtomicBool::new(true)),
            renewals: Arc::new(AtomicUsize::new(0)),
        };
        let held = Remote {
            ttl,
            reachable: switches.reachable.clone(),
            current: switches.current.clone(),
            renewals: switches.renewals.clone(),
        };
        let record = crate::UploadRecord {
            id: "lease-test-id-000000000".into(),
            offset: 0,
            length: None,
            metadata: None,
            concat: None,
            created_at: 0,
            expires_at: None,
            state: crate::UploadState::Active,
            segments: Vec::new(),
            session: None,
            notice: None,
            expected_digest: None,
            last_commit: None,
        };
        let (_ask, release) = ReleaseRequest::channel();
        let lease = Lease::grant(Box::new(held), record, release, false, Instant::now());
        (lease, switches)
    }

    #[tokio::test(start_paused = true)]
    async fn work_outlasting_the_ttl_goes_on_while_renewals_succeed() {
        let (lease, switches) = lease(Duration::from_secs(3));
        let work = tokio::time::sleep(Duration::from_secs(30));
        let held = lease.hold_while(Duration::from_secs(5), work).await;
        assert!(held.is_ok());
        // Renewed at a third of the TTL, not at the longer interval asked for.
        assert!(switches.renewals.load(Ordering::SeqCst) >= 9);
    }

    /// A PATCH holds its lease stretch by stretch, committing between them. Stretches
    /// shorter than the renewal interval must not put renewals off (before, each call
    /// started its own timer, so none ever renewed and the lease ran out).
    #[tokio::test(start_paused = true)]
    async fn work_held_in_pieces_shorter_than_the_interval_still_renews() {
        let (lease, switches) = lease(Duration::from_secs(3));
        for piece in 0..30 {
            let work = tokio::time::sleep(Duration::from_millis(800));
            let held = lease.hold_while(Duration::from_secs(1), work).await;
            assert!(held.is_ok(), "piece {piece}: {held:?}");
            // The commit between stretches.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let renewals = switches.renewals.load(Ordering::SeqCst);
        assert!(
            renewals >= 20,
            "{renewals} renewals in 25.5 s, one was due every second"
        );
        assert!(lease.confirm().await.is_ok(), "the lease ran out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_cannot_renew_stops_when_its_lease_would_expire() {
        let (lease, switches) = lease(Duration::from_secs(3));
        switches.reachable.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let work = tokio::time::sleep(Duration::from_secs(60));
        let held = lease.hold_while(Duration::from_secs(1), work).await;
        assert!(matches!(held, Err(CoordError::LeaseLost)), "{held:?}");
        let stopped = started.elapsed();
        assert!(
            stopped >= Duration::from_secs(3) && stopped <= Duration::from_secs(4),
            "stopped after {stopped:?}, the TTL is 3 s"
        );
        // And confirming afterwards is refused at once, without waiting on the coordinator.
        assert!(matches!(lease.confirm().await, Err(CoordError::LeaseLost)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_over_stops_the_work_at_the_next_renewal() {
        let (lease, switches) = lease(Duration::from_secs(3));
        switches.current.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let held = lease
            .hold_while(
                Duration::from_secs(1),
                tokio::time::sleep(Duration::from_secs(60)),
            )
            .await;
        assert!(matches!(held, Err(CoordError::LeaseLost)));
        assert!(started.elapsed() <= Duration::from_secs(1));
    }
}
