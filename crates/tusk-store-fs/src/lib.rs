//! Tusk storage on a local or shared filesystem.
//!
//! Layout: `<root>/<shard>/<upload id>.<token>-<seq>.part`, one file per write target, where
//! the shard is the ID's first two characters (4096 directories at most). Shards, unlike a
//! directory per upload, mean a new upload costs no mkdir and no extra directory fsync: a
//! write syncs its file and the shard directory, nothing else. A target file
//! is created with `O_EXCL` and never modified after its write is synced, so a writer that
//! lost its lease (stamped with an older token) can never touch a file another writer
//! committed, even on a shared volume. Upload IDs are validated by the protocol layer to be
//! single safe path components before they get here. Small writes go through a journal
//! (see `journal.rs`), whose recovery restores exactly the acknowledged bytes; beside the
//! embedded coordinator, through its log instead (see `part_files.rs`).
//!
//! Every write makes a file, so past [`tusk_core::fold::MOST_PIECES`] small files (under 1
//! MiB) at the end a write first copies them into its own (its commit replaces them; the
//! engine then discards them). A download that had not opened them yet reloads the record
//! and goes on.

mod journal;
mod part_files;
mod shards;
mod tombstones;
mod window;

pub use part_files::PartFiles;

use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use shards::{sync_dir, Shards};
use tusk_core::embedded::Carrier;
use tusk_core::fold::pieces_to_fold;
use tusk_core::{
    ByteStream, Chunks, Concatenation, Lease, Segment, Storage, StorageError, Stored, UploadRecord,
    WriteContext, WriteTarget,
};
use window::{Window, WindowBudget};

/// Files at least this big are never folded: copying them again would cost more than the
/// file does (a long upload's progress commits leave a file per 64 MiB; clients often send
/// chunks of 5 MiB or more, each a file), and their count is bounded by the bytes, as S3's
/// parts are. It also bounds what one write copies: 16 files under it.
const FOLD_BELOW: u64 = 1 << 20;

/// How many of the upload's last files a write folds into its own: the fold rule applied to
/// the trailing run of small files. The body's length is not known before it streams, so it
/// counts as empty.
fn files_to_fold(segments: &[Segment]) -> usize {
    let small = segments
        .iter()
        .rev()
        .take_while(|s| s.len < FOLD_BELOW)
        .count();
    pieces_to_fold(&segments[segments.len() - small..], 0)
}

/// Size of the reads that stream a download.
const READ_CHUNK: usize = 256 << 10;

/// How an [`FsStorage`] runs.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// The most bytes a body gathers before one write to disk (what a body streaming alone
    /// gathers). At least 4 KiB. Default 1 MiB.
    pub write_window: usize,
    /// The memory the bodies streaming to disk hold together: with N streaming, each writes
    /// in windows of a third of `write_buffer / N` (the one filling, the one queued to its
    /// writer thread, the one being written), at most `write_window` and at least 64 KiB.
    /// Default 16 MiB.
    pub write_buffer: usize,
    /// How often the storage looks for the journal of a node that is gone (its lock is free)
    /// under a shared root and recovers it; a read that finds a part file missing or short
    /// looks at once. `tusk` passes `uploads.sweep_interval`. Default 60s.
    pub adopt_interval: Duration,
    /// Longest a small write's bytes are durable in the journal only, before a checkpoint
    /// syncs its part file and deletes the journal. Default 2s.
    pub checkpoint_interval: Duration,
    /// The embedded coordinator's log, when it carries the small writes instead of the
    /// journal (opened with this root's [`PartFiles`]). Default none.
    pub carrier: Option<Carrier>,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            write_window: 1 << 20,
            write_buffer: 16 << 20,
            adopt_interval: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(2),
            carrier: None,
        }
    }
}

pub struct FsStorage {
    shards: Arc<Shards>,
    journal: journal::Journal,
    /// See [`FsOptions::carrier`].
    carrier: Option<Carrier>,
    /// Sizes the windows of bodies streaming to disk; see [`FsOptions::write_buffer`].
    windows: WindowBudget,
}

