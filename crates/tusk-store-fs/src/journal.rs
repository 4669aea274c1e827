//! Group commit for small writes.
//!
//! A small PATCH body (at most [`SMALL_WRITE`] bytes) would otherwise pay for two
//! synchronous fsyncs of its own (its file and its directory), and on a filesystem without
//! a journal those do not batch across requests. Instead, the body is appended to a shared
//! journal file that one thread syncs once for every body waiting (group commit); then the
//! body's part file is created with the same bytes, unsynced, so reads find it at once.
//!
//! The journal makes the part files durable until they are themselves: a journal is rotated
//! at the latest a checkpoint interval after its first write, a checkpoint thread fsyncs the
//! part files written under the old one and their directories, and deletes it.
//!
//! Each node journals into a directory of its own under `<root>/.journal/`, locked for as
//! long as the node lives (several nodes may share the root). A journal whose directory is
//! unlocked belongs to a node that is gone, and [`Recovery`] replays it: at start, every
//! adoption interval, and at once when a read finds a part file missing or short. Replay
//! compares each part file a journal names with the journal's bytes, not its length (after a
//! power cut a file can keep its length and lose its blocks: zeros), rewrites any that
//! differs, syncs them all, then deletes the journal. It never recreates a file of an upload
//! terminated meanwhile ([`crate::tombstones`]).
//!
//! Frame: `[name len: u16][name: shard/file][data len: u32][data][crc32 of name and data]`;
//! the crc32 vouches for the journal's copy, which replay then compares byte for byte.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::oneshot;
use tusk_core::group_commit::{GroupAppend, GroupCommit, WriterStopped};

use crate::shards::{sync_dir, sync_parts, Shards};
use crate::tombstones::Tombstones;

/// Bodies up to this size go through the journal.
pub(crate) const SMALL_WRITE: usize = 64 << 10;
/// A journal is rotated (and checkpointed) after this many bytes, or after the checkpoint
/// interval.
const ROTATE_BYTES: u64 = 64 << 20;
/// The writer thread's name in errors.
const WRITER: &str = "small-write journal";
/// The directory of the nodes' journal directories, under the root.
const JOURNALS: &str = ".journal";
/// The lock file a node holds in its journal directory for as long as it lives.
const LOCK: &str = "lock";
/// A node creates its directory under this suffix, locks it, then renames it into place,
/// so no other node ever sees a node directory that is not locked by a live owner.
const CLAIMING: &str = ".claiming";
/// A directory left half-claimed by a crash is removed after this long.
const STALE_CLAIM: Duration = Duration::from_secs(60);

struct Request {
    /// The upload (its shard holds the part file) and the part file's name.
    upload: String,
    name: String,
    bytes: Bytes,
    reply: oneshot::Sender<io::Result<()>>,
}

pub(crate) struct Journal {
    writer: GroupCommit<Request>,
    recovery: Arc<Recovery>,
    /// Dropping it stops the adoption thread.
    _stop_adopting: mpsc::Sender<()>,
    /// Held for the life of the process: marks our journal directory as owned.
    _lock: File,
}

fn journal_name(n: u64) -> String {
    format!("{n:016}.journal")
}

/// A node directory's name: 16 hex digits.
fn is_node_dir(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The numbered journals in `dir`, oldest first.
fn journals_in(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut journals = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            journals.push((number, entry.path()));
        }
    }
    journals.sort();
    Ok(journals)
}

