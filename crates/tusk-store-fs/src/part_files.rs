//! The part files of a root, as the embedded coordinator's log sees them when it carries
//! the small writes ([`tusk_core::embedded::CarriedFiles`]): the log's writer has a small
//! write's file written unsynced when its commit comes, and one sync, the log's, makes its
//! bytes and its commit durable together.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tusk_core::embedded::CarriedFiles;
use tusk_core::WriteTarget;

use crate::journal::rewrite;
use crate::shards::{sync_parts, Shards};

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
        let parts = placed
            .iter()
            .map(|(upload, target)| self.path(upload, *target))
            .collect::<io::Result<Vec<_>>>()?;
        sync_parts(parts)
    }

    fn restore(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> io::Result<()> {
        // A shard directory that exists was synced when it was made: no sync of the root
        // per file restored while the shards are still being created at start.
        let mut dir = self.shards.dir(upload)?;
        if !dir.is_dir() {
            dir = self.shards.ensure(upload)?;
        }
        let path = dir.join(crate::file_name(upload, target));
        // Unsynced: the log keeps the bytes until `make_durable`.
        rewrite(&path, bytes, true).map(drop)
    }
}