impl FsStorage {
    /// Storage under `root`, which is created if missing, with the default options but
    /// `write_window`.
    pub fn new(root: impl Into<PathBuf>, write_window: usize) -> io::Result<Self> {
        Self::with_options(
            root,
            FsOptions {
                write_window,
                ..FsOptions::default()
            },
        )
    }

    /// Storage under `root`, which is created if missing. Recovers, before it returns, the
    /// journals of nodes sharing the root that are gone.
    pub fn with_options(root: impl Into<PathBuf>, options: FsOptions) -> io::Result<Self> {
        let files = PartFiles::open(&root.into())?;
        Self::on(&files, options)
    }

    /// Storage of `files` (what a carrying coordinator log was opened with), as
    /// [`Self::with_options`].
    pub fn on(files: &PartFiles, options: FsOptions) -> io::Result<Self> {
        let shards = files.shards().clone();
        Ok(Self {
            journal: journal::Journal::open(
                shards.root(),
                shards.clone(),
                options.adopt_interval,
                options.checkpoint_interval,
            )?,
            shards,
            carrier: options.carrier,
            windows: WindowBudget::new(options.write_buffer, options.write_window.max(4096)),
        })
    }

    fn target_path(&self, upload: &str, target: WriteTarget) -> io::Result<PathBuf> {
        Ok(self.shards.dir(upload)?.join(file_name(upload, target)))
    }
}

impl FsStorage {
    /// Streams `chunks` into the file of `target`, durably; returns the bytes written.
    async fn write_target(
        &self,
        upload: &str,
        target: WriteTarget,
        mut chunks: Chunks<'_>,
    ) -> Result<u64, StorageError> {
        // Small bodies (the whole body within the first SMALL_WRITE bytes) share a group
        // commit through the journal; larger ones stream into their own file. The body's
        // chunks are written as they came (vectored), never copied into a buffer of ours.
        let mut pending = Window::default();
        let mut small = true;
        while let Some(chunk) = chunks.next().await {
            pending.push(chunk);
            if pending.len > journal::SMALL_WRITE {
                small = false;
                break;
            }
        }
        if small {
            let len = pending.len as u64;
            if len > 0 {
                let bytes = pending.into_contiguous();
                let written = match &self.carrier {
                    // The commit writes the file, and the log the bytes, with one sync.
                    Some(carrier) => {
                        carrier.stage(upload, target, bytes);
                        Ok(())
                    }
                    None => {
                        self.journal
                            .write(upload.to_string(), file_name(upload, target), bytes)
                            .await
                    }
                };
                written.map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => StorageError::TargetExists(target),
                    _ => StorageError::Io(e),
                })?;
            }
            return Ok(len);
        }
        let shards = self.shards.clone();
        let upload = upload.to_string();
        let _streaming = self.windows.enter();
        // A blocking thread writes while this task keeps reading the network; one window
        // waits for it while it writes another (three windows per body, as the budget counts).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Window>(1);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            let dir = shards.ensure(&upload)?;
            let mut file = open_target(&dir.join(file_name(&upload, target)), target)?;
            let mut written = 0u64;
            while let Some(window) = rx.blocking_recv() {
                window.write_to(&mut file)?;
                written += window.len as u64;
            }
            file.sync_data()?;
            // The new file's directory entry must be durable too.
            sync_dir(&dir)?;
            Ok(written)
        });
        let _ = tx.send(std::mem::take(&mut pending)).await;
        while let Some(chunk) = chunks.next().await {
            pending.push(chunk);
            if pending.len >= self.windows.window()
                && tx.send(std::mem::take(&mut pending)).await.is_err()
            {
                break; // the writer failed; its error is reported below
            }
        }
        if pending.len > 0 {
            let _ = tx.send(pending).await;
        }
        drop(tx);
        writer
            .await
            .map_err(|e| StorageError::Backend(format!("writer thread: {e}")))?
    }

    async fn remove_target(&self, upload: &str, target: WriteTarget) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.target_path(upload, target)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes the files of `upload` other than `keep` written under a token up to
    /// `max_token` (a newer writer's files are never touched); returns how many it removed.
    async fn remove_files_except(
        &self,
        upload: &str,
        keep: HashSet<PathBuf>,
        max_token: u64,
    ) -> Result<usize, StorageError> {
        let dir = self.shards.dir(upload)?;
        let prefix = format!("{upload}.");
        tokio::task::spawn_blocking(move || -> Result<usize, StorageError> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            let mut removed = 0;
            for entry in entries {
                let path = entry?.path();
                let token = path
                    .file_name()
                    .and_then(|n| n.to_str()?.strip_prefix(&prefix).and_then(token_of));
                let removable = token.is_some_and(|t| t <= max_token);
                if removable && !keep.contains(&path) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("remove thread: {e}")))?
    }
}

