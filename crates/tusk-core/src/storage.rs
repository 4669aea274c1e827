use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::{CoordError, Lease, Segment, UploadRecord, UploadState, WriteTarget};

/// A PATCH body as a storage backend sees it: chunks in order, ending when the body ends,
/// is interrupted, or the engine stops reading. The stream never yields an error; whatever
/// it yielded must be written.
pub type Chunks<'a> = Pin<Box<dyn Stream<Item = Bytes> + Send + 'a>>;

/// Committed bytes streamed back out of storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// Failures of the data plane, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A segment of the record a read was given is missing from storage: a later commit
    /// folded it (the engine reloads the record and reads on), or data was lost.
    #[error("segment {target:?} of upload {upload} is missing from storage")]
    MissingSegment { upload: String, target: WriteTarget },
    /// A target was written twice, which the fencing tokens are there to make impossible.
    #[error("write target {0:?} already exists")]
    TargetExists(WriteTarget),
    /// The upload would outgrow what the backend can hold (S3: its part count).
    #[error("{0}")]
    UploadTooLarge(&'static str),
    /// The backend serves an upload's bytes only once the upload is finished.
    #[error("this storage serves an upload's bytes only once the upload is finished")]
    NotFinished,
    /// The lease this call needs is lost (or the coordinator could not confirm it): the
    /// call stopped without changing anything another writer relies on.
    #[error(transparent)]
    Lease(#[from] CoordError),
    /// The node has no room for this write now (its budget for buffered bytes is spent, or
    /// the disk they go to is full); the write stopped and freed what it held. Retrying
    /// later can succeed.
    #[error("{0}")]
    Busy(&'static str),
    /// The backend refuses for a reason waiting will not fix (no such bucket, credentials it
    /// rejects): `setting` names what the operator must change.
    #[error("{problem}; fix {setting}")]
    Misconfigured {
        setting: &'static str,
        problem: String,
    },
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend: {0}")]
    Backend(String),
}

/// What a write knows of its upload besides the bytes.
pub struct WriteContext<'a> {
    /// The lease the write happens under: its token names the targets, its record is the
    /// upload's committed state, and it reserves further targets.
    pub lease: &'a Lease,
    /// The upload's length once this request is applied, `None` while it is deferred: a
    /// write that reaches it stores the upload's last bytes.
    pub length: Option<u64>,
    /// Which write of the lease this is (0, 1, ...): a PATCH writes its body stretch by
    /// stretch under one lease, and a store that names what it writes after the lease's
    /// token tells the writes apart by this.
    pub stretch: u32,
}

impl WriteContext<'_> {
    /// The committed record the write continues.
    pub fn record(&self) -> &UploadRecord {
        self.lease.record()
    }
}

/// The points a write can stop at without leaving a partial unit behind (S3: a part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteUnits {
    /// Bytes of the write that complete the unit the committed bytes left open.
    pub first: u64,
    /// The unit's size from there on.
    pub every: u64,
}

/// What a write stored, for the engine to commit as one [`crate::Commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Bytes of the body stored; the commit adds them to the offset.
    pub written: u64,
    /// Segments to append to the record, in order.
    pub append: Vec<Segment>,
    /// How many of the record's last segments `append` replaces: their bytes were stored
    /// again at the start of the first appended segment.
    pub fold: usize,
    /// The upload's storage session when the write changed it (see [`UploadRecord::session`]).
    pub session: Option<String>,
    /// Bytes the write sent to the backend a second time (S3: tail bytes folded into a
    /// part), for the metric that shows the backend does not rewrite data over and over.
    pub rewritten: u64,
}

impl Stored {
    /// What a commit says its write stored.
    pub fn of(commit: &crate::Commit) -> Self {
        Self {
            written: commit.added,
            append: commit.append.clone(),
            fold: commit.fold,
            session: commit.session.clone(),
            rewritten: 0,
        }
    }

    /// Committed segments that a later commit replaced.
    pub fn folded(segments: Vec<Segment>) -> Self {
        Self {
            append: segments,
            ..Self::default()
        }
    }
}