fn frame(buf: &mut Vec<u8>, name: &str, data: &[u8]) -> io::Result<()> {
    let name_len = u16::try_from(name.len()).map_err(|_| io::Error::other("name too long"))?;
    let data_len = u32::try_from(data.len()).map_err(|_| io::Error::other("write too large"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(name.as_bytes());
    crc.update(data);
    buf.extend_from_slice(&name_len.to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&data_len.to_le_bytes());
    buf.extend_from_slice(data);
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

/// Bytes a frame of this name and data takes.
fn frame_len(name: &str, data: &[u8]) -> u64 {
    (2 + name.len() + 4 + data.len() + 4) as u64
}

/// The next frame, or None at the end or at a torn or corrupt tail. A length no writer
/// produces is corruption too (and is never allocated).
fn read_frame(reader: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut len2 = [0u8; 2];
    reader.read_exact(&mut len2).ok()?;
    let mut name = vec![0u8; usize::from(u16::from_le_bytes(len2))];
    reader.read_exact(&mut name).ok()?;
    let mut len4 = [0u8; 4];
    reader.read_exact(&mut len4).ok()?;
    let data_len = usize::try_from(u32::from_le_bytes(len4)).ok()?;
    if data_len > SMALL_WRITE {
        return None;
    }
    let mut data = vec![0u8; data_len];
    reader.read_exact(&mut data).ok()?;
    reader.read_exact(&mut len4).ok()?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&name);
    crc.update(&data);
    if crc.finalize() != u32::from_le_bytes(len4) {
        return None;
    }
    Some((String::from_utf8(name).ok()?, data))
}

/// A part file name as the journal stores it: `<shard>/<file>`, nothing else.
fn is_safe_relative(name: &str) -> bool {
    let mut parts = name.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(shard), Some(file), None)
        if !shard.is_empty() && !file.is_empty()
            && ![shard, file].iter().any(|p| p.starts_with('.') || p.contains('\0')))
}

/// Adds the path to an error, so a failed recovery says what it was doing.
fn at<'a>(path: &'a Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Journal {
    /// Recovers the journals of nodes that are gone under `root/.journal`, then starts this
    /// node's writer, and a thread that adopts the journals of nodes that die later, every
    /// `adopt_every`. Small writes stay in the journal at most `checkpoint_after` before their
    /// part files are synced.
    pub fn open(
        root: &Path,
        shards: Arc<Shards>,
        adopt_every: Duration,
        checkpoint_after: Duration,
    ) -> io::Result<Self> {
        let base = root.join(JOURNALS);
        let own = format!("{:016x}", rand::random::<u64>());
        let recovery = Arc::new(Recovery::new(root, &own)?);
        recovery.adopt()?;
        let (dir, lock) = claim(&base, &own)?;
        let (checkpoints, checkpoint_rx) = mpsc::channel::<(PathBuf, Vec<PathBuf>)>();
        std::thread::Builder::new()
            .name("tusk-fs-checkpoint".into())
            .spawn(move || checkpoint(checkpoint_rx))?;
        let writer = Writer::new(
            root.to_path_buf(),
            shards,
            dir,
            checkpoint_after,
            checkpoints,
        )?;
        let writer = GroupCommit::start("tusk-fs-journal", writer)?;
        let (stop_adopting, stopped) = mpsc::channel::<()>();
        let adopter = recovery.clone();
        std::thread::Builder::new()
            .name("tusk-fs-adopt".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(adopt_every)
                {
                    if let Err(error) = adopter.adopt() {
                        tracing::warn!(%error, "adopting the journals of nodes that are gone failed");
                    }
                }
            })?;
        Ok(Self {
            writer,
            recovery,
            _stop_adopting: stop_adopting,
            _lock: lock,
        })
    }

    /// What replays the journals of nodes that are gone (for a read that finds a part file
    /// missing or short) and buries terminated uploads.
    pub fn recovery(&self) -> Arc<Recovery> {
        self.recovery.clone()
    }

    /// Durably writes `bytes` as the part file `name` of `upload` (which must not exist).
    pub async fn write(&self, upload: String, name: String, bytes: Bytes) -> io::Result<()> {
        let (reply, done) = oneshot::channel();
        let request = Request {
            upload,
            name,
            bytes,
            reply,
        };
        self.writer
            .send(request, WRITER)
            .map_err(io::Error::other)?;
        done.await
            .map_err(|_| io::Error::other(WriterStopped(WRITER)))?
    }
}