/// The bytes of the folded files, then the body. A failure reading the former is left in
/// `failure` and ends the stream, so the write stops before the body.
fn folded_first<'a>(
    folded: ByteStream,
    body: Chunks<'a>,
    failure: Arc<Mutex<Option<StorageError>>>,
) -> Chunks<'a> {
    let failed = failure.clone();
    let folded = folded
        .map(move |chunk| match chunk {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                *lock(&failure) = Some(error);
                None
            }
        })
        .take_while(|chunk| std::future::ready(chunk.is_some()))
        .filter_map(std::future::ready);
    Box::pin(
        folded
            .chain(body)
            .take_while(move |_| std::future::ready(lock(&failed).is_none())),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A target's file name; the upload ID prefix lets one listing find all of an upload's files.
fn file_name(upload: &str, target: WriteTarget) -> String {
    format!("{upload}.{:016x}-{:08x}.part", target.token, target.seq)
}

/// The token a target's file name carries (after the `<upload>.` prefix).
fn token_of(rest: &str) -> Option<u64> {
    u64::from_str_radix(rest.get(..16)?, 16).ok()
}

/// The upload and target a part file's name (as [`file_name`] makes it) stands for.
pub(crate) fn parse_file_name(name: &str) -> Option<(&str, WriteTarget)> {
    let (upload, stamp) = name.strip_suffix(".part")?.rsplit_once('.')?;
    let (token, seq) = stamp.split_once('-')?;
    if upload.is_empty() || token.len() != 16 || seq.len() != 8 {
        return None;
    }
    let target = WriteTarget {
        token: u64::from_str_radix(token, 16).ok()?,
        seq: u32::from_str_radix(seq, 16).ok()?,
    };
    Some((upload, target))
}

fn open_target(path: &Path, target: WriteTarget) -> Result<std::fs::File, StorageError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StorageError::TargetExists(target),
            _ => StorageError::Io(e),
        })
}

/// A piece of a part file a read streams: `len` bytes from `at`.
struct Piece {
    path: PathBuf,
    target: WriteTarget,
    at: u64,
    len: u64,
}

/// Reads from `file` at `at` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The state of a download's stream.
struct Reading {
    upload: String,
    pieces: std::vec::IntoIter<Piece>,
    current: Option<(std::fs::File, Piece)>,
    /// Taken by the first part file found missing or short: the journal of a node that is
    /// gone may hold its bytes, so that node's journal is recovered and the read retried,
    /// once.
    recovery: Option<Arc<journal::Recovery>>,
}

