//! Sweeping: owed notices that fell due, expired uploads, tombstones past their time, and
//! storage leftovers, each under the upload's lease.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::{unix_now, CoordError, Error, Lease, UploadState};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub purged: usize,
    /// Owed notices claimed for another delivery.
    pub redelivered: usize,
    pub failed: usize,
}

/// What the sweeper did to one upload.
enum Swept {
    Expired,
    Purged,
    Redelivered,
}

impl Engine {
    /// Delivers owed notices that fell due, expires overdue unfinished uploads and purges old
    /// tombstones; returns what it did.
    pub async fn sweep_once(&self) -> Result<SweepReport, Error> {
        let now = unix_now();
        let mut report = SweepReport::default();
        for id in self.coord.due_for_sweep(now, 1000).await? {
            // A busy upload is not due; skip it rather than wait.
            let lease = match self.coord.acquire(&id, Duration::ZERO).await {
                Ok(lease) => lease,
                Err(_) => continue,
            };
            let outcome = self.sweep_one(lease, now).await;
            match outcome {
                Ok(Some(Swept::Expired)) => report.expired += 1,
                Ok(Some(Swept::Purged)) => report.purged += 1,
                Ok(Some(Swept::Redelivered)) => report.redelivered += 1,
                Ok(None) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(upload_id = %id, %error, "sweeping an upload failed");
                }
            }
        }
        Ok(report)
    }

    /// Removes what storage holds for uploads that no record accounts for (a writer that
    /// crashed or lost its lease after storing, before committing). Each upload is looked at
    /// under its lease, so no writer can commit what is being removed.
    pub async fn sweep_leftovers(&self) -> Result<usize, Error> {
        let Some(leftovers) = self.storage.leftovers() else {
            return Ok(0);
        };
        let mut removed = 0;
        for id in leftovers.suspects(1000).await? {
            let outcome = match self.coord.acquire(&id, Duration::ZERO).await {
                Ok(lease) => {
                    // Renewed while the removal runs (a slow listing must not outlive the
                    // lease), and confirmed by the backend before each removal.
                    let removal = leftovers.remove_leftovers(&id, Some(&lease));
                    let outcome = lease
                        .hold_while(self.config.lease_renew_interval, removal)
                        .await
                        .unwrap_or_else(|lost| Err(lost.into()));
                    self.release(lease).await;
                    outcome
                }
                Err(CoordError::NotFound) => leftovers.remove_leftovers(&id, None).await,
                // Busy (its writer may still commit) or unreachable: next time.
                Err(_) => continue,
            };
            match outcome {
                Ok(n) => removed += n,
                Err(error) => {
                    tracing::warn!(upload_id = %id, %error, "removing stored leftovers failed")
                }
            }
        }
        Ok(removed)
    }

    /// What the sweeper did, None if the upload is no longer due. Consumes the lease:
    /// purging ends it, and otherwise it is let go of here.
    async fn sweep_one(&self, mut lease: Lease, now: u64) -> Result<Option<Swept>, Error> {
        let record = lease.record();
        let outcome = match (record.notice, record.state) {
            (Some(notice), _) if notice.due_at <= now => {
                // Claimed before it is sent, so that no other sweep sends it meanwhile.
                let claimed = notice.claimed(now, self.delivery_secs());
                let claim = lease.set_notice(Some(claimed)).await;
                let record = lease.record().clone();
                self.release(lease).await;
                claim?;
                tracing::info!(upload_id = %record.id, event = notice.event.name(), claims = claimed.claims, "delivering an owed notice again");
                self.deliver_later(record, None);
                return Ok(Some(Swept::Redelivered));
            }
            // Nothing else happens to an upload that still owes a notice.
            (Some(_), _) => Ok(None),
            (None, UploadState::Gone { purge_at }) if purge_at <= now => {
                return lease
                    .purge()
                    .await
                    .map(|()| Some(Swept::Purged))
                    .map_err(Into::into);
            }
            (None, UploadState::Active) if record.expires_at.is_some_and(|t| t <= now) => self
                .remove_under_lease(&mut lease, None)
                .await
                .map(|()| Some(Swept::Expired)),
            _ => Ok(None),
        };
        self.release(lease).await;
        outcome
    }

    /// Runs [`Engine::sweep_once`] every `interval` until `shutdown` resolves.
    pub async fn run_sweeper(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            // One sweeper per cluster; a node that loses the role simply skips its turns.
            let leading = match self.coord.leadership() {
                Some(leadership) => leadership.lead("sweeper", interval.saturating_mul(3)).await,
                None => Ok(true),
            };
            match leading {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether this node sweeps");
                    continue;
                }
            }
            let swept = self.sweep_once().await;
            match self.sweep_leftovers().await {
                Ok(0) => {}
                Ok(removed) => {
                    self.observer.leftovers_removed(removed);
                    tracing::info!(removed, "removed stored leftovers of no record");
                }
                Err(error) => tracing::warn!(%error, "sweeping stored leftovers failed"),
            }
            if let Ok(r) = &swept {
                self.observer.sweep(r.expired, r.purged);
            }
            match swept {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(
                        expired = r.expired,
                        purged = r.purged,
                        redelivered = r.redelivered,
                        failed = r.failed,
                        "sweep"
                    )
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweep failed"),
            }
        }
    }
}
