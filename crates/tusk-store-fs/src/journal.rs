//! Group commit for small writes.
//!
//! A small PATCH body (at most [`SMALL_WRITE`] bytes) would otherwise pay for two
//! synchronous fsyncs of its own (its file and its directory), and on a filesystem without
//! a journal those do not batch across requests. Instead, the body is appended to a shared
//! journal file that one thread syncs once for every body waiting (group commit); then the
//! body's part file is created with the same bytes, unsynced, so reads find it at once.
//!
//! The journal makes the part files durable until they are themselves: every few seconds
//! the journal is rotated, a checkpoint thread fsyncs the part files written under the old
//! one and their directories, and deletes it. After a crash, [`Journal::recover`] rewrites
//! every part file a remaining journal names that is missing or short, then deletes it.
//!
//! Frame: `[name len: u16][name: shard/file][data len: u32][data][crc32 of name and data]`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use std::sync::Arc;

use crate::shards::{sync_dir, Shards};

/// Bodies up to this size go through the journal.
pub(crate) const SMALL_WRITE: usize = 64 << 10;
/// A journal is rotated (and checkpointed) after this long or this many bytes.
const ROTATE_AFTER: Duration = Duration::from_secs(2);
const ROTATE_BYTES: u64 = 64 << 20;
/// Most writes one group commit takes.
const MAX_BATCH: usize = 1024;

struct Request {
    /// The upload (its shard holds the part file) and the part file's name.
    upload: String,
    name: String,
    bytes: Bytes,
    reply: oneshot::Sender<io::Result<()>>,
}

pub(crate) struct Journal {
    requests: mpsc::Sender<Request>,
    /// Held for the life of the process: marks our journal directory as owned.
    _lock: File,
}

fn journal_name(n: u64) -> String {
    format!("{n:016}.journal")
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

/// The next frame, or None at the end or at a torn or corrupt tail.
fn read_frame(reader: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut len2 = [0u8; 2];
    reader.read_exact(&mut len2).ok()?;
    let mut name = vec![0u8; usize::from(u16::from_le_bytes(len2))];
    reader.read_exact(&mut name).ok()?;
    let mut len4 = [0u8; 4];
    reader.read_exact(&mut len4).ok()?;
    let mut data = vec![0u8; u32::from_le_bytes(len4) as usize];
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

impl Journal {
    /// Replays journals left by a crash under `root/.journal`, then starts the writer.
    pub fn open(root: &Path, shards: Arc<Shards>) -> io::Result<Self> {
        let base = root.join(".journal");
        fs::create_dir_all(&base)?;
        Self::recover_orphans(root, &base)?;
        // Our own directory, locked for as long as this process lives: several nodes may
        // share the root, and a locked directory is never touched by another node.
        let dir = base.join(format!("{:016x}", rand::random::<u64>()));
        fs::create_dir(&dir)?;
        let lock = File::create(dir.join("lock"))?;
        lock.try_lock().map_err(io::Error::other)?;
        sync_dir(&base)?;
        let (requests, rx) = mpsc::channel::<Request>();
        let (checkpoints, checkpoint_rx) = mpsc::channel::<(PathBuf, Vec<PathBuf>)>();
        std::thread::Builder::new()
            .name("tusk-fs-checkpoint".into())
            .spawn(move || checkpoint(checkpoint_rx))?;
        let mut writer = Writer::new(root.to_path_buf(), shards, dir, 0, checkpoints)?;
        std::thread::Builder::new()
            .name("tusk-fs-journal".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            requests,
            _lock: lock,
        })
    }

    /// Recovers the journal directories whose owner is gone (their lock is free).
    fn recover_orphans(root: &Path, base: &Path) -> io::Result<()> {
        for entry in fs::read_dir(base)? {
            let dir = entry?.path();
            if !dir.is_dir() {
                continue;
            }
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))?;
            if lock.try_lock().is_err() {
                continue; // a live node owns it
            }
            Self::recover(root, &dir)?;
            fs::remove_file(dir.join("lock"))?;
            fs::remove_dir(&dir)?;
        }
        sync_dir(base)
    }

    /// Makes every part file named in a leftover journal whole and durable; returns the
    /// number for the next journal.
    fn recover(root: &Path, dir: &Path) -> io::Result<u64> {
        let mut journals: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n = name.strip_suffix(".journal")?.parse::<u64>().ok()?;
                Some((n, e.path()))
            })
            .collect();
        journals.sort();
        for (_, path) in &journals {
            let mut reader = BufReader::new(File::open(path)?);
            let mut touched = Vec::new();
            while let Some((name, data)) = read_frame(&mut reader) {
                if !is_safe_relative(&name) {
                    continue;
                }
                let part = root.join(&name);
                let whole = fs::metadata(&part).is_ok_and(|m| m.len() >= data.len() as u64);
                if !whole {
                    if let Some(shard) = part.parent() {
                        fs::create_dir_all(shard)?;
                    }
                    let mut file = File::create(&part)?;
                    file.write_all(&data)?;
                    file.sync_all()?;
                    touched.push(part);
                }
            }
            for part in &touched {
                if let Some(shard) = part.parent() {
                    sync_dir(shard)?;
                }
            }
            fs::remove_file(path)?;
        }
        sync_dir(dir)?;
        Ok(journals.last().map_or(0, |(n, _)| n + 1))
    }

    /// Durably writes `bytes` as the part file `name` of `upload` (which must not exist).
    pub async fn write(&self, upload: String, name: String, bytes: Bytes) -> io::Result<()> {
        let (reply, done) = oneshot::channel();
        self.requests
            .send(Request {
                upload,
                name,
                bytes,
                reply,
            })
            .map_err(|_| io::Error::other("journal writer stopped"))?;
        done.await
            .map_err(|_| io::Error::other("journal writer stopped"))?
    }
}

