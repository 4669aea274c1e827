//! Small writes carried by the log: one sync for a small PATCH's bytes and its commit.
//!
//! A storage that makes a small body durable by itself pays a sync for it, and the commit
//! that follows pays another, in the log. When the storage's files live beside the log (the
//! fs storage with this coordinator: one node, one disk), the log carries the bytes
//! instead: their frame is appended to the log *without* a sync, the storage writes its file
//! unsynced, and the commit that follows in the same file is synced, which makes both
//! durable at once. A crash in between loses only bytes no commit names.
//!
//! The log keeps a frame until the storage's file is durable by itself: when the log
//! compacts, a checkpoint thread has the storage sync the files placed under the old
//! generation, and only then deletes it. At a start, the frames of every generation still on
//! disk whose segment is committed are handed back to the storage, which makes its file
//! hold exactly those bytes (a power cut may have lost, cut or zeroed an unsynced file).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::log::{AppendError, Entry, LogWriter};
use crate::{UploadRecord, UploadState, WriteTarget};

/// The files of a storage whose small writes the log carries.
pub trait CarriedFiles: Send + Sync + 'static {
    /// Writes the file of `upload`'s `target` holding `bytes`, without syncing it. It must
    /// not exist (`AlreadyExists` otherwise).
    fn place(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()>;

    /// Makes the files of these targets durable, data and directory entries: the log is
    /// about to forget their bytes. A file that is gone (discarded, terminated) is skipped.
    fn make_durable(&self, placed: &[(String, WriteTarget)]) -> io::Result<()>;

    /// At a start: makes the file of `upload`'s committed `target` hold exactly `bytes`,
    /// durably (created if missing, rewritten in place if it differs).
    fn restore(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()>;
}

/// What a storage hands its small writes to; from [`super::EmbeddedCoordinator::carrier`].
#[derive(Clone)]
pub struct Carrier {
    log: LogWriter,
}

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carrier")
    }
}

impl Carrier {
    pub(super) fn new(log: LogWriter) -> Self {
        Self { log }
    }

    /// Appends `bytes` as the file of `upload`'s `target` to the log, unsynced, and has the
    /// storage place the file; returns once both are written. The commit naming the target
    /// makes them durable.
    pub async fn carry(&self, upload: &str, target: WriteTarget, bytes: Bytes) -> io::Result<()> {
        let entry = Entry::Carried {
            id: upload.to_string(),
            target,
            data: bytes,
        };
        match self.log.append(entry).await {
            Ok(()) => Ok(()),
            Err(AppendError::Io(e)) => Err(e),
            Err(AppendError::Refused(why)) => Err(io::Error::other(why)),
        }
    }
}

/// A carried frame found at a start.
#[derive(Debug)]
pub(super) struct CarriedWrite {
    pub id: String,
    pub target: WriteTarget,
    pub data: Bytes,
}

impl CarriedWrite {
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

/// Restores the files of the carried writes that are committed; returns how many.
pub(super) fn restore_committed(
    files: &Arc<dyn CarriedFiles>,
    carried: &[CarriedWrite],
    records: &HashMap<String, UploadRecord>,
) -> io::Result<usize> {
    let mut restored = 0;
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
            restored += 1;
        }
    }
    Ok(restored)
}
