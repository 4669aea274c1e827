//! Checking and salvaging a coordinator directory: what `tusk check-data` runs.
//!
//! Both take the directory's lock, so they never read or repair a directory a running
//! coordinator writes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::lock_dir;
use super::log::{self, Fault, FileReport, Skipped};
use crate::CoordError;

/// Added to the token ceiling by a salvage that dropped damaged bytes: a lost frame may
/// have raised the ceiling (by a block of 2^20 per frame) and tokens below it may have been
/// handed out; 2^40 is a million such blocks, and leaves 2^63 tokens to go.
const TOKEN_MARGIN: u64 = 1 << 40;

/// What a coordinator directory holds, read without changing it.
#[derive(Debug)]
pub struct DataCheck {
    pub dir: PathBuf,
    /// The generation of the log that continues the snapshot.
    pub generation: u64,
    /// `snapshot.bin`, if there is one.
    pub snapshot: Option<FileReport>,
    /// `wal-<generation>.log`, if there is one.
    pub log: Option<FileReport>,
    /// Upload records made of every intact frame.
    pub records: usize,
    /// Entries replay skips (a commit that does not start where its record ends).
    pub skipped: Vec<Skipped>,
}

impl DataCheck {
    /// The first damage a start refuses (anything but a torn tail of the log), with its file.
    pub fn damage(&self) -> Option<(&FileReport, &Fault)> {
        log::first_damage(self.snapshot.as_ref(), self.log.as_ref())
    }

    /// The torn tail a start cuts, if any.
    pub fn torn_tail(&self) -> Option<&Fault> {
        self.log.as_ref().and_then(FileReport::torn_tail)
    }

    /// Every fault, with its file.
    pub fn faults(&self) -> impl Iterator<Item = (&FileReport, &Fault)> {
        self.snapshot
            .iter()
            .chain(self.log.iter())
            .flat_map(|file| file.faults.iter().map(move |f| (file, f)))
    }
}

/// What [`salvage`] did.
#[derive(Debug)]
pub struct Salvaged {
    /// What it read; the faults are what it dropped.
    pub check: DataCheck,
    /// None when there was no damage to salvage (a torn tail alone is cut by the next
    /// start): nothing was changed.
    pub written: Option<Written>,
}

/// The state a salvage wrote.
#[derive(Debug)]
pub struct Written {
    /// The new snapshot, holding every record salvaged.
    pub snapshot: PathBuf,
    /// The empty log that continues it.
    pub log: PathBuf,
    /// The token ceiling it holds (raised by a margin, see the doc of [`salvage`]).
    pub token_ceiling: u64,
    /// Each damaged file and the name it was kept under, unchanged.
    pub kept_aside: Vec<(PathBuf, PathBuf)>,
}

fn unreadable(dir: &Path, e: io::Error) -> CoordError {
    match e.kind() {
        io::ErrorKind::InvalidData => CoordError::Corrupt(e.to_string()),
        _ => CoordError::Unavailable(format!("{}: {e}", dir.display())),
    }
}

fn existing(dir: &Path) -> Result<(), CoordError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(CoordError::Unavailable(format!(
            "{} is not a directory (the embedded coordinator's directory is \
             <upload-dir>/.tusk unless coordinator.embedded.dir says otherwise)",
            dir.display()
        )))
    }
}

fn read(dir: &Path) -> Result<(DataCheck, log::Replay), CoordError> {
    let mut replay = log::replay(dir).map_err(|e| unreadable(dir, e))?;
    let check = DataCheck {
        dir: dir.to_path_buf(),
        generation: replay.generation,
        records: replay.durable.records.len(),
        snapshot: replay.snapshot.clone(),
        log: replay.log.clone(),
        skipped: std::mem::take(&mut replay.skipped),
    };
    Ok((check, replay))
}

/// Reads coordinator directory `dir` as a start would, and reports every fault, without
/// changing anything (but the lock file's pid). Fails if a process holds the directory.
pub fn check(dir: &Path) -> Result<DataCheck, CoordError> {
    existing(dir)?;
    let _lock = lock_dir(dir)?;
    Ok(read(dir)?.0)
}