struct Writer {
    root: PathBuf,
    shards: Arc<Shards>,
    dir: PathBuf,
    number: u64,
    file: File,
    opened: Instant,
    len: u64,
    /// Part files written under the current journal, to be synced at its checkpoint.
    written: Vec<PathBuf>,
    checkpoints: mpsc::Sender<(PathBuf, Vec<PathBuf>)>,
}

impl Writer {
    fn new(
        root: PathBuf,
        shards: Arc<Shards>,
        dir: PathBuf,
        number: u64,
        checkpoints: mpsc::Sender<(PathBuf, Vec<PathBuf>)>,
    ) -> io::Result<Self> {
        let file = Self::create(&dir, number)?;
        Ok(Self {
            root,
            shards,
            dir,
            number,
            file,
            opened: Instant::now(),
            len: 0,
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

    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(ROTATE_AFTER) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.rotate_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(MAX_BATCH));
            let appended = self.append(&batch);
            for request in batch {
                let result = match &appended {
                    Ok(()) => self.create_part(&request),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                let _ = request.reply.send(result);
            }
            self.rotate_if_due();
        }
    }

    fn append(&mut self, batch: &[Request]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in batch {
            let dir = self.shards.ensure(&r.upload)?;
            let shard = dir.strip_prefix(&self.root).map_err(io::Error::other)?;
            frame(
                &mut buf,
                &format!("{}/{}", shard.display(), r.name),
                &r.bytes,
            )?;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
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

    fn rotate_if_due(&mut self) {
        let due =
            self.len >= ROTATE_BYTES || (self.len > 0 && self.opened.elapsed() >= ROTATE_AFTER);
        if !due {
            return;
        }
        match Self::create(&self.dir, self.number + 1) {
            Ok(file) => {
                let old = self.dir.join(journal_name(self.number));
                self.number += 1;
                self.file = file;
                self.opened = Instant::now();
                self.len = 0;
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
        let result = (|| -> io::Result<()> {
            let mut dirs = std::collections::BTreeSet::new();
            for part in &parts {
                match File::open(part) {
                    Ok(f) => f.sync_data()?,
                    // Discarded or deleted since: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                if let Some(dir) = part.parent() {
                    dirs.insert(dir.to_path_buf());
                }
            }
            for dir in dirs {
                sync_dir(&dir)?;
            }
            fs::remove_file(&journal)
        })();
        if let Err(error) = result {
            // The journal stays; recovery at the next start makes its files durable.
            tracing::warn!(%error, journal = %journal.display(), "checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_torn_tails_stop_replay() {
        let mut buf = Vec::new();
        frame(&mut buf, "AB/x.part", b"hello").expect("frame");
        frame(&mut buf, "AB/y.part", b"world").expect("frame");
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
    fn recovery_rewrites_missing_part_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join(".journal");
        fs::create_dir_all(root.path().join("AB")).expect("shard");
        fs::create_dir_all(&dir).expect("journal dir");
        let mut buf = Vec::new();
        frame(&mut buf, "AB/lost.part", b"acknowledged").expect("frame");
        fs::write(dir.join(journal_name(7)), &buf).expect("journal");
        assert_eq!(Journal::recover(root.path(), &dir).expect("recover"), 8);
        assert_eq!(
            fs::read(root.path().join("AB/lost.part")).expect("part"),
            b"acknowledged"
        );
        assert!(
            fs::read_dir(&dir).expect("dir").next().is_none(),
            "journal removed"
        );
    }

    #[test]
    fn a_live_nodes_journal_is_left_alone_and_a_dead_ones_is_recovered() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join(".journal");
        fs::create_dir_all(root.path().join("AB")).expect("shard");
        let mut buf = Vec::new();
        frame(&mut buf, "AB/dead.part", b"from a dead node").expect("frame");
        for owner in ["live", "dead"] {
            fs::create_dir_all(base.join(owner)).expect("dir");
            fs::write(base.join(owner).join(journal_name(0)), &buf).expect("journal");
        }
        let live = File::create(base.join("live/lock")).expect("lock");
        live.try_lock().expect("locked");
        let shards = Shards::open(root.path()).expect("shards");
        let _journal = Journal::open(root.path(), shards).expect("open");
        assert!(
            base.join("live").join(journal_name(0)).exists(),
            "a live journal was touched"
        );
        assert!(
            !base.join("dead").exists(),
            "the dead node's journal was not recovered"
        );
        let part = fs::read(root.path().join("AB/dead.part")).expect("part");
        assert_eq!(part, b"from a dead node");
    }
}
