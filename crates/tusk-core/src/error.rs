use std::time::Duration;

use tusk_protocol::ProtocolError;

use crate::{CoordError, StorageError};

/// Why a tus operation failed, by meaning. `tusk-http` maps each to its status in one table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("upload not found")]
    NotFound,
    #[error("upload is gone (terminated or expired)")]
    Gone,
    #[error("upload is being written by another request; retry later")]
    Locked { retry_after: Duration },
    #[error("Upload-Offset {got} does not match the upload's offset {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("{0}")]
    TooLarge(&'static str),
    #[error("checksum mismatch: nothing of this request was stored")]
    ChecksumMismatch,
    #[error("a final concatenated upload cannot be patched")]
    PatchOnFinal,
    #[error("invalid concatenation: {0}")]
    InvalidConcat(&'static str),
    #[error("Upload-Length is already set to {0}")]
    LengthAlreadySet(u64),
    /// A completed upload whose bytes do not have the digest its creation named; the bytes
    /// stay, and no finish is announced.
    #[error("the upload's bytes do not match the Repr-Digest given at its creation")]
    DigestMismatch,
    /// A body for an upload that has all its bytes already.
    #[error("the upload is complete: it takes no more bytes")]
    AlreadyComplete,
    /// A body that was to end the upload ended at `reached`, not at the upload's `length`;
    /// what it carried is committed.
    #[error(
        "the upload's length is {length} but the request that was to end it ended at {reached}"
    )]
    LengthMismatch { length: u64, reached: u64 },
    #[error("Upload-Length is required once the upload has all its bytes")]
    LengthRequired,
    #[error("the request body was interrupted before its checksum could be verified")]
    IncompleteChecksummedBody,
    #[error("another request took over this upload; HEAD for the current offset")]
    LeaseLost,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The node is out of a bounded resource for now (storage buffers); retry later.
    #[error("server busy: {0}")]
    Busy(&'static str),
    /// A blocking hook said no; its status and body go to the client as they are.
    #[error("{}", .0.body)]
    HookRejected(crate::HookRejection),
    /// A blocking hook could not be asked; the request is refused (fail closed).
    #[error("a hook that must approve this request cannot be reached")]
    HookUnavailable,
    /// A hook answered something the engine cannot use (a bad ID or metadata).
    #[error("hook answer unusable: {0}")]
    HookAnswer(&'static str),
    /// The upload ID a pre-create hook chose is taken.
    #[error("an upload with this ID exists already")]
    IdTaken,
    /// A task of the engine ended without an answer (it panicked): a bug, reported as 500.
    #[error("internal task failed: {0}")]
    TaskFailed(String),
    /// The storage serves an upload's bytes only once it is finished (S3).
    #[error("this storage serves an upload's bytes only once the upload is finished")]
    NotFinished,
    #[error(transparent)]
    Storage(StorageError),
    #[error("coordinator: {0}")]
    Coordinator(CoordError),
}

impl From<CoordError> for Error {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::NotFound => Error::NotFound,
            CoordError::LeaseLost => Error::LeaseLost,
            CoordError::OffsetChanged { expected, found } => Error::OffsetMismatch {
                expected: found,
                got: expected,
            },
            CoordError::TooLarge(reason) => Error::TooLarge(reason),
            other => Error::Coordinator(other),
        }
    }
}

impl From<crate::HookRefusal> for Error {
    fn from(refusal: crate::HookRefusal) -> Self {
        match refusal {
            crate::HookRefusal::Rejected(rejection) => Error::HookRejected(rejection),
            crate::HookRefusal::Unavailable => Error::HookUnavailable,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Lease(e) => e.into(),
            StorageError::UploadTooLarge(reason) => Error::TooLarge(reason),
            StorageError::NotFinished => Error::NotFinished,
            StorageError::Busy(reason) => Error::Busy(reason),
            other => Error::Storage(other),
        }
    }
}
