//! Small writes carried by the embedded coordinator's log, after crashes and power cuts, on
//! real files and through the engine. A node is the coordinator, opened on this root's
//! `PartFiles`, with the fs storage and its engine; killing it is dropping them all: the
//! files stay as they were, unsynced part files included. A power cut is simulated by
//! editing the part files it left, the way a filesystem that had not written them back
//! leaves them: zeros of the same length, or missing.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{check, part_files, payload, zero};
use tusk_core::embedded::{CarriedFiles, EmbeddedCoordinator, COMPACT_AFTER_BYTES};
use tusk_core::{Engine, EngineConfig, Storage, WriteTarget};
use tusk_store_fs::{FsOptions, FsStorage, PartFiles};

mod common;

struct Node {
    engine: Engine,
    coordinator: Arc<EmbeddedCoordinator>,
}

impl Node {
    /// A node on the root of `files` (its coordinator in `<root>/.tusk`) whose log carries
    /// the small writes to `carried` and compacts past `compact_after` bytes.
    async fn start(
        root: &Path,
        files: &PartFiles,
        carried: Arc<dyn CarriedFiles>,
        compact_after: u64,
    ) -> Self {
        let coordinator =
            EmbeddedCoordinator::open_carrying(root.join(".tusk"), carried, compact_after)
                .await
                .expect("coordinator");
        let options = FsOptions {
            carrier: coordinator.carrier(),
            ..FsOptions::default()
        };
        let storage = FsStorage::on(files, options).expect("fs store");
        let config = EngineConfig {
            lease_wait: Duration::ZERO,
            ..EngineConfig::default()
        };
        let engine = Engine::new(
            Arc::new(storage) as Arc<dyn Storage>,
            coordinator.clone(),
            config,
        );
        Node {
            engine,
            coordinator,
        }
    }

    /// Waits until the engine and every lease let go of the coordinator, as they do in a
    /// process that dies: its directory's lock is free.
    async fn kill(self) {
        drop(self.engine);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.coordinator) > 1 {
            assert!(
                Instant::now() < deadline,
                "the coordinator outlives its engine"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Log frames that carry small writes, in the coordinator's logs under `root`.
fn carried_frames(root: &Path) -> usize {
    logs(root)
        .iter()
        .map(|name| std::fs::read(root.join(".tusk").join(name)).expect("log"))
        .map(|log| log.windows(10).filter(|w| w == b"{\"Carried\"").count())
        .sum()
}

/// The coordinator's logs under `root`, by name.
fn logs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(".tusk"))
        .expect("coordinator directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_small_writes_are_restored_after_a_power_cut_and_nothing_else_is() {
    let root = tempfile::tempdir().expect("tempdir");
    let files = PartFiles::open(root.path()).expect("part files");
    let node = Node::start(root.path(), &files, files.clone(), COMPACT_AFTER_BYTES).await;
    let kept = payload(50_000, 1);
    let kept_id = common::create(&node.engine, kept.len()).await;
    common::patch(&node.engine, &kept_id, 0, &kept[..20_000]).await;
    common::patch(&node.engine, &kept_id, 20_000, &kept[20_000..]).await;
    let gone = payload(10_000, 2);
    let gone_id = common::create(&node.engine, gone.len()).await;
    common::patch(&node.engine, &gone_id, 0, &gone).await;
    node.engine
        .terminate(&gone_id, &Default::default())
        .await
        .expect("terminate");
    assert_eq!(carried_frames(root.path()), 3, "one per small PATCH");
    node.kill().await;

    let kept_parts = part_files(root.path(), &kept_id);
    assert_eq!(kept_parts.len(), 2);
    zero(&kept_parts[0]);
    std::fs::remove_file(&kept_parts[1]).expect("losing a part file");

    let node = Node::start(root.path(), &files, files.clone(), COMPACT_AFTER_BYTES).await;
    assert_eq!(
        check(
            common::read(&node.engine, &kept_id, kept.len()).await,
            &kept
        ),
        Ok(())
    );
    assert_eq!(
        part_files(root.path(), &gone_id),
        Vec::<PathBuf>::new(),
        "the files of a terminated upload were brought back"
    );
}

/// Part files that `make_durable` may not sync until the test lets it: a node that dies
/// after compacting its log, before its checkpoint made the files durable.
struct HeldCheckpoint {
    files: Arc<PartFiles>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl CarriedFiles for HeldCheckpoint {
    fn place(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> std::io::Result<()> {
        self.files.place(upload, target, bytes)
    }

    fn make_durable(&self, placed: &[(String, WriteTarget)]) -> std::io::Result<()> {
        let released = self.release.lock().expect("lock").recv();
        match released {
            Ok(()) => self.files.make_durable(placed),
            Err(_) => Err(std::io::Error::other("the node died before its checkpoint")),
        }
    }

    fn restore(&self, upload: &str, target: WriteTarget, bytes: &[u8]) -> std::io::Result<()> {
        self.files.restore(upload, target, bytes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_log_stays_until_its_files_are_durable_and_a_start_restores_from_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let files = PartFiles::open(root.path()).expect("part files");
    let (release, held) = mpsc::channel();
    let holding = Arc::new(HeldCheckpoint {
        files: files.clone(),
        release: Mutex::new(held),
    });
    // Compacts after about two small writes.
    let node = Node::start(root.path(), &files, holding, 8 << 10).await;
    let mut uploads = Vec::new();
    for seed in 0..6 {
        let data = payload(3_000 + usize::from(seed) * 100, seed);
        let id = common::create(&node.engine, data.len()).await;
        common::patch(&node.engine, &id, 0, &data).await;
        uploads.push((id, data));
    }
    let compacted = logs(root.path());
    assert!(
        compacted.len() > 1,
        "no compacted log was kept for its carried writes: {compacted:?}"
    );
    // The node dies before its checkpoints: each fails, and the compacted logs stay.
    drop(release);
    node.kill().await;
    let left = logs(root.path());
    assert!(
        compacted.iter().all(|log| left.contains(log)),
        "a log went without its checkpoint: {compacted:?}, then {left:?}"
    );
    for (id, _) in &uploads {
        for part in part_files(root.path(), id) {
            zero(&part);
        }
    }

    let node = Node::start(root.path(), &files, files.clone(), 8 << 10).await;
    for (id, data) in &uploads {
        assert_eq!(
            check(common::read(&node.engine, id, data.len()).await, data),
            Ok(()),
            "upload {id}"
        );
    }
    assert_eq!(
        logs(root.path()).len(),
        1,
        "the compacted logs outlived the start"
    );

    // A checkpoint that is let through deletes the compacted log once its files are synced.
    for seed in 10..16 {
        let data = payload(3_000, seed);
        let id = common::create(&node.engine, data.len()).await;
        common::patch(&node.engine, &id, 0, &data).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs(root.path()).len() > 1 {
        assert!(
            Instant::now() < deadline,
            "compacted logs stay: {:?}",
            logs(root.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
