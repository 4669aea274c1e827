//! The 4096 shard directories, named by an upload ID's first two characters.
//!
//! A new file is durable only once the directory that names it is; a new shard directory
//! only once the root is synced too. Creating a shard on an upload's first write would cost
//! every young upload a mkdir and a sync of the root, so all shards are created once, in the
//! background at start, with one sync of the root. Until that is done, a write whose shard
//! is not known durable creates and syncs it itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Characters of an upload ID (URL-safe base64); a shard name is two of them.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(crate) struct Shards {
    root: PathBuf,
    /// Whether shard i is known to exist durably.
    durable: Vec<AtomicBool>,
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Syncs each of the part files `parts` that still exists (one gone was discarded, folded
/// away or terminated since: nothing to keep), then each directory that holds one.
pub(crate) fn sync_parts(parts: impl IntoIterator<Item = PathBuf>) -> io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for part in parts {
        match std::fs::File::open(&part) {
            Ok(file) => file.sync_data()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        if let Some(dir) = part.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    dirs.iter().try_for_each(|dir| sync_dir(dir))
}

fn create(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Shards {
    /// Shards under `root`; starts creating all of them in the background.
    pub fn open(root: &Path) -> io::Result<Arc<Self>> {
        let shards = Arc::new(Self {
            root: root.to_path_buf(),
            durable: (0..ALPHABET.len() * ALPHABET.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
        });
        let background = shards.clone();
        std::thread::Builder::new()
            .name("tusk-fs-shards".into())
            .spawn(move || {
                if let Err(error) = background.create_all() {
                    tracing::warn!(%error, "creating shard directories failed; writes create their own");
                }
            })?;
        Ok(shards)
    }

    fn create_all(&self) -> io::Result<()> {
        for i in 0..self.durable.len() {
            create(&self.path_of(i))?;
        }
        sync_dir(&self.root)?;
        for flag in &self.durable {
            flag.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn index(id: &str) -> Option<usize> {
        let position = |b: u8| ALPHABET.iter().position(|&c| c == b);
        match id.as_bytes() {
            [a, b, ..] => Some(position(*a)? * ALPHABET.len() + position(*b)?),
            _ => None,
        }
    }

    fn path_of(&self, index: usize) -> PathBuf {
        let (a, b) = (
            ALPHABET[index / ALPHABET.len()],
            ALPHABET[index % ALPHABET.len()],
        );
        self.root.join(format!("{}{}", a as char, b as char))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shard directory of `id` (which may not exist yet).
    pub fn dir(&self, id: &str) -> io::Result<PathBuf> {
        Self::index(id).map(|i| self.path_of(i)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "upload ID is not URL-safe base64",
            )
        })
    }

    /// The shard directory of `id`, durably created.
    pub fn ensure(&self, id: &str) -> io::Result<PathBuf> {
        let index = Self::index(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "upload ID is not URL-safe base64",
            )
        })?;
        let dir = self.path_of(index);
        if !self.durable[index].load(Ordering::Acquire) {
            create(&dir)?;
            sync_dir(&self.root)?;
            self.durable[index].store(true, Ordering::Release);
        }
        Ok(dir)
    }
}
