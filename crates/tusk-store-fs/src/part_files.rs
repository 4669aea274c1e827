//! The part files of a root, as the embedded coordinator's log sees them when it carries
//! the small writes ([`tusk_core::embedded::CarriedFiles`]): the log's writer has a small
//! write's file written unsynced when its commit comes, and one sync, the log's, makes its
//! bytes and its commit durable together.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tusk_core::embedded::CarriedFiles;
use tusk_core::WriteTarget;

use crate::journal::holds;
use crate::shards::{sync_dir, Shards};

/// The part files under one root.
pub struct PartFiles {
    shards: Arc<Shards>,
}

impl PartFiles {
    /// The part files under `root`, which is created if missing.
    pub fn open(root: &Path) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(root)?;
        Ok(Arc::new(Self {
            shards: Shards::open(root)?,
        }))
    }

    pub(crate) fn shards(&self) -> &Arc<Shards> {
        &self.shards
    }

    pub(crate) fn path(&self, upload: &str, target: WriteTarget) -> io::Result<PathBuf> {
        Ok(self
            .shards
            .dir(upload)?
            .join(crate::file_name(upload, target)))
    }
}

impl CarriedFiles for PartFiles {
    fn place(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()> {
        let dir = self.shards.ensure(upload)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(crate::file_name(upload, target)))?;
        file.write_all(bytes)
    }

    fn make_durable(&self, placed: &[(String, WriteTarget)]) -> io::Result<()> {
        let mut dirs = BTreeSet::new();
        for (upload, target) in placed {
            let path = self.path(upload, *target)?;
            match File::open(&path) {
                Ok(file) => file.sync_data()?,
                // Discarded, folded away or terminated since: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        dirs.iter().try_for_each(|dir| sync_dir(dir))
    }

    fn restore(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()> {
        // A shard directory that exists was synced when it was made: no sync of the root
        // per file restored while the shards are still being created at start.
        let mut dir = self.shards.dir(upload)?;
        if !dir.is_dir() {
            dir = self.shards.ensure(upload)?;
        }
        let path = dir.join(crate::file_name(upload, target));
        let held = match File::open(&path) {
            Ok(mut file) => holds(&mut file, bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if held {
            return Ok(());
        }
        // Zeros, cut short, or missing: rewritten in place, so a concatenation's hard link
        // sees the bytes too.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.write_all(bytes)?;
        file.set_len(bytes.len() as u64)
    }
}
