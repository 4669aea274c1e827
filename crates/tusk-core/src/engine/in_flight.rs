//! PATCHes in flight on this node, for HEAD and GET: a read of an upload whose PATCH has
//! lost its client must answer with every byte the server received, not the offset from
//! before that PATCH (the client's next PATCH would be a 409). The server learns that a
//! client left only by reading up to its end, so a read waits (bounded) while this node's
//! PATCH of the upload still has buffered bytes to read or its last commit to make, and
//! answers as soon as that PATCH waits for the network (a live client: the last progress
//! commit is the answer) or is done. A read on another node asks this node through the
//! coordinator ([`crate::InFlightElsewhere`]), which calls the same `settle`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Where a PATCH in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum PatchPhase {
    /// Reading bytes that have arrived (or storing them).
    Reading,
    /// Everything that arrived is read; waiting for the client to send more.
    AwaitingClient,
    /// The body has ended; the last commit is being made.
    Ended,
}

/// One PATCH's phase, as its body reader sets it (per chunk: an atomic store, and a
/// wake-up only when a read is waiting) and reads watch it.
#[derive(Default)]
struct PhaseCell {
    phase: AtomicU8,
    /// Reads waiting on this PATCH: the reader wakes them only if there are any.
    waiting: AtomicUsize,
    /// Its last commit is done.
    done: AtomicBool,
    changed: Notify,
}

impl PhaseCell {
    fn phase(&self) -> PatchPhase {
        match self.phase.load(Ordering::SeqCst) {
            0 => PatchPhase::Reading,
            1 => PatchPhase::AwaitingClient,
            _ => PatchPhase::Ended,
        }
    }
}

#[derive(Default)]
pub(crate) struct InFlightPatches {
    patches: Mutex<HashMap<String, Arc<PhaseCell>>>,
}

impl InFlightPatches {
    /// The uploads with a PATCH in flight on this node, and where each one is.
    pub fn list(&self) -> Vec<(String, PatchPhase)> {
        let patches = self.patches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<(String, PatchPhase)> = patches
            .iter()
            .map(|(id, cell)| (id.clone(), cell.phase()))
            .collect();
        list.sort();
        list
    }

    /// Where this node's PATCH of `id` is, if it has one in flight.
    pub fn phase_of(&self, id: &str) -> Option<PatchPhase> {
        let patches = self.patches.lock().unwrap_or_else(PoisonError::into_inner);
        patches.get(id).map(|cell| cell.phase())
    }

    /// Waits, at most `bound`, until this node's PATCH of `id` (if any) waits for its client
    /// or has made its last commit. False if this node has no PATCH of `id` in flight.
    pub async fn settle(&self, id: &str, bound: Duration) -> bool {
        let cell = self
            .patches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        let Some(cell) = cell else {
            return false;
        };
        cell.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(bound, settled(&cell)).await;
        cell.waiting.fetch_sub(1, Ordering::SeqCst);
        true
    }
}

async fn settled(cell: &PhaseCell) {
    let started = tokio::time::Instant::now();
    // Whether the PATCH has waited for its client since this read began to look.
    let mut waited_for_client = false;
    loop {
        let changed = cell.changed.notified();
        tokio::pin!(changed);
        // Registered before looking, so a change made after the look wakes us.
        changed.as_mut().enable();
        if cell.done.load(Ordering::SeqCst) {
            return;
        }
        match cell.phase() {
            PatchPhase::AwaitingClient => {
                waited_for_client = true;
                // A client that resumes has just closed its PATCH's connection, and that
                // task may not have read the end yet: a live client's PATCH stays waiting.
                if tokio::time::timeout(END_NOT_READ_YET, changed)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            PatchPhase::Reading if waited_for_client => {
                // Bytes came after the PATCH had waited for them: a live client, or the
                // tail a proxy still forwards for one that left. The tail gets a little
                // time; a steady stream must not hold the read until it pauses.
                let left = LIVE_STREAM.saturating_sub(started.elapsed());
                if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                    return;
                }
            }
            // Reading what had arrived when the read began, or making the last commit.
            _ => changed.await,
        }
    }
}

