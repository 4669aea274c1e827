//! The small-write journal after crashes and power cuts, on real files and through the
//! engine. A node is an `FsStorage` with its engine; killing it is dropping it: its lock is
//! released, its journal stays as it was (the checkpoint interval is a day, so no checkpoint
//! runs), nothing else happens. A power cut is simulated by editing the part files it left,
//! the way a filesystem that had not written them back leaves them: zeros of the same
//! length, or missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check, part_files, payload, walk, zero};
use tusk_core::contract::MemoryCoordinator;
use tusk_core::{Engine, EngineConfig, Storage};
use tusk_store_fs::{FsOptions, FsStorage};

mod common;

const DAY: Duration = Duration::from_secs(86_400);

struct Node {
    engine: Engine,
    storage: Arc<FsStorage>,
}

impl Node {
    /// A node on `root` that adopts the journals of dead nodes every `adopt_interval`.
    fn start(root: &Path, coordinator: &Arc<MemoryCoordinator>, adopt_interval: Duration) -> Self {
        let options = FsOptions {
            adopt_interval,
            checkpoint_interval: DAY,
            ..FsOptions::default()
        };
        let storage = Arc::new(FsStorage::with_options(root, options).expect("fs store"));
        let config = EngineConfig {
            lease_wait: Duration::ZERO,
            ..EngineConfig::default()
        };
        let engine = Engine::new(
            storage.clone() as Arc<dyn Storage>,
            coordinator.clone(),
            config,
        );
        Node { engine, storage }
    }

    /// Stops the node as kill -9 would: nothing is checkpointed, its lock is free.
    fn kill(self) {
        drop(self.engine);
        assert_eq!(
            Arc::strong_count(&self.storage),
            1,
            "the storage outlives its engine"
        );
    }

    async fn create(&self, length: usize) -> String {
        common::create(&self.engine, length).await
    }

    async fn patch(&self, id: &str, offset: usize, bytes: &[u8]) {
        common::patch(&self.engine, id, offset, bytes).await
    }

    async fn read(&self, id: &str, len: usize) -> Result<Vec<u8>, String> {
        common::read(&self.engine, id, len).await
    }
}