impl Reading {
    async fn next(mut self) -> Result<Option<(Bytes, Self)>, StorageError> {
        loop {
            let (file, mut piece) = match self.current.take() {
                Some(current) => current,
                None => {
                    let Some(piece) = self.pieces.next() else {
                        return Ok(None);
                    };
                    (self.open(&piece).await?, piece)
                }
            };
            if piece.len == 0 {
                continue;
            }
            let want = piece.len.min(READ_CHUNK as u64);
            // Read straight into the chunk the response sends (tokio's File would read into
            // a buffer of its own and copy it over).
            let at = piece.at;
            let (file, bytes) = tokio::task::spawn_blocking(move || {
                let mut bytes = vec![0; want as usize];
                let n = read_at_most(&file, &mut bytes, at)?;
                bytes.truncate(n);
                Ok::<_, io::Error>((file, bytes))
            })
            .await
            .map_err(|e| StorageError::Backend(format!("read thread: {e}")))??;
            let n = bytes.len() as u64;
            if n == 0 {
                if self.recover().await {
                    self.current = Some((self.open(&piece).await?, piece));
                    continue;
                }
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "part file {} is shorter than its committed length",
                        piece.path.display()
                    ),
                )));
            }
            piece.at += n;
            piece.len -= n;
            self.current = Some((file, piece));
            return Ok(Some((Bytes::from(bytes), self)));
        }
    }

    /// The file of `piece` (reads are positional: each takes the piece's position).
    async fn open(&mut self, piece: &Piece) -> Result<std::fs::File, StorageError> {
        loop {
            let path = piece.path.clone();
            let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                .await
                .map_err(|e| StorageError::Backend(format!("open thread: {e}")))?;
            match opened {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !self.recover().await {
                        return Err(StorageError::MissingSegment {
                            upload: self.upload.clone(),
                            target: piece.target,
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Recovers the journals of nodes that are gone, the first time only; whether it did.
    async fn recover(&mut self) -> bool {
        let Some(recovery) = self.recovery.take() else {
            return false;
        };
        match tokio::task::spawn_blocking(move || recovery.adopt()).await {
            Ok(Ok(adopted)) => {
                tracing::debug!(upload = %self.upload, adopted, "a read found a part file missing or short")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, upload = %self.upload, "recovering journals for a read failed")
            }
            Err(error) => tracing::warn!(%error, "recovery thread"),
        }
        true
    }
}

#[async_trait]
impl Storage for FsStorage {
    fn name(&self) -> &'static str {
        "fs"
    }

    async fn write(
        &self,
        context: WriteContext<'_>,
        chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError> {
        let upload = context.lease.upload_id();
        // An empty body stores nothing, and must not fold: the copies would be all its cost.
        let mut chunks = chunks.peekable();
        if std::pin::Pin::new(&mut chunks).peek().await.is_none() {
            return Ok(Stored::default());
        }
        let chunks: Chunks<'_> = Box::pin(chunks);
        let record = context.record();
        let fold = files_to_fold(&record.segments);
        let (kept, folded) = record.segments.split_at(record.segments.len() - fold);
        let folded_from: u64 = kept.iter().map(|s| s.len).sum();
        let folded_len: u64 = folded.iter().map(|s| s.len).sum();
        let target = context.lease.reserve().await?;
        let read_failure = Arc::new(Mutex::new(None));
        let chunks = if fold == 0 {
            chunks
        } else {
            let bytes = self
                .read(record, folded_from..folded_from + folded_len)
                .await?;
            folded_first(bytes, chunks, read_failure.clone())
        };
        let stored = self.write_target(upload, target, chunks).await;
        let failure = lock(&read_failure).take();
        match (stored, failure) {
            (Ok(total), None) if total > folded_len => Ok(Stored {
                written: total - folded_len,
                append: vec![Segment::new(target, total)],
                fold,
                rewritten: folded_len,
                ..Stored::default()
            }),
            // The body broke off before its first byte was stored: nothing to commit.
            (Ok(_), None) => {
                self.remove_target(upload, target).await.ok();
                Ok(Stored::default())
            }
            // Never remove a file this write did not create.
            (Err(error @ StorageError::TargetExists(_)), _) => Err(error),
            (Err(error), _) | (Ok(_), Some(error)) => {
                self.remove_target(upload, target).await.ok();
                Err(error)
            }
        }
    }

    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError> {
        lease.confirm().await?;
        for segment in stored
            .append
            .iter()
            .filter(|s| s.target.token <= lease.token())
        {
            self.remove_target(lease.upload_id(), segment.target)
                .await?;
        }
        Ok(())
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let upload = record.id.as_str();
        let segments = &record.segments;
        // The pieces of files that cover the range, in order.
        let mut pieces = Vec::new();
        let mut segment_start = 0u64;
        for segment in segments {
            let segment_end = segment_start + segment.len;
            let from = range.start.max(segment_start);
            let to = range.end.min(segment_end);
            if from < to {
                pieces.push(Piece {
                    path: self.target_path(upload, segment.target)?,
                    target: segment.target,
                    at: from - segment_start,
                    len: to - from,
                });
            }
            segment_start = segment_end;
        }
        let reading = Reading {
            upload: upload.to_string(),
            pieces: pieces.into_iter(),
            current: None,
            recovery: Some(self.journal.recovery()),
        };
        Ok(Box::pin(futures_util::stream::try_unfold(
            reading,
            Reading::next,
        )))
    }

    async fn delete(&self, lease: &Lease) -> Result<(), StorageError> {
        let upload = lease.upload_id();
        lease.confirm().await?;
        // Before anything is removed: the journal of a node that is gone may name these files,
        // and recovering it must not bring them back.
        let recovery = self.journal.recovery();
        let (buried, token) = (upload.to_string(), lease.token());
        tokio::task::spawn_blocking(move || recovery.bury(&buried, token))
            .await
            .map_err(|e| StorageError::Backend(format!("tombstone thread: {e}")))??;
        lease.confirm().await?;
        let removed = self
            .remove_files_except(upload, HashSet::new(), u64::MAX)
            .await?;
        if removed > 0 {
            // Removals made durable too, so a power cut cannot bring the files back.
            let dir = self.shards.dir(upload)?;
            tokio::task::spawn_blocking(move || sync_dir(&dir))
                .await
                .map_err(|e| StorageError::Backend(format!("sync thread: {e}")))??;
        }
        Ok(())
    }

    async fn remove_uncommitted(&self, lease: &Lease) -> Result<usize, StorageError> {
        let upload = lease.upload_id();
        let keep = lease
            .record()
            .segments
            .iter()
            .map(|s| self.target_path(upload, s.target))
            .collect::<io::Result<_>>()?;
        lease.confirm().await?;
        self.remove_files_except(upload, keep, lease.token()).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        // The root must still be a directory we can see (a shared volume may go away).
        let root = self.shards.root().to_path_buf();
        match tokio::fs::metadata(&root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Backend(format!(
                "{} is not a directory",
                root.display()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn concatenation(&self) -> Option<&dyn Concatenation> {
        Some(self)
    }
}

#[async_trait]
impl Concatenation for FsStorage {
    async fn concatenate(
        &self,
        context: WriteContext<'_>,
        partials: &[UploadRecord],
    ) -> Result<Stored, StorageError> {
        let into = context.lease.upload_id();
        let mut stored = Stored::default();
        for partial in partials {
            for segment in &partial.segments {
                let target = context.lease.reserve().await?;
                if let Err(error) = self.link_segment(&partial.id, segment, into, target).await {
                    self.discard(context.lease, &stored).await.ok();
                    return Err(error);
                }
                stored.append.push(Segment::new(target, segment.len));
                stored.written += segment.len;
            }
        }
        Ok(stored)
    }
}

impl FsStorage {
    /// Makes the file of `source`'s `segment` also the file of `target` of upload `into`.
    async fn link_segment(
        &self,
        source: &str,
        segment: &Segment,
        into: &str,
        target: WriteTarget,
    ) -> Result<(), StorageError> {
        let shards = self.shards.clone();
        let from = self.target_path(source, segment.target)?;
        let into = into.to_string();
        let missing = StorageError::MissingSegment {
            upload: source.to_string(),
            target: segment.target,
        };
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let dir = shards.ensure(&into)?;
            let to = dir.join(file_name(&into, target));
            // A hard link shares the immutable bytes; removing the partial later only drops
            // its name. Copy where links are impossible (another filesystem). A small write's
            // file may be durable only through the partial's journal or log frame, which
            // names the partial's file, not the link: it is synced first.
            match std::fs::File::open(&from) {
                Ok(file) => file.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing),
                Err(e) => return Err(e.into()),
            }
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing),
                Err(_) => {
                    let mut input = std::fs::File::open(&from)?;
                    let mut output = open_target(&to, target)?;
                    io::copy(&mut input, &mut output)?;
                    output.sync_data()?;
                }
            }
            sync_dir(&dir)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Backend(format!("copy thread: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trailing_run_of_small_files_is_folded() {
        let file = |len| Segment::new(WriteTarget { token: 1, seq: 0 }, len);
        // A long upload's progress commits: big files are never copied again.
        let big: Vec<Segment> = (0..40).map(|_| file(64 << 20)).collect();
        assert_eq!(files_to_fold(&big), 0);
        // Sixteen small files after big ones: only the small ones fold.
        let mut mixed = big.clone();
        mixed.extend((0..16).map(|_| file(1000)));
        assert_eq!(files_to_fold(&mixed), 16);
        // A big file between small ones ends the run.
        let mut split: Vec<Segment> = (0..10).map(|_| file(1000)).collect();
        split.push(file(FOLD_BELOW));
        split.extend((0..10).map(|_| file(1000)));
        assert_eq!(files_to_fold(&split), 0);
    }

    const UP: &str = "upload-id-0000000000000";

    fn chunks(parts: Vec<&'static [u8]>) -> Chunks<'static> {
        Box::pin(futures_util::stream::iter(
            parts.into_iter().map(Bytes::from_static),
        ))
    }

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.expect("read"));
        }
        out
    }

    fn record(segments: &[Segment]) -> UploadRecord {
        UploadRecord {
            id: UP.into(),
            offset: segments.iter().map(|s| s.len).sum(),
            length: None,
            metadata: None,
            concat: None,
            created_at: 0,
            expires_at: None,
            state: tusk_core::UploadState::Active,
            segments: segments.to_vec(),
            session: None,
            notice: None,
            expected_digest: None,
            last_commit: None,
        }
    }

    async fn read(store: &FsStorage, segments: &[Segment], range: Range<u64>) -> Vec<u8> {
        collect(store.read(&record(segments), range).await.expect("read")).await
    }

    #[tokio::test]
    async fn writes_reads_ranges_across_segments_and_refuses_rewrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStorage::new(dir.path(), 4).expect("store");
        let a = WriteTarget { token: 1, seq: 0 };
        let b = WriteTarget { token: 2, seq: 0 };
        let written = store
            .write_target(UP, a, chunks(vec![b"hel", b"lo "]))
            .await;
        assert_eq!(written.expect("write"), 6);
        let written = store.write_target(UP, b, chunks(vec![b"world"])).await;
        assert_eq!(written.expect("write"), 5);
        let segments = [Segment::new(a, 6), Segment::new(b, 5)];
        assert_eq!(read(&store, &segments, 0..11).await, b"hello world");
        assert_eq!(read(&store, &segments, 4..8).await, b"o wo");
        // A target is written once: a second writer with the same stamp is refused.
        let again = store.write_target(UP, a, chunks(vec![b"XXXXXX"])).await;
        assert!(matches!(again, Err(StorageError::TargetExists(_))));
        assert_eq!(read(&store, &segments, 0..11).await, b"hello world");
        // A write that never committed is swept; one under a newer token than the
        // remover's lease is not the remover's to touch.
        let orphan = WriteTarget { token: 3, seq: 0 };
        let newer = WriteTarget { token: 9, seq: 0 };
        for target in [orphan, newer] {
            store
                .write_target(UP, target, chunks(vec![b"zombie"]))
                .await
                .expect("write");
        }
        let keep = segments
            .iter()
            .map(|s| store.target_path(UP, s.target).expect("path"))
            .collect();
        let removed = store.remove_files_except(UP, keep, 5).await.expect("sweep");
        assert_eq!(removed, 1);
        let newer_path = store.target_path(UP, newer).expect("path");
        assert!(newer_path.exists(), "a newer writer's file was removed");
        assert_eq!(read(&store, &segments, 0..11).await, b"hello world");
        let removed = store
            .remove_files_except(UP, HashSet::new(), u64::MAX)
            .await
            .expect("delete");
        assert_eq!(removed, 3);
        let gone = collect_err(store.read(&record(&segments), 0..11).await.expect("read")).await;
        assert!(matches!(gone, Some(StorageError::MissingSegment { .. })));
    }

    async fn collect_err(mut s: ByteStream) -> Option<StorageError> {
        while let Some(b) = s.next().await {
            if let Err(e) = b {
                return Some(e);
            }
        }
        None
    }
}
