//! The embedded coordinator: records durable on local disk, leases inside the process.
//!
//! For a single node. Fencing tokens still order writers (a request that lost its lease to
//! a newer one cannot commit), and they survive restarts: the log records a ceiling that
//! tokens handed out stay below, so a token is never reused and a write target stamped
//! with it is never written twice.
//!
//! One process at a time: [`EmbeddedCoordinator::open`] takes an exclusive lock on the
//! directory (a `flock` on `lock`, which holds the holder's pid) and keeps it until the
//! coordinator and its leases are dropped and its log's threads have finished what they were
//! doing, so the next open (in this process or another) finds no compaction under way.
//! [`check`] and [`salvage`] inspect and repair a directory no process holds.

mod carry;
mod check;
mod log;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

pub use self::carry::{CarriedFiles, Carrier};
pub use self::check::{check, salvage, DataCheck, Salvaged, Written};
pub use self::log::COMPACT_AFTER_BYTES;
use self::log::{AppendError, Durable, Entry, LogWriter};
pub use self::log::{Fault, FaultKind, FileReport, Refusal, Skipped};
use crate::{
    Commit, CoordError, Coordinator, HeldLease, Lease, OwedNotice, ReleaseRequest, UploadRecord,
    WriteTarget,
};

/// Tokens are reserved in blocks so that handing one out costs no disk write.
const TOKEN_BLOCK: u64 = 1 << 20;

/// Sequence numbers reserved without a disk write above an upload's committed ones; a
/// restart skips them (S3 allows 10,000 parts; uploads are planned for 9,000).
const SEQ_WINDOW: u32 = 32;

/// What the coordinator keeps of a lease it granted.
struct HeldLeaseState {
    token: u64,
    next_seq: u32,
    ask_release: watch::Sender<bool>,
}

pub struct EmbeddedCoordinator {
    shared: Arc<Shared>,
}

