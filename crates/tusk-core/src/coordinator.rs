use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Segment, UploadRecord, WriteTarget};

/// Failures of the control plane, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("no such upload")]
    NotFound,
    #[error("upload already exists")]
    AlreadyExists,
    /// Another writer holds the lease and did not let go in time.
    #[error("upload is locked by another request")]
    Locked,
    /// The caller's fencing token is no longer current: its lease expired or was taken over.
    #[error("lease lost: the fencing token is no longer current")]
    LeaseLost,
    /// The record's offset is not what the committer expected.
    #[error("offset changed under the lease: expected {expected}, found {found}")]
    OffsetChanged { expected: u64, found: u64 },
    /// The coordinator cannot be reached or cannot persist right now; retry later.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    #[error("coordinator state is corrupt: {0}")]
    Corrupt(String),
}

/// Resolves when another request asks the lease holder to let go of the upload.
pub struct ReleaseRequest(watch::Receiver<bool>);

impl ReleaseRequest {
    /// A pair: the sender side asks for release, the receiver side is carried by the lease.
    pub fn channel() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Waits until a release is requested; never resolves if nobody can ask any more.
    pub async fn requested(&mut self) {
        if self.0.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The right to write one upload, proven by a fencing token that only ever grows.
pub struct Lease {
    pub upload_id: String,
    pub token: u64,
    pub release: ReleaseRequest,
    /// The upload's committed record when the lease was taken. While the lease is held
    /// only its holder commits, so the holder need not load the record again.
    pub record: UploadRecord,
    /// Whether taking it meant waiting for another holder to let go.
    pub waited: bool,
}

/// What a lease holder commits in one compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredCommit")]
pub struct Commit {
    /// The offset the writer started from; the commit fails if the record moved.
    pub expected_offset: u64,
    /// Bytes the commit adds to the offset.
    pub added: u64,
    /// Segments written under the lease, appended in order.
    pub append: Vec<Segment>,
    /// How many of the record's last segments the appended ones replace (their bytes were
    /// stored again at the start of the first appended segment).
    pub fold: usize,
    /// A storage session the write opened, recorded for later writes.
    pub session: Option<String>,
    /// Declares the length of a deferred-length upload.
    pub declare_length: Option<u64>,
    /// New expiry (None: never, e.g. once finished).
    pub expires_at: Option<u64>,
}

/// A [`Commit`] as stored (the embedded coordinator's log): entries written before commits
/// could fold segments carry no `added`, `fold` or `session`, and read as what they meant.
#[derive(Deserialize)]
struct StoredCommit {
    expected_offset: u64,
    added: Option<u64>,
    append: Vec<Segment>,
    #[serde(default)]
    fold: usize,
    #[serde(default)]
    session: Option<String>,
    declare_length: Option<u64>,
    expires_at: Option<u64>,
}

impl From<StoredCommit> for Commit {
    fn from(c: StoredCommit) -> Self {
        Self {
            expected_offset: c.expected_offset,
            added: c
                .added
                .unwrap_or_else(|| c.append.iter().map(|s| s.len).sum()),
            append: c.append,
            fold: c.fold,
            session: c.session,
            declare_length: c.declare_length,
            expires_at: c.expires_at,
        }
    }
}

/// The control plane: upload records and per-upload leases with fencing tokens.
///
/// Every state change of an existing upload goes through a lease; commits are
/// compare-and-set on the fencing token, so a writer whose lease was lost cannot change it.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Short backend name for logs and metrics, e.g. `embedded`.
    fn name(&self) -> &'static str;

    /// Durably stores a new record; fails with `AlreadyExists` if the ID is taken.
    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError>;

    /// The current committed record, `None` if unknown (or purged).
    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError>;

    /// Takes the upload's lease with a fresh fencing token. If another request holds it,
    /// asks that holder to release and waits up to `wait`, then fails with `Locked`. With a
    /// zero `wait` the holder is not asked: the caller only takes a free lease.
    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, CoordError>;

    /// Extends the lease holding `token`; `LeaseLost` if it is gone. Called while a long
    /// PATCH streams (the lease itself is then busy watching for release requests).
    async fn renew(&self, upload_id: &str, token: u64) -> Result<(), CoordError>;

    /// Reserves a new write target under the lease holding `token`. Targets carry the token
    /// and a sequence number that grows per upload across leases: no two writers are ever
    /// given the same target, and a target's number is above every committed one's.
    async fn reserve(&self, upload_id: &str, token: u64) -> Result<WriteTarget, CoordError>;

    /// Compare-and-set: applies `commit` (as [`UploadRecord::apply_commit`] defines it) only
    /// while the lease's token is current and the record's offset equals
    /// `commit.expected_offset`. Durable when it returns.
    async fn commit(&self, lease: &Lease, commit: &Commit) -> Result<(), CoordError>;

    /// [`Coordinator::commit`], then [`Coordinator::release`], as the last step of a PATCH.
    /// The lease is let go of whether the commit succeeds or not. Remote coordinators do
    /// both in one round trip.
    async fn commit_and_release(&self, lease: Lease, commit: &Commit) -> Result<(), CoordError> {
        let committed = self.commit(&lease, commit).await;
        let released = self.release(lease).await;
        committed.and(released)
    }

    /// Marks the upload gone (terminated or expired) under the lease, keeping a tombstone
    /// until `purge_at`.
    async fn mark_gone(&self, lease: &Lease, purge_at: u64) -> Result<(), CoordError>;

    /// Removes the record entirely (after its tombstone time) under the lease.
    async fn purge(&self, lease: &Lease) -> Result<(), CoordError>;

    /// Lets go of the lease; waiting requests proceed at once.
    async fn release(&self, lease: Lease) -> Result<(), CoordError>;

    /// IDs of uploads that need the sweeper at `now`: active uploads whose `expires_at` has
    /// passed, and tombstones whose `purge_at` has passed. At most `limit` of them.
    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError>;

    /// Takes or keeps the cluster-wide `role` (e.g. the expiry sweeper) for `ttl`; true while
    /// this node holds it. At most one node holds a role at a time.
    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError>;

    /// Whether the coordinator can serve requests now (for readiness).
    async fn ping(&self) -> Result<(), CoordError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_logged_before_folds_existed_read_as_appends() {
        let old = r#"{"expected_offset":5,"append":[{"target":{"token":3,"seq":0},"len":7}],"declare_length":null,"expires_at":9}"#;
        let commit: Commit = serde_json::from_str(old).expect("old commit");
        assert_eq!((commit.added, commit.fold, &commit.session), (7, 0, &None));
        let again: Commit =
            serde_json::from_str(&serde_json::to_string(&commit).expect("json")).expect("new");
        assert_eq!(again, commit);
    }
}
