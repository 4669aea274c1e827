//! Parts are gathered in spool files on the node's local disk, not in memory: a PATCH that
//! stalls halfway through a part holds disk, not RAM, so a thousand slow clients cost the
//! node disk space within the budget and nothing more.
//!
//! A spool file is unnamed (`O_TMPFILE` where the file system has it, else created and
//! unlinked at once), so a crash leaves nothing behind, and its space is given back when the
//! last handle on it (the part's sender) is dropped. Its bytes are never synced: a part is
//! durable only once S3 has it and a commit names it, and no client is told otherwise
//! before. The bytes stay in the page cache while the part is short-lived, and a part is
//! read back for sending as a stream of slices, so the part in flight is not in memory
//! either.

use std::fs::File;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;
use tusk_core::StorageError;

use crate::budget::{BufferBudget, Held};

/// How much of a spooled part is read back at once while it is sent.
const READ_SLICE: usize = 256 * 1024;

/// Body bytes written to a spool file at once, at most, when the body comes faster.
const WRITE_BATCH: u64 = 1024 * 1024;

/// Where this node's spool files go, and the budget their bytes count against.
#[derive(Clone)]
pub(crate) struct Spool {
    dir: Arc<Path>,
    budget: BufferBudget,
}

impl Spool {
    /// A spool in `dir`, checked by creating a file there now so that a missing or
    /// read-only directory stops the node at start, not its first PATCH.
    pub fn new(dir: PathBuf, budget: BufferBudget) -> Result<Self, StorageError> {
        tempfile::tempfile_in(&dir).map_err(|e| {
            StorageError::Backend(format!(
                "cannot create spool files in {} (storage.s3.spool_dir): {e}",
                dir.display()
            ))
        })?;
        Ok(Self {
            dir: dir.into(),
            budget,
        })
    }
}

/// One part being gathered: a spool file with room at its front for bytes that go before
/// the body (committed tails the part folds in), and the budget for what it holds.
pub(crate) struct PartSpool {
    spool: Spool,
    file: Option<Arc<File>>,
    held: Held,
    /// Bytes reserved at the front; the body starts here.
    front: u64,
    /// The end of the body received so far.
    end: u64,
    /// Body bytes received but not written yet (they end at `end`): written in one go once
    /// there are [`WRITE_BATCH`] of them or the body has nothing more ready (see
    /// [`PartSpool::flush`]), so a fast body costs few system calls and a stalled one holds
    /// nothing in memory.
    pending: Vec<Bytes>,
    pending_len: u64,
    /// Bytes received in all, front and body: what the budget covers.
    covered: u64,
}

impl PartSpool {
    /// An empty part whose body starts after `front` bytes.
    pub fn new(spool: &Spool, front: u64) -> Self {
        Self {
            spool: spool.clone(),
            file: None,
            held: Held::none(),
            front,
            end: front,
            pending: Vec::new(),
            pending_len: 0,
            covered: 0,
        }
    }

    /// Bytes of the body so far.
    pub fn len(&self) -> u64 {
        self.end - self.front
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes reserved at the front.
    pub fn front(&self) -> u64 {
        self.front
    }

    /// Appends `data` to the body, once the budget covers it.
    pub async fn append(&mut self, data: Bytes) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as u64;
        self.cover(len).await?;
        self.end += len;
        self.pending_len += len;
        self.pending.push(data);
        if self.pending_len >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the body bytes received so far to the file.
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut at = self.end - self.pending_len;
        let pending = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let file = self.file().await?;
        blocking(move || {
            for data in pending {
                file.write_all_at(&data, at)?;
                at += data.len() as u64;
            }
            Ok(())
        })
        .await
    }

    /// Writes `data` at `at` inside the front.
    pub async fn fill_front(&mut self, at: u64, data: Bytes) -> Result<(), StorageError> {
        if at + data.len() as u64 > self.front {
            return Err(StorageError::Backend(
                "a spooled tail is longer than its record says".into(),
            ));
        }
        self.cover(data.len() as u64).await?;
        let file = self.file().await?;
        blocking(move || file.write_all_at(&data, at)).await
    }