/// Creates and locks this node's journal directory `base/own`: under a name no other node
/// adopts until it is locked.
fn claim(base: &Path, own: &str) -> io::Result<(PathBuf, File)> {
    let claiming = base.join(format!("{own}{CLAIMING}"));
    fs::create_dir(&claiming).map_err(at(&claiming, "creating"))?;
    let lock = File::create(claiming.join(LOCK)).map_err(at(&claiming, "creating the lock in"))?;
    lock.try_lock()
        .map_err(|e| io::Error::other(format!("locking {}: {e}", claiming.display())))?;
    let dir = base.join(own);
    fs::rename(&claiming, &dir).map_err(at(&dir, "claiming"))?;
    sync_dir(base)?;
    Ok((dir, lock))
}

/// What a replayed frame found.
#[derive(Debug, PartialEq)]
pub(crate) enum Restored {
    /// The part file held the journal's bytes; it is synced now.
    Kept,
    /// The part file differed (zeros, short, long) and was rewritten in place, so every hard
    /// link to it (a concatenation) sees the bytes too.
    Rewritten,
    /// The part file was missing and was created.
    Created,
    /// The part file was missing and was left so: its upload was terminated.
    Absent,
}

/// Whether `file` holds exactly `data`.
fn holds(file: &mut File, data: &[u8]) -> bool {
    if !file.metadata().is_ok_and(|m| m.len() == data.len() as u64) {
        return false;
    }
    let mut content = vec![0u8; data.len()];
    file.read_exact(&mut content).is_ok() && content == data
}

/// Makes the part file at `part` hold exactly `data`, durably (but not its directory entry);
/// a missing one is created only if `create`.
fn restore(part: &Path, data: &[u8], create: bool) -> io::Result<Restored> {
    let (restored, file) = rewrite(part, data, create)?;
    if let Some(file) = file {
        file.sync_data()?;
    }
    Ok(restored)
}

