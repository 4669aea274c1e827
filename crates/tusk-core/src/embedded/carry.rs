//! Small writes carried by the log: one write and one sync for a small PATCH's bytes and
//! its commit.
//!
//! A storage that makes a small body durable by itself pays a sync for it, and the commit
//! that follows pays another, in the log. When the storage's files live beside the log (the
//! fs storage with this coordinator: one node, one disk), the log carries the bytes
//! instead: the storage stages the bytes here ([`Carrier`]); the commit that names their
//! target takes them, the log's writer has the storage write the file, unsynced, and writes
//! the commit's frame and theirs in one write, made durable by one sync. A commit that is
//! refused writes none of them, and no file; bytes no commit takes are dropped when their
//! upload's lease is released.
//!
//! The log keeps a frame until the storage's file is durable by itself: when the log
//! compacts, a checkpoint thread has the storage sync the files carried under the old
//! generation, and only then deletes it. At a start, the frames of every generation still on
//! disk whose segment is committed are handed back to the storage, which makes its file
//! hold exactly those bytes (a power cut may have lost, cut or zeroed an unsynced file).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::log::Entry;
use crate::{Segment, UploadRecord, UploadState, WriteTarget};

/// The files of a storage whose small writes the log carries.
pub trait CarriedFiles: Send + Sync + 'static {
    /// Writes the file of `upload`'s `target` holding `bytes`, without syncing it, just
    /// before the log writes them with their commit. It must not exist (`AlreadyExists`).
    fn place(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()>;

    /// Makes the files of these targets durable, data and directory entries: the log is
    /// about to forget their bytes. A file that is gone (discarded, terminated) is skipped.
    fn make_durable(&self, placed: &[(String, WriteTarget)]) -> io::Result<()>;

    /// At a start: makes the file of `upload`'s committed `target` hold exactly `bytes`
    /// (created if missing, rewritten in place if it differs), unsynced: the log keeps the
    /// bytes until [`CarriedFiles::make_durable`].
    fn restore(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()>;
}

/// What a storage hands its small writes to; from [`super::EmbeddedCoordinator::carrier`].
#[derive(Clone)]
pub struct Carrier {
    staged: Arc<Staged>,
}

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carrier")
    }
}

impl Carrier {
    pub(super) fn new(staged: Arc<Staged>) -> Self {
        Self { staged }
    }

    /// Hands the log the bytes of `upload`'s `target`: the commit naming the target has the
    /// storage write its file and writes them to the log with it.
    pub fn stage(&self, upload: &str, target: WriteTarget, bytes: Bytes) {
        self.staged
            .lock()
            .entry(upload.to_string())
            .or_default()
            .push((target, bytes));
    }
}

/// The bytes staged per upload, until a commit takes them or the lease is released.
#[derive(Default)]
pub(super) struct Staged(pub(super) Mutex<HashMap<String, Vec<(WriteTarget, Bytes)>>>);

impl Staged {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(WriteTarget, Bytes)>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the bytes staged for `upload` whose targets `append` names.
    pub fn take(&self, upload: &str, append: &[Segment]) -> Vec<CarriedWrite> {
        let mut staged = self.lock();
        let Some(writes) = staged.get_mut(upload) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        writes.retain(|(target, data)| {
            let named = append.iter().any(|s| s.target == *target);
            if named {
                taken.push(CarriedWrite {
                    id: upload.to_string(),
                    target: *target,
                    data: data.clone(),
                });
            }
            !named
        });
        if writes.is_empty() {
            staged.remove(upload);
        }
        taken
    }

    /// Drops what is staged for `upload`: its lease is released, so no commit will take it.
    pub fn forget(&self, upload: &str) {
        self.lock().remove(upload);
    }
}

/// The bytes of a small write, staged, going to the log with its commit, or found there at
/// a start.
#[derive(Debug, Clone)]
pub(super) struct CarriedWrite {
    pub id: String,
    pub target: WriteTarget,
    pub data: Bytes,
}

impl CarriedWrite {
    /// The log entry of these bytes.
    pub fn entry(&self) -> Entry {
        Entry::Carried {
            id: self.id.clone(),
            target: self.target,
            data: self.data.clone(),
        }
    }

    /// Whether `record` (the upload's, if it has one) still needs these bytes: it is not
    /// gone, and one of its committed segments is this target, of this length.
    pub fn is_committed_in(&self, record: Option<&UploadRecord>) -> bool {
        record.is_some_and(|r| {
            !matches!(r.state, UploadState::Gone { .. })
                && r.segments
                    .iter()
                    .any(|s| s.target == self.target && s.len == self.data.len() as u64)
        })
    }
}

/// Restores the files of the carried writes that are committed; returns their targets.
pub(super) fn restore_committed(
    files: &Arc<dyn CarriedFiles>,
    carried: &[CarriedWrite],
    records: &HashMap<String, UploadRecord>,
) -> io::Result<Vec<(String, WriteTarget)>> {
    let mut restored = Vec::new();
    for write in carried {
        if write.is_committed_in(records.get(&write.id)) {
            files
                .restore(&write.id, write.target, &write.data)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "restoring upload {} segment {}-{} from the log: {e}",
                            write.id, write.target.token, write.target.seq
                        ),
                    )
                })?;
            restored.push((write.id.clone(), write.target));
        }
    }
    Ok(restored)
}
