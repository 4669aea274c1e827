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

/// A notification the hook receiver is owed (post-finish, post-terminate). It is stored by
/// the very change that causes it, so a crash between that change and the delivery cannot
/// lose it, and cleared once the receiver acknowledged it. Until then the sweeper of any node
/// delivers it again each time it falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedNotice {
    pub event: crate::HookEvent,
    /// When the sweeper delivers it if it is still owed: the node that claimed the delivery
    /// last has had until then.
    pub due_at: u64,
    /// Deliveries claimed so far; each one that fails to clear the notice doubles the wait
    /// before the next.
    pub claims: u32,
}

impl OwedNotice {
    /// Longest wait between two deliveries of a notice the receiver keeps refusing.
    const MAX_WAIT: u64 = 3600;

    /// A notice of `event`, first delivered by the node that makes the change at `now` (the
    /// whole second the clock reads); the sweeper takes over after `delivery_time`.
    pub fn new(event: crate::HookEvent, now: u64, delivery_time: u64) -> Self {
        Self {
            event,
            due_at: Self::after(now, delivery_time.max(1)),
            claims: 0,
        }
    }

    /// The same notice claimed for one more delivery at `now`: due again after
    /// `delivery_time`, doubled for every earlier claim (capped at an hour).
    pub fn claimed(self, now: u64, delivery_time: u64) -> Self {
        let wait = delivery_time
            .max(1)
            .saturating_mul(1 << self.claims.min(16))
            .min(Self::MAX_WAIT);
        Self {
            due_at: Self::after(now, wait),
            claims: self.claims.saturating_add(1),
            ..self
        }
    }

    /// The first whole second by which `wait` seconds have surely passed since `now`, a
    /// whole second the clock read anywhere within it.
    fn after(now: u64, wait: u64) -> u64 {
        now.saturating_add(1).saturating_add(wait)
    }
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
    /// A notification still owed to the hook receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<OwedNotice>,
    /// The digest the whole upload must have once complete (the IETF draft's `Repr-Digest`
    /// at creation), as `<algorithm> <base64>` of the checksum extension; set at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_digest: Option<String>,
    /// The last commit's writer and time; `None` before the first commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<CommitStamp>,
}

/// Who committed to an upload and when: an operator's answer to "who is writing this, and
/// is it moving?" (a streaming PATCH commits every `commit_interval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStamp {
    /// The node's name (`EngineConfig::node`).
    pub node: String,
    /// The fencing token of the lease the commit was made under.
    pub token: u64,
    /// Unix seconds.
    pub at: u64,
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

    /// Whether the sweeper must look at this upload at `now`.
    pub fn due_for_sweep(&self, now: u64) -> bool {
        self.sweep_at().is_some_and(|t| t <= now)
    }

    /// When the sweeper must look at this upload: when an owed notice falls due (nothing
    /// else happens to an upload that owes one: a tombstone is purged only once its notice
    /// is delivered), else an active upload's expiry or a tombstone's purge time.
    pub fn sweep_at(&self) -> Option<u64> {
        if let Some(notice) = &self.notice {
            return Some(notice.due_at);
        }
        match self.state {
            UploadState::Gone { purge_at } => Some(purge_at),
            UploadState::Active => self.expires_at,
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
        if commit.notice.is_some() {
            self.notice = commit.notice;
        }
        if commit.stamp.is_some() {
            self.last_commit.clone_from(&commit.stamp);
        }
    }

    /// The record after it is marked gone (terminated or expired): a tombstone until
    /// `purge_at`, owing `notice` if any. Every coordinator applies it with this function.
    pub fn mark_gone(&mut self, purge_at: u64, notice: Option<OwedNotice>) {
        self.state = UploadState::Gone { purge_at };
        self.segments.clear();
        self.expires_at = None;
        self.notice = notice;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HookEvent;

    /// Records hold whole seconds: a notice made at 1000.999 s reads `now` = 1000, and the
    /// sweeper delivers it once the whole second it reads reaches `due_at`. The node that
    /// made (or claimed) it must still get all of its delivery time first, or a receiver
    /// that answers a little slowly gets the notice twice.
    #[test]
    fn a_notice_falls_due_no_sooner_than_its_delivery_time() {
        let made_at = 1000.999;
        let notice = OwedNotice::new(HookEvent::PostFinish, 1000, 1);
        assert!(notice.due_at as f64 >= made_at + 1.0, "{notice:?}");
        let claimed_at = 2000.999;
        let claimed = notice.claimed(2000, 1);
        assert!(claimed.due_at as f64 >= claimed_at + 1.0, "{claimed:?}");
        let again = claimed.claimed(2000, 1);
        assert!(
            again.due_at as f64 >= claimed_at + 2.0,
            "doubled: {again:?}"
        );
    }
}
