//! Tusk storage on a local or shared filesystem.
//!
//! Layout: `<root>/<shard>/<upload id>.<token>-<seq>.part`, one file per write target, where
//! the shard is the ID's first two characters (4096 directories at most). Shards, unlike a
//! directory per upload, mean a new upload costs no mkdir and no extra directory fsync: a
//! write syncs its file and the shard directory, nothing else. A target file
//! is created with `O_EXCL` and never modified after its write is synced, so a writer that
//! lost its lease (stamped with an older token) can never touch a file another writer
//! committed, even on a shared volume. Upload IDs are validated by the protocol layer to be
//! single safe path components before they get here.

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tusk_core::{ByteStream, Chunks, Concatenation, Segment, Storage, StorageError, WriteTarget};

/// Size of the reads that stream a download.
const READ_CHUNK: usize = 256 << 10;

pub struct FsStorage {
    root: PathBuf,
    /// Bytes gathered before one write to disk; with the two buffers queued to the writer
    /// thread this bounds the memory one PATCH uses at about three windows.
    write_window: usize,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FsStorage {
    /// Storage under `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>, write_window: usize) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Self::create_shards(&root)?;
        Ok(Self {
            root,
            write_window: write_window.max(4096),
        })
    }

    /// The shard directory of an upload. IDs are validated to be at least 22 URL-safe
    /// characters; a shorter one (never produced) gets a shard of its own.
    fn upload_dir(&self, upload: &str) -> PathBuf {
        self.root.join(upload.get(..2).unwrap_or(upload))
    }

    fn target_path(&self, upload: &str, target: WriteTarget) -> PathBuf {
        self.upload_dir(upload).join(format!(
            "{upload}.{:016x}-{:08x}.part",
            target.token, target.seq
        ))
    }

