//! Tombstones: what journal recovery must not bring back.
//!
//! Terminating an upload removes its part files, but a journal of a node that died may still
//! name some of them; recovering that journal later would recreate them. So before it removes
//! anything, a deletion that could race a journal leaves a tombstone: `<root>/.gone/<upload>~
//! <token>` says "every part file of this upload written under this token or an older one is
//! gone" (a re-created upload writes under newer tokens, and those are recovered). Its content
//! lists the journals that were not empty when it was written, the only ones that can name
//! those files; once all of them are gone (checkpointed or recovered) the tombstone is
//! removed.
//!
//! The name holds the token and is never reused (tokens never repeat), so writing one never
//! replaces another and removing one never removes a newer one. Written as a temporary file,
//! synced and renamed, a tombstone is never torn.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::shards::sync_dir;

/// The directory of tombstones under the root (no upload ID starts with a dot).
pub(crate) const GONE: &str = ".gone";
/// A temporary tombstone older than this was left by a crash and is removed.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Longest tombstone read back (a few lines per live node).
const MAX_TOMBSTONE: u64 = 1 << 20;

pub(crate) struct Tombstones {
    root: PathBuf,
    dir: PathBuf,
}

fn name(upload: &str, token: u64) -> String {
    format!("{upload}~{token:016x}")
}

/// The upload and token a tombstone's name holds.
fn parse(name: &str) -> Option<(&str, u64)> {
    let (upload, token) = name.rsplit_once('~')?;
    if upload.is_empty() || upload.starts_with('.') || token.len() != 16 {
        return None;
    }
    Some((upload, u64::from_str_radix(token, 16).ok()?))
}

impl Tombstones {
    /// The tombstones under `root`, their directory created (and made durable) if missing.
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir = root.join(GONE);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            sync_dir(root)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// Durably records that the files of `upload` up to `token` are being removed, and that
    /// only `journals` (paths relative to the root) can name them.
    pub fn bury(&self, upload: &str, token: u64, journals: &[String]) -> io::Result<()> {
        let final_name = name(upload, token);
        let temp = self
            .dir
            .join(format!(".{final_name}.{:08x}.tmp", rand::random::<u32>()));
        let mut content = String::new();
        for journal in journals {
            content.push_str(journal);
            content.push('\n');
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let written = file
            .write_all(content.as_bytes())
            .and_then(|()| file.sync_data())
            .and_then(|()| fs::rename(&temp, self.dir.join(&final_name)));
        if let Err(error) = written {
            fs::remove_file(&temp).ok();
            return Err(error);
        }
        sync_dir(&self.dir)
    }

    /// The newest buried token of every upload that has a tombstone.
    pub fn load(&self) -> io::Result<HashMap<String, u64>> {
        let mut buried = HashMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            if let Some((upload, token)) = file_name.to_str().and_then(parse) {
                let newest = buried.entry(upload.to_string()).or_insert(token);
                *newest = (*newest).max(token);
            }
        }
        Ok(buried)
    }

    /// The newest buried token of `upload`, read afresh: the directory is opened first, which
    /// on NFS revalidates what the client cached about it (close-to-open).
    pub fn buried(&self, upload: &str) -> io::Result<Option<u64>> {
        drop(File::open(&self.dir)?);
        Ok(self.load()?.get(upload).copied())
    }

    /// Removes the tombstones whose journals are all gone, and temporary files a crash left;
    /// returns how many tombstones it removed.
    pub fn collect(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if stale {
                    remove_if_present(&path)?;
                }
                continue;
            }
            if parse(file_name).is_none() {
                continue;
            }
            match self.journals_of(&path) {
                Ok(journals) => {
                    let mut all_gone = true;
                    for journal in journals {
                        match fs::symlink_metadata(self.root.join(journal)) {
                            Ok(_) => all_gone = false,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if all_gone {
                        remove_if_present(&path)?;
                        removed += 1;
                    }
                }
                // Removed by another node meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Kept: recovery keeps honouring it; a damaged one is reported, not guessed at.
                Err(error) => {
                    tracing::warn!(%error, tombstone = %path.display(), "unreadable tombstone kept")
                }
            }
        }
        Ok(removed)
    }

    /// The journals a tombstone lists.
    fn journals_of(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut text = String::new();
        File::open(path)?
            .take(MAX_TOMBSTONE)
            .read_to_string(&mut text)?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_tombstones_go_with_their_journals() {
        assert_eq!(parse(&name("AbC-_d", 42)), Some(("AbC-_d", 42)));
        assert_eq!(parse(".AbC~0000000000000001"), None);
        assert_eq!(parse("AbC~1"), None);
        let root = tempfile::tempdir().expect("tempdir");
        let tombstones = Tombstones::open(root.path()).expect("open");
        let journal = ".journal/00/0000000000000000.journal";
        fs::create_dir_all(root.path().join(".journal/00")).expect("dir");
        fs::write(root.path().join(journal), b"x").expect("journal");
        tombstones.bury("up", 5, &[journal.into()]).expect("bury");
        tombstones.bury("up", 3, &[journal.into()]).expect("bury");
        assert_eq!(tombstones.buried("up").expect("buried"), Some(5));
        assert_eq!(tombstones.buried("other").expect("buried"), None);
        assert_eq!(
            tombstones.collect().expect("collect"),
            0,
            "journal still there"
        );
        fs::remove_file(root.path().join(journal)).expect("checkpoint");
        assert_eq!(tombstones.collect().expect("collect"), 2);
        assert!(tombstones.load().expect("load").is_empty());
    }
}