    async fn cover(&mut self, more: u64) -> Result<(), StorageError> {
        let covered = self.covered + more;
        let bytes = usize::try_from(covered).unwrap_or(usize::MAX);
        self.held.cover(&self.spool.budget, bytes).await?;
        self.covered = covered;
        Ok(())
    }

    /// The spool file, created on first use.
    async fn file(&mut self) -> Result<Arc<File>, StorageError> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let dir = self.spool.dir.clone();
        let file = Arc::new(blocking(move || tempfile::tempfile_in(&dir)).await?);
        self.file = Some(file.clone());
        Ok(file)
    }

    /// The bytes in `range` (front and body offsets alike) as a part to send, with all the
    /// budget this spool held; the spool is left empty, with no front.
    pub async fn take(&mut self, range: Range<u64>) -> Result<SpooledPart, StorageError> {
        self.flush().await?;
        let taken = std::mem::replace(self, Self::new(&self.spool, 0));
        Ok(SpooledPart {
            file: taken.file,
            range,
            _held: taken.held,
        })
    }
}

/// A gathered part on its way to S3; dropping it frees its disk space and budget.
pub(crate) struct SpooledPart {
    file: Option<Arc<File>>,
    range: Range<u64>,
    _held: Held,
}

impl SpooledPart {
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// The part as a request body. It can be read again from its start, so the SDK can
    /// retry a request that carries it.
    pub fn body(&self) -> ByteStream {
        let Some(file) = self.file.clone() else {
            return ByteStream::from_static(b"");
        };
        let range = self.range.clone();
        ByteStream::new(SdkBody::retryable(move || {
            SdkBody::from_body_1_x(FileSlices::new(file.clone(), range.clone()))
        }))
    }
}

/// A range of a spool file as an HTTP body, read slice by slice off the runtime's threads,
/// each slice read while the one before is being sent.
struct FileSlices {
    file: Arc<File>,
    /// Where the next slice to read starts.
    next: u64,
    end: u64,
    /// Bytes not yielded yet.
    left: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileSlices {
    fn new(file: Arc<File>, range: Range<u64>) -> Self {
        Self {
            file,
            next: range.start,
            end: range.end,
            left: range.end - range.start,
            reading: None,
        }
    }

    /// Starts reading the next slice, if any is left.
    fn read_ahead(&mut self) {
        if self.reading.is_some() || self.next >= self.end {
            return;
        }
        let len = usize::try_from(self.end - self.next).map_or(READ_SLICE, |n| n.min(READ_SLICE));
        let (file, at) = (self.file.clone(), self.next);
        self.next += len as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut slice = BytesMut::zeroed(len);
            file.read_exact_at(&mut slice, at)?;
            Ok(slice.freeze())
        }));
    }
}