/// How long a read gives a PATCH that waits for its client to notice that the client left.
const END_NOT_READ_YET: Duration = Duration::from_millis(50);

/// How long a read waits at most for a PATCH whose client keeps sending.
const LIVE_STREAM: Duration = Duration::from_millis(200);

/// One PATCH's entry in [`InFlightPatches`], from its lease to its last commit (or
/// release): dropping it lets the waiting reads go on.
pub(crate) struct PatchInFlight {
    patches: Arc<InFlightPatches>,
    id: String,
    cell: Arc<PhaseCell>,
}

impl PatchInFlight {
    pub fn register(patches: Arc<InFlightPatches>, id: &str) -> Self {
        let cell = Arc::new(PhaseCell::default());
        patches
            .patches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), cell.clone());
        Self {
            patches,
            id: id.to_string(),
            cell,
        }
    }

    pub fn set(&self, phase: PatchPhase) {
        let before = self.cell.phase.swap(phase as u8, Ordering::SeqCst);
        if before != phase as u8 && self.cell.waiting.load(Ordering::SeqCst) > 0 {
            self.cell.changed.notify_waiters();
        }
    }
}

impl Drop for PatchInFlight {
    fn drop(&mut self) {
        self.cell.done.store(true, Ordering::SeqCst);
        self.cell.changed.notify_waiters();
        let mut patches = self
            .patches
            .patches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only our own entry: a later PATCH of the same upload may have registered since.
        if patches
            .get(&self.id)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            patches.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_while_the_patch_reads_or_commits_and_no_longer() {
        let patches = Arc::new(InFlightPatches::default());
        let started = tokio::time::Instant::now();
        // Nothing in flight: no wait at all.
        patches.settle("a", Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Reading buffered bytes, then the body ends and the commit takes a while.
        let patch = PatchInFlight::register(patches.clone(), "a");
        let committing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            patch.set(PatchPhase::Ended);
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(patch);
        });
        patches.settle("a", Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        committing.await.unwrap();
        assert!(patches.patches.lock().unwrap().is_empty());

        // A live client: the PATCH waits for it, so the read answers after the short grace
        // a just-closed connection gets.
        let live = PatchInFlight::register(patches.clone(), "b");
        live.set(PatchPhase::AwaitingClient);
        patches.settle("b", Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(350));

        // A client that just left: its PATCH reads the end within the grace and commits.
        let leaving = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            live.set(PatchPhase::Ended);
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(live);
        });
        patches.settle("b", Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(460));
        leaving.await.unwrap();

        // A PATCH that never settles bounds the wait.
        let _stuck = PatchInFlight::register(patches.clone(), "c");
        patches.settle("c", Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(2460));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_does_not_wait_for_a_gap_in_a_steady_stream() {
        let patches = Arc::new(InFlightPatches::default());
        let patch = PatchInFlight::register(patches.clone(), "a");
        // Bytes arrive every 20 ms and are read at once: never a 50 ms gap.
        let streaming = tokio::spawn(async move {
            loop {
                patch.set(PatchPhase::Reading);
                tokio::time::sleep(Duration::from_millis(1)).await;
                patch.set(PatchPhase::AwaitingClient);
                tokio::time::sleep(Duration::from_millis(19)).await;
            }
        });
        let started = tokio::time::Instant::now();
        patches.settle("a", Duration::from_secs(3)).await;
        let waited = started.elapsed();
        assert!(
            waited <= LIVE_STREAM + Duration::from_millis(20),
            "waited {waited:?} for a live stream"
        );
        streaming.abort();
    }

    #[tokio::test]
    async fn an_older_patch_leaves_a_newer_ones_entry_in_place() {
        let patches = Arc::new(InFlightPatches::default());
        let old = PatchInFlight::register(patches.clone(), "a");
        let new = PatchInFlight::register(patches.clone(), "a");
        drop(old);
        assert!(patches.patches.lock().unwrap().contains_key("a"));
        drop(new);
        assert!(patches.patches.lock().unwrap().is_empty());
    }
}