/// The coordinator's state, shared with the leases it grants.
struct Shared {
    state: Arc<Mutex<Durable>>,
    leases: Mutex<HashMap<String, HeldLeaseState>>,
    /// Per upload, the sequence number after the last one any lease reserved in this run:
    /// a request the last holder left in flight (an S3 part upload being cancelled) can
    /// never land on a number a later holder uses.
    next_seqs: Mutex<HashMap<String, u32>>,
    /// Woken whenever any lease is released; waiters re-check their upload.
    released: Notify,
    /// Whether the log carries a storage's small writes ([`carry`]).
    carrying: bool,
    /// The small writes staged for the commits that name them.
    staged: Arc<carry::Staged>,
    next_token: AtomicU64,
    /// Ceiling already durable or requested; a new block is requested at half way.
    requested_ceiling: AtomicU64,
    /// Dropping it waits for the log's threads; declared before the lock, so it drops first.
    log: LogWriter,
    /// The directory's lock, released when the last lease and the coordinator are gone.
    _dir_lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(e: std::io::Error) -> CoordError {
    CoordError::Unavailable(format!("embedded coordinator log: {e}"))
}

/// The coordinator's answer to an append.
fn appended(result: Result<(), AppendError>) -> Result<(), CoordError> {
    match result {
        Ok(()) => Ok(()),
        Err(AppendError::Refused(Refusal::UnknownUpload)) => Err(CoordError::NotFound),
        Err(AppendError::Refused(Refusal::AlreadyExists)) => Err(CoordError::AlreadyExists),
        Err(AppendError::Refused(Refusal::OffsetMismatch { expected, found })) => {
            Err(CoordError::OffsetChanged { expected, found })
        }
        Err(AppendError::Io(e)) => Err(unavailable(e)),
    }
}

/// The lock file in a coordinator directory.
const LOCK_FILE: &str = "lock";

/// Takes the exclusive lock on coordinator directory `dir` (created if missing) and writes
/// this process's pid into it; held while the returned file is open. If another process
/// holds it, the error names the directory and that process's pid.
fn lock_dir(dir: &Path) -> Result<File, CoordError> {
    let failed = |e: std::io::Error| {
        CoordError::Unavailable(format!(
            "locking coordinator directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let holder = match file.read_to_string(&mut holder) {
                Ok(_) if !holder.trim().is_empty() => holder.trim().to_string(),
                _ => "unknown".to_string(),
            };
            return Err(CoordError::Unavailable(format!(
                "coordinator directory {} is in use by another process (pid {holder}, per \
                 {}); one process at a time may use an embedded coordinator's directory",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
    }
    file.set_len(0).map_err(failed)?;
    writeln!(file, "{}", std::process::id()).map_err(failed)?;
    Ok(file)
}

impl EmbeddedCoordinator {
    /// Opens (or creates) the coordinator state in `dir`, replaying its log; takes the
    /// directory's lock first (see the module doc). A torn tail at the end of the log is cut
    /// (a warning says where); any other damage is [`CoordError::Corrupt`] naming the file and
    /// the byte offset, and leaves every file as it was. Commits that do not start where
    /// their record ends are skipped, each with a warning naming the upload.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Arc<Self>, CoordError> {
        Self::open_with_compaction(dir, log::COMPACT_AFTER_BYTES).await
    }

    /// As [`Self::open`], compacting the log into a snapshot past `compact_after` bytes.
    pub async fn open_with_compaction(
        dir: impl Into<PathBuf>,
        compact_after: u64,
    ) -> Result<Arc<Self>, CoordError> {
        Self::open_inner(dir.into(), compact_after, None).await
    }

    /// As [`Self::open_with_compaction`], with a log that carries the small writes of a
    /// storage whose files are `files` ([`carry`]; [`Self::carrier`] is what the storage
    /// hands them to). Before it returns, the files of committed carried writes are
    /// restored from the log.
    pub async fn open_carrying(
        dir: impl Into<PathBuf>,
        files: Arc<dyn CarriedFiles>,
        compact_after: u64,
    ) -> Result<Arc<Self>, CoordError> {
        Self::open_inner(dir.into(), compact_after, Some(files)).await
    }

    async fn open_inner(
        dir: PathBuf,
        compact_after: u64,
        files: Option<Arc<dyn CarriedFiles>>,
    ) -> Result<Arc<Self>, CoordError> {
        let (dir_lock, recovered, placed) = {
            let (dir, files) = (dir.clone(), files.clone());
            tokio::task::spawn_blocking(move || {
                let dir_lock = lock_dir(&dir)?;
                let recovered = log::recover(&dir).map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => CoordError::Corrupt(e.to_string()),
                    _ => CoordError::Unavailable(format!("reading {}: {e}", dir.display())),
                })?;
                let placed = restore_carried(&dir, &recovered, files.as_ref())?;
                Ok::<_, CoordError>((dir_lock, recovered, placed))
            })
            .await
            .map_err(|e| CoordError::Unavailable(e.to_string()))??
        };
        let log::Recovered {
            durable,
            generation,
            valid_len,
            torn,
            skipped,
            ..
        } = recovered;
        if let Some(torn) = torn {
            tracing::warn!(
                log = %log::wal_path(&dir, generation).display(),
                offset = torn.offset,
                bytes = torn.len,
                "cutting a torn tail off the coordinator log (a write a crash cut short, never acknowledged)"
            );
        }
        for s in &skipped {
            tracing::warn!(
                upload = %s.upload_id,
                file = %s.file.display(),
                offset = s.offset,
                why = %s.why,
                "coordinator replay skipped an entry"
            );
        }
        if !skipped.is_empty() {
            tracing::warn!(
                skipped = skipped.len(),
                "coordinator replay skipped entries that did not follow their record"
            );
        }
        let first_token = durable.token_ceiling.max(1);
        let state = Arc::new(Mutex::new(durable));
        let carrying = files.is_some();
        let log = LogWriter::start(
            dir,
            generation,
            valid_len,
            state.clone(),
            compact_after,
            files,
            placed,
        )
        .map_err(unavailable)?;
        let shared = Arc::new(Shared {
            state,
            leases: Mutex::new(HashMap::new()),
            next_seqs: Mutex::new(HashMap::new()),
            released: Notify::new(),
            carrying,
            staged: Arc::default(),
            next_token: AtomicU64::new(first_token),
            requested_ceiling: AtomicU64::new(first_token + TOKEN_BLOCK),
            log,
            _dir_lock: dir_lock,
        });
        appended(
            shared
                .log
                .append(Entry::TokenCeiling(first_token + TOKEN_BLOCK))
                .await,
        )?;
        Ok(Arc::new(Self { shared }))
    }

    /// What the storage hands its small writes to, if the log carries them (opened with
    /// [`Self::open_carrying`]).
    pub fn carrier(&self) -> Option<Carrier> {
        self.shared
            .carrying
            .then(|| Carrier::new(self.shared.staged.clone()))
    }
}

/// At a start: restores the files of the committed carried writes the logs hold, syncs
/// those of the compacted logs and deletes them; returns the files of the log's own carried
/// writes, which its next compaction makes durable. Without a storage to restore to, the
/// compacted logs stay.
fn restore_carried(
    dir: &Path,
    recovered: &log::Recovered,
    files: Option<&Arc<dyn CarriedFiles>>,
) -> Result<Vec<(String, WriteTarget)>, CoordError> {
    let failed = |e: std::io::Error| CoordError::Unavailable(format!("{}: {e}", dir.display()));
    let Some(files) = files else {
        let carried = recovered.carried.len() + recovered.older_carried.len();
        if carried > 0 {
            tracing::warn!(
                carried,
                "the coordinator log carries writes of a storage it was not opened with; \
                 their files are not checked"
            );
        }
        return Ok(Vec::new());
    };
    let records = &recovered.durable.records;
    let older =
        carry::restore_committed(files, &recovered.older_carried, records).map_err(failed)?;
    if !older.is_empty() {
        files.make_durable(&older).map_err(failed)?;
    }
    for log in &recovered.older_logs {
        std::fs::remove_file(log).map_err(failed)?;
    }
    if !recovered.older_logs.is_empty() {
        log::sync_dir(dir).map_err(failed)?;
    }
    carry::restore_committed(files, &recovered.carried, records).map_err(failed)
}

impl Shared {
    /// A fresh fencing token, larger than any handed out before, in this or an earlier run.
    async fn next_token(&self) -> Result<u64, CoordError> {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        let requested = self.requested_ceiling.load(Ordering::SeqCst);
        if token + TOKEN_BLOCK / 2 >= requested {
            let new_ceiling = requested + TOKEN_BLOCK;
            if self
                .requested_ceiling
                .compare_exchange(requested, new_ceiling, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                appended(self.log.append(Entry::TokenCeiling(new_ceiling)).await)?;
            }
        }
        // Tokens beyond the durable ceiling would be reused after a crash: wait for it.
        while token >= lock(&self.state).token_ceiling {
            tokio::task::yield_now().await;
            let requested = self.requested_ceiling.load(Ordering::SeqCst);
            if token >= requested {
                return Err(CoordError::Unavailable(
                    "fencing token ceiling not persisted".into(),
                ));
            }
        }
        Ok(token)
    }

    /// Where reservations of `id` start after a restart: above the window over its committed
    /// numbers and above its logged ceiling.
    fn restart_floor(&self, id: &str) -> u32 {
        let state = lock(&self.state);
        let committed = state.records.get(id).map_or(0, |r| {
            r.segments
                .iter()
                .map(|s| s.target.seq.saturating_add(1))
                .max()
                .unwrap_or(0)
        });
        let logged = state.seq_ceilings.get(id).copied().unwrap_or(0);
        committed.saturating_add(SEQ_WINDOW).max(logged)
    }

    fn check_holder(&self, id: &str, token: u64) -> Result<(), CoordError> {
        match lock(&self.leases).get(id) {
            Some(held) if held.token == token => Ok(()),
            _ => Err(CoordError::LeaseLost),
        }
    }
}

/// A lease of the embedded coordinator: in-process, it never expires by itself.
struct EmbeddedLease {
    shared: Arc<Shared>,
    upload_id: String,
    token: u64,
}

impl EmbeddedLease {
    fn check(&self) -> Result<(), CoordError> {
        self.shared.check_holder(&self.upload_id, self.token)
    }
}

#[async_trait]
impl HeldLease for EmbeddedLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn ttl(&self) -> Option<Duration> {
        None
    }

    async fn renew(&self) -> Result<(), CoordError> {
        // In-process leases do not expire; renewal only confirms the token is current.
        self.check()
    }

    async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        let seq = {
            let mut leases = lock(&self.shared.leases);
            match leases.get_mut(&self.upload_id) {
                Some(held) if held.token == self.token => {
                    held.next_seq += 1;
                    held.next_seq - 1
                }
                _ => return Err(CoordError::LeaseLost),
            }
        };
        // A number may be handed out once what a restart would start from is above it:
        // free within the window above the committed numbers (no disk write for the usual
        // write-then-commit), beyond it only after a ceiling is logged. So a number is never
        // reserved twice, not even across a restart (an S3 part uploaded late by a process
        // that died must not land on a number its successor uses).
        let shared = &self.shared;
        if seq >= shared.restart_floor(&self.upload_id) {
            appended(
                shared
                    .log
                    .append(Entry::SeqCeiling {
                        id: self.upload_id.clone(),
                        ceiling: seq.saturating_add(SEQ_WINDOW),
                    })
                    .await,
            )?;
        }
        Ok(WriteTarget {
            token: self.token,
            seq,
        })
    }

    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError> {
        let committed = self.commit_held(commit).await;
        if release {
            self.release().await?;
        }
        committed
    }

    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.check()?;
        appended(
            self.shared
                .log
                .append(Entry::Gone {
                    id: self.upload_id.clone(),
                    purge_at,
                    notice,
                })
                .await,
        )
    }

    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.check()?;
        appended(
            self.shared
                .log
                .append(Entry::Notice {
                    id: self.upload_id.clone(),
                    notice,
                })
                .await,
        )
    }

    async fn purge(&self) -> Result<(), CoordError> {
        self.check()?;
        lock(&self.shared.next_seqs).remove(&self.upload_id);
        let purged = appended(
            self.shared
                .log
                .append(Entry::Purge {
                    id: self.upload_id.clone(),
                })
                .await,
        );
        self.release().await?;
        purged
    }

    async fn release(&self) -> Result<(), CoordError> {
        let shared = &self.shared;
        let mut leases = lock(&shared.leases);
        if leases
            .get(&self.upload_id)
            .is_some_and(|h| h.token == self.token)
        {
            if let Some(held) = leases.remove(&self.upload_id) {
                lock(&shared.next_seqs).insert(self.upload_id.clone(), held.next_seq);
            }
            shared.staged.forget(&self.upload_id);
        }
        drop(leases);
        shared.released.notify_waiters();
        Ok(())
    }
}