impl Body for FileSlices {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.read_ahead();
        let Some(reading) = self.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        let slice = read.map_err(io::Error::other).and_then(|r| r)?;
        self.left -= slice.len() as u64;
        self.read_ahead();
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Runs file I/O off the runtime's threads; a full disk is "busy", not a server fault.
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    let done = tokio::task::spawn_blocking(io)
        .await
        .map_err(|e| StorageError::Backend(format!("spool I/O task: {e}")))?;
    done.map_err(|e| match e.kind() {
        io::ErrorKind::StorageFull => {
            StorageError::Busy("the node's spool disk is full; retry later")
        }
        _ => StorageError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KIB: u64 = 1024;

    fn spool(budget: u64) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = Spool::new(
            dir.path().to_path_buf(),
            BufferBudget::new(budget, Duration::from_secs(1)),
        )
        .expect("spool");
        (dir, spool)
    }

    async fn read(part: &SpooledPart) -> Vec<u8> {
        part.body()
            .collect()
            .await
            .expect("read back")
            .into_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn a_part_reads_back_its_front_and_body_in_order() {
        let (_dir, spool) = spool(4096 * KIB);
        let mut part = PartSpool::new(&spool, 6);
        part.append(Bytes::from_static(b"body "))
            .await
            .expect("room");
        part.append(Bytes::from_static(b"bytes"))
            .await
            .expect("room");
        part.fill_front(3, Bytes::from_static(b"ail"))
            .await
            .expect("room");
        part.fill_front(0, Bytes::from_static(b"a t"))
            .await
            .expect("room");
        assert_eq!(part.len(), 10);
        let whole = part.take(0..16).await.expect("flushed");
        assert_eq!(read(&whole).await, b"a tailbody bytes");
        assert!(part.is_empty() && part.front() == 0);
    }

    #[tokio::test]
    async fn a_part_can_start_inside_its_front() {
        // A tail that merges only the last committed tails leaves the front's start unread.
        let (_dir, spool) = spool(4096 * KIB);
        let mut part = PartSpool::new(&spool, 6);
        part.append(Bytes::from_static(b"body"))
            .await
            .expect("room");
        part.fill_front(4, Bytes::from_static(b"t:"))
            .await
            .expect("room");
        let tail = part.take(4..10).await.expect("flushed");
        assert_eq!(tail.len(), 6);
        assert_eq!(read(&tail).await, b"t:body");
    }

    #[tokio::test]
    async fn a_body_can_be_read_again_from_its_start() {
        let (_dir, spool) = spool(4096 * KIB);
        let mut part = PartSpool::new(&spool, 0);
        let bytes: Vec<u8> = (0..700 * KIB).map(|i| (i % 251) as u8).collect();
        part.append(Bytes::from(bytes.clone())).await.expect("room");
        let sent = part.take(0..bytes.len() as u64).await.expect("flushed");
        let body = sent.body();
        assert_eq!(
            body.size_hint(),
            (bytes.len() as u64, Some(bytes.len() as u64))
        );
        let again = body.into_inner().try_clone().expect("a retryable body");
        assert_eq!(read(&sent).await, bytes);
        let again = ByteStream::new(again)
            .collect()
            .await
            .expect("read")
            .into_bytes();
        assert_eq!(again.to_vec(), bytes);
    }

    #[tokio::test]
    async fn budget_covers_what_is_written_and_comes_back_when_the_part_is_dropped() {
        let (_dir, spool) = spool(1024 * KIB);
        let mut part = PartSpool::new(&spool, 0);
        part.append(Bytes::from(vec![1; 600 * 1024]))
            .await
            .expect("room");
        let mut other = PartSpool::new(&spool, 0);
        let refused = other.append(Bytes::from(vec![1; 600 * 1024])).await;
        assert!(matches!(refused, Err(StorageError::Busy(_))), "{refused:?}");
        drop(part.take(0..600 * KIB).await.expect("flushed"));
        other
            .append(Bytes::from(vec![1; 600 * 1024]))
            .await
            .expect("room once the first part was dropped");
    }

    #[tokio::test]
    async fn a_front_written_past_its_room_is_refused() {
        let (_dir, spool) = spool(1024 * KIB);
        let mut part = PartSpool::new(&spool, 4);
        let refused = part.fill_front(2, Bytes::from_static(b"abc")).await;
        assert!(
            matches!(refused, Err(StorageError::Backend(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_spool_in_a_missing_directory_is_refused_at_start() {
        let refused = Spool::new(
            PathBuf::from("/nonexistent/tusk-spool"),
            BufferBudget::new(1 << 20, Duration::from_secs(1)),
        );
        let Err(StorageError::Backend(reason)) = refused else {
            panic!("a missing spool directory was accepted");
        };
        assert!(reason.contains("spool_dir"), "{reason}");
    }
}