/// Makes the part file at `part` hold exactly `data`, unsynced (a file that differs is
/// rewritten in place, so every hard link to it sees the bytes); a missing one is created
/// only if `create`. Returns what it found, and the file unless it is absent.
pub(crate) fn rewrite(
    part: &Path,
    data: &[u8],
    create: bool,
) -> io::Result<(Restored, Option<File>)> {
    match File::open(part) {
        Ok(mut file) => {
            if holds(&mut file, data) {
                return Ok((Restored::Kept, Some(file)));
            }
            drop(file);
            match OpenOptions::new().write(true).open(part) {
                Ok(mut file) => {
                    file.write_all(data)?;
                    file.set_len(data.len() as u64)?;
                    return Ok((Restored::Rewritten, Some(file)));
                }
                // Removed meanwhile: created below, like a missing one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if !create {
        return Ok((Restored::Absent, None));
    }
    if let Some(shard) = part.parent() {
        fs::create_dir_all(shard)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)?;
    file.write_all(data)?;
    Ok((Restored::Created, Some(file)))
}

/// Replays the journals of nodes that are gone; buries terminated uploads.
pub(crate) struct Recovery {
    root: PathBuf,
    /// `root/.journal`.
    base: PathBuf,
    /// This node's directory name under `base`, never adopted by this node: on NFS, locks
    /// are per process, so trying our own lock would succeed and closing it would drop it.
    own: String,
    tombstones: Tombstones,
    /// One adoption pass at a time in this process (the periodic one, reads that found a
    /// segment missing): a second waits and then finds the work done.
    pass: Mutex<()>,
}

impl Recovery {
    /// Recovery of the journals under `root` for the node whose directory is named `own`.
    fn new(root: &Path, own: &str) -> io::Result<Self> {
        let base = root.join(JOURNALS);
        fs::create_dir_all(&base)?;
        Ok(Self {
            root: root.to_path_buf(),
            base,
            own: own.to_string(),
            tombstones: Tombstones::open(root)?,
            pass: Mutex::new(()),
        })
    }

    /// Recovers every journal directory whose owner is gone (its lock is free), then removes
    /// the tombstones no journal needs any more; returns how many directories it recovered.
    pub fn adopt(&self) -> io::Result<usize> {
        let _pass = self.pass.lock().unwrap_or_else(PoisonError::into_inner);
        let mut adopted = 0;
        let mut failed = None;
        for entry in fs::read_dir(&self.base).map_err(at(&self.base, "listing"))? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name == self.own {
                continue;
            }
            let dir = entry.path();
            // One directory that cannot be recovered does not keep the others waiting.
            let result = if is_node_dir(name) {
                self.adopt_dir(&dir).map(|done| {
                    if done {
                        tracing::info!(dir = %dir.display(), "recovered the journal of a node that is gone");
                        adopted += 1;
                    }
                })
            } else if name.ends_with(CLAIMING) {
                self.remove_stale_claim(&dir)
            } else {
                Ok(())
            };
            if let Err(error) = result {
                failed.get_or_insert(error);
            }
        }
        if adopted > 0 {
            sync_dir(&self.base)?;
        }
        if let Some(error) = failed {
            return Err(error);
        }
        self.tombstones
            .collect()
            .map_err(at(&self.root.join(crate::tombstones::GONE), "collecting"))?;
        Ok(adopted)
    }

    /// Recovers `dir` if its owner is gone; false if a live node holds it (or it is gone).
    fn adopt_dir(&self, dir: &Path) -> io::Result<bool> {
        let lock_path = dir.join(LOCK);
        // Never created here: a directory without its lock is one another node finished
        // recovering (it removes the lock last but one), or one a crash left empty.
        let lock = match OpenOptions::new().write(true).open(&lock_path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remove_empty_dir(dir);
                return Ok(false);
            }
            Err(e) => return Err(at(&lock_path, "opening")(e)),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(false),
            Err(fs::TryLockError::Error(e)) => return Err(at(&lock_path, "locking")(e)),
        }
        self.replay_dir(dir)?;
        match fs::remove_file(&lock_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(at(&lock_path, "removing")(e))
            }
            _ => {}
        }
        remove_empty_dir(dir);
        Ok(true)
    }

    /// Removes a directory a node crashed while claiming (it holds no journal yet).
    fn remove_stale_claim(&self, dir: &Path) -> io::Result<()> {
        let old = fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > STALE_CLAIM);
        if !old {
            return Ok(());
        }
        let lock_path = dir.join(LOCK);
        if let Ok(lock) = OpenOptions::new().write(true).open(&lock_path) {
            if lock.try_lock().is_err() {
                return Ok(());
            }
            fs::remove_file(&lock_path).ok();
        }
        remove_empty_dir(dir);
        Ok(())
    }

    /// Makes every part file named in the journals of `dir` whole and durable, oldest journal
    /// first, deleting each once done.
    fn replay_dir(&self, dir: &Path) -> io::Result<()> {
        let journals = match journals_in(dir) {
            Ok(journals) => journals,
            // Recovered by another node between our open and our lock.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(at(dir, "listing")(e)),
        };
        for (_, path) in &journals {
            self.replay(path).map_err(at(path, "recovering"))?;
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match sync_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Replays one journal file.
    fn replay(&self, path: &Path) -> io::Result<()> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let buried = self.tombstones.load()?;
        let mut dirs = BTreeSet::new();
        let mut replayed = 0u64;
        while let Some((name, data)) = read_frame(&mut reader) {
            replayed += frame_len(&name, &data);
            if !is_safe_relative(&name) {
                tracing::warn!(journal = %path.display(), %name, "journal frame with an unsafe name skipped");
                continue;
            }
            let Some((upload, target)) = name
                .split_once('/')
                .and_then(|(_, f)| crate::parse_file_name(f))
            else {
                tracing::warn!(journal = %path.display(), %name, "journal frame naming no part file skipped");
                continue;
            };
            // A file that exists is always restored (if its upload is being terminated, it
            // goes anyway); a missing one is not recreated if its upload was terminated.
            let is_buried = |newest: Option<u64>| newest.is_some_and(|t| target.token <= t);
            let create = !is_buried(buried.get(upload).copied());
            let part = self.root.join(&name);
            let restored = restore(&part, &data, create).map_err(at(&part, "restoring"))?;
            // A termination may have removed the file after we read the tombstones: it buries
            // before it removes, so a tombstone now is seen, and what we created goes again.
            if restored == Restored::Created && is_buried(self.tombstones.buried(upload)?) {
                match fs::remove_file(&part) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            if let Some(shard) = part.parent() {
                dirs.insert(shard.to_path_buf());
            }
        }
        if replayed < len {
            tracing::warn!(
                journal = %path.display(),
                replayed,
                ignored = len - replayed,
                "journal replay stopped at a torn or corrupt frame"
            );
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Durably records, before `upload`'s files are removed, that no recovery may bring back
    /// those written up to `token`. Free when every journal is empty: none can name them.
    pub fn bury(&self, upload: &str, token: u64) -> io::Result<()> {
        let journals = self.non_empty_journals()?;
        if journals.is_empty() {
            return Ok(());
        }
        self.tombstones.bury(upload, token, &journals)
    }

    /// Every journal, of every node, that holds a frame, relative to the root. Each is opened
    /// to learn its size: on NFS that revalidates what the client cached (close-to-open).
    fn non_empty_journals(&self) -> io::Result<Vec<String>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.base)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(node) = file_name.to_str().filter(|n| is_node_dir(n)) else {
                continue;
            };
            let journals = match journals_in(&entry.path()) {
                Ok(journals) => journals,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (number, path) in journals {
                let len = match File::open(&path).and_then(|f| f.metadata()) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if len > 0 {
                    found.push(format!("{JOURNALS}/{node}/{}", journal_name(number)));
                }
            }
        }
        Ok(found)
    }
}

/// Removes `dir` if it is empty; anything else (not empty, already gone) is left as it is.
fn remove_empty_dir(dir: &Path) {
    if let Err(error) = fs::remove_dir(dir) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::debug!(%error, dir = %dir.display(), "journal directory left in place");
        }
    }
}

