use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{CommitStamp, Lease, OwedNotice, Segment, UploadRecord};

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
    /// The change is more than the coordinator can make in one atomic step (etcd's limits
    /// on one transaction); it was not made.
    #[error("too large for the coordinator: {0}")]
    TooLarge(&'static str),
}

impl CoordError {
    /// Whether the coordinator answered no: the change was certainly not made. Any other
    /// failure (a timeout, a lost connection) leaves it unknown whether it was.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CoordError::LeaseLost
                | CoordError::OffsetChanged { .. }
                | CoordError::NotFound
                | CoordError::AlreadyExists
                | CoordError::Locked
                | CoordError::TooLarge(_)
        )
    }
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
    /// A notification the commit makes owed (the one that finishes an upload owes
    /// post-finish); `None` leaves the record's as it is.
    pub notice: Option<OwedNotice>,
    /// Who made the commit and when, kept in the record for operators (`tusk inspect`).
    pub stamp: Option<CommitStamp>,
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
    #[serde(default)]
    notice: Option<OwedNotice>,
    #[serde(default)]
    stamp: Option<CommitStamp>,
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
            notice: c.notice,
            stamp: c.stamp,
        }
    }
}

/// The control plane: upload records, and leases with fencing tokens.
///
/// Small on purpose: a record store, `acquire`, the sweep index and health. Everything that
/// changes an existing upload goes through the [`Lease`] that `acquire` returns.
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

    /// [`Coordinator::acquire`] for a writer about to reserve a target: a coordinator whose
    /// calls are round trips reserves the first target in the same step, so the lease's
    /// first [`Lease::reserve`] costs none. Only a writer calls it: a lease that reserves
    /// nothing leaves a gap in the upload's sequence numbers, which costs a tidying lease
    /// once the upload finishes.
    async fn acquire_to_write(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        self.acquire(id, wait).await
    }

    /// IDs of uploads that need the sweeper at `now`: active uploads whose `expires_at` has
    /// passed, and tombstones whose `purge_at` has passed. At most `limit` of them.
    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError>;

    /// Whether the coordinator can serve requests now (for readiness).
    async fn ping(&self) -> Result<(), CoordError>;

    /// The capability to elect one node for a cluster-wide role, for coordinators shared by
    /// several nodes. Without it, this node is the only one and leads every role.
    fn leadership(&self) -> Option<&dyn Leadership> {
        None
    }

    /// The capability to reach PATCHes in flight on other nodes, for coordinators shared by
    /// several nodes. Without it, every PATCH of an upload runs on this node.
    fn in_flight_elsewhere(&self) -> Option<&dyn InFlightElsewhere> {
        None
    }
}

/// How a node settles its own PATCH of an upload for a read: waits (bounded) until the PATCH
/// waits for its client or has made its last commit (see the engine's `in_flight`).
pub type SettleLocally = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// Optional capability: a read on one node sees what a PATCH in flight on another node
/// received. A client whose connection dropped mid-PATCH reconnects through the load
/// balancer, usually to another node, and its HEAD must not answer the offset from before
/// that PATCH while the PATCH still has bytes to read and commit.
#[async_trait]
pub trait InFlightElsewhere: Send + Sync {
    /// If another node holds the lease of `id`, asks it to settle its PATCH of `id` and
    /// waits for its answer (or for the lease to end), at most `bound`.
    async fn settle(&self, id: &str, bound: Duration);

    /// Answers other nodes' requests with `settle_locally`.
    fn serve(&self, settle_locally: SettleLocally);
}

/// Optional capability: at most one node of a cluster holds a role (the expiry sweeper).
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Takes or keeps `role` for `ttl`; true while this node holds it.
    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError>;
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
