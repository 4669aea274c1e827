use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, the time unit of every record field.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A place in storage that one lease holder reserved for one write.
///
/// Targets are stamped with the lease's fencing token, which is never handed out twice, so
/// two writers can never be given the same target: a writer that lost its lease can waste
/// space but never overwrite bytes another writer committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteTarget {
    pub token: u64,
    pub seq: u32,
}

/// Committed bytes of an upload held in one target; an upload's bytes are its segments in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub target: WriteTarget,
    pub len: u64,
    /// What the backend needs besides the target to find or assemble these bytes later
    /// (an S3 part's ETag and checksum); `None` when the target says it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

impl Segment {
    /// A segment the target alone identifies.
    pub fn new(target: WriteTarget, len: u64) -> Self {
        Self {
            target,
            len,
            receipt: None,
        }
    }
}

/// The concatenation extension's role of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcatKind {
    Partial,
    /// A final upload: the partial uploads' IDs in order, and the header value as the client
    /// sent it (echoed by HEAD).
    Final {
        parts: Vec<String>,
        header: String,
    },
}

/// Whether an upload can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadState {
    Active,
    /// Terminated or expired; the record stays as a tombstone (answering 410) until
    /// `purge_at`, then it is removed and the ID answers 404.
    Gone {
        purge_at: u64,
    },
}

/// Everything the control plane knows about one upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    /// Committed bytes; only these exist for clients, HEAD and GET.
    pub offset: u64,
    /// Total length, `None` while deferred (creation-defer-length) or, for a final upload,
    /// unknown until its partials are known.
    pub length: Option<u64>,
    /// `Upload-Metadata` exactly as the client sent it.
    pub metadata: Option<String>,
    pub concat: Option<ConcatKind>,
    pub created_at: u64,
    /// When an unfinished upload expires; refreshed by every PATCH, `None` once finished or
    /// when expiry is off.
    pub expires_at: Option<u64>,
    pub state: UploadState,
    pub segments: Vec<Segment>,
    /// The backend's own handle on this upload's storage, when it keeps one across PATCHes
    /// (S3: the multipart upload). Opaque to everything but the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl UploadRecord {
    pub fn is_finished(&self) -> bool {
        self.length == Some(self.offset)
    }

    pub fn is_final(&self) -> bool {
        matches!(self.concat, Some(ConcatKind::Final { .. }))
    }

    pub fn is_partial(&self) -> bool {
        matches!(self.concat, Some(ConcatKind::Partial))
    }

    /// Whether the sweeper must look at this upload at `now`: an active upload past its
    /// expiry, or a tombstone past its purge time.
    pub fn due_for_sweep(&self, now: u64) -> bool {
        match self.state {
            UploadState::Gone { purge_at } => purge_at <= now,
            UploadState::Active => self.expires_at.is_some_and(|t| t <= now),
        }
    }

    /// The record after `commit`. Every coordinator applies commits with this one function,
    /// so they cannot disagree about what a commit means.
    pub fn apply_commit(&mut self, commit: &crate::Commit) {
        self.offset += commit.added;
        let kept = self.segments.len().saturating_sub(commit.fold);
        self.segments.truncate(kept);
        self.segments.extend_from_slice(&commit.append);
        if commit.session.is_some() {
            self.session.clone_from(&commit.session);
        }
        if commit.declare_length.is_some() {
            self.length = commit.declare_length;
        }
        self.expires_at = commit.expires_at;
    }
}