/// The data plane: bytes only.
///
/// Every write goes to targets reserved under a lease, and becomes visible to clients only
/// when the coordinator commits what the write [`Stored`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Short backend name for logs and metrics, e.g. `fs`.
    fn name(&self) -> &'static str;

    /// Writes `chunks` after the upload's committed bytes and makes them durable before
    /// saying what it stored. Writing fewer bytes than the body had (it was interrupted) is
    /// not an error. On an error, nothing of this write is committed.
    async fn write(
        &self,
        context: WriteContext<'_>,
        chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError>;

    /// Where a write in `context` can stop without leaving a partial unit behind, if the
    /// backend stores in units; progress commits are cut only there. `None`: anywhere.
    fn write_units(&self, context: &WriteContext<'_>) -> Option<WriteUnits> {
        let _ = context;
        None
    }

    /// Forgets what a write stored that will never be committed (a checksum mismatch, a
    /// refused commit), or segments no longer committed (folded into a later one), under
    /// the upload's lease. Removes only what was stored under the lease's token or an older
    /// one.
    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError>;

    /// Called once the commit that finished `record` is durable: makes the finished upload
    /// whole in storage (S3 completes the multipart upload). Called again if it fails; it
    /// must be safe to repeat.
    async fn finish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let _ = record;
        Ok(())
    }

    /// Streams `range` of the committed bytes of `record`. A segment found missing, at once
    /// or while streaming, is [`StorageError::MissingSegment`].
    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError>;

    /// Removes everything stored for the lease's upload, which the lease has marked gone (so
    /// no writer can commit to it any more). Removing an upload that has nothing stored is
    /// not an error.
    async fn delete(&self, lease: &Lease) -> Result<(), StorageError>;

    /// Removes what was stored for the lease's upload and is not among its committed
    /// segments: writes that never committed (a crash mid-PATCH, a lost lease, a discard
    /// that failed). Only what was reserved under the lease's token or an older one: a
    /// newer writer's targets are never touched. Called once the upload is finished.
    /// Returns how many were removed.
    async fn remove_uncommitted(&self, lease: &Lease) -> Result<usize, StorageError>;

    /// Whether the backend can serve requests now (for readiness).
    async fn ping(&self) -> Result<(), StorageError>;

    /// The check a node makes once at start, before it takes uploads: by default
    /// [`Storage::ping`]; a backend whose ping cannot tell whether writes will work (an
    /// object store with read-only credentials) also writes and removes a probe.
    async fn check_at_start(&self) -> Result<(), StorageError> {
        self.ping().await
    }

    /// The concatenation capability, if this backend has it (advertised as the
    /// `concatenation` extensions only then).
    fn concatenation(&self) -> Option<&dyn Concatenation> {
        None
    }

    /// The capability to hand out direct download links, if this backend has it.
    fn presign(&self) -> Option<&dyn Presign> {
        None
    }

    /// The capability to find stored leftovers of uploads no record accounts for, if this
    /// backend needs it swept.
    fn leftovers(&self) -> Option<&dyn Leftovers> {
        None
    }
}

/// Optional capability: build a final upload's bytes out of finished partial uploads.
#[async_trait]
pub trait Concatenation: Send + Sync {
    /// Stores the bytes of `partials`, in order, as the bytes of the final upload that
    /// `context` describes, durably and without a partial's later removal affecting them.
    async fn concatenate(
        &self,
        context: WriteContext<'_>,
        partials: &[UploadRecord],
    ) -> Result<Stored, StorageError>;
}

/// How a download presents itself: the `Content-Type` and `Content-Disposition` to answer
/// with, chosen by the HTTP layer from the upload's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub content_type: String,
    pub content_disposition: String,
}

/// Optional capability: a time-limited URL a client can download a finished upload from,
/// answering with `presentation`'s headers.
#[async_trait]
pub trait Presign: Send + Sync {
    async fn presigned_get(
        &self,
        record: &UploadRecord,
        valid_for: Duration,
        presentation: &Presentation,
    ) -> Result<String, StorageError>;
}

/// Optional capability: storage that can outlive its records (an S3 multipart upload opened
/// by a writer that crashed before committing, a tail object written by a zombie).
#[async_trait]
pub trait Leftovers: Send + Sync {
    /// IDs of uploads with stored objects that may be leftovers, old enough that no lease
    /// that could still commit them is alive; at most `limit`.
    async fn suspects(&self, limit: usize) -> Result<Vec<String>, StorageError>;

    /// Removes what is stored for `upload` that the lease's record does not account for.
    /// With a lease, removes only what was reserved under its token or an older one and
    /// confirms the lease before each removal; without one (the upload has no record),
    /// only what is old enough that no writer can still commit it. Returns how many
    /// objects were removed.
    async fn remove_leftovers(
        &self,
        upload: &str,
        lease: Option<&Lease>,
    ) -> Result<usize, StorageError>;
}

/// What a removal may take of an upload's stored objects, for a store whose objects can
/// outlive their records ([`Leftovers`]) and that removes them by listing.
#[derive(Clone, Copy)]
pub enum Removal<'a> {
    /// The lease's upload is gone (marked under this lease): everything.
    Gone(&'a Lease),
    /// What the lease's record does not name, written under its token or an older one.
    Unreferenced(&'a Lease),
    /// No record at all: whatever is older than the store's leftover grace.
    NoRecord,
}

impl<'a> Removal<'a> {
    /// The scope of [`Leftovers::remove_leftovers`] with this lease (or none).
    pub fn of_leftovers(lease: Option<&'a Lease>) -> Self {
        match lease {
            Some(lease) if lease.record().state != UploadState::Active => Removal::Gone(lease),
            Some(lease) => Removal::Unreferenced(lease),
            None => Removal::NoRecord,
        }
    }

    pub fn lease(self) -> Option<&'a Lease> {
        match self {
            Removal::Gone(lease) | Removal::Unreferenced(lease) => Some(lease),
            Removal::NoRecord => None,
        }
    }

    /// Whether the upload's own object (its finished bytes) may go too.
    pub fn takes_the_object(self) -> bool {
        matches!(self, Removal::Gone(_) | Removal::NoRecord)
    }
}