/// Salvages what is provably acknowledged from a damaged coordinator directory: every
/// frame whose checksum holds, in order, re-synchronising past damaged bytes (a commit whose
/// record did not reach its expected offset, because an earlier frame was lost, is skipped).
///
/// Writes that state as a new snapshot with an empty log of a new generation, and keeps
/// each damaged file aside, unchanged, as `<name>.damaged-<unix seconds>`. The token ceiling
/// is raised by a margin, as a lost frame may have raised it. Sequence-number ceilings a
/// lost frame raised are lost; the numbers above an upload's committed ones stay skipped.
///
/// Without damage (none, or only a torn tail, which the next start cuts) nothing changes.
/// Fails if a process holds the directory.
pub fn salvage(dir: &Path) -> Result<Salvaged, CoordError> {
    existing(dir)?;
    let _lock = lock_dir(dir)?;
    let (check, mut replay) = read(dir)?;
    if check.damage().is_none() {
        return Ok(Salvaged {
            check,
            written: None,
        });
    }
    let written = write_salvaged(dir, &check, &mut replay)
        .map_err(|e| CoordError::Unavailable(format!("salvaging {}: {e}", dir.display())))?;
    Ok(Salvaged {
        check,
        written: Some(written),
    })
}

fn write_salvaged(dir: &Path, check: &DataCheck, replay: &mut log::Replay) -> io::Result<Written> {
    let durable = &mut replay.durable;
    durable.token_ceiling = durable
        .token_ceiling
        .max(durable.largest_committed_token().saturating_add(1))
        .saturating_add(TOKEN_MARGIN);
    // Above every log in the directory, so no leftover log is taken for the new one.
    let mut newest = check.generation;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(generation) = name.to_str().and_then(log::wal_generation) {
            newest = newest.max(generation);
        }
    }
    let generation = newest + 1;
    let snapshot = log::encode_snapshot(durable, generation)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept_aside = Vec::new();
    // The damaged snapshot is replaced by the rename below: keep it under a second name
    // first (a hard link, so a crash in between loses nothing).
    if let Some(damaged) = check.snapshot.as_ref().filter(|s| !s.faults.is_empty()) {
        let aside = aside_name(&damaged.path, stamp)?;
        if fs::hard_link(&damaged.path, &aside).is_err() {
            fs::copy(&damaged.path, &aside)?;
        }
        kept_aside.push((damaged.path.clone(), aside));
    }
    log::install_snapshot(dir, &snapshot, generation)?;
    // The carried writes go on in the new log: the files of those committed may be unsynced.
    let carried = [&replay.older_carried[..], &replay.carried[..]].concat();
    log::append_carried(&log::wal_path(dir, generation), &carried)?;
    // The old log is out of use from the rename on.
    if let Some(damaged) = check.log.as_ref().filter(|l| !l.faults.is_empty()) {
        let aside = aside_name(&damaged.path, stamp)?;
        fs::rename(&damaged.path, &aside)?;
        kept_aside.push((damaged.path.clone(), aside));
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(Written {
        snapshot: dir.join(log::SNAPSHOT),
        log: log::wal_path(dir, generation),
        token_ceiling: durable.token_ceiling,
        kept_aside,
    })
}