struct Writer {
    root: PathBuf,
    shards: Arc<Shards>,
    dir: PathBuf,
    number: u64,
    file: File,
    /// When the current journal got its first frame (None while it is empty).
    first_write: Option<Instant>,
    checkpoint_after: Duration,
    len: u64,
    /// Bytes the batch being written adds to the journal.
    framed: u64,
    /// A write to the current journal failed, so it may end in a broken frame, where replay
    /// stops: nothing more goes into it, and it is rotated as soon as possible.
    torn: bool,
    /// Part files written under the current journal, to be synced at its checkpoint.
    written: Vec<PathBuf>,
    checkpoints: mpsc::Sender<(PathBuf, Vec<PathBuf>)>,
}

impl GroupAppend for Writer {
    type Request = Request;
    /// `Err` if the batch could not be framed (its shard directory could not be made).
    type Verdict = io::Result<()>;
    /// At most 64 MiB of frames in memory.
    const MAX_BATCH: usize = 1024;

    fn frame(&mut self, batch: &[Request], frames: &mut Vec<u8>) -> io::Result<()> {
        if self.torn {
            return Err(io::Error::other(
                "the small-write journal could not be rotated after a failed write",
            ));
        }
        let framed = (|| {
            for r in batch {
                let dir = self.shards.ensure(&r.upload)?;
                let shard = dir.strip_prefix(&self.root).map_err(io::Error::other)?;
                frame(frames, &format!("{}/{}", shard.display(), r.name), &r.bytes)?;
            }
            Ok(())
        })();
        if framed.is_err() {
            frames.clear();
        }
        self.framed = frames.len() as u64;
        framed
    }

    fn file(&mut self) -> &mut File {
        &mut self.file
    }