    /// Creates every shard directory up front, so that no upload pays for a mkdir and a
    /// sync of the root on its first write.
    fn create_shards(root: &Path) -> io::Result<()> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut created = false;
        for &a in ALPHABET {
            for &b in ALPHABET {
                match std::fs::create_dir(root.join(format!("{}{}", a as char, b as char))) {
                    Ok(()) => created = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if created {
            sync_dir(root)?;
        }
        Ok(())
    }

    /// Creates the upload's directory if needed, durably (the parent is synced too).
    fn ensure_upload_dir(root: &Path, dir: &Path) -> io::Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => sync_dir(root),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
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

#[async_trait]
impl Storage for FsStorage {
    fn name(&self) -> &'static str {
        "fs"
    }

    async fn write(
        &self,
        upload: &str,
        target: WriteTarget,
        mut chunks: Chunks<'_>,
    ) -> Result<u64, StorageError> {
        let root = self.root.clone();
        let dir = self.upload_dir(upload);
        let path = self.target_path(upload, target);
        // A blocking thread writes while this task keeps reading the network.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            Self::ensure_upload_dir(&root, &dir)?;
            let mut file = open_target(&path, target)?;
            let mut written = 0u64;
            while let Some(buf) = rx.blocking_recv() {
                file.write_all(&buf)?;
                written += buf.len() as u64;
            }
            file.sync_data()?;
            // The new file's directory entry must be durable too.
            sync_dir(&dir)?;
            Ok(written)
        });
        let mut pending = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let full = if pending.is_empty() && chunk.len() >= self.write_window {
                chunk
            } else {
                pending.extend_from_slice(&chunk);
                if pending.len() < self.write_window {
                    continue;
                }
                pending.split().freeze()
            };
            if tx.send(full).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(pending.freeze()).await;
        }
        drop(tx);
        writer
            .await
            .map_err(|e| StorageError::Backend(format!("writer thread: {e}")))?
    }

    async fn discard(&self, upload: &str, target: WriteTarget) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.target_path(upload, target)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn read(
        &self,
        upload: &str,
        segments: &[Segment],
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        // The pieces of files that cover the range, in order.
        let mut pieces = Vec::new();
        let mut segment_start = 0u64;
        for segment in segments {
            let segment_end = segment_start + segment.len;
            let from = range.start.max(segment_start);
            let to = range.end.min(segment_end);
            if from < to {
                let path = self.target_path(upload, segment.target);
                pieces.push((path, segment.target, from - segment_start, to - from));
            }
            segment_start = segment_end;
        }
        let upload = upload.to_string();
        let stream = futures_util::stream::try_unfold(
            (pieces.into_iter(), None::<(tokio::fs::File, u64)>),
            move |(mut pieces, mut current)| {
                let upload = upload.clone();
                async move {
                    loop {
                        if let Some((file, remaining)) = current.as_mut() {
                            if *remaining > 0 {
                                let want = (*remaining).min(READ_CHUNK as u64) as usize;
                                let mut buf = BytesMut::with_capacity(want);
                                let n = file.take(want as u64).read_buf(&mut buf).await?;
                                if n == 0 {
                                    return Err(StorageError::Io(io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        "segment file shorter than its committed length",
                                    )));
                                }
                                *remaining -= n as u64;
                                return Ok(Some((buf.freeze(), (pieces, current))));
                            }
                        }
                        let Some((path, target, skip, len)) = pieces.next() else {
                            return Ok(None);
                        };
                        let mut file = match tokio::fs::File::open(&path).await {
                            Ok(f) => f,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                return Err(StorageError::MissingSegment { upload, target });
                            }
                            Err(e) => return Err(e.into()),
                        };
                        file.seek(io::SeekFrom::Start(skip)).await?;
                        current = Some((file, len));
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn delete(&self, upload: &str) -> Result<(), StorageError> {
        let dir = self.upload_dir(upload);
        let prefix = format!("{upload}.");
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    match std::fs::remove_file(entry.path()) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Backend(format!("delete thread: {e}")))?
    }

    fn concatenation(&self) -> Option<&dyn Concatenation> {
        Some(self)
    }
}

#[async_trait]
impl Concatenation for FsStorage {
    async fn copy_segment(
        &self,
        source: &str,
        segment: &Segment,
        into: &str,
        target: WriteTarget,
    ) -> Result<(), StorageError> {
        let root = self.root.clone();
        let from = self.target_path(source, segment.target);
        let dir = self.upload_dir(into);
        let to = self.target_path(into, target);
        let missing = StorageError::MissingSegment {
            upload: source.to_string(),
            target: segment.target,
        };
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            Self::ensure_upload_dir(&root, &dir)?;
            // A hard link shares the immutable bytes; removing the partial later only drops
            // its name. Copy where links are impossible (another filesystem).
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

    #[tokio::test]
    async fn writes_reads_ranges_across_segments_and_refuses_rewrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStorage::new(dir.path(), 4).expect("store");
        let a = WriteTarget { token: 1, seq: 0 };
        let b = WriteTarget { token: 2, seq: 0 };
        assert_eq!(
            store
                .write(UP, a, chunks(vec![b"hel", b"lo "]))
                .await
                .expect("write"),
            6
        );
        assert_eq!(
            store
                .write(UP, b, chunks(vec![b"world"]))
                .await
                .expect("write"),
            5
        );
        let segments = [Segment { target: a, len: 6 }, Segment { target: b, len: 5 }];
        assert_eq!(
            collect(
                store
                    .read("upload-id-0000000000000", &segments, 0..11)
                    .await
                    .expect("read")
            )
            .await,
            b"hello world"
        );
        assert_eq!(
            collect(
                store
                    .read("upload-id-0000000000000", &segments, 4..8)
                    .await
                    .expect("read")
            )
            .await,
            b"o wo"
        );
        // A target is written once: a second writer with the same stamp is refused.
        let again = store
            .write("upload-id-0000000000000", a, chunks(vec![b"XXXXXX"]))
            .await;
        assert!(matches!(again, Err(StorageError::TargetExists(_))));
        assert_eq!(
            collect(
                store
                    .read("upload-id-0000000000000", &segments, 0..11)
                    .await
                    .expect("read")
            )
            .await,
            b"hello world"
        );
        store
            .delete("upload-id-0000000000000")
            .await
            .expect("delete");
        let gone = collect_err(
            store
                .read("upload-id-0000000000000", &segments, 0..11)
                .await
                .expect("read"),
        )
        .await;
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
