//! The node's budget for part buffers: every byte a PATCH holds in memory on its way to S3
//! is counted against one shared budget, so a thousand slow PATCHes cannot hold a thousand
//! parts.
//!
//! A buffer grows as bytes arrive (doubling, up to the part), and asks the budget before
//! each growth: a client holds only what it sent, not a whole part reserved up front. When
//! the budget is spent the PATCH stops reading its body (the client is slowed by TCP) and
//! waits; past `buffer_wait` it fails with [`StorageError::Busy`], which frees its buffer
//! (so PATCHes all waiting on each other cannot wait forever) and answers 503 with
//! Retry-After. Bytes of earlier parts were committed by progress commits and stay.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tusk_core::StorageError;

/// The budget's unit: capacities are rounded up to whole KiB.
const UNIT: usize = 1024;

/// The first allocation of a part buffer (or less, if the part is smaller).
const FIRST_CAPACITY: usize = 256 * 1024;

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
                "this upload's parts are larger than the storage buffer budget",
            ))?;
        if units == 0 {
            return Ok(Held(None));
        }
        match tokio::time::timeout(self.wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Held(Some(permit))),
            // The semaphore is never closed; a closed one means no more budget either way.
            Ok(Err(_)) | Err(_) => Err(StorageError::Busy(
                "the storage buffer budget is spent; retry later",
            )),
        }
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

impl Held {
    /// Grows what is held to cover `bytes` in all (rounded up to whole units once, not per
    /// growth, so a part never needs more than its size rounded up).
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

/// The bytes of the part being filled, with the budget its capacity holds.
pub(crate) struct PartBuffer {
    budget: BufferBudget,
    bytes: BytesMut,
    held: Held,
}

impl PartBuffer {
    pub fn new(budget: BufferBudget) -> Self {
        Self {
            budget,
            bytes: BytesMut::new(),
            held: Held(None),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `data`; `part_left` is how much more this part takes in all (`data`
    /// included), which caps the buffer's growth.
    pub async fn extend(&mut self, data: &[u8], part_left: usize) -> Result<(), StorageError> {
        let needed = self.bytes.len() + data.len();
        if needed > self.bytes.capacity() {
            let ceiling = self.bytes.len() + part_left.max(data.len());
            let capacity = (self.bytes.capacity() * 2)
                .max(FIRST_CAPACITY)
                .max(needed)
                .min(ceiling);
            self.held.cover(&self.budget, capacity).await?;
            // An exact allocation and one copy, where BytesMut's own growth could allocate
            // more than the budget was asked for.
            let mut grown = BytesMut::with_capacity(capacity);
            grown.extend_from_slice(&self.bytes);
            self.bytes = grown;
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The bytes so far and their budget, leaving the buffer empty (and holding nothing).
    pub fn take(&mut self) -> (Bytes, Held) {
        let bytes = std::mem::take(&mut self.bytes).freeze();
        (bytes, std::mem::replace(&mut self.held, Held(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[tokio::test(start_paused = true)]
    async fn a_buffer_holds_budget_for_what_it_grew_to_and_gives_it_back_when_sent() {
        let budget = BufferBudget::new(4096 * KIB as u64, Duration::from_secs(1));
        let mut buffer = PartBuffer::new(budget.clone());
        buffer.extend(&[1; 1000], 8192 * KIB).await.expect("room");
        // The first growth: 256 KiB, not the whole 8 MiB part.
        assert_eq!(budget.available(), (4096 - 256) * KIB);
        buffer
            .extend(&vec![1; 300 * KIB], 8192 * KIB)
            .await
            .expect("room");
        assert_eq!(budget.available(), (4096 - 512) * KIB);
        let (bytes, held) = buffer.take();
        assert_eq!(bytes.len(), 1000 + 300 * KIB);
        assert_eq!(budget.available(), (4096 - 512) * KIB);
        drop(held);
        assert_eq!(budget.available(), 4096 * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_filled_in_odd_steps_holds_its_size_rounded_up_once() {
        let budget = BufferBudget::new(4096 * KIB as u64, Duration::from_secs(1));
        let mut buffer = PartBuffer::new(budget.clone());
        let part = 2048 * KIB;
        let chunk = vec![1u8; 300_001];
        while buffer.len() < part {
            let left = part - buffer.len();
            let take = left.min(chunk.len());
            buffer.extend(&chunk[..take], left).await.expect("room");
        }
        // Rounded per growth, the last step held one unit too many: a part then needed
        // more than a budget of one part.
        assert_eq!(budget.available(), (4096 - 2048) * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn growth_stops_at_the_end_of_the_part() {
        let budget = BufferBudget::new(4096 * KIB as u64, Duration::from_secs(1));
        let mut buffer = PartBuffer::new(budget.clone());
        buffer.extend(&[1; 10], 100).await.expect("room");
        assert_eq!(budget.available(), 4095 * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_a_buffer_waits_then_fails_busy_and_frees_what_it_held() {
        let budget = BufferBudget::new(512 * KIB as u64, Duration::from_secs(2));
        let mut first = PartBuffer::new(budget.clone());
        first
            .extend(&vec![1; 300 * KIB], 8192 * KIB)
            .await
            .expect("room");
        let mut second = PartBuffer::new(budget.clone());
        let started = tokio::time::Instant::now();
        let refused = second.extend(&vec![1; 300 * KIB], 8192 * KIB).await;
        assert!(matches!(refused, Err(StorageError::Busy(_))), "{refused:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(first);
        assert_eq!(budget.available(), 512 * KIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_buffer_gets_room_as_soon_as_a_sent_part_gives_it_back() {
        let budget = BufferBudget::new(512 * KIB as u64, Duration::from_secs(5));
        let mut first = PartBuffer::new(budget.clone());
        first
            .extend(&vec![1; 300 * KIB], 8192 * KIB)
            .await
            .expect("room");
        let (_, held) = first.take();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(held);
        });
        let mut second = PartBuffer::new(budget.clone());
        second
            .extend(&vec![1; 300 * KIB], 8192 * KIB)
            .await
            .expect("room once the part was sent");
        release.await.expect("release task");
    }
}
