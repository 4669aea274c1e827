//! A download that outlives the files it reads.
//!
//! Reads take no lease, so a write may fold the pieces an unfinished upload's download has
//! not reached yet (see [`crate::fold`]), and the engine then removes them. Committed bytes
//! never change, only where they are kept: a read that finds a piece missing loads the
//! record again and goes on from where it was with the pieces that hold those bytes now.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{ByteStream, Coordinator, Storage, StorageError, UploadState};

/// Reloads in a row without a byte read in between before a missing piece is an error: each
/// means another write folded the pieces between the load and the read.
const MOST_RELOADS: u32 = 3;

struct Reading {
    storage: Arc<dyn Storage>,
    coord: Arc<dyn Coordinator>,
    upload: String,
    /// The next byte to read, and the end of the range.
    at: u64,
    end: u64,
    bytes: ByteStream,
    reloads: u32,
    ended: bool,
}

/// `opened` (the storage's read of `range` of `upload`'s record, or its error), going on
/// from a fresh record when a piece it needs has gone.
pub(super) fn resuming(
    storage: Arc<dyn Storage>,
    coord: Arc<dyn Coordinator>,
    upload: &str,
    range: Range<u64>,
    opened: Result<ByteStream, StorageError>,
) -> ByteStream {
    let bytes = opened.unwrap_or_else(|error| Box::pin(futures_util::stream::iter([Err(error)])));
    let reading = Reading {
        storage,
        coord,
        upload: upload.to_string(),
        at: range.start,
        end: range.end,
        bytes,
        reloads: 0,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(reading, Reading::next))
}

impl Reading {
    async fn next(mut self) -> Option<(Result<Bytes, StorageError>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            match self.bytes.next().await? {
                Ok(bytes) => {
                    self.at += bytes.len() as u64;
                    self.reloads = 0;
                    return Some((Ok(bytes), self));
                }
                Err(error @ StorageError::MissingSegment { .. }) if self.reloads < MOST_RELOADS => {
                    self.reloads += 1;
                    match self.reopen().await {
                        Some(Ok(bytes)) => self.bytes = bytes,
                        Some(Err(reopening)) => return self.fail(reopening),
                        None => return self.fail(error),
                    }
                }
                Err(error) => return self.fail(error),
            }
        }
    }

    /// The rest of the range from the record as it is now; `None` when the upload no longer
    /// holds those bytes (gone) or its record cannot be loaded. (`&mut`: a shared borrow
    /// held across the awaits would need the byte stream to be `Sync`.)
    async fn reopen(&mut self) -> Option<Result<ByteStream, StorageError>> {
        let record = match self.coord.load(&self.upload).await {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(upload_id = %self.upload, %error, "reloading a download's record failed");
                return None;
            }
        };
        if record.state != UploadState::Active || record.offset < self.end {
            return None;
        }
        tracing::debug!(upload_id = %self.upload, at = self.at, "a download goes on after a fold");
        Some(self.storage.read(&record, self.at..self.end).await)
    }

    fn fail(mut self, error: StorageError) -> Option<(Result<Bytes, StorageError>, Self)> {
        self.ended = true;
        Some((Err(error), self))
    }
}
