//! What the etcd test files share.

use tusk_core::{UploadRecord, UploadState};

/// A new active record of `length` bytes.
pub fn record(id: &str, length: u64) -> UploadRecord {
    UploadRecord {
        id: id.to_string(),
        offset: 0,
        length: Some(length),
        metadata: None,
        concat: None,
        created_at: 1,
        expires_at: None,
        state: UploadState::Active,
        segments: Vec::new(),
        session: None,
        notice: None,
    }
}