    fn settle(&mut self, batch: Vec<Request>, framed: io::Result<()>, durable: io::Result<()>) {
        if let Err(error) = &durable {
            tracing::error!(%error, "writing the small-write journal failed; starting a new one");
            self.torn = true;
        }
        let appended = framed.and(durable);
        if appended.is_ok() {
            if self.len == 0 {
                self.first_write = Some(Instant::now());
            }
            self.len += self.framed;
        }
        for request in batch {
            let result = match &appended {
                Ok(()) => self.create_part(&request),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = request.reply.send(result);
        }
    }

    /// Wakes up when the current journal is due for its checkpoint.
    fn tend_within(&self) -> Option<Duration> {
        Some(self.first_write.map_or(self.checkpoint_after, |first| {
            self.checkpoint_after.saturating_sub(first.elapsed())
        }))
    }

    fn tend(&mut self) {
        self.rotate_if_due();
    }
}

impl Writer {
    fn new(
        root: PathBuf,
        shards: Arc<Shards>,
        dir: PathBuf,
        checkpoint_after: Duration,
        checkpoints: mpsc::Sender<(PathBuf, Vec<PathBuf>)>,
    ) -> io::Result<Self> {
        let file = Self::create(&dir, 0)?;
        Ok(Self {
            root,
            shards,
            dir,
            number: 0,
            file,
            first_write: None,
            checkpoint_after,
            len: 0,
            framed: 0,
            torn: false,
            written: Vec::new(),
            checkpoints,
        })
    }

    fn create(dir: &Path, number: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join(journal_name(number)))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// The part file itself, unsynced: the journal already holds its bytes durably.
    fn create_part(&mut self, request: &Request) -> io::Result<()> {
        let path = self.shards.dir(&request.upload)?.join(&request.name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&request.bytes)?;
        self.written.push(path);
        Ok(())
    }

