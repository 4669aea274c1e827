//! Contract suites every backend crate runs from its own tests, as object_store's
//! `integration` module does: plain `pub async fn`s over a fixture that makes the backend.
//! Built with the `contract` feature (backend crates enable it for their tests only).
//!
//! - [`coordinator_contract`]: records, exclusive leases, compare-and-set commits, targets and
//!   fencing tokens that never repeat (also across purge and re-creation of an ID), release
//!   requests, the sweep index, owed notices, leadership, and a lost lease that changes
//!   nothing.
//! - [`storage_contract`]: exact bytes through small, odd and large writes, nothing left by a
//!   refused write or a termination, a zombie's late write that never changes committed
//!   bytes, removals under a lost lease that remove nothing, concatenation.

mod coordinator;
mod memory;
mod storage;

pub use coordinator::*;
pub use memory::MemoryCoordinator;
pub use storage::*;

use base64::Engine as _;

use crate::{Commit, Segment, UploadRecord, UploadState, WriteTarget};

/// A fresh, valid upload ID (the form the engine makes).
pub fn new_id() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new active record with no segments, as a creation makes it: for the suites, and for a
/// backend's own tests.
pub fn record(id: &str, length: Option<u64>, expires_at: Option<u64>) -> UploadRecord {
    UploadRecord {
        id: id.to_string(),
        offset: 0,
        length,
        metadata: None,
        concat: None,
        created_at: 1,
        expires_at,
        state: UploadState::Active,
        segments: Vec::new(),
        session: None,
        notice: None,
        expected_digest: None,
        last_commit: None,
    }
}

/// A commit of one segment of `len` bytes in `target` at `offset`.
fn segment_commit(offset: u64, target: WriteTarget, len: u64, expires_at: Option<u64>) -> Commit {
    Commit {
        expected_offset: offset,
        added: len,
        append: vec![Segment::new(target, len)],
        fold: 0,
        session: None,
        declare_length: None,
        expires_at,
        notice: None,
        stamp: None,
    }
}

/// Commits under `lease` and lets go of it, as a PATCH's last step does: for a backend's
/// own tests of what the suites cannot set up (a failover, say). Only with this feature.
pub async fn commit_and_release(
    lease: crate::Lease,
    commit: &Commit,
) -> Result<UploadRecord, crate::CoordError> {
    lease.commit_and_release(commit).await
}
