//! The embedded coordinator's durable state: a snapshot plus a write-ahead log.
//!
//! Every change is one [`Entry`] appended to `wal-<generation>.log` as a frame
//! `[len: u32 LE][crc32: u32 LE][json]`. A single writer thread takes whatever entries are
//! waiting, writes them with one `write` and one `fdatasync` (group commit), applies them to
//! the in-memory records, and only then wakes the callers: a record is never visible before
//! it is durable. When the log grows past a bound, the writer writes a snapshot of all records
//! (temp file, fsync, rename, fsync of the directory) that names the next generation, and
//! deletes the old log. A torn frame at the end of the log (kill -9 mid-write) is cut off on
//! replay; it was never acknowledged.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{Commit, UploadRecord, UploadState};

/// One durable change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Entry {
    Create(UploadRecord),
    Commit {
        id: String,
        commit: Commit,
    },
    Gone {
        id: String,
        purge_at: u64,
    },
    Purge {
        id: String,
    },
    /// Fencing tokens below this may have been handed out; after a restart, start here.
    TokenCeiling(u64),
    /// Sequence numbers of upload `id` below this may have been reserved; after a restart,
    /// reserve from here on.
    SeqCeiling {
        id: String,
        ceiling: u32,
    },
}

/// Why an entry cannot follow the state it would apply to: the log's compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no record of the upload (its creation is not in the log)")]
    UnknownUpload,
    #[error("the upload already exists")]
    AlreadyExists,
    /// A commit that does not start where its record ends (another writer's commit got
    /// there first, or the same change was written twice).
    #[error("commit expected offset {expected}, but the record is at {found}")]
    OffsetMismatch { expected: u64, found: u64 },
}

impl Entry {
    /// Whether this entry may follow a state in which `offset_of(id)` is the offset of
    /// upload `id` (None: no such record). The one rule both replay and the live writer
    /// apply, so neither can take what the other would refuse.
    fn admit(&self, offset_of: impl Fn(&str) -> Option<u64>) -> Result<(), Refusal> {
        match self {
            Entry::Create(record) => match offset_of(&record.id) {
                Some(_) => Err(Refusal::AlreadyExists),
                None => Ok(()),
            },
            Entry::Commit { id, commit } => match offset_of(id) {
                None => Err(Refusal::UnknownUpload),
                Some(found) if found != commit.expected_offset => Err(Refusal::OffsetMismatch {
                    expected: commit.expected_offset,
                    found,
                }),
                Some(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The upload this entry changes, if any.
    fn upload_id(&self) -> Option<&str> {
        match self {
            Entry::Create(record) => Some(&record.id),
            Entry::Commit { id, .. }
            | Entry::Gone { id, .. }
            | Entry::Purge { id }
            | Entry::SeqCeiling { id, .. } => Some(id),
            Entry::TokenCeiling(_) => None,
        }
    }
}

/// An entry replay did not apply, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub upload_id: String,
    pub why: Refusal,
    /// The file and byte offset of its frame.
    pub file: PathBuf,
    pub offset: u64,
}

/// The records and the token ceiling: what the log describes.
#[derive(Debug, Default)]
pub(super) struct Durable {
    pub records: HashMap<String, UploadRecord>,
    pub token_ceiling: u64,
    /// Per upload, the logged [`Entry::SeqCeiling`].
    pub seq_ceilings: HashMap<String, u32>,
}

impl Durable {
    /// Applies one entry if [`Entry::admit`] lets it follow the current state. The same
    /// function serves replay and live writes, so memory and disk cannot disagree about what
    /// an entry means.
    pub fn apply(&mut self, entry: Entry) -> Result<(), Refusal> {
        entry.admit(|id| self.records.get(id).map(|r| r.offset))?;
        match entry {
            Entry::Create(record) => {
                self.records.insert(record.id.clone(), record);
            }
            Entry::Commit { id, commit } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.apply_commit(&commit);
                }
            }
            Entry::Gone { id, purge_at } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.state = UploadState::Gone { purge_at };
                    r.segments.clear();
                }
            }
            Entry::Purge { id } => {
                self.records.remove(&id);
                self.seq_ceilings.remove(&id);
            }
            Entry::TokenCeiling(t) => self.token_ceiling = self.token_ceiling.max(t),
            Entry::SeqCeiling { id, ceiling } => {
                let known = self.seq_ceilings.entry(id).or_insert(0);
                *known = (*known).max(ceiling);
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    /// The log generation that continues this snapshot.
    generation: u64,
    token_ceiling: u64,
    records: usize,
    /// Snapshots written before sequence ceilings existed have none.
    #[serde(default)]
    seq_ceilings: HashMap<String, u32>,
}

const SNAPSHOT: &str = "snapshot.jsonl";
/// Past this many log bytes, the writer compacts into a snapshot (the default).
pub(super) const COMPACT_AFTER_BYTES: u64 = 64 << 20;
/// Most entries one group commit takes.
const MAX_BATCH: usize = 4096;

pub(super) fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:08}.log"))
}

fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the snapshot and the log of its generation; returns the state, the generation, the
/// log's valid length (a torn tail beyond it is truncated by the caller) and the entries
/// replay skipped because they did not follow the state ([`Entry::admit`]).
pub(super) fn recover(dir: &Path) -> io::Result<(Durable, u64, u64, Vec<Skipped>)> {
    let mut durable = Durable::default();
    let mut generation = 0;
    match File::open(dir.join(SNAPSHOT)) {
        Ok(file) => {
            let mut lines = BufReader::new(file).lines();
            let header: SnapshotHeader =
                serde_json::from_str(&lines.next().ok_or_else(|| corrupt("empty snapshot"))??)
                    .map_err(corrupt)?;
            generation = header.generation;
            durable.token_ceiling = header.token_ceiling;
            durable.seq_ceilings = header.seq_ceilings;
            for line in lines {
                let record: UploadRecord = serde_json::from_str(&line?).map_err(corrupt)?;
                durable.records.insert(record.id.clone(), record);
            }
            if durable.records.len() != header.records {
                return Err(corrupt("snapshot is missing records"));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut valid_len = 0u64;
    let mut skipped = Vec::new();
    let log_path = wal_path(dir, generation);
    match File::open(&log_path) {
        Ok(file) => {
            let mut reader = BufReader::new(file);
            while let Some(entry) = read_frame(&mut reader)? {
                let offset = valid_len;
                valid_len += 8 + entry.len() as u64;
                let entry: Entry = serde_json::from_slice(&entry).map_err(corrupt)?;
                let upload_id = entry.upload_id().unwrap_or_default().to_string();
                if let Err(why) = durable.apply(entry) {
                    skipped.push(Skipped {
                        upload_id,
                        why,
                        file: log_path.clone(),
                        offset,
                    });
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((durable, generation, valid_len, skipped))
}

/// One frame's payload, or None at the end of the log or at a torn or corrupt tail.
fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 8];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut payload = vec![0u8; len];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

pub(super) fn append_frame(buf: &mut Vec<u8>, entry: &Entry) -> io::Result<()> {
    let payload = serde_json::to_vec(entry).map_err(corrupt)?;
    let len = u32::try_from(payload.len()).map_err(|_| corrupt("entry too large"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// Why an append was not made.
#[derive(Debug)]
pub(super) enum AppendError {
    /// The entry cannot follow the state (nothing was written).
    Refused(Refusal),
    /// The log could not be written: the change may or may not survive a restart.
    Io(io::Error),
}

struct Request {
    entry: Entry,
    done: oneshot::Sender<Result<(), AppendError>>,
}

/// Handle to the writer thread.
pub(super) struct LogWriter {
    tx: mpsc::Sender<Request>,
}

impl LogWriter {
    /// Starts the writer thread over a recovered state. `state` is the shared in-memory
    /// state the writer applies entries to once they are durable.
    pub fn start(
        dir: PathBuf,
        generation: u64,
        valid_len: u64,
        state: Arc<Mutex<Durable>>,
        compact_after: u64,
    ) -> io::Result<Self> {
        let path = wal_path(&dir, generation);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // Cut a torn tail so new frames follow the last good one.
        file.set_len(valid_len)?;
        file.sync_all()?;
        sync_dir(&dir)?;
        let (tx, rx) = mpsc::channel::<Request>();
        let mut writer = Writer {
            compact_after,
            dir,
            generation,
            file,
            len: valid_len,
            state,
            failed: None,
        };
        std::thread::Builder::new()
            .name("tusk-coord-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self { tx })
    }

    /// Appends `entry` if it may follow the state (with every entry before it), and waits
    /// until it is durable and applied.
    pub async fn append(&self, entry: Entry) -> Result<(), AppendError> {
        let stopped = || AppendError::Io(io::Error::other("coordinator log writer stopped"));
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { entry, done })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

struct Writer {
    compact_after: u64,
    dir: PathBuf,
    generation: u64,
    file: File,
    len: u64,
    state: Arc<Mutex<Durable>>,
    /// After a failed write the log's tail is unknown; refuse everything from then on
    /// rather than acknowledge changes that might not survive a restart.
    failed: Option<String>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let admitted = self.admit(&batch);
            let result = self.write_batch(&batch, &admitted);
            if let Err(e) = &result {
                tracing::error!(error = %e, "coordinator log write failed; refusing further changes");
                self.failed.get_or_insert_with(|| e.to_string());
            } else {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                for (r, admitted) in batch.iter().zip(&admitted) {
                    if admitted.is_ok() {
                        if let Err(why) = state.apply(r.entry.clone()) {
                            tracing::error!(%why, "an admitted coordinator entry did not apply");
                        }
                    }
                }
            }
            for (r, admitted) in batch.into_iter().zip(admitted) {
                let reply = match (&result, admitted) {
                    (_, Err(why)) => Err(AppendError::Refused(why)),
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(e), Ok(())) => {
                        Err(AppendError::Io(io::Error::new(e.kind(), e.to_string())))
                    }
                };
                let _ = r.done.send(reply);
            }
            if self.failed.is_none() && self.len > self.compact_after {
                if let Err(e) = self.compact() {
                    tracing::error!(error = %e, "coordinator snapshot failed; the log keeps growing");
                }
            }
        }
    }

    /// Which entries of the batch may follow the state and the admitted entries before
    /// them: the compare-and-set, decided here, where entries are ordered, so two commits
    /// expecting the same offset can never both be written.
    fn admit(&self, batch: &[Request]) -> Vec<Result<(), Refusal>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Offsets as the admitted entries of this batch leave them (None: no record).
        let mut pending: HashMap<&str, Option<u64>> = HashMap::new();
        batch
            .iter()
            .map(|r| {
                r.entry.admit(|id| match pending.get(id) {
                    Some(offset) => *offset,
                    None => state.records.get(id).map(|r| r.offset),
                })?;
                match &r.entry {
                    Entry::Create(record) => {
                        pending.insert(&record.id, Some(record.offset));
                    }
                    Entry::Commit { id, commit } => {
                        let after = commit.expected_offset + commit.added;
                        pending.insert(id, Some(after));
                    }
                    Entry::Purge { id } => {
                        pending.insert(id, None);
                    }
                    _ => {}
                }
                Ok(())
            })
            .collect()
    }

    fn write_batch(
        &mut self,
        batch: &[Request],
        admitted: &[Result<(), Refusal>],
    ) -> io::Result<()> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(format!(
                "coordinator log is failed: {reason}"
            )));
        }
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for (r, admitted) in batch.iter().zip(admitted) {
            if admitted.is_ok() {
                append_frame(&mut buf, &r.entry)?;
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Writes every record into a new snapshot that names the next log generation, then
    /// switches to that log. Entries applied so far are all in the snapshot; entries not yet
    /// written go to the new log.
    fn compact(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        let mut buf = Vec::new();
        {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let header = SnapshotHeader {
                generation: next,
                token_ceiling: state.token_ceiling,
                records: state.records.len(),
                seq_ceilings: state.seq_ceilings.clone(),
            };
            serde_json::to_writer(&mut buf, &header).map_err(corrupt)?;
            buf.push(b'\n');
            for record in state.records.values() {
                serde_json::to_writer(&mut buf, record).map_err(corrupt)?;
                buf.push(b'\n');
            }
        }
        let new_log = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(wal_path(&self.dir, next))?;
        new_log.sync_all()?;
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(SNAPSHOT))?;
        sync_dir(&self.dir)?;
        let old = wal_path(&self.dir, self.generation);
        self.file = OpenOptions::new()
            .append(true)
            .open(wal_path(&self.dir, next))?;
        self.generation = next;
        self.len = 0;
        fs::remove_file(old)?;
        Ok(())
    }
}

/// Logs written by hand, for the tests of this module and its siblings.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;

    use super::{append_frame, wal_path, Entry};
    use crate::{Commit, Segment, UploadRecord, UploadState, WriteTarget};

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
        }
    }

    pub fn commit(id: &str, expected_offset: u64, added: u64, token: u64) -> Entry {
        Entry::Commit {
            id: id.to_string(),
            commit: Commit {
                expected_offset,
                added,
                append: vec![Segment::new(WriteTarget { token, seq: 0 }, added)],
                fold: 0,
                session: None,
                declare_length: None,
                expires_at: None,
            },
        }
    }

    /// Writes `entries` as generation 0's log in `dir`: its bytes and each frame's
    /// `(start, end)`.
    pub fn write_log(dir: &Path, entries: &[Entry]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for entry in entries {
            let start = buf.len();
            append_frame(&mut buf, entry).expect("frame");
            frames.push((start, buf.len()));
        }
        std::fs::write(wal_path(dir, 0), &buf).expect("write log");
        (buf, frames)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{commit, record, write_log};
    use super::*;

    #[test]
    fn torn_tail_is_ignored() {
        let mut buf = Vec::new();
        append_frame(&mut buf, &Entry::TokenCeiling(7)).expect("frame");
        append_frame(&mut buf, &Entry::TokenCeiling(9)).expect("frame");
        buf.truncate(buf.len() - 3);
        let mut reader = &buf[..];
        assert!(read_frame(&mut reader).expect("read").is_some());
        assert!(read_frame(&mut reader).expect("read").is_none());
    }

    /// Two commits of one upload both expecting offset 0 (two processes appended to one log):
    /// replay applies the first, skips the second and says which upload it was; a commit of
    /// an upload that does not exist is skipped too.
    #[test]
    fn replay_skips_a_commit_that_does_not_start_where_its_record_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(
            dir.path(),
            &[
                Entry::Create(record("shared", 10)),
                commit("shared", 0, 5, 7),
                commit("shared", 0, 5, 8),
                commit("nobody", 0, 5, 9),
                commit("shared", 5, 5, 7),
            ],
        );
        let (durable, _, _, skipped) = recover(dir.path()).expect("recover");
        let record = &durable.records["shared"];
        assert_eq!(record.offset, 10);
        let tokens: Vec<u64> = record.segments.iter().map(|s| s.target.token).collect();
        assert_eq!(
            tokens,
            [7, 7],
            "the second writer's segment is not the upload's"
        );
        let skipped: Vec<(&str, &Refusal)> = skipped
            .iter()
            .map(|s| (s.upload_id.as_str(), &s.why))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "shared",
                    &Refusal::OffsetMismatch {
                        expected: 0,
                        found: 5
                    }
                ),
                ("nobody", &Refusal::UnknownUpload)
            ]
        );
    }
}
