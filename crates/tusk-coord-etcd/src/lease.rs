//! A lease granted by etcd, and every change made under it.
//!
//! The holder keeps the record as it last wrote it, with the head's mod revision: a change
//! is one transaction that compares the lock (token, and not expired) and that revision, so
//! it needs no read first. Only the holder changes a record, so the revision moves under it
//! only if an answer of its own was lost; the transaction then reads the record back, and
//! the change is worked out again from what etcd has (a commit whose answer was lost is then
//! seen as made: the offset moved).

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use tokio::sync::Mutex;
use tusk_core::{Commit, CoordError, HeldLease, OwedNotice, UploadRecord, WriteTarget};

use crate::keys::{assemble, padded, segment_writes, Head};
use crate::{now_ms, read_kvs, unavailable, Shared, Taken};

/// The record as the holder last wrote (or read) it.
#[derive(Clone)]
struct Known {
    record: UploadRecord,
    seq: u32,
    head_revision: i64,
}

pub(crate) struct EtcdLease {
    shared: Arc<Shared>,
    id: String,
    token: u64,
    known: Mutex<Known>,
    /// The sequence number reserved as the lease was taken, until the first `reserve`.
    first_target: std::sync::Mutex<Option<u32>>,
}

/// How many times a change is worked out again after the record moved under the lease.
const ATTEMPTS: usize = 3;

/// A change under the lease: the record and next sequence number it leaves (`None`: it
/// removes the record), the operations besides the head's, and what to answer.
struct Step<T> {
    head: Option<(UploadRecord, u32)>,
    ops: Vec<TxnOp>,
    answer: T,
}

impl EtcdLease {
    pub fn new(shared: Arc<Shared>, id: String, taken: Taken) -> Self {
        Self {
            shared,
            id,
            token: taken.token,
            known: Mutex::new(Known {
                record: taken.record,
                seq: taken.seq,
                head_revision: taken.head_revision,
            }),
            first_target: std::sync::Mutex::new(taken.first_target),
        }
    }

    fn token_revision(&self) -> i64 {
        i64::try_from(self.token).unwrap_or(i64::MAX)
    }

    /// The lock is still this lease's, and not expired.
    fn held(&self) -> [Compare; 2] {
        let lock = self.shared.keys.lock(&self.id);
        [
            Compare::create_revision(lock.as_str(), CompareOp::Equal, self.token_revision()),
            Compare::value(lock, CompareOp::Greater, padded(now_ms())),
        ]
    }

    /// Makes the change `step` works out from the known record, in one transaction that
    /// also writes the head (or, for `head: None`, leaves it to `ops` to remove the record)
    /// and moves the upload's entry in the sweep index.
    async fn change<T>(
        &self,
        step: impl Fn(&Known) -> Result<Step<T>, CoordError>,
    ) -> Result<T, CoordError> {
        let keys = &self.shared.keys;
        let head_key = keys.head(&self.id);
        let mut known = self.known.lock().await;
        for _ in 0..ATTEMPTS {
            let Step {
                head,
                mut ops,
                answer,
            } = match step(&known) {
                Ok(step) => step,
                // Refused by what this holder knows: true only if it still holds the lease
                // and knows the record as etcd has it.
                Err(refused) => {
                    if self.refresh(&mut known).await? {
                        continue;
                    }
                    return Err(refused);
                }
            };
            if let Some((record, seq)) = &head {
                // The head's sequence number now counts every reservation, also those the
                // reservations key counted.
                ops.insert(0, TxnOp::delete(keys.reservations(&self.id), None));
                ops.insert(
                    0,
                    TxnOp::put(head_key.as_str(), Head::of(record, *seq).encode()?, None),
                );
            }
            ops.extend(sweep_index_change(
                &self.shared,
                &self.id,
                known.record.sweep_at(),
                head.as_ref().and_then(|(record, _)| record.sweep_at()),
            ));
            let mut compares = self.held().to_vec();
            compares.push(Compare::mod_revision(
                head_key.as_str(),
                CompareOp::Equal,
                known.head_revision,
            ));
            let done = self
                .shared
                .kv()
                .txn(Txn::new().when(compares).and_then(ops).or_else([
                    TxnOp::get(keys.lock(&self.id), None),
                    TxnOp::get(keys.upload(&self.id), Some(GetOptions::new().with_prefix())),
                ]))
                .await
                .map_err(unavailable)?;
            if done.succeeded() {
                if let Some((record, seq)) = head {
                    *known = Known {
                        record,
                        seq,
                        head_revision: done.header().map_or(0, |h| h.revision()),
                    };
                }
                return Ok(answer);
            }
            let responses = done.op_responses();
            let still_held = read_kvs(&responses, 0).first().is_some_and(|lock| {
                lock.create_revision() == self.token_revision()
                    && lock.value() > padded(now_ms()).as_bytes()
            });
            if !still_held {
                return Err(CoordError::LeaseLost);
            }
            let (record, seq, head_revision) =
                assemble(keys, &self.id, read_kvs(&responses, 1))?.ok_or(CoordError::NotFound)?;
            *known = Known {
                record,
                seq,
                head_revision,
            };
        }
        Err(CoordError::Unavailable(
            "etcd: the record kept changing under the lease".into(),
        ))
    }