    /// Starts a new journal and hands the current one to the checkpoint thread, once it holds
    /// too many bytes, its first frame is a checkpoint interval old, or a write to it failed.
    fn rotate_if_due(&mut self) {
        let due = self.torn
            || self.len >= ROTATE_BYTES
            || self
                .first_write
                .is_some_and(|first| first.elapsed() >= self.checkpoint_after);
        if !due {
            return;
        }
        match Self::create(&self.dir, self.number + 1) {
            Ok(file) => {
                let old = self.dir.join(journal_name(self.number));
                self.number += 1;
                self.file = file;
                self.first_write = None;
                self.len = 0;
                self.torn = false;
                let _ = self
                    .checkpoints
                    .send((old, std::mem::take(&mut self.written)));
            }
            Err(error) => tracing::warn!(%error, "rotating the small-write journal failed"),
        }
    }
}

/// Syncs the part files a journal covered, then deletes the journal.
fn checkpoint(rx: mpsc::Receiver<(PathBuf, Vec<PathBuf>)>) {
    while let Ok((journal, parts)) = rx.recv() {
        let result = sync_parts(parts).and_then(|()| fs::remove_file(&journal));
        if let Err(error) = result {
            // The journal stays; whoever adopts it once this node is gone recovers its files.
            tracing::warn!(%error, journal = %journal.display(), "checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the disk refused may have left part of a frame in the journal, and replay
    /// stops at the first broken frame: nothing acknowledged may follow it there.
    #[test]
    fn after_a_failed_write_the_next_frames_go_to_a_new_journal() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("node");
        fs::create_dir_all(&dir).expect("node dir");
        let shards = Shards::open(root.path()).expect("shards");
        let (checkpoints, _checkpointed) = mpsc::channel();
        let mut writer = Writer::new(
            root.path().to_path_buf(),
            shards,
            dir.clone(),
            Duration::from_secs(3600),
            checkpoints,
        )
        .expect("writer");
        let request = |name: &str| {
            let (reply, answer) = oneshot::channel();
            let request = Request {
                upload: "ABCDEFGH".into(),
                name: name.into(),
                bytes: Bytes::from_static(b"hello"),
                reply,
            };
            (request, answer)
        };
        // The disk is full: the write fails.
        writer.file = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let (first, answer) = request("ABCDEFGH.1-0.part");
        let mut frames = Vec::new();
        let verdict = writer.frame(std::slice::from_ref(&first), &mut frames);
        let durable = writer.file().write_all(&frames);
        assert!(durable.is_err(), "/dev/full refuses writes");
        writer.settle(vec![first], verdict, durable);
        writer.tend();
        assert!(
            answer.blocking_recv().expect("answered").is_err(),
            "the failed write is refused"
        );
        assert_eq!(writer.number, 1, "a new journal follows a failed write");
        let (second, answer) = request("ABCDEFGH.1-1.part");
        let mut frames = Vec::new();
        let verdict = writer.frame(std::slice::from_ref(&second), &mut frames);
        let durable = writer.file().write_all(&frames);
        writer.settle(vec![second], verdict, durable);
        answer.blocking_recv().expect("answered").expect("written");
        let replayed = fs::read(dir.join(journal_name(1))).expect("new journal");
        assert_eq!(
            read_frame(&mut &replayed[..]).map(|(name, _)| name),
            Some("AB/ABCDEFGH.1-1.part".to_string())
        );
    }

    #[test]
    fn frames_round_trip_and_torn_tails_stop_replay() {
        let mut buf = Vec::new();
        frame(&mut buf, "AB/x.part", b"hello").expect("frame");
        frame(&mut buf, "AB/y.part", b"world").expect("frame");
        assert_eq!(frame_len("AB/x.part", b"hello"), buf.len() as u64 / 2);
        let whole = buf.len();
        buf.truncate(whole - 2);
        let mut reader = &buf[..];
        assert_eq!(
            read_frame(&mut reader),
            Some(("AB/x.part".into(), b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut reader), None);
        assert!(is_safe_relative("AB/x.part"));
        assert!(!is_safe_relative("../x"));
        assert!(!is_safe_relative("AB/../x"));
        assert!(!is_safe_relative("/etc/passwd"));
    }

    #[test]
    fn a_frame_longer_than_any_write_is_corruption_never_an_allocation() {
        // Well formed, checksum and all, but longer than a journaled write can be.
        let mut buf = Vec::new();
        frame(&mut buf, "AB/x.part", &vec![7u8; SMALL_WRITE + 1]).expect("frame");
        assert_eq!(read_frame(&mut &buf[..]), None);
        // A length of 4 GiB is refused before anything is allocated for it.
        let mut buf = Vec::new();
        buf.extend_from_slice(&9u16.to_le_bytes());
        buf.extend_from_slice(b"AB/x.part");
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_frame(&mut &buf[..]), None);
    }

    const UP: &str = "ABcdefghijklmnopqrstuv";

    /// A part file name of `UP` in its shard, as the journal stores it.
    fn part(token: u64, seq: u32) -> String {
        let name = crate::file_name(UP, tusk_core::WriteTarget { token, seq });
        format!("AB/{name}")
    }

    /// A dead node's directory under `root` holding one journal of `frames`.
    fn dead_journal(root: &Path, frames: &[(&str, &[u8])]) -> PathBuf {
        let dir = root.join(JOURNALS).join("00000000000000de");
        fs::create_dir_all(&dir).expect("journal dir");
        File::create(dir.join(LOCK)).expect("lock");
        let mut buf = Vec::new();
        for (name, data) in frames {
            frame(&mut buf, name, data).expect("frame");
        }
        fs::write(dir.join(journal_name(3)), &buf).expect("journal");
        dir
    }

    #[test]
    fn replay_compares_content_and_rewrites_what_differs() {
        let root = tempfile::tempdir().expect("tempdir");
        let shard = root.path().join("AB");
        fs::create_dir_all(&shard).expect("shard");
        let (zeroed, short, long, kept, lost) =
            (part(1, 0), part(1, 1), part(1, 2), part(1, 3), part(1, 4));
        let frames: [(&str, &[u8]); 5] = [
            (&zeroed, b"zeroed by a power cut"),
            (&short, b"cut short"),
            (&long, b"too long"),
            (&kept, b"intact"),
            (&lost, b"never reached the disk"),
        ];
        // The same lengths but lost blocks (zeros), a short file, a long one, a good one.
        fs::write(root.path().join(&zeroed), [0u8; 21]).expect("zeroed");
        fs::write(root.path().join(&short), b"cut").expect("short");
        fs::write(root.path().join(&long), b"too long, really").expect("long");
        fs::write(root.path().join(&kept), b"intact").expect("kept");
        // A hard link (a concatenation) sees the rewritten bytes too.
        let linked = root.path().join("AB/linked.part");
        fs::hard_link(root.path().join(&zeroed), &linked).expect("link");
        let dir = dead_journal(root.path(), &frames);
        let recovery = Recovery::new(root.path(), "00000000000000aa").expect("recovery");
        assert_eq!(recovery.adopt().expect("adopt"), 1);
        for (name, data) in frames {
            assert_eq!(
                fs::read(root.path().join(name)).expect("part"),
                data,
                "{name}"
            );
        }
        assert_eq!(fs::read(linked).expect("link"), b"zeroed by a power cut");
        assert!(!dir.exists(), "the dead node's directory was not removed");
    }

    #[test]
    fn replay_never_recreates_a_file_of_a_terminated_upload() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("AB")).expect("shard");
        let (before, still_there, after) = (part(4, 0), part(5, 1), part(6, 2));
        let frames: [(&str, &[u8]); 3] = [
            (&before, b"terminated"),
            (&still_there, b"terminated, not removed yet"),
            (&after, b"written after a re-creation"),
        ];
        let dir = dead_journal(root.path(), &frames);
        fs::write(root.path().join(&still_there), [0u8; 27]).expect("zeroed");
        let recovery = Recovery::new(root.path(), "00000000000000aa").expect("recovery");
        // The upload was terminated under token 5 while the dead node's journal named it.
        recovery.bury(UP, 5).expect("bury");
        assert_eq!(recovery.adopt().expect("adopt"), 1);
        assert!(
            !root.path().join(&before).exists(),
            "a terminated upload's file was recreated"
        );
        assert_eq!(
            fs::read(root.path().join(&still_there)).expect("part"),
            b"terminated, not removed yet"
        );
        assert_eq!(
            fs::read(root.path().join(&after)).expect("part"),
            b"written after a re-creation"
        );
        assert!(!dir.exists());
        // The journal it waited for is gone: so is the tombstone, at the next pass.
        assert!(recovery.tombstones.load().expect("load").is_empty());
    }

    #[test]
    fn a_live_nodes_journal_is_left_alone_and_a_dead_ones_is_recovered() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join(JOURNALS);
        fs::create_dir_all(root.path().join("AB")).expect("shard");
        let name = part(1, 0);
        let mut buf = Vec::new();
        frame(&mut buf, &name, b"from a dead node").expect("frame");
        let (live, dead) = ("000000000000000a", "000000000000000b");
        for owner in [live, dead] {
            fs::create_dir_all(base.join(owner)).expect("dir");
            File::create(base.join(owner).join(LOCK)).expect("lock file");
            fs::write(base.join(owner).join(journal_name(0)), &buf).expect("journal");
        }
        let held = File::open(base.join(live).join(LOCK)).expect("lock");
        held.try_lock().expect("locked");
        let shards = Shards::open(root.path()).expect("shards");
        let day = Duration::from_secs(86_400);
        let _journal = Journal::open(root.path(), shards, day, day).expect("open");
        assert!(
            base.join(live).join(journal_name(0)).exists(),
            "a live journal was touched"
        );
        assert!(
            !base.join(dead).exists(),
            "the dead node's journal was not recovered"
        );
        let part = fs::read(root.path().join(&name)).expect("part");
        assert_eq!(part, b"from a dead node");
    }
}
