use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::{Segment, WriteTarget};

/// A PATCH body as a storage backend sees it: chunks in order, ending when the body ends,
/// is interrupted, or the engine stops reading. The stream never yields an error; whatever
/// it yielded must be written.
pub type Chunks<'a> = Pin<Box<dyn Stream<Item = Bytes> + Send + 'a>>;

/// Committed bytes streamed back out of storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// Failures of the data plane, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A committed segment is missing from storage: data was lost or removed behind our back.
    #[error("segment {target:?} of upload {upload} is missing from storage")]
    MissingSegment { upload: String, target: WriteTarget },
    /// A target was written twice, which the fencing tokens are there to make impossible.
    #[error("write target {0:?} already exists")]
    TargetExists(WriteTarget),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend: {0}")]
    Backend(String),
}

/// The data plane: bytes only.
///
/// Every write goes to a target reserved under a lease (see [`crate::Coordinator::reserve`]),
/// and becomes visible to clients only when the coordinator commits it as a [`Segment`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Short backend name for logs and metrics, e.g. `fs`.
    fn name(&self) -> &'static str;

    /// Writes `chunks` into `target` of `upload` and makes them durable before returning the
    /// number of bytes written. Writing fewer bytes than the body had (it was interrupted)
    /// is not an error.
    async fn write(
        &self,
        upload: &str,
        target: WriteTarget,
        chunks: Chunks<'_>,
    ) -> Result<u64, StorageError>;

    /// Forgets a target that will never be committed (checksum mismatch, lost lease).
    async fn discard(&self, upload: &str, target: WriteTarget) -> Result<(), StorageError>;

    /// Streams `range` of the bytes held in `segments` (in order).
    async fn read(
        &self,
        upload: &str,
        segments: &[Segment],
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError>;

    /// Removes everything stored for `upload`. Removing an upload that has nothing stored is
    /// not an error.
    async fn delete(&self, upload: &str) -> Result<(), StorageError>;

    /// Removes targets of `upload` that are not among `committed`: writes that never
    /// committed (a crash mid-PATCH, a lost lease, a discard that failed). Called once the
    /// upload is finished, when no honest writer can be using another target. Returns how
    /// many were removed.
    async fn remove_uncommitted(
        &self,
        upload: &str,
        committed: &[Segment],
    ) -> Result<usize, StorageError>;

    /// Whether the backend can serve requests now (for readiness).
    async fn ping(&self) -> Result<(), StorageError>;

    /// The concatenation capability, if this backend has it (advertised as the
    /// `concatenation` extensions only then).
    fn concatenation(&self) -> Option<&dyn Concatenation> {
        None
    }
}

/// Optional capability: build a final upload's bytes out of finished partial uploads.
#[async_trait]
pub trait Concatenation: Send + Sync {
    /// Makes the bytes of `source`'s `segment` available as `target` of upload `into`,
    /// durably, without the partial upload's later removal affecting it.
    async fn copy_segment(
        &self,
        source: &str,
        segment: &Segment,
        into: &str,
        target: WriteTarget,
    ) -> Result<(), StorageError>;
}