    /// Reads the record again under the lease: `Ok(true)` if it had moved (now `known`),
    /// `Ok(false)` if `known` was current, `LeaseLost` if the lease is not held.
    async fn refresh(&self, known: &mut Known) -> Result<bool, CoordError> {
        let keys = &self.shared.keys;
        let read = self
            .shared
            .kv()
            .txn(Txn::new().when(self.held()).and_then([TxnOp::get(
                keys.upload(&self.id),
                Some(GetOptions::new().with_prefix()),
            )]))
            .await
            .map_err(unavailable)?;
        if !read.succeeded() {
            return Err(CoordError::LeaseLost);
        }
        let (record, seq, head_revision) =
            assemble(keys, &self.id, read_kvs(&read.op_responses(), 0))?
                .ok_or(CoordError::NotFound)?;
        if head_revision == known.head_revision {
            return Ok(false);
        }
        *known = Known {
            record,
            seq,
            head_revision,
        };
        Ok(true)
    }

    /// Deletes the lock if it is still this lease's (expired or not).
    async fn delete_lock(&self) -> Result<(), CoordError> {
        let lock = self.shared.keys.lock(&self.id);
        self.shared
            .kv()
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        lock.as_str(),
                        CompareOp::Equal,
                        self.token_revision(),
                    )])
                    .and_then([TxnOp::delete(lock.as_str(), None)]),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Moves the upload's entry in the sweep index from `old` to `new`.
fn sweep_index_change(shared: &Shared, id: &str, old: Option<u64>, new: Option<u64>) -> Vec<TxnOp> {
    if old == new {
        return Vec::new();
    }
    let keys = &shared.keys;
    let mut ops = Vec::new();
    if let Some(at) = old {
        ops.push(TxnOp::delete(keys.swept_at(at, id), None));
    }
    if let Some(at) = new {
        ops.push(TxnOp::put(keys.swept_at(at, id), "", None));
    }
    ops
}

#[async_trait]
impl HeldLease for EtcdLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn ttl(&self) -> Option<std::time::Duration> {
        Some(self.shared.settings.lease_ttl)
    }

    async fn renew(&self) -> Result<(), CoordError> {
        let lock = self.shared.keys.lock(&self.id);
        let ttl = crate::ms(self.shared.settings.lease_ttl);
        let renewed = self
            .shared
            .kv()
            .txn(Txn::new().when(self.held()).and_then([TxnOp::put(
                lock,
                padded(now_ms().saturating_add(ttl)),
                None,
            )]))
            .await
            .map_err(unavailable)?;
        if renewed.succeeded() {
            Ok(())
        } else {
            Err(CoordError::LeaseLost)
        }
    }

    async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        let token = self.token;
        let reserved = self
            .first_target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(seq) = reserved {
            return Ok(WriteTarget { token, seq });
        }
        self.change(|known| {
            let next = known
                .seq
                .checked_add(1)
                .ok_or_else(|| CoordError::Corrupt("write target numbers ran out".into()))?;
            Ok(Step {
                head: Some((known.record.clone(), next)),
                ops: Vec::new(),
                answer: WriteTarget {
                    token,
                    seq: known.seq,
                },
            })
        })
        .await
    }

    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError> {
        if release {
            self.shared.forget_local(&self.id, self.token);
        }
        let keys = &self.shared.keys;
        let lock = keys.lock(&self.id);
        let committed = self
            .change(|known| {
                if known.record.offset != commit.expected_offset {
                    return Err(CoordError::OffsetChanged {
                        expected: commit.expected_offset,
                        found: known.record.offset,
                    });
                }
                let mut record = known.record.clone();
                record.apply_commit(commit);
                let stored = known.record.segments.len();
                let mut ops = segment_writes(
                    keys,
                    &self.id,
                    &record.segments,
                    stored.saturating_sub(commit.fold),
                    stored,
                )?;
                if release {
                    ops.push(TxnOp::delete(lock.as_str(), None));
                }
                Ok(Step {
                    head: Some((record, known.seq)),
                    ops,
                    answer: (),
                })
            })
            .await;
        if release && committed.is_err() {
            // Let go whatever the outcome, as a PATCH's last step must.
            self.delete_lock().await?;
        }
        committed
    }

    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        let segments = self.shared.keys.segments(&self.id);
        self.change(|known| {
            let mut record = known.record.clone();
            record.mark_gone(purge_at, notice);
            let ops = vec![TxnOp::delete(
                segments.as_str(),
                Some(DeleteOptions::new().with_prefix()),
            )];
            Ok(Step {
                head: Some((record, known.seq)),
                ops,
                answer: (),
            })
        })
        .await
    }

    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.change(|known| {
            let mut record = known.record.clone();
            record.notice = notice;
            Ok(Step {
                head: Some((record, known.seq)),
                ops: Vec::new(),
                answer: (),
            })
        })
        .await
    }

    async fn purge(&self) -> Result<(), CoordError> {
        self.shared.forget_local(&self.id, self.token);
        let keys = &self.shared.keys;
        self.change(|_| {
            Ok(Step {
                head: None,
                ops: vec![
                    TxnOp::delete(
                        keys.upload(&self.id),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::delete(keys.lock(&self.id), None),
                    TxnOp::delete(keys.release_request(&self.id), None),
                ],
                answer: (),
            })
        })
        .await
    }

    async fn release(&self) -> Result<(), CoordError> {
        self.shared.forget_local(&self.id, self.token);
        self.delete_lock().await
    }
}