/// `<path>.damaged-<stamp>`, or with a counter if that is taken.
fn aside_name(path: &Path, stamp: u64) -> io::Result<PathBuf> {
    let base = format!("{}.damaged-{stamp}", path.display());
    for n in 0..1000 {
        let candidate = if n == 0 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}-{n}"))
        };
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(io::Error::other(format!(
        "no free name beside {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::super::log::testing::{commit, five_uploads, record, write_log};
    use super::super::log::{self, Entry, Refusal};
    use super::*;
    use crate::Coordinator;

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .expect("list")
            .map(|e| {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                (name, fs::read(e.path()).expect("read"))
            })
            .filter(|(name, _)| name != "lock")
            .collect();
        out.sort();
        out
    }

    /// The 2nd of eleven frames damaged: check reports it and changes nothing; salvage keeps
    /// every other frame (the damaged upload's later commit is skipped and reported), keeps
    /// the damaged log aside byte for byte, and the directory then starts with the four
    /// intact uploads finished and a token ceiling above anything handed out.
    #[tokio::test]
    async fn salvage_keeps_every_intact_frame_and_the_damaged_log_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut damaged, frames) = write_log(dir.path(), &five_uploads());
        let (start, end) = frames[1];
        damaged[(start + end) / 2] ^= 0x40;
        fs::write(log::wal_path(dir.path(), 0), &damaged).expect("write");

        let found = check(dir.path()).expect("check");
        let (_, fault) = found.damage().expect("damage found");
        assert_eq!(fault.offset, start as u64);
        assert_eq!(fault.len, (end - start) as u64);
        assert_eq!(found.records, 4);
        let before = files(dir.path());
        assert!(before.iter().any(|(_, bytes)| *bytes == damaged));

        let salvaged = salvage(dir.path()).expect("salvage");
        let written = salvaged.written.expect("something was written");
        assert_eq!(written.kept_aside.len(), 1);
        let (original, aside) = &written.kept_aside[0];
        assert_eq!(*original, log::wal_path(dir.path(), 0));
        assert!(!original.exists(), "the damaged log is out of the way");
        assert_eq!(fs::read(aside).expect("aside"), damaged);
        let skipped: Vec<(&str, &Refusal)> = salvaged
            .check
            .skipped
            .iter()
            .map(|s| (s.upload_id.as_str(), &s.why))
            .collect();
        assert_eq!(skipped, [("upload0", &Refusal::UnknownUpload)]);
        assert!(written.token_ceiling >= (1 << 20) + TOKEN_MARGIN);

        let coord = crate::embedded::EmbeddedCoordinator::open(dir.path())
            .await
            .expect("the salvaged directory starts");
        assert!(coord.load("upload0").await.expect("load").is_none());
        for i in 1..5u64 {
            let record = coord
                .load(&format!("upload{i}"))
                .await
                .expect("load")
                .expect("an intact upload");
            assert!(record.is_finished() && record.offset == 10 + i);
        }
        let token = coord
            .acquire("upload1", std::time::Duration::ZERO)
            .await
            .expect("lease")
            .token();
        assert!(token >= (1 << 20) + TOKEN_MARGIN, "token {token}");
    }

    /// A carried write before the damage is kept in the salvaged log: its file may never
    /// have been synced, and its commit stands.
    #[test]
    fn salvage_keeps_the_carried_writes_of_the_damaged_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let carried = Entry::Carried {
            id: "a".into(),
            target: crate::WriteTarget { token: 1, seq: 0 },
            data: bytes::Bytes::from_static(b"small body"),
        };
        let (mut damaged, frames) = write_log(
            dir.path(),
            &[
                Entry::Create(record("a", 10)),
                carried,
                commit("a", 0, 10, 1),
                Entry::Create(record("b", 3)),
                Entry::Create(record("c", 4)),
            ],
        );
        // Damage with an intact frame after it: no torn tail.
        let (start, end) = frames[3];
        damaged[(start + end) / 2] ^= 0x40;
        fs::write(log::wal_path(dir.path(), 0), &damaged).expect("write");

        let written = salvage(dir.path())
            .expect("salvage")
            .written
            .expect("something was written");
        let replay = log::replay(dir.path()).expect("replay");
        assert_eq!(replay.log.map(|l| l.path), Some(written.log));
        let kept: Vec<(&str, &[u8])> = replay
            .carried
            .iter()
            .map(|c| (c.id.as_str(), &c.data[..]))
            .collect();
        assert_eq!(kept, [("a", &b"small body"[..])]);
        assert_eq!(replay.durable.records["a"].offset, 10);
    }

    /// Damage inside one upload's chain of commits: the commits before it stand, the ones
    /// after it no longer start where the record ends and are skipped, other uploads' frames
    /// after it are kept.
    #[test]
    fn salvage_stops_an_upload_at_its_last_commit_before_the_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut damaged, frames) = write_log(
            dir.path(),
            &[
                Entry::Create(record("a", 15)),
                commit("a", 0, 5, 1),
                commit("a", 5, 5, 1),
                commit("a", 10, 5, 1),
                Entry::Create(record("b", 3)),
                commit("b", 0, 3, 2),
            ],
        );
        damaged[frames[2].0 + 9] ^= 1;
        fs::write(log::wal_path(dir.path(), 0), &damaged).expect("write");
        let salvaged = salvage(dir.path()).expect("salvage");
        assert!(salvaged.written.is_some());
        let skipped: Vec<&Refusal> = salvaged.check.skipped.iter().map(|s| &s.why).collect();
        assert_eq!(
            skipped,
            [&Refusal::OffsetMismatch {
                expected: 10,
                found: 5
            }]
        );
        let recovered = log::recover(dir.path()).expect("starts");
        assert_eq!(recovered.durable.records["a"].offset, 5);
        assert_eq!(recovered.durable.records["b"].offset, 3);
    }

    /// A damaged record in a snapshot: salvage keeps the others and the log after the
    /// snapshot, and keeps the damaged snapshot aside.
    #[test]
    fn salvage_of_a_damaged_snapshot_keeps_the_other_records_and_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut durable = log::Durable::default();
        for entry in five_uploads() {
            durable.apply(entry).expect("apply");
        }
        let snapshot = log::encode_snapshot(&durable, 1).expect("encode");
        log::install_snapshot(dir.path(), &snapshot, 1).expect("install");
        let mut tail = Vec::new();
        log::append_frame(&mut tail, &Entry::Create(record("late", 9))).expect("frame");
        fs::write(log::wal_path(dir.path(), 1), &tail).expect("write");
        // Damage the third frame (the first record, whichever it is).
        let third = {
            let mut at = 0;
            for _ in 0..2 {
                let len = u32::from_le_bytes([
                    snapshot[at],
                    snapshot[at + 1],
                    snapshot[at + 2],
                    snapshot[at + 3],
                ]) as usize;
                at += 8 + len;
            }
            at
        };
        let mut damaged = snapshot.clone();
        damaged[third + 20] ^= 2;
        let path = dir.path().join(log::SNAPSHOT);
        fs::write(&path, &damaged).expect("write");

        assert!(
            log::recover(dir.path()).is_err(),
            "a damaged snapshot stops a start"
        );
        let written = salvage(dir.path())
            .expect("salvage")
            .written
            .expect("written");
        assert_eq!(written.kept_aside.len(), 1);
        assert_eq!(fs::read(&written.kept_aside[0].1).expect("aside"), damaged);
        let recovered = log::recover(dir.path()).expect("starts");
        assert_eq!(recovered.generation, 2);
        assert_eq!(
            recovered.durable.records.len(),
            5,
            "4 of the snapshot, 1 of the log"
        );
        assert!(recovered.durable.records.contains_key("late"));
    }

    /// Nothing damaged, or only a torn tail (which a start cuts): salvage changes nothing.
    #[test]
    fn salvage_without_damage_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut torn, _) = write_log(dir.path(), &five_uploads());
        torn.truncate(torn.len() - 2);
        fs::write(log::wal_path(dir.path(), 0), &torn).expect("write");
        let before = files(dir.path());
        let salvaged = salvage(dir.path()).expect("salvage");
        assert!(salvaged.written.is_none());
        assert!(salvaged.check.torn_tail().is_some());
        assert_eq!(files(dir.path()), before);
    }

    /// A directory a running coordinator holds is neither checked nor salvaged.
    #[tokio::test]
    async fn check_and_salvage_refuse_a_directory_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _coord = crate::embedded::EmbeddedCoordinator::open(dir.path())
            .await
            .expect("open");
        let pid = format!("pid {}", std::process::id());
        for result in [
            check(dir.path()).map(|_| ()),
            salvage(dir.path()).map(|_| ()),
        ] {
            match result {
                Err(CoordError::Unavailable(message)) => {
                    assert!(message.contains(&pid), "{message}")
                }
                other => panic!("expected the directory to be in use: {other:?}"),
            }
        }
    }
}
