//! The embedded coordinator's durable state: a snapshot plus a write-ahead log.
//!
//! Every change is one [`Entry`] appended to `wal-<generation>.log` as a frame
//! `[len: u32 LE][crc32 of the payload: u32 LE][payload: JSON]`. A single writer thread
//! takes whatever entries are waiting, writes them with one `write` and one `fdatasync`
//! (group commit), applies them to the in-memory records, and only then wakes the callers:
//! a record is never visible before it is durable. When the log grows past a bound, the
//! writer writes a snapshot of all records (temp file, fsync, rename, fsync of the
//! directory) that names the next generation, and deletes the old log. The snapshot uses
//! the same frames: a `Begin` naming the generation, one entry per ceiling and record, an
//! `End` repeating the `Begin`.
//!
//! Replay trusts only frames whose checksum holds, and cuts only a torn tail: bytes at the
//! end of the log that hold no intact frame (a write cut short by a crash, never
//! acknowledged: the writer acknowledges after `fdatasync`). Damage followed by an intact
//! frame is something else (a bad disk, a foreign write) and stops the start with the file
//! and the byte offset, leaving the file untouched; [`super::check`] can then salvage every
//! intact frame. A snapshot is written whole, so any damage in it stops the start.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use bytes::Bytes;

use super::carry::{CarriedFiles, CarriedWrite};
use crate::group_commit::{GroupAppend, GroupCommit, WriterStopped};
use crate::{Commit, OwedNotice, UploadRecord, WriteTarget};

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
        #[serde(default)]
        notice: Option<OwedNotice>,
    },
    /// The notice the upload owes is replaced (delivered: `None`; or claimed again).
    Notice {
        id: String,
        notice: Option<OwedNotice>,
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
    /// The bytes of a small write whose file the storage wrote unsynced, written with the
    /// commit that names it ([`super::carry`]); no state.
    Carried {
        id: String,
        target: WriteTarget,
        #[serde(with = "base64_bytes")]
        data: Bytes,
    },
}

/// Carried bytes as base64 in the JSON frame: a third more than the bytes, where a JSON
/// array of numbers would be three to four times as much.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(D::Error::custom)
    }
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
            | Entry::Notice { id, .. }
            | Entry::Purge { id }
            | Entry::SeqCeiling { id, .. }
            | Entry::Carried { id, .. } => Some(id),
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
            Entry::Gone {
                id,
                purge_at,
                notice,
            } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.mark_gone(purge_at, notice);
                }
            }
            Entry::Notice { id, notice } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.notice = notice;
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
            Entry::Carried { .. } => {}
        }
        Ok(())
    }

    /// The largest fencing token any record's committed segment carries.
    pub fn largest_committed_token(&self) -> u64 {
        self.records
            .values()
            .flat_map(|r| r.segments.iter().map(|s| s.target.token))
            .max()
            .unwrap_or(0)
    }
}

/// A frame of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
enum SnapshotFrame {
    Begin(SnapshotInfo),
    Entry(Box<Entry>),
    /// A copy of `Begin`: the snapshot is complete, and its generation survives damage to
    /// either end.
    End(SnapshotInfo),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotInfo {
    /// The log generation that continues this snapshot.
    generation: u64,
    /// Entry frames between `Begin` and `End`.
    entries: u64,
}

/// The snapshot format before frames: a JSON header line, then one record per line.
#[derive(Deserialize)]
struct LegacySnapshotHeader {
    generation: u64,
    token_ceiling: u64,
    records: usize,
    #[serde(default)]
    seq_ceilings: HashMap<String, u32>,
}

pub(super) const SNAPSHOT: &str = "snapshot.bin";
/// Read if there is no [`SNAPSHOT`] (written by earlier versions); the next snapshot
/// replaces it.
const LEGACY_SNAPSHOT: &str = "snapshot.jsonl";
/// Past this many log bytes, the writer compacts into a snapshot (the default).
pub const COMPACT_AFTER_BYTES: u64 = 64 << 20;
/// Frame header: length and checksum.
const HEADER: usize = 8;

pub(super) fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:08}.log"))
}

