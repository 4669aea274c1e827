//! The storage contract on the fs store.

use std::sync::Arc;

use async_trait::async_trait;
use tusk_core::contract::{storage_contract, StorageFixture};
use tusk_core::Storage;
use tusk_store_fs::FsStorage;

/// Stores in one temporary directory, each under a fresh root.
struct Fs {
    dir: tempfile::TempDir,
}

#[async_trait]
impl StorageFixture for Fs {
    async fn storage(&self) -> Arc<dyn Storage> {
        let root = tempfile::tempdir_in(self.dir.path()).expect("root").keep();
        Arc::new(FsStorage::new(root, 64 << 10).expect("fs store"))
    }

    fn reads_unfinished(&self) -> bool {
        true
    }

    /// The upload's files, in every shard directory of every store.
    async fn stored(&self, _storage: &dyn Storage, upload: &str) -> Vec<String> {
        let prefix = format!("{upload}.");
        let mut found: Vec<String> = walk(self.dir.path())
            .iter()
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .filter(|name| name.starts_with(&prefix))
            .collect();
        found.sort();
        found
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn the_fs_store_keeps_the_storage_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    storage_contract(&Fs { dir }).await;
}
