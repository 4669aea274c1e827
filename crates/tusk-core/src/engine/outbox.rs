//! Owed notifications: post-finish and post-terminate start a user's downstream processing,
//! so a crash must not lose them. The change that causes one stores it in the record (an
//! [`OwedNotice`], in the same coordinator step); the node that made the change delivers it
//! off the request's path and clears it once the receiver acknowledged. If that node dies
//! first, or the receiver does not acknowledge, the sweeper of any node claims it when it
//! falls due and delivers it again: at least once, with the same idempotency key.

use std::time::Duration;

use super::Engine;
use crate::{unix_now, Coordinator, HookEvent, OwedNotice, RequestInfo, UploadRecord};

/// Deliveries this node runs at once; past it, a notice waits for the sweeper.
pub(super) const MAX_DELIVERIES: usize = 64;

impl Engine {
    /// The notice a change causing `event` owes, if that hook is configured.
    pub(super) fn owe(&self, event: HookEvent) -> Option<OwedNotice> {
        self.hooks
            .enabled(event)
            .then(|| OwedNotice::new(event, unix_now(), self.delivery_secs()))
    }

    /// How long a node that claimed a delivery gets before the sweeper delivers again.
    pub(super) fn delivery_secs(&self) -> u64 {
        let time = self.hooks.delivery_time();
        time.as_secs() + u64::from(time.subsec_nanos() > 0)
    }

    /// Delivers the notice `record` owes, off the caller's path, and clears it once the
    /// receiver acknowledged it. With too many deliveries running, leaves it to the sweeper.
    pub(super) fn deliver_later(&self, record: UploadRecord, request: Option<RequestInfo>) {
        let Some(notice) = record.notice else {
            return;
        };
        let Ok(permit) = self.deliveries.clone().try_acquire_owned() else {
            tracing::debug!(upload_id = %record.id, "too many deliveries running; the sweeper delivers this notice");
            return;
        };
        let hooks = self.hooks.clone();
        let coord = self.coord.clone();
        let lease_wait = self.config.lease_wait;
        tokio::spawn(async move {
            if hooks.deliver(notice.event, &record, request.as_ref()).await {
                settle(coord.as_ref(), &record.id, notice, lease_wait).await;
            }
            drop(permit);
        });
    }

    /// Clears the notice `record` owes without delivering it, off the caller's path.
    pub(super) fn drop_notice_later(&self, record: &UploadRecord) {
        let Some(notice) = record.notice else {
            return;
        };
        let coord = self.coord.clone();
        let id = record.id.clone();
        let lease_wait = self.config.lease_wait;
        tokio::spawn(async move { settle(coord.as_ref(), &id, notice, lease_wait).await });
    }
}

/// Clears a delivered `notice` under the upload's lease, unless the upload owes another one
/// by now (it was claimed again, or replaced). If the lease cannot be had, the notice stays
/// and is delivered once more: a duplicate, never a loss.
async fn settle(coord: &dyn Coordinator, id: &str, notice: OwedNotice, lease_wait: Duration) {
    let mut lease = match coord.acquire(id, lease_wait).await {
        Ok(lease) => lease,
        Err(error) => {
            tracing::debug!(upload_id = %id, %error, "cannot clear a delivered notice; it will be delivered again");
            return;
        }
    };
    if lease.record().notice == Some(notice) {
        if let Err(error) = lease.set_notice(None).await {
            tracing::warn!(upload_id = %id, %error, "clearing a delivered notice failed; it will be delivered again");
        }
    }
    super::release_logged(lease).await;
}