/// The generation of a log file name (`wal-00000007.log`).
pub(super) fn wal_generation(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn append_frame(buf: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(corrupt)?;
    let len = u32::try_from(payload.len()).map_err(|_| corrupt("entry too large"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// What the bytes at one position are.
enum Probe<T> {
    /// An intact frame (its checksum holds) that decodes; it ends at the offset.
    Intact(T, usize),
    /// An intact frame this version cannot read (written by a newer one?).
    Undecodable(String, usize),
    /// No intact frame starts here.
    Bad(&'static str),
}

fn probe<T: DeserializeOwned>(buf: &[u8], at: usize) -> Probe<T> {
    let Some(header) = buf.get(at..at + HEADER) else {
        return Probe::Bad("incomplete frame header");
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        // Never written (every payload is a JSON object); what a zero-filled tail reads as.
        return Probe::Bad("zero-length frame");
    }
    let end = at + HEADER + len;
    let Some(payload) = buf.get(at + HEADER..end) else {
        return Probe::Bad("frame runs past the end of the file");
    };
    // Every payload is a JSON object: a cheap test before the checksum, which keeps the
    // search for the next intact frame past damaged bytes fast.
    if payload[0] != b'{' {
        return Probe::Bad("not a frame");
    }
    if crc32fast::hash(payload) != crc {
        return Probe::Bad("checksum mismatch");
    }
    match serde_json::from_slice(payload) {
        Ok(value) => Probe::Intact(value, end),
        Err(e) => Probe::Undecodable(e.to_string(), end),
    }
}

/// A stretch of a file that replay could not use.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Where it starts, in bytes from the start of the file.
    pub offset: u64,
    /// How many bytes it covers (0 for frames missing at the end of a snapshot).
    pub len: u64,
    /// Intact frames before it in the file.
    pub frames_before: usize,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Bytes that are no intact frame, up to the next intact frame or the end of the file:
    /// a torn write, or damage.
    Damaged(&'static str),
    /// An intact frame (its checksum holds) that this version cannot read.
    Undecodable(String),
    /// A snapshot that ends before all its frames.
    Incomplete(String),
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Damaged(why) => write!(f, "damaged bytes ({why})"),
            FaultKind::Undecodable(e) => write!(
                f,
                "an intact frame this version cannot read (written by a newer one?): {e}"
            ),
            FaultKind::Incomplete(why) => write!(f, "incomplete snapshot: {why}"),
        }
    }
}

/// One file of a coordinator directory, as replay read it.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Intact frames.
    pub frames: usize,
    pub faults: Vec<Fault>,
}

impl FileReport {
    /// The log's last fault, if it is a torn tail: damaged bytes with no intact frame after
    /// them, up to the end of the file.
    pub fn torn_tail(&self) -> Option<&Fault> {
        self.faults
            .last()
            .filter(|f| matches!(f.kind, FaultKind::Damaged(_)) && f.offset + f.len == self.bytes)
    }
}

/// Reads every intact frame of `buf`, in order, handing each with its offset to `each`;
/// past bytes that are no intact frame it re-synchronises on the next one. Returns the
/// faults.
fn scan<T: DeserializeOwned>(buf: &[u8], mut each: impl FnMut(T, u64)) -> (usize, Vec<Fault>) {
    let mut faults = Vec::new();
    let mut frames = 0;
    let mut at = 0;
    while at < buf.len() {
        match probe::<T>(buf, at) {
            Probe::Intact(value, end) => {
                each(value, at as u64);
                frames += 1;
                at = end;
            }
            Probe::Undecodable(error, end) => {
                faults.push(Fault {
                    offset: at as u64,
                    len: (end - at) as u64,
                    frames_before: frames,
                    kind: FaultKind::Undecodable(error),
                });
                at = end;
            }
            Probe::Bad(why) => {
                let next = (at + 1..buf.len())
                    .find(|&next| !matches!(probe::<T>(buf, next), Probe::Bad(_)))
                    .unwrap_or(buf.len());
                faults.push(Fault {
                    offset: at as u64,
                    len: (next - at) as u64,
                    frames_before: frames,
                    kind: FaultKind::Damaged(why),
                });
                at = next;
            }
        }
    }
    (frames, faults)
}

/// What a coordinator directory holds: the state made of every intact frame (commits that
/// do not follow their record skipped), and what was found wrong on the way.
pub(super) struct Replay {
    pub durable: Durable,
    /// The generation of the log that continues the snapshot.
    pub generation: u64,
    pub snapshot: Option<FileReport>,
    pub log: Option<FileReport>,
    pub skipped: Vec<Skipped>,
    /// The carried writes of the log.
    pub carried: Vec<CarriedWrite>,
    /// The carried writes of the older logs.
    pub older_carried: Vec<CarriedWrite>,
    /// Logs of generations before the snapshot's: compacted, but kept until the files of
    /// their carried writes were durable.
    pub older_logs: Vec<PathBuf>,
}

/// The first fault that is no torn tail of the log, with its file: what stops a start.
pub(super) fn first_damage<'a>(
    snapshot: Option<&'a FileReport>,
    log: Option<&'a FileReport>,
) -> Option<(&'a FileReport, &'a Fault)> {
    if let Some(fault) = snapshot.and_then(|s| s.faults.first()) {
        return snapshot.map(|s| (s, fault));
    }
    let log = log?;
    let torn = log.torn_tail().map(|f| f.offset);
    log.faults
        .iter()
        .find(|f| Some(f.offset) != torn)
        .map(|f| (log, f))
}

/// Reads a coordinator directory, keeping every intact frame. A torn tail or damage is
/// reported in the files' faults, not as an error; errors are failures to read at all, and
/// a snapshot whose generation cannot be told (both its first and last frames damaged).
pub(super) fn replay(dir: &Path) -> io::Result<Replay> {
    let mut durable = Durable::default();
    let mut skipped = Vec::new();
    let mut generation = 0;
    let mut snapshot = None;
    let snapshot_path = dir.join(SNAPSHOT);
    match fs::read(&snapshot_path) {
        Ok(buf) => {
            let (report, found) =
                replay_snapshot(&snapshot_path, &buf, &mut durable, &mut skipped)?;
            generation = found;
            snapshot = Some(report);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(found) = read_legacy_snapshot(&dir.join(LEGACY_SNAPSHOT), &mut durable)? {
                generation = found;
            }
        }
        Err(e) => return Err(e),
    }
    let (older_logs, older_carried) = older_carried_writes(dir, generation)?;
    let mut carried = Vec::new();
    let log_path = wal_path(dir, generation);
    let log = match fs::read(&log_path) {
        Ok(buf) => {
            let (frames, faults) = scan::<Entry>(&buf, |entry, offset| match entry {
                Entry::Carried { id, target, data } => {
                    carried.push(CarriedWrite { id, target, data });
                }
                entry => apply_logged(&mut durable, entry, &log_path, offset, &mut skipped),
            });
            Some(FileReport {
                path: log_path,
                bytes: buf.len() as u64,
                frames,
                faults,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(Replay {
        durable,
        generation,
        snapshot,
        log,
        skipped,
        carried,
        older_carried,
        older_logs,
    })
}

/// The logs of generations before `generation` in `dir`, oldest first, and their carried
/// writes. Their other entries are in the snapshot. They were synced before the snapshot
/// replaced them, so damage in one is not a torn write: it is reported, and its intact
/// frames are kept.
fn older_carried_writes(
    dir: &Path,
    generation: u64,
) -> io::Result<(Vec<PathBuf>, Vec<CarriedWrite>)> {
    let mut older = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(older_generation) = name.to_str().and_then(wal_generation) {
            if older_generation < generation {
                older.push((older_generation, dir.join(&name)));
            }
        }
    }
    older.sort();
    let mut carried = Vec::new();
    for (_, path) in &older {
        let buf = fs::read(path)?;
        let (_, faults) = scan::<Entry>(&buf, |entry, _| {
            if let Entry::Carried { id, target, data } = entry {
                carried.push(CarriedWrite { id, target, data });
            }
        });
        for fault in faults {
            tracing::warn!(
                log = %path.display(),
                offset = fault.offset,
                bytes = fault.len,
                kind = %fault.kind,
                "damage in a compacted log kept for its carried writes"
            );
        }
    }
    Ok((older.into_iter().map(|(_, path)| path).collect(), carried))
}

fn apply_logged(
    durable: &mut Durable,
    entry: Entry,
    file: &Path,
    offset: u64,
    skipped: &mut Vec<Skipped>,
) {
    let upload_id = entry.upload_id().unwrap_or_default().to_string();
    if let Err(why) = durable.apply(entry) {
        skipped.push(Skipped {
            upload_id,
            why,
            file: file.to_path_buf(),
            offset,
        });
    }
}

/// Replays a framed snapshot; returns its report and the generation it names.
fn replay_snapshot(
    path: &Path,
    buf: &[u8],
    durable: &mut Durable,
    skipped: &mut Vec<Skipped>,
) -> io::Result<(FileReport, u64)> {
    let mut begin = None;
    let mut end = None;
    let mut entries = 0u64;
    let (frames, mut faults) = scan::<SnapshotFrame>(buf, |frame, offset| match frame {
        SnapshotFrame::Begin(info) => {
            begin.get_or_insert(info);
        }
        SnapshotFrame::Entry(entry) => {
            entries += 1;
            apply_logged(durable, *entry, path, offset, skipped);
        }
        SnapshotFrame::End(info) => end = Some(info),
    });
    let info = match (begin, end) {
        (Some(b), Some(e)) if b != e => {
            return Err(corrupt(format!(
                "{}: its first frame names generation {} ({} entries), its last {} ({})",
                path.display(),
                b.generation,
                b.entries,
                e.generation,
                e.entries
            )))
        }
        (Some(info), _) | (None, Some(info)) => info,
        (None, None) => {
            return Err(corrupt(format!(
                "{}: neither its first nor its last frame is intact, so which log continues \
                 it cannot be told",
                path.display()
            )))
        }
    };
    let missing = begin.is_none() || end.is_none() || entries != info.entries;
    if missing && faults.is_empty() {
        // Whole frames are missing (the file ends early at a frame boundary): no damaged
        // bytes to point at, but the snapshot is not what was written.
        faults.push(Fault {
            offset: buf.len() as u64,
            len: 0,
            frames_before: frames,
            kind: FaultKind::Incomplete(format!(
                "{entries} of {} entries{}",
                info.entries,
                if end.is_none() { ", no end frame" } else { "" }
            )),
        });
    }
    let report = FileReport {
        path: path.to_path_buf(),
        bytes: buf.len() as u64,
        frames,
        faults,
    };
    Ok((report, info.generation))
}

/// Reads a snapshot of the format before frames (no checksums), if there is one; returns the
/// generation it names. Any line it cannot read is an error naming the line.
fn read_legacy_snapshot(path: &Path, durable: &mut Durable) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |line: usize, e: &dyn std::fmt::Display| {
        corrupt(format!("{} line {line}: {e}", path.display()))
    };
    let mut lines = BufReader::new(file).lines();
    let first = lines.next().ok_or_else(|| bad(1, &"empty snapshot"))??;
    let header: LegacySnapshotHeader = serde_json::from_str(&first).map_err(|e| bad(1, &e))?;
    durable.token_ceiling = header.token_ceiling;
    durable.seq_ceilings = header.seq_ceilings;
    for (i, line) in lines.enumerate() {
        let record: UploadRecord = serde_json::from_str(&line?).map_err(|e| bad(i + 2, &e))?;
        durable.records.insert(record.id.clone(), record);
    }
    if durable.records.len() != header.records {
        return Err(corrupt(format!(
            "{}: {} records, its header says {}",
            path.display(),
            durable.records.len(),
            header.records
        )));
    }
    Ok(Some(header.generation))
}

/// What a start recovers.
pub(super) struct Recovered {
    pub durable: Durable,
    pub generation: u64,
    /// Where new frames go: after the last intact frame (a torn tail is cut there).
    pub valid_len: u64,
    /// The torn tail that will be cut, if any.
    pub torn: Option<Fault>,
    pub skipped: Vec<Skipped>,
    pub carried: Vec<CarriedWrite>,
    pub older_carried: Vec<CarriedWrite>,
    pub older_logs: Vec<PathBuf>,
}

/// Replays the snapshot and the log of its generation for a start. Only a torn tail at the
/// end of the log is tolerated (the caller cuts it); any other damage is an error naming the
/// file and the byte offset, and nothing is written.
pub(super) fn recover(dir: &Path) -> io::Result<Recovered> {
    let replay = replay(dir)?;
    if let Some((file, fault)) = first_damage(replay.snapshot.as_ref(), replay.log.as_ref()) {
        let follow = file.frames - fault.frames_before;
        let why = match &fault.kind {
            FaultKind::Damaged(_) if follow > 0 => format!(
                "{follow} intact frame(s) follow it, so it is no torn tail of a crash (a bad \
                 disk, or another process wrote here?)"
            ),
            // Damage with nothing intact after it is a torn tail only at the end of the log.
            FaultKind::Damaged(_) => "a snapshot is written whole, so it has no torn tail".into(),
            FaultKind::Undecodable(_) => "its checksum holds, so it is no torn tail".into(),
            FaultKind::Incomplete(_) => "a snapshot is written whole".into(),
        };
        return Err(corrupt(format!(
            "{}: {} at byte {} ({} bytes); {why}. Nothing was cut; the file is as it was",
            file.path.display(),
            fault.kind,
            fault.offset,
            fault.len,
        )));
    }
    let torn = replay.log.as_ref().and_then(|l| l.torn_tail()).cloned();
    let valid_len = match (&torn, &replay.log) {
        (Some(torn), _) => torn.offset,
        (None, Some(log)) => log.bytes,
        (None, None) => 0,
    };
    Ok(Recovered {
        durable: replay.durable,
        generation: replay.generation,
        valid_len,
        torn,
        skipped: replay.skipped,
        carried: replay.carried,
        older_carried: replay.older_carried,
        older_logs: replay.older_logs,
    })
}

/// A snapshot of `durable` that names log `generation`.
pub(super) fn encode_snapshot(durable: &Durable, generation: u64) -> io::Result<Vec<u8>> {
    let info = SnapshotInfo {
        generation,
        entries: (1 + durable.seq_ceilings.len() + durable.records.len()) as u64,
    };
    let mut buf = Vec::new();
    append_frame(&mut buf, &SnapshotFrame::Begin(info))?;
    append_frame(
        &mut buf,
        &SnapshotFrame::Entry(Box::new(Entry::TokenCeiling(durable.token_ceiling))),
    )?;
    for (id, &ceiling) in &durable.seq_ceilings {
        let entry = Entry::SeqCeiling {
            id: id.clone(),
            ceiling,
        };
        append_frame(&mut buf, &SnapshotFrame::Entry(Box::new(entry)))?;
    }
    for record in durable.records.values() {
        append_frame(
            &mut buf,
            &SnapshotFrame::Entry(Box::new(Entry::Create(record.clone()))),
        )?;
    }
    append_frame(&mut buf, &SnapshotFrame::End(info))?;
    Ok(buf)
}

/// Makes `snapshot` (naming `generation`) the directory's snapshot, with an empty log of
/// that generation: log first, snapshot through a synced temp file and a rename, then the
/// directory synced. Until the rename, the previous snapshot and log stay in force.
pub(super) fn install_snapshot(dir: &Path, snapshot: &[u8], generation: u64) -> io::Result<()> {
    let new_log = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(wal_path(dir, generation))?;
    new_log.sync_all()?;
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(snapshot)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    sync_dir(dir)?;
    match fs::remove_file(dir.join(LEGACY_SNAPSHOT)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Appends `carried` to the log at `path`, synced (salvage keeps them past a damaged log).
pub(super) fn append_carried(path: &Path, carried: &[CarriedWrite]) -> io::Result<()> {
    if carried.is_empty() {
        return Ok(());
    }
    let mut frames = Vec::new();
    for write in carried {
        append_frame(&mut frames, &write.entry())?;
    }
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(&frames)?;
    file.sync_data()
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
    /// Written before the entry, if it is admitted ([`super::carry`]).
    carried: Vec<CarriedWrite>,
    done: oneshot::Sender<Result<(), AppendError>>,
}

/// The writer thread's name, also in its errors.
const WRITER: &str = "coordinator log";

/// Handle to the writer thread; dropping it waits for the thread to finish (see
/// [`GroupCommit`]).
pub(super) struct LogWriter {
    writer: GroupCommit<Request>,
}

impl LogWriter {
    /// Starts the writer thread over a recovered state. `state` is the shared in-memory
    /// state the writer applies entries to once they are durable; `files`, the storage
    /// whose small writes the log carries, if any, and `placed`, the files of the writes the
    /// log already carries that are not known durable.
    pub fn start(
        dir: PathBuf,
        generation: u64,
        valid_len: u64,
        state: Arc<Mutex<Durable>>,
        compact_after: u64,
        files: Option<Arc<dyn CarriedFiles>>,
        placed: Vec<(String, WriteTarget)>,
    ) -> io::Result<Self> {
        let path = wal_path(&dir, generation);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // Cut a torn tail so new frames follow the last good one.
        file.set_len(valid_len)?;
        file.sync_all()?;
        sync_dir(&dir)?;
        let checkpoints = match &files {
            Some(files) => {
                let (queue, compacted) = std::sync::mpsc::channel();
                let (files, dir) = (files.clone(), dir.clone());
                let thread = std::thread::Builder::new()
                    .name("tusk-coord-checkpoint".into())
                    .spawn(move || checkpoint(&*files, &dir, &compacted))?;
                Some(Checkpoints { queue, thread })
            }
            None => None,
        };
        let writer = Writer {
            compact_after,
            dir,
            generation,
            file,
            len: valid_len,
            framed: 0,
            state,
            failed: None,
            files,
            placed,
            checkpoints,
        };
        Ok(Self {
            writer: GroupCommit::start("tusk-coord-log", writer)?,
        })
    }

    /// Appends `entry` if it may follow the state (with every entry before it), and waits
    /// until it is durable and applied.
    pub async fn append(&self, entry: Entry) -> Result<(), AppendError> {
        self.append_carrying(entry, Vec::new()).await
    }

    /// As [`Self::append`], with the frames of `carried` written just before the entry's,
    /// if it is admitted (none otherwise).
    pub async fn append_carrying(
        &self,
        entry: Entry,
        carried: Vec<CarriedWrite>,
    ) -> Result<(), AppendError> {
        let stopped = || AppendError::Io(io::Error::other(WriterStopped(WRITER)));
        let (done, rx) = oneshot::channel();
        let request = Request {
            entry,
            carried,
            done,
        };
        self.writer.send(request, WRITER).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

struct Writer {
    compact_after: u64,
    dir: PathBuf,
    generation: u64,
    file: File,
    len: u64,
    /// Bytes the batch being written adds to the log.
    framed: u64,
    state: Arc<Mutex<Durable>>,
    /// After a failed write the log's tail is unknown; refuse everything from then on
    /// rather than acknowledge changes that might not survive a restart.
    failed: Option<String>,
    /// The storage whose small writes this log carries, if any.
    files: Option<Arc<dyn CarriedFiles>>,
    /// The files of the writes this generation's log carries: made durable before the log
    /// may go.
    placed: Vec<(String, WriteTarget)>,
    /// The thread that makes a compacted generation's files durable, then deletes its log.
    checkpoints: Option<Checkpoints>,
}

struct Checkpoints {
    queue: std::sync::mpsc::Sender<Compacted>,
    thread: std::thread::JoinHandle<()>,
}

impl Drop for Writer {
    /// The checkpoints queued are finished before the writer is gone (and with it the
    /// coordinator's hold on the directory).
    fn drop(&mut self) {
        if let Some(Checkpoints { queue, thread }) = self.checkpoints.take() {
            drop(queue);
            let _ = thread.join();
        }
    }
}

/// A compacted generation's log, and the files placed for the writes it carried.
type Compacted = (PathBuf, Vec<(String, WriteTarget)>);

/// Makes the files placed under each compacted generation durable, then deletes its log.
fn checkpoint(
    files: &dyn CarriedFiles,
    dir: &Path,
    compacted: &std::sync::mpsc::Receiver<Compacted>,
) {
    while let Ok((old_log, placed)) = compacted.recv() {
        let done = files
            .make_durable(&placed)
            .and_then(|()| fs::remove_file(&old_log))
            .and_then(|()| sync_dir(dir));
        if let Err(error) = done {
            // The log stays, and the next start restores its files from it.
            tracing::warn!(%error, log = %old_log.display(), "checkpoint of carried writes failed");
        }
    }
}

impl GroupAppend for Writer {
    type Request = Request;
    /// Per entry, whether it may follow the state; `Err` if nothing of the batch may be
    /// written (the log failed before, or an entry could not be encoded).
    type Verdict = io::Result<Vec<Result<(), AppendError>>>;
    /// Entries are small: a batch is at most a few MiB.
    const MAX_BATCH: usize = 4096;

    fn frame(&mut self, batch: &[Request], frames: &mut Vec<u8>) -> Self::Verdict {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(format!(
                "coordinator log is failed: {reason}"
            )));
        }
        let admitted = self.place_carried(batch, self.admit(batch));
        for (r, admitted) in batch.iter().zip(&admitted) {
            if admitted.is_ok() {
                let framed = r
                    .carried
                    .iter()
                    .try_for_each(|c| append_frame(frames, &c.entry()))
                    .and_then(|()| append_frame(frames, &r.entry));
                if let Err(error) = framed {
                    frames.clear();
                    return Err(error);
                }
            }
        }
        self.framed = frames.len() as u64;
        Ok(admitted)
    }

    fn file(&mut self) -> &mut File {
        &mut self.file
    }

    fn settle(&mut self, batch: Vec<Request>, verdict: Self::Verdict, durable: io::Result<()>) {
        let copy = |e: &io::Error| AppendError::Io(io::Error::new(e.kind(), e.to_string()));
        let admitted = match verdict {
            Ok(admitted) => admitted,
            Err(error) => {
                for r in batch {
                    let _ = r.done.send(Err(copy(&error)));
                }
                return;
            }
        };
        match &durable {
            Err(e) => {
                tracing::error!(error = %e, "coordinator log write failed; refusing further changes");
                self.failed.get_or_insert_with(|| e.to_string());
            }
            Ok(()) => {
                self.len += self.framed;
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                for (r, admitted) in batch.iter().zip(&admitted) {
                    if admitted.is_ok() {
                        if let Err(why) = state.apply(r.entry.clone()) {
                            tracing::error!(%why, "an admitted coordinator entry did not apply");
                        }
                        let carried = r.carried.iter().map(|c| (c.id.clone(), c.target));
                        self.placed.extend(carried);
                    }
                }
            }
        }
        for (r, admitted) in batch.into_iter().zip(admitted) {
            let reply = match (&durable, admitted) {
                (_, Err(refused)) => Err(refused),
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) => Err(copy(e)),
            };
            let _ = r.done.send(reply);
        }
    }

    fn tend(&mut self) {
        if self.failed.is_none() && self.len > self.compact_after {
            if let Err(e) = self.compact() {
                tracing::error!(error = %e, "coordinator snapshot failed; the log keeps growing");
            }
        }
    }
}

impl Writer {
    /// Has the storage write the files of the carried writes of the admitted entries, before
    /// their frames are written, so a commit is never durable before its file exists. An
    /// entry whose files cannot be written is refused, and so is any later entry of the
    /// batch for the same upload (admitted as if it would follow it).
    fn place_carried(
        &self,
        batch: &[Request],
        admitted: Vec<Result<(), Refusal>>,
    ) -> Vec<Result<(), AppendError>> {
        let mut failed: HashMap<&str, String> = HashMap::new();
        batch
            .iter()
            .zip(admitted)
            .map(|(r, admitted)| {
                admitted.map_err(AppendError::Refused)?;
                let id = r.entry.upload_id().unwrap_or_default();
                if let Some(why) = failed.get(id) {
                    return Err(AppendError::Io(io::Error::other(format!(
                        "an earlier change to the upload failed: {why}"
                    ))));
                }
                let placed = r.carried.iter().try_for_each(|c| match &self.files {
                    Some(files) => files.place(&c.id, c.target, &c.data),
                    None => Err(io::Error::other(
                        "the coordinator was opened without a storage to carry writes for",
                    )),
                });
                placed.map_err(|e| {
                    failed.insert(id, e.to_string());
                    AppendError::Io(e)
                })
            })
            .collect()
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

    /// Writes every record into a new snapshot that names the next log generation, then
    /// switches to that log. Entries applied so far are all in the snapshot; entries not yet
    /// written go to the new log.
    fn compact(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        let snapshot = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            encode_snapshot(&state, next)?
        };
        install_snapshot(&self.dir, &snapshot, next)?;
        let old = wal_path(&self.dir, self.generation);
        self.file = OpenOptions::new()
            .append(true)
            .open(wal_path(&self.dir, next))?;
        self.generation = next;
        self.len = 0;
        match &self.checkpoints {
            Some(checkpoints) if !self.placed.is_empty() => {
                let placed = std::mem::take(&mut self.placed);
                if checkpoints.queue.send((old, placed)).is_err() {
                    tracing::warn!("the checkpoint thread is gone; the compacted log stays");
                }
            }
            _ => fs::remove_file(old)?,
        }
        Ok(())
    }
}

/// Logs and snapshots written by hand, for the tests of this module and its siblings.
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
            notice: None,
            expected_digest: None,
            last_commit: None,
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
                notice: None,
                stamp: None,
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

    /// Five uploads, each created and finished by one commit, after a token ceiling.
    pub fn five_uploads() -> Vec<Entry> {
        let mut entries = vec![Entry::TokenCeiling(1 << 20)];
        for i in 0..5u64 {
            let id = format!("upload{i}");
            entries.push(Entry::Create(record(&id, 10 + i)));
            entries.push(commit(&id, 0, 10 + i, 1 + i));
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{commit, five_uploads, record, write_log};
    use super::*;

    fn log_of(dir: &Path) -> PathBuf {
        wal_path(dir, 0)
    }

    fn refusal(dir: &Path) -> String {
        match recover(dir) {
            Ok(r) => panic!(
                "recovered {} records where the start had to be refused",
                r.durable.records.len()
            ),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                e.to_string()
            }
        }
    }

    /// An incomplete last frame, a last frame whose checksum fails, a zero-filled tail:
    /// each is a torn tail, cut where the intact frames end; what came before is all there.
    #[test]
    fn a_torn_tail_is_cut_where_the_intact_frames_end() {
        type Tear = fn(&mut Vec<u8>, (usize, usize));
        let tears: [(&str, Tear); 4] = [
            ("incomplete last frame", |log, _| {
                log.truncate(log.len() - 3);
            }),
            ("incomplete header", |log, (start, _)| {
                log.truncate(start + 5)
            }),
            ("checksum of the last frame", |log, (start, end)| {
                log[(start + end) / 2] ^= 1;
            }),
            ("zero-filled tail", |log, _| {
                log.extend_from_slice(&[0; 4096]);
            }),
        ];
        for (what, tear) in tears {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut log, frames) = write_log(dir.path(), &five_uploads());
            let last = frames[frames.len() - 1];
            let cut = if what == "zero-filled tail" {
                log.len()
            } else {
                last.0
            };
            tear(&mut log, last);
            fs::write(log_of(dir.path()), &log).expect("write");

            let recovered = recover(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(recovered.valid_len, cut as u64, "{what}");
            assert_eq!(recovered.torn.map(|t| t.offset), Some(cut as u64), "{what}");
            let records = &recovered.durable.records;
            assert_eq!(records.len(), 5, "{what}");
            for i in 0..4u64 {
                assert_eq!(records[&format!("upload{i}")].offset, 10 + i, "{what}");
            }
            assert_eq!(recovered.durable.token_ceiling, 1 << 20, "{what}");
        }
    }

    /// One flipped bit in the 2nd of many frames, or in its length: the intact frames after
    /// it make it damage, not a torn tail. Recovery fails naming the file and the byte
    /// offset of the damaged frame.
    #[test]
    fn damage_followed_by_intact_frames_is_refused_naming_file_and_offset() {
        for (what, at) in [("payload", 20), ("length", 2)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut log, frames) = write_log(dir.path(), &five_uploads());
            let (start, _) = frames[1];
            log[start + at] ^= 0x10;
            fs::write(log_of(dir.path()), &log).expect("write");

            let message = refusal(dir.path());
            let path = log_of(dir.path()).display().to_string();
            assert!(
                message.contains(&path) && message.contains(&format!("at byte {start} ")),
                "{what}: the error must name {path} and byte {start}: {message}"
            );
            assert!(message.contains("intact frame"), "{what}: {message}");
        }
    }

    /// A snapshot is written whole: a flipped bit anywhere in it, or a snapshot that ends
    /// early at a frame boundary, is refused naming the snapshot.
    #[test]
    fn a_damaged_or_short_snapshot_is_refused() {
        let mut durable = Durable::default();
        for entry in five_uploads() {
            durable.apply(entry).expect("apply");
        }
        let snapshot = encode_snapshot(&durable, 3).expect("encode");
        let mut frames = Vec::new();
        scan::<SnapshotFrame>(&snapshot, |_, offset| frames.push(offset as usize));
        assert_eq!(frames.len(), 8, "begin, token ceiling, five records, end");

        let dir = tempfile::tempdir().expect("tempdir");
        install_snapshot(dir.path(), &snapshot, 3).expect("install");
        let recovered = recover(dir.path()).expect("an intact snapshot");
        assert_eq!(recovered.generation, 3);
        assert_eq!(recovered.durable.records, durable.records);
        assert_eq!(recovered.durable.token_ceiling, 1 << 20);

        let path = dir.path().join(SNAPSHOT);
        // The last frame (End) damaged: no torn tail in a snapshot.
        let last = frames[7];
        let mut damaged = snapshot.clone();
        damaged[last + 12] ^= 4;
        fs::write(&path, &damaged).expect("write");
        let message = refusal(dir.path());
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&format!("at byte {last} ")),
            "{message}"
        );
        // Whole frames missing: nothing damaged to point at, still refused.
        fs::write(&path, &snapshot[..frames[6]]).expect("write");
        let message = refusal(dir.path());
        assert!(message.contains("incomplete snapshot"), "{message}");
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
        let recovered = recover(dir.path()).expect("recover");
        let record = &recovered.durable.records["shared"];
        assert_eq!(record.offset, 10);
        let tokens: Vec<u64> = record.segments.iter().map(|s| s.target.token).collect();
        assert_eq!(
            tokens,
            [7, 7],
            "the second writer's segment is not the upload's"
        );
        let skipped: Vec<(&str, &Refusal)> = recovered
            .skipped
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

    /// A directory written by the format before frames (a JSON-lines snapshot) still opens.
    #[test]
    fn a_legacy_snapshot_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::from(
            "{\"generation\":2,\"token_ceiling\":99,\"records\":1,\"seq_ceilings\":{\"a\":40}}\n",
        );
        text.push_str(&serde_json::to_string(&record("a", 4)).expect("json"));
        text.push('\n');
        fs::write(dir.path().join(LEGACY_SNAPSHOT), text).expect("write");
        let mut log = Vec::new();
        append_frame(&mut log, &commit("a", 0, 4, 5)).expect("frame");
        fs::write(wal_path(dir.path(), 2), log).expect("write");
        let recovered = recover(dir.path()).expect("recover");
        assert_eq!(recovered.generation, 2);
        assert_eq!(recovered.durable.token_ceiling, 99);
        assert_eq!(recovered.durable.seq_ceilings["a"], 40);
        assert_eq!(recovered.durable.records["a"].offset, 4);
    }
}
