//! An in-memory coordinator for the storage contract: records in a map, leases a test can
//! make lost at will ([`MemoryCoordinator::expire`]), the way a paused node loses its lease
//! to the TTL, without waiting for a clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{
    Commit, CoordError, Coordinator, HeldLease, Lease, OwedNotice, ReleaseRequest, UploadRecord,
    WriteTarget,
};

#[derive(Default)]
struct State {
    /// Commits are applied but answered as a timeout (a reply lost on the way back).
    lose_commit_replies: bool,
    records: HashMap<String, UploadRecord>,
    /// The current holder's token per upload.
    holders: HashMap<String, u64>,
    /// Last token and last reserved sequence number per upload ID, kept across purges.
    last_token: HashMap<String, u64>,
    next_seq: HashMap<String, u32>,
}

/// A single-process coordinator whose leases the test controls.
#[derive(Default)]
pub struct MemoryCoordinator {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryCoordinator {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The current lease of `id` is lost, as if its TTL ran out: its holder is fenced off
    /// and the next `acquire` succeeds.
    pub fn expire(&self, id: &str) {
        lock(&self.state).holders.remove(id);
    }

    /// From now on, every commit is applied but its answer is lost: the committer sees
    /// [`CoordError::Unavailable`] and cannot tell whether it happened.
    pub fn lose_commit_replies(&self, lose: bool) {
        lock(&self.state).lose_commit_replies = lose;
    }
}

struct MemoryLease {
    state: Arc<Mutex<State>>,
    id: String,
    token: u64,
}

impl MemoryLease {
    /// Runs `change` on the record while this lease is current.
    fn fenced<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        let mut state = lock(&self.state);
        if state.holders.get(&self.id) != Some(&self.token) {
            return Err(CoordError::LeaseLost);
        }
        change(&mut state)
    }
}

#[async_trait]
impl HeldLease for MemoryLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn ttl(&self) -> Option<Duration> {
        None
    }

    async fn renew(&self) -> Result<(), CoordError> {
        self.fenced(|_| Ok(()))
    }

    async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        self.fenced(|state| {
            let seq = state.next_seq.entry(self.id.clone()).or_insert(0);
            let target = WriteTarget {
                token: self.token,
                seq: *seq,
            };
            *seq += 1;
            Ok(target)
        })
    }

    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError> {
        let result = self.fenced(|state| {
            let record = state
                .records
                .get_mut(&self.id)
                .ok_or(CoordError::NotFound)?;
            if record.offset != commit.expected_offset {
                return Err(CoordError::OffsetChanged {
                    expected: commit.expected_offset,
                    found: record.offset,
                });
            }
            record.apply_commit(commit);
            if state.lose_commit_replies {
                return Err(CoordError::Unavailable(
                    "the commit's answer was lost".into(),
                ));
            }
            Ok(())
        });
        if release {
            self.release().await?;
        }
        result
    }

    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.fenced(|state| {
            let record = state
                .records
                .get_mut(&self.id)
                .ok_or(CoordError::NotFound)?;
            record.mark_gone(purge_at, notice);
            Ok(())
        })
    }

    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.fenced(|state| {
            let record = state
                .records
                .get_mut(&self.id)
                .ok_or(CoordError::NotFound)?;
            record.notice = notice;
            Ok(())
        })
    }

    async fn purge(&self) -> Result<(), CoordError> {
        self.fenced(|state| {
            state.records.remove(&self.id);
            state.holders.remove(&self.id);
            Ok(())
        })
    }

    async fn release(&self) -> Result<(), CoordError> {
        let mut state = lock(&self.state);
        if state.holders.get(&self.id) == Some(&self.token) {
            state.holders.remove(&self.id);
        }
        Ok(())
    }
}

#[async_trait]
impl Coordinator for MemoryCoordinator {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError> {
        let mut state = lock(&self.state);
        if state.records.contains_key(&record.id) {
            return Err(CoordError::AlreadyExists);
        }
        state.records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError> {
        Ok(lock(&self.state).records.get(id).cloned())
    }

    async fn acquire(&self, id: &str, _wait: Duration) -> Result<Lease, CoordError> {
        let requested_at = Instant::now();
        let mut state = lock(&self.state);
        let record = state.records.get(id).cloned().ok_or(CoordError::NotFound)?;
        if state.holders.contains_key(id) {
            return Err(CoordError::Locked);
        }
        let token = state.last_token.get(id).copied().unwrap_or(0) + 1;
        state.last_token.insert(id.to_string(), token);
        state.holders.insert(id.to_string(), token);
        let held = MemoryLease {
            state: self.state.clone(),
            id: id.to_string(),
            token,
        };
        let (_ask, release) = ReleaseRequest::channel();
        Ok(Lease::grant(
            Box::new(held),
            record,
            release,
            false,
            requested_at,
        ))
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        Ok(lock(&self.state)
            .records
            .values()
            .filter(|r| r.due_for_sweep(now))
            .take(limit)
            .map(|r| r.id.clone())
            .collect())
    }

    async fn ping(&self) -> Result<(), CoordError> {
        Ok(())
    }
}
