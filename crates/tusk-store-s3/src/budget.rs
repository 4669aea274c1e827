//! The node's budget for gathered parts: every byte a PATCH holds on its way to S3 (in a
//! spool file, see [`crate::spool`]) is counted against one shared budget, so a thousand
//! slow PATCHes cannot hold a thousand parts.
//!
//! A part asks the budget for each byte before it is written: a client holds only what it
//! sent, not a whole part reserved up front. When the budget is spent the PATCH stops
//! reading its body (the client is slowed by TCP) and waits; past `buffer_wait` it fails
//! with [`StorageError::Busy`], which frees what it held (so PATCHes all waiting on each
//! other cannot wait forever) and answers 503 with Retry-After. Bytes of earlier parts were
//! committed by progress commits and stay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tusk_core::StorageError;

/// The budget's unit: what a part holds is rounded up to whole KiB.
const UNIT: usize = 1024;

/// The budget of one node, shared by all its writes.
#[derive(Clone)]
pub(crate) struct BufferBudget {
    units: Arc<Semaphore>,
    total_units: usize,
    wait: Duration,
}

/// Budget held by one buffer (or one part being sent); dropping it gives it back.
pub(crate) struct Held(Option<OwnedSemaphorePermit>);

impl BufferBudget {
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let units = usize::try_from(bytes / UNIT as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(units)),
            total_units: units,
            wait,
        }
    }

    /// Takes `units` more, waiting up to the configured time.
    async fn take(&self, units: usize) -> Result<Held, StorageError> {
        let units = u32::try_from(units)
            .ok()
            .filter(|_| units <= self.total_units)
            .ok_or(StorageError::Busy(
                "this upload's parts are larger than the S3 spool budget (storage.s3.buffer_budget)",
            ))?;
        if units == 0 {
            return Ok(Held(None));
        }
        match tokio::time::timeout(self.wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Held(Some(permit))),
            // The semaphore is never closed; a closed one means no more budget either way.
            Ok(Err(_)) | Err(_) => Err(StorageError::Busy(
                "the S3 spool budget is spent; retry later",
            )),
        }
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

impl Held {
    pub fn none() -> Self {
        Self(None)
    }

    /// Grows what is held to cover `bytes` in all (rounded up to whole units once, not per
    /// step, so a part never needs more than its size rounded up).
    pub async fn cover(&mut self, budget: &BufferBudget, bytes: usize) -> Result<(), StorageError> {
        let held = self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let more = bytes.div_ceil(UNIT).saturating_sub(held);
        if more > 0 {
            let taken = budget.take(more).await?;
            match (&mut self.0, taken.0) {
                (Some(mine), Some(theirs)) => mine.merge(theirs),
                (mine @ None, theirs) => *mine = theirs,
                (Some(_), None) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[tokio::test(start_paused = true)]
    async fn a_part_covered_in_odd_steps_holds_its_size_rounded_up_once() {
        let budget = BufferBudget::new(4096 * KIB as u64, Duration::from_secs(1));
        let mut held = Held::none();
        let part = 2048 * KIB;
        let mut covered = 0;
        while covered < part {
            covered = (covered + 300_001).min(part);
            held.cover(&budget, covered).await.expect("room");
        }
        // Rounded per step, the last step held one unit too many: a part then needed more
        // than a budget of one part.
        assert_eq!(budget.available(), (4096 - 2048) * KIB);
        drop(held);
        assert_eq!(budget.available(), 4096 * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_a_part_waits_then_fails_busy() {
        let budget = BufferBudget::new(512 * KIB as u64, Duration::from_secs(2));
        let mut first = Held::none();
        first.cover(&budget, 300 * KIB).await.expect("room");
        let mut second = Held::none();
        let started = tokio::time::Instant::now();
        let refused = second.cover(&budget, 300 * KIB).await;
        assert!(matches!(refused, Err(StorageError::Busy(_))), "{refused:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop((first, second));
        assert_eq!(budget.available(), 512 * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_part_gets_room_as_soon_as_a_sent_part_gives_it_back() {
        let budget = BufferBudget::new(512 * KIB as u64, Duration::from_secs(5));
        let mut first = Held::none();
        first.cover(&budget, 300 * KIB).await.expect("room");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(first);
        });
        let mut second = Held::none();
        second
            .cover(&budget, 300 * KIB)
            .await
            .expect("room once the part was sent");
        release.await.expect("release task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_larger_than_the_budget_is_refused_at_once() {
        let budget = BufferBudget::new(512 * KIB as u64, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let refused = Held::none().cover(&budget, 513 * KIB).await;
        assert!(matches!(refused, Err(StorageError::Busy(_))), "{refused:?}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