/// The journals that hold frames (the test is void without them).
fn non_empty_journals(root: &Path) -> Vec<PathBuf> {
    walk(&root.join(".journal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_small_writes_survive_a_power_cut_that_zeroed_their_part_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let coordinator = MemoryCoordinator::new();
    let node = Node::start(root.path(), &coordinator, DAY);
    // Two PATCHes into one upload, and one body of exactly the journal's limit.
    let a = payload(50_000, 1);
    let b = payload(64 << 10, 2);
    let id_a = node.create(a.len()).await;
    node.patch(&id_a, 0, &a[..20_000]).await;
    node.patch(&id_a, 20_000, &a[20_000..]).await;
    let id_b = node.create(b.len()).await;
    node.patch(&id_b, 0, &b).await;
    assert!(
        !non_empty_journals(root.path()).is_empty(),
        "nothing journaled"
    );
    node.kill();
    let parts = [
        part_files(root.path(), &id_a),
        part_files(root.path(), &id_b),
    ]
    .concat();
    assert_eq!(parts.len(), 3);
    for part in &parts {
        zero(part);
    }

    let node = Node::start(root.path(), &coordinator, DAY);
    assert_eq!(
        check(node.read(&id_a, a.len()).await, &a),
        Ok(()),
        "upload a"
    );
    assert_eq!(
        check(node.read(&id_b, b.len()).await, &b),
        Ok(()),
        "upload b"
    );
    assert!(
        non_empty_journals(root.path()).is_empty(),
        "the dead node's journal was not recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_brings_back_a_terminated_upload() {
    let root = tempfile::tempdir().expect("tempdir");
    let coordinator = MemoryCoordinator::new();
    let node = Node::start(root.path(), &coordinator, DAY);
    let gone = payload(10_000, 3);
    let kept = payload(30_000, 4);
    let gone_id = node.create(gone.len()).await;
    node.patch(&gone_id, 0, &gone).await;
    let kept_id = node.create(kept.len()).await;
    node.patch(&kept_id, 0, &kept).await;
    node.engine
        .terminate(&gone_id, &Default::default())
        .await
        .expect("terminate");
    assert!(part_files(root.path(), &gone_id).is_empty());
    node.kill();
    // The kept upload's file lost its directory entry: it exists, so it is recreated.
    for part in part_files(root.path(), &kept_id) {
        std::fs::remove_file(part).expect("losing a part file");
    }

    let node = Node::start(root.path(), &coordinator, DAY);
    assert_eq!(
        part_files(root.path(), &gone_id),
        Vec::<PathBuf>::new(),
        "recovery recreated the files of a terminated upload"
    );
    assert_eq!(check(node.read(&kept_id, kept.len()).await, &kept), Ok(()));
    assert!(non_empty_journals(root.path()).is_empty());
    assert!(
        walk(&root.path().join(".gone")).is_empty(),
        "tombstones outlived the journals that needed them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_adopts_a_dead_peers_journal_within_one_interval_never_while_it_lives() {
    let root = tempfile::tempdir().expect("tempdir");
    let coordinator = MemoryCoordinator::new();
    let peer = Node::start(root.path(), &coordinator, DAY);
    let interval = Duration::from_millis(300);
    let live = Node::start(root.path(), &coordinator, interval);
    let data = payload(40_000, 5);
    let id = peer.create(data.len()).await;
    peer.patch(&id, 0, &data).await;
    let parts = part_files(root.path(), &id);
    for part in &parts {
        zero(part);
    }
    // While the peer lives (its lock held), its journal is not touched.
    tokio::time::sleep(interval * 4).await;
    assert_eq!(
        check(live.read(&id, data.len()).await, &vec![0u8; data.len()]),
        Ok(()),
        "a live peer's part file was rewritten"
    );
    assert!(
        !non_empty_journals(root.path()).is_empty(),
        "a live peer's journal was adopted"
    );

    peer.kill();
    let died = Instant::now();
    let deadline = died + interval + Duration::from_secs(3);
    loop {
        let read = check(live.read(&id, data.len()).await, &data);
        if read.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} after the peer died (adoption every {interval:?}) the live node reads {read:?}",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("adopted {:?} after the peer died", died.elapsed());
    // The journal goes once all its files are restored and synced, a moment after.
    while !non_empty_journals(root.path()).is_empty() {
        assert!(Instant::now() < deadline, "the dead peer's journal stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_finds_a_part_file_missing_adopts_a_dead_peers_journal_at_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let coordinator = MemoryCoordinator::new();
    let peer = Node::start(root.path(), &coordinator, DAY);
    let live = Node::start(root.path(), &coordinator, DAY);
    let missing = payload(20_000, 6);
    let short = payload(30_000, 7);
    let missing_id = peer.create(missing.len()).await;
    peer.patch(&missing_id, 0, &missing).await;
    let short_id = peer.create(short.len()).await;
    peer.patch(&short_id, 0, &short).await;
    for part in part_files(root.path(), &missing_id) {
        std::fs::remove_file(part).expect("losing a part file");
    }
    for part in part_files(root.path(), &short_id) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .expect("part file");
        file.set_len(1000).expect("truncating");
    }
    // The peer lives: its journal is not the live node's to recover, and the read fails.
    let refused = live.read(&missing_id, missing.len()).await;
    assert!(
        refused.is_err(),
        "read {} bytes",
        refused.map_or(0, |b| b.len())
    );
    assert!(!non_empty_journals(root.path()).is_empty());

    peer.kill();
    assert_eq!(
        check(live.read(&short_id, short.len()).await, &short),
        Ok(())
    );
    assert_eq!(
        check(live.read(&missing_id, missing.len()).await, &missing),
        Ok(())
    );
    assert!(non_empty_journals(root.path()).is_empty());
}