impl EmbeddedLease {
    /// The compare-and-set on the offset is the log writer's ([`Refusal::OffsetMismatch`]):
    /// it decides in the order entries are written, so of two commits expecting the same
    /// offset only the first is written.
    /// The small writes the commit names go with it ([`carry`]).
    async fn commit_held(&self, commit: &Commit) -> Result<(), CoordError> {
        let carried = self.shared.staged.take(&self.upload_id, &commit.append);
        self.check()?;
        let entry = Entry::Commit {
            id: self.upload_id.clone(),
            commit: commit.clone(),
        };
        appended(self.shared.log.append_carrying(entry, carried).await)
    }
}

#[async_trait]
impl Coordinator for EmbeddedCoordinator {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError> {
        let shared = &self.shared;
        // An existing ID is refused by the log writer (Refusal::AlreadyExists).
        appended(shared.log.append(Entry::Create(record.clone())).await)?;
        // Nothing of it was reserved in an earlier run: numbers start at 0.
        lock(&shared.next_seqs).insert(record.id.clone(), 0);
        Ok(())
    }

    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError> {
        Ok(lock(&self.shared.state).records.get(id).cloned())
    }

    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        let shared = &self.shared;
        let requested_at = tokio::time::Instant::now();
        let deadline = requested_at + wait;
        let mut waited = false;
        loop {
            if !lock(&shared.state).records.contains_key(id) {
                return Err(CoordError::NotFound);
            }
            let released = shared.released.notified();
            tokio::pin!(released);
            // Register for the wake-up before checking, so a release in between is not missed.
            released.as_mut().enable();
            let held_elsewhere = match lock(&shared.leases).get(id) {
                Some(held) => {
                    // A caller that will not wait (the sweeper) must not interrupt a writer.
                    if !wait.is_zero() {
                        held.ask_release.send_replace(true);
                    }
                    true
                }
                None => false,
            };
            if !held_elsewhere {
                let token = shared.next_token().await?;
                let (ask_release, release) = ReleaseRequest::channel();
                let mut leases = lock(&shared.leases);
                // Another request may have taken it while we drew a token; then wait again.
                if !leases.contains_key(id) {
                    // Read only now: a previous holder's commit is applied before it releases.
                    let Some(record) = lock(&shared.state).records.get(id).cloned() else {
                        return Err(CoordError::NotFound);
                    };
                    // Within this run, on from the last lease; for an upload first written
                    // before a restart, above anything the previous run may have reserved.
                    let carried = lock(&shared.next_seqs).get(id).copied();
                    let next_seq = match carried {
                        Some(next) => next,
                        None => shared.restart_floor(id),
                    };
                    leases.insert(
                        id.to_string(),
                        HeldLeaseState {
                            token,
                            next_seq,
                            ask_release,
                        },
                    );
                    let held = EmbeddedLease {
                        shared: shared.clone(),
                        upload_id: id.to_string(),
                        token,
                    };
                    return Ok(Lease::grant(
                        Box::new(held),
                        record,
                        release,
                        waited,
                        requested_at,
                    ));
                }
                continue;
            }
            waited = true;
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(CoordError::Locked);
            }
        }
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        let state = lock(&self.shared.state);
        Ok(state
            .records
            .values()
            .filter(|r| r.due_for_sweep(now))
            .take(limit)
            .map(|r| r.id.clone())
            .collect())
    }

    async fn ping(&self) -> Result<(), CoordError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::log::testing::{five_uploads, write_log};
    use super::*;
    use crate::{Segment, UploadState};

    /// The storage side, for the log alone: no files are written; `full` refuses every one,
    /// and each sync takes `sync_takes`.
    struct TestDisk {
        full: bool,
        sync_takes: Duration,
    }

    impl TestDisk {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                full: false,
                sync_takes: Duration::ZERO,
            })
        }
    }

    impl CarriedFiles for TestDisk {
        fn place(&self, _: &str, _: WriteTarget, _: &[u8]) -> std::io::Result<()> {
            if self.full {
                return Err(std::io::Error::other("no space left on device"));
            }
            Ok(())
        }
        fn make_durable(&self, _: &[(String, WriteTarget)]) -> std::io::Result<()> {
            std::thread::sleep(self.sync_takes);
            Ok(())
        }
        fn restore(&self, _: &str, _: WriteTarget, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A coordinator on `dir` whose log carries the writes of `disk`, an upload `up` of
    /// `length` bytes, and its lease.
    async fn carrying_upload(
        dir: &Path,
        disk: Arc<TestDisk>,
        compact_after: u64,
        length: u64,
    ) -> (Arc<EmbeddedCoordinator>, Carrier, crate::Lease) {
        let coord = EmbeddedCoordinator::open_carrying(dir, disk, compact_after)
            .await
            .expect("open");
        let carrier = coord.carrier().expect("carrying");
        coord
            .create(&log::testing::record("up", length))
            .await
            .expect("create");
        let lease = coord.acquire("up", Duration::ZERO).await.expect("lease");
        (coord, carrier, lease)
    }

    /// The commit of upload `up`'s first 10 bytes, written to `target`.
    fn first_commit_of_ten_bytes(target: WriteTarget) -> Commit {
        match log::testing::commit("up", 0, 10, target.token) {
            Entry::Commit { mut commit, .. } => {
                commit.append = vec![Segment::new(target, 10)];
                commit
            }
            _ => unreachable!("a commit"),
        }
    }

    fn staged_uploads(coord: &EmbeddedCoordinator) -> usize {
        lock(&coord.shared.staged.0).len()
    }

    /// Staged bytes go with the commit that names them, and only those; what a write staged
    /// that no commit takes is dropped when the lease is released, so memory holds only the
    /// writes in flight.
    #[tokio::test]
    async fn staged_writes_go_with_their_commit_or_are_dropped_at_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coord, carrier, mut lease) =
            carrying_upload(dir.path(), TestDisk::new(), 1 << 20, 20).await;
        let (named, stray) = (
            lease.reserve().await.expect("t"),
            lease.reserve().await.expect("t"),
        );
        carrier.stage("up", named, bytes::Bytes::from_static(b"0123456789"));
        carrier.stage("up", stray, bytes::Bytes::from_static(b"never committed"));
        let commit = first_commit_of_ten_bytes(named);
        lease.commit(&commit).await.expect("commit");
        assert_eq!(
            staged_uploads(&coord),
            1,
            "the stray write stays until release"
        );
        lease.release().await.expect("release");
        assert_eq!(
            staged_uploads(&coord),
            0,
            "released with bytes still staged"
        );
        let replay = log::replay(dir.path()).expect("replay");
        let carried: Vec<_> = replay
            .carried
            .iter()
            .map(|c| (c.target, &c.data[..]))
            .collect();
        assert_eq!(carried, [(named, &b"0123456789"[..])]);
    }

    /// Dropping the last handle closes the coordinator: the compaction and checkpoint its
    /// last commit started are finished, and only then is the directory's lock free. (A
    /// second coordinator opened right after the drop once read the snapshot of one
    /// generation while the first one's writer deleted that generation's log, and came up
    /// without the records that log held.)
    #[tokio::test]
    async fn the_last_handle_dropped_leaves_a_settled_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A disk slow to sync: the checkpoint is still under way when the handles go.
        let slow = Arc::new(TestDisk {
            full: false,
            sync_takes: Duration::from_millis(300),
        });
        let (coord, carrier, mut lease) = carrying_upload(dir.path(), slow, 256, 10).await;
        let target = lease.reserve().await.expect("target");
        carrier.stage("up", target, bytes::Bytes::from(vec![7; 300]));
        lease
            .commit(&first_commit_of_ten_bytes(target))
            .await
            .expect("commit");
        drop((lease, carrier, coord));

        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["lock", "snapshot.bin", "wal-00000001.log"]);
        let coord = EmbeddedCoordinator::open(dir.path()).await.expect("reopen");
        let record = coord.load("up").await.expect("load").expect("record");
        assert_eq!(record.offset, 10);
    }

    /// A commit whose file cannot be written is refused, and neither it nor its bytes reach
    /// the log: no commit is ever durable without its file.
    #[tokio::test]
    async fn a_commit_whose_carried_file_cannot_be_written_is_refused_and_not_logged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = Arc::new(TestDisk {
            full: true,
            sync_takes: Duration::ZERO,
        });
        let (coord, carrier, mut lease) = carrying_upload(dir.path(), full, 1 << 20, 10).await;
        let target = lease.reserve().await.expect("target");
        carrier.stage("up", target, bytes::Bytes::from_static(b"0123456789"));
        let commit = first_commit_of_ten_bytes(target);
        let refused = lease.commit(&commit).await;
        assert!(
            matches!(refused, Err(CoordError::Unavailable(ref m)) if m.contains("no space")),
            "{refused:?}"
        );
        let replay = log::replay(dir.path()).expect("replay");
        assert!(replay.carried.is_empty());
        assert_eq!(replay.durable.records["up"].offset, 0);
        assert_eq!(
            coord
                .load("up")
                .await
                .expect("load")
                .expect("record")
                .offset,
            0
        );
    }

    /// The 2nd of eleven frames damaged: open fails naming the log and the byte offset, and
    /// no file of the directory changed (beyond the lock file).
    #[tokio::test]
    async fn a_damaged_log_stops_the_start_and_stays_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut bytes, frames) = write_log(dir.path(), &five_uploads());
        let (start, end) = frames[1];
        bytes[(start + end) / 2] ^= 1;
        let path = log::wal_path(dir.path(), 0);
        std::fs::write(&path, &bytes).expect("write");

        match EmbeddedCoordinator::open(dir.path()).await {
            Err(CoordError::Corrupt(message)) => assert!(
                message.contains(&path.display().to_string())
                    && message.contains(&format!("at byte {start} ")),
                "{message}"
            ),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a log damaged in the middle was opened"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["lock", "wal-00000000.log"]);
    }

    /// A torn tail is cut: every intact frame is there, and new entries follow the cut (a
    /// second start reads them).
    #[tokio::test]
    async fn a_torn_tail_is_cut_and_new_entries_follow_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut bytes, _) = write_log(dir.path(), &five_uploads());
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(log::wal_path(dir.path(), 0), &bytes).expect("write");
        {
            let coord = EmbeddedCoordinator::open(dir.path()).await.expect("open");
            for i in 0..5u64 {
                let record = coord.load(&format!("upload{i}")).await.expect("load");
                assert_eq!(record.map(|r| r.offset), Some(10 + i));
            }
            let mut late = log::testing::record("late", 1);
            late.created_at = 2;
            coord.create(&late).await.expect("create");
        }
        let coord = EmbeddedCoordinator::open(dir.path()).await.expect("reopen");
        assert!(coord.load("late").await.expect("load").is_some());
    }

    /// Two commits racing under one lease, both expecting offset 0 (the engine never does
    /// this; two processes on one log did): the log writer decides in order, so exactly one
    /// is written and the other is refused as an offset change, live and after a restart.
    #[tokio::test]
    async fn of_two_commits_expecting_the_same_offset_only_one_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = EmbeddedCoordinator::open(dir.path()).await.expect("open");
        coord
            .create(&log::testing::record("raced", 10))
            .await
            .expect("create");
        let lease = coord.acquire("raced", Duration::ZERO).await.expect("lease");
        let held = EmbeddedLease {
            shared: coord.shared.clone(),
            upload_id: "raced".into(),
            token: lease.token(),
        };
        let commit = |seq| Commit {
            expected_offset: 0,
            added: 5,
            append: vec![Segment::new(
                WriteTarget {
                    token: lease.token(),
                    seq,
                },
                5,
            )],
            fold: 0,
            session: None,
            declare_length: None,
            expires_at: None,
            notice: None,
            stamp: None,
        };
        let (a, b) = (commit(0), commit(1));
        let (first, second) = tokio::join!(held.commit_held(&a), held.commit_held(&b));
        let refused = match (first, second) {
            (Ok(()), Err(e)) | (Err(e), Ok(())) => e,
            (first, second) => panic!("expected exactly one commit: {first:?}, {second:?}"),
        };
        assert!(
            matches!(
                refused,
                CoordError::OffsetChanged {
                    expected: 0,
                    found: 5
                }
            ),
            "{refused}"
        );
        let record = coord.load("raced").await.expect("load").expect("record");
        assert_eq!((record.offset, record.segments.len()), (5, 1));
        drop((held, lease, coord));

        let recovered = log::recover(dir.path()).expect("recover");
        assert!(recovered.skipped.is_empty(), "nothing refused was written");
        let record = &recovered.durable.records["raced"];
        assert_eq!((record.offset, record.segments.len()), (5, 1));
        assert_eq!(record.state, UploadState::Active);
    }

    /// A second open of a directory in use fails at once, naming the directory and the
    /// holder's pid; once the holder is gone the directory opens again.
    #[tokio::test]
    async fn a_directory_in_use_is_refused_naming_it_and_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = EmbeddedCoordinator::open(dir.path()).await.expect("open");
        match EmbeddedCoordinator::open(dir.path()).await {
            Err(CoordError::Unavailable(message)) => assert!(
                message.contains(&dir.path().display().to_string())
                    && message.contains(&format!("pid {}", std::process::id())),
                "{message}"
            ),
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("a second coordinator opened a directory in use"),
        }
        drop(first);
        EmbeddedCoordinator::open(dir.path())
            .await
            .expect("open after the holder is gone");
    }
}
