//! The engine and the embedded coordinator together, with a tiny in-memory storage.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tusk_core::contract::commit_and_release;
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::{
    BodyError, ByteStream, Chunks, Commit, Coordinator, CreateChanges, CreateUpload, Engine,
    EngineConfig, Error, HookEvent, HookRefusal, Hooks, IncomingBody, Lease, PatchRequest,
    RequestInfo, Segment, Storage, StorageError, Stored, UploadRecord, WriteContext, WriteTarget,
};

/// Targets in a map; like every real store, a target can be created only once, and like fs
/// it folds the trailing targets into a write's own past `fold::MOST_PIECES`.
#[derive(Default)]
struct MemStorage {
    targets: Mutex<HashMap<(String, WriteTarget), Vec<u8>>>,
}

#[async_trait]
impl Storage for MemStorage {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn write(
        &self,
        context: WriteContext<'_>,
        mut chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError> {
        let target = context.lease.reserve().await?;
        let upload = context.lease.upload_id().to_string();
        let key = (upload.clone(), target);
        let segments = &context.record().segments;
        let fold = tusk_core::fold::pieces_to_fold(segments, 0);
        let mut bytes = Vec::new();
        {
            let targets = self.targets.lock().expect("lock");
            if targets.contains_key(&key) {
                return Err(StorageError::TargetExists(target));
            }
            for s in &segments[segments.len() - fold..] {
                bytes.extend_from_slice(committed(&targets, &upload, s)?);
            }
        }
        let folded_len = bytes.len() as u64;
        while let Some(chunk) = chunks.next().await {
            bytes.extend_from_slice(&chunk);
        }
        let n = bytes.len() as u64;
        if n == folded_len {
            return Ok(Stored::default());
        }
        self.targets.lock().expect("lock").insert(key, bytes);
        Ok(Stored {
            written: n - folded_len,
            append: vec![Segment::new(target, n)],
            fold,
            rewritten: folded_len,
            ..Stored::default()
        })
    }
    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError> {
        lease.confirm().await?;
        let mut targets = self.targets.lock().expect("lock");
        for s in &stored.append {
            targets.remove(&(lease.upload_id().to_string(), s.target));
        }
        Ok(())
    }
    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let upload = &record.id;
        let targets = self.targets.lock().expect("lock");
        let mut all = Vec::new();
        for s in &record.segments {
            all.extend_from_slice(committed(&targets, upload, s)?);
        }
        let part = Bytes::copy_from_slice(&all[range.start as usize..range.end as usize]);
        Ok(Box::pin(futures_util::stream::iter([Ok(part)])))
    }
    async fn remove_uncommitted(&self, lease: &Lease) -> Result<usize, StorageError> {
        lease.confirm().await?;
        let record = lease.record();
        let mut targets = self.targets.lock().expect("lock");
        let before = targets.len();
        targets
            .retain(|(u, t), _| *u != record.id || record.segments.iter().any(|s| s.target == *t));
        Ok(before - targets.len())
    }
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    async fn delete(&self, lease: &Lease) -> Result<(), StorageError> {
        lease.confirm().await?;
        self.targets
            .lock()
            .expect("lock")
            .retain(|(u, _), _| u != lease.upload_id());
        Ok(())
    }
}

/// The committed bytes of `segment` of `upload`.
fn committed<'a>(
    targets: &'a HashMap<(String, WriteTarget), Vec<u8>>,
    upload: &str,
    segment: &Segment,
) -> Result<&'a [u8], StorageError> {
    let bytes = targets
        .get(&(upload.to_string(), segment.target))
        .ok_or_else(|| StorageError::MissingSegment {
            upload: upload.to_string(),
            target: segment.target,
        })?;
    Ok(&bytes[..segment.len as usize])
}

fn body(parts: &[&'static [u8]]) -> IncomingBody {
    let parts: Vec<Result<Bytes, BodyError>> =
        parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn new_engine(dir: &std::path::Path, config: EngineConfig) -> (Arc<Engine>, Arc<MemStorage>) {
    let storage = Arc::new(MemStorage::default());
    let coord = EmbeddedCoordinator::open(dir)
        .await
        .expect("open coordinator");
    (
        Arc::new(Engine::new(storage.clone(), coord, config)),
        storage,
    )
}

async fn create(engine: &Engine, length: u64) -> String {
    let upload = CreateUpload {
        length: Some(length),
        ..Default::default()
    };
    engine.create(upload).await.expect("create").id
}

fn patch_at(offset: u64) -> PatchRequest {
    PatchRequest {
        offset,
        declare_length: None,
        ends_upload: false,
        checksum: None,
        content_length: None,
        request: Default::default(),
    }
}

/// A body that sends `first` and then nothing, like a client on a dead link, until the
/// returned sender is dropped.
async fn stalled_body(
    first: &'static [u8],
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, BodyError>>,
    IncomingBody,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    tx.send(Ok(Bytes::from_static(first))).await.expect("send");
    let body = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

async fn read_all(engine: &Engine, id: &str, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = engine.read(id, 0..len).await.expect("read");
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.expect("bytes"));
    }
    out
}

#[tokio::test]
async fn a_second_patch_makes_the_first_commit_what_it_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        lease_wait: Duration::from_secs(5),
        ..Default::default()
    };
    let (engine, _) = new_engine(dir.path(), config).await;
    let id = create(&engine, 100).await;
    // The first body sends 5 bytes and then stalls, like a client on a dead link.
    let (tx, stalled) = stalled_body(b"hello").await;
    let first = tokio::spawn({
        let engine = engine.clone();
        let id = id.clone();
        async move { engine.patch(&id, patch_at(0), stalled).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The resuming client still believes the offset is 0: it gets 409, after the first
    // request committed its 5 bytes.
    let second = engine.patch(&id, patch_at(0), body(&[b"world"])).await;
    assert!(
        matches!(
            second,
            Err(Error::OffsetMismatch {
                expected: 5,
                got: 0
            })
        ),
        "{second:?}"
    );
    let first = first.await.expect("join").expect("first patch commits");
    assert_eq!(first.offset, 5);
    let third = engine
        .patch(&id, patch_at(5), body(&[b" world"]))
        .await
        .expect("resume");
    assert_eq!(third.offset, 11);
    assert_eq!(read_all(&engine, &id, 11).await, b"hello world");
    drop(tx);
}

/// A client whose link died mid-PATCH and that resumes from the offset it reached (ahead of
/// the last commit) makes the stalled PATCH commit what it has, then continues from there:
/// no 409 for being ahead of a commit that was about to happen.
#[tokio::test]
async fn a_patch_ahead_of_the_commit_makes_the_stalled_one_commit_then_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        lease_wait: Duration::from_secs(5),
        ..Default::default()
    };
    let (engine, _) = new_engine(dir.path(), config).await;
    let id = create(&engine, 10).await;
    let (tx, stalled) = stalled_body(b"hello").await;
    let first = tokio::spawn({
        let engine = engine.clone();
        let id = id.clone();
        async move { engine.patch(&id, patch_at(0), stalled).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = engine
        .patch(&id, patch_at(5), body(&[b"world"]))
        .await
        .expect("the resuming PATCH at 5 goes on after the stalled one committed");
    assert_eq!(second.offset, 10);
    assert_eq!(first.await.expect("join").expect("first commits").offset, 5);
    assert_eq!(read_all(&engine, &id, 10).await, b"helloworld");
    // Behind the committed offset is still a conflict, at once.
    let behind = engine.patch(&id, patch_at(3), body(&[b"x"])).await;
    assert!(
        matches!(behind, Err(Error::Gone | Error::OffsetMismatch { .. })),
        "{behind:?}"
    );
    drop(tx);
}

#[tokio::test]
async fn a_checksum_mismatch_commits_nothing_and_leaves_no_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, storage) = new_engine(dir.path(), EngineConfig::default()).await;
    let id = create(&engine, 5).await;
    let wrong = tusk_protocol::parse_checksum("sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("header");
    let request = PatchRequest {
        checksum: Some(wrong),
        ..patch_at(0)
    };
    let result = engine.patch(&id, request, body(&[b"hello"])).await;
    assert!(matches!(result, Err(Error::ChecksumMismatch)), "{result:?}");
    assert_eq!(engine.view(&id).await.expect("view").record.offset, 0);
    assert!(
        storage.targets.lock().expect("lock").is_empty(),
        "the target was not discarded"
    );
    // sha1("hello")
    let right = tusk_protocol::parse_checksum("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=").expect("header");
    let request = PatchRequest {
        checksum: Some(right),
        ..patch_at(0)
    };
    assert_eq!(
        engine
            .patch(&id, request, body(&[b"hel", b"lo"]))
            .await
            .expect("patch")
            .offset,
        5
    );
}

#[tokio::test]
async fn a_body_past_the_length_commits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, _) = new_engine(dir.path(), EngineConfig::default()).await;
    let id = create(&engine, 4).await;
    let result = engine.patch(&id, patch_at(0), body(&[b"ab", b"cde"])).await;
    assert!(matches!(result, Err(Error::TooLarge(_))), "{result:?}");
    assert_eq!(engine.view(&id).await.expect("view").record.offset, 0);
}

#[tokio::test]
async fn records_and_tokens_survive_reopening_across_compactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ids = Vec::new();
    let last_token;
    {
        // A tiny compaction threshold: the log is snapshotted many times on the way.
        let coord = EmbeddedCoordinator::open_with_compaction(dir.path(), 2048)
            .await
            .expect("open");
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::default());
        let engine = Engine::new(storage, coord.clone(), EngineConfig::default());
        for i in 0..40u64 {
            let id = create(&engine, 100).await;
            let lease = coord.acquire(&id, Duration::ZERO).await.expect("lease");
            let target = lease.reserve().await.expect("reserve");
            let commit = Commit {
                expected_offset: 0,
                added: i,
                append: vec![Segment::new(target, i)],
                fold: 0,
                session: None,
                declare_length: None,
                expires_at: None,
                notice: None,
                stamp: None,
            };
            commit_and_release(lease, &commit).await.expect("commit");
            ids.push((id, i));
        }
        last_token = coord
            .acquire(&ids[0].0, Duration::ZERO)
            .await
            .expect("lease")
            .token();
    }
    let coord = EmbeddedCoordinator::open_with_compaction(dir.path(), 2048)
        .await
        .expect("reopen");
    for (id, offset) in &ids {
        let record = coord
            .load(id)
            .await
            .expect("load")
            .expect("record survived");
        assert_eq!(record.offset, *offset);
    }
    let token = coord
        .acquire(&ids[1].0, Duration::ZERO)
        .await
        .expect("lease")
        .token();
    assert!(
        token > last_token,
        "a token was reused after restart: {token} <= {last_token}"
    );
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let (engine, _) = new_engine(dir.path(), EngineConfig::default()).await;
        create(&engine, 7).await
    };
    // A kill -9 in the middle of a frame leaves a partial frame at the end.
    let wal = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .expect("a log file")
        .path();
    let mut bytes = std::fs::read(&wal).expect("read log");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']);
    std::fs::write(&wal, bytes).expect("tear log");
    let (engine, _) = new_engine(dir.path(), EngineConfig::default()).await;
    assert_eq!(engine.view(&id).await.expect("view").record.length, Some(7));
    let second = create(&engine, 1).await;
    drop(engine);
    let (engine, _) = new_engine(dir.path(), EngineConfig::default()).await;
    assert!(
        engine.view(&second).await.is_ok(),
        "a record written after the cut survives"
    );
}

#[tokio::test]
async fn the_sweeper_expires_idle_uploads_then_forgets_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        expire_after: Some(Duration::from_secs(1)),
        tombstone_ttl: Duration::ZERO,
        ..Default::default()
    };
    let (engine, storage) = new_engine(dir.path(), config).await;
    let idle = create(&engine, 10).await;
    engine
        .patch(&idle, patch_at(0), body(&[b"abc"]))
        .await
        .expect("patch");
    let done = create(&engine, 2).await;
    engine
        .patch(&done, patch_at(0), body(&[b"ok"]))
        .await
        .expect("patch");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!((report.expired, report.purged), (1, 0));
    assert!(matches!(engine.view(&idle).await, Err(Error::Gone)));
    assert!(
        engine.view(&done).await.is_ok(),
        "finished uploads never expire"
    );
    assert_eq!(
        storage.targets.lock().expect("lock").len(),
        1,
        "the expired upload's bytes are deleted"
    );
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!((report.expired, report.purged), (0, 1));
    assert!(matches!(engine.view(&idle).await, Err(Error::NotFound)));
}

/// Reserved sequence numbers (S3's part numbers) never repeat for an upload, not even across
/// a restart after a crash that left reservations uncommitted, and not across compactions.
#[tokio::test]
async fn reserved_numbers_never_repeat_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reserved = Vec::new();
    let id = {
        let coord = EmbeddedCoordinator::open_with_compaction(dir.path(), 2048)
            .await
            .expect("open");
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::default());
        let engine = Engine::new(storage, coord.clone(), EngineConfig::default());
        let id = create(&engine, 100).await;
        // Other uploads' records push the log past its compaction size.
        for _ in 0..30 {
            create(&engine, 100).await;
        }
        let lease = coord.acquire(&id, Duration::ZERO).await.expect("lease");
        for _ in 0..40 {
            reserved.push(lease.reserve().await.expect("reserve").seq);
        }
        let first = Segment::new(
            tusk_core::WriteTarget {
                token: lease.token(),
                seq: reserved[0],
            },
            1,
        );
        let commit = Commit {
            expected_offset: 0,
            added: 1,
            append: vec![first],
            fold: 0,
            session: None,
            declare_length: None,
            expires_at: None,
            notice: None,
            stamp: None,
        };
        commit_and_release(lease, &commit).await.expect("commit");
        let lease = coord.acquire(&id, Duration::ZERO).await.expect("lease");
        for _ in 0..40 {
            reserved.push(lease.reserve().await.expect("reserve").seq);
        }
        for _ in 0..30 {
            create(&engine, 100).await;
        }
        // The process dies holding the lease, 39 + 40 reservations never committed.
        id
    };
    for _ in 0..2 {
        let coord = EmbeddedCoordinator::open_with_compaction(dir.path(), 2048)
            .await
            .expect("reopen");
        let lease = coord.acquire(&id, Duration::ZERO).await.expect("lease");
        for _ in 0..3 {
            let seq = lease.reserve().await.expect("reserve").seq;
            assert!(
                !reserved.contains(&seq),
                "sequence number {seq} reserved again after a restart"
            );
            reserved.push(seq);
        }
    }
}

/// Hooks that record deliveries of post-finish and post-terminate and acknowledge them as
/// told (in order; once the answers run out, every delivery is acknowledged).
#[derive(Default)]
struct RecordingHooks {
    delivered: Mutex<Vec<(HookEvent, String)>>,
    answers: Mutex<std::collections::VecDeque<bool>>,
    refuse_finish: bool,
}

#[async_trait]
impl Hooks for RecordingHooks {
    fn enabled(&self, event: HookEvent) -> bool {
        matches!(
            event,
            HookEvent::PostFinish | HookEvent::PostTerminate | HookEvent::PreFinish
        )
    }
    async fn pre_create(
        &self,
        _: &UploadRecord,
        _: &RequestInfo,
    ) -> Result<CreateChanges, HookRefusal> {
        Ok(CreateChanges::default())
    }
    async fn pre_access(
        &self,
        _: &UploadRecord,
        _: tusk_core::Access,
        _: &RequestInfo,
    ) -> Result<(), HookRefusal> {
        Ok(())
    }
    async fn pre_finish(&self, _: &UploadRecord, _: &RequestInfo) -> Result<(), HookRefusal> {
        if self.refuse_finish {
            return Err(HookRefusal::Unavailable);
        }
        Ok(())
    }
    fn notify(&self, _: HookEvent, _: &UploadRecord, _: Option<&RequestInfo>) {}
    async fn deliver(
        &self,
        event: HookEvent,
        upload: &UploadRecord,
        _: Option<&RequestInfo>,
    ) -> bool {
        self.delivered
            .lock()
            .expect("lock")
            .push((event, upload.id.clone()));
        self.answers
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(true)
    }
    fn delivery_time(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl RecordingHooks {
    fn refusing(first: usize) -> Self {
        Self {
            answers: Mutex::new(std::iter::repeat_n(false, first).collect()),
            ..Self::default()
        }
    }

    fn deliveries(&self) -> Vec<(HookEvent, String)> {
        self.delivered.lock().expect("lock").clone()
    }
}

async fn hooked_engine(
    dir: &std::path::Path,
    config: EngineConfig,
    hooks: Arc<RecordingHooks>,
) -> Arc<Engine> {
    let coord = EmbeddedCoordinator::open(dir)
        .await
        .expect("open coordinator");
    Arc::new(Engine::new(Arc::new(MemStorage::default()), coord, config).with_hooks(hooks))
}

/// Polls `check` for up to two seconds.
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 2 s");
}

async fn owed(engine: &Engine, id: &str) -> Option<HookEvent> {
    match engine.view(id).await {
        Ok(view) => view.record.notice.map(|n| n.event),
        Err(Error::Gone) => None,
        Err(error) => panic!("view: {error}"),
    }
}

#[tokio::test]
async fn post_finish_stays_owed_until_acknowledged_and_the_sweeper_delivers_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Arc::new(RecordingHooks::refusing(1));
    let engine = hooked_engine(dir.path(), EngineConfig::default(), hooks.clone()).await;
    let id = create(&engine, 3).await;
    engine
        .patch(&id, patch_at(0), body(&[b"abc"]))
        .await
        .expect("patch");
    eventually("the first delivery", || async {
        hooks.deliveries().len() == 1
    })
    .await;
    assert_eq!(
        owed(&engine, &id).await,
        Some(HookEvent::PostFinish),
        "an unacknowledged post-finish stays owed"
    );
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!(report.redelivered, 0, "not due before the delivery time");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!(report.redelivered, 1, "due: the sweeper delivers it again");
    eventually("clearing the acknowledged notice", || async {
        owed(&engine, &id).await.is_none()
    })
    .await;
    assert_eq!(
        hooks.deliveries(),
        vec![(HookEvent::PostFinish, id.clone()); 2]
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!(report.redelivered, 0, "acknowledged: never again");
}

#[tokio::test]
async fn a_tombstone_is_purged_only_once_its_post_terminate_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Arc::new(RecordingHooks::refusing(1));
    let config = EngineConfig {
        tombstone_ttl: Duration::ZERO,
        ..Default::default()
    };
    let engine = hooked_engine(dir.path(), config, hooks.clone()).await;
    let id = create(&engine, 10).await;
    engine
        .terminate(&id, &RequestInfo::default())
        .await
        .expect("terminate");
    eventually("the first delivery", || async {
        hooks.deliveries().len() == 1
    })
    .await;
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!(
        (report.purged, report.redelivered),
        (0, 0),
        "a tombstone owing post-terminate is not purged"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = engine.sweep_once().await.expect("sweep");
    assert_eq!((report.purged, report.redelivered), (0, 1));
    eventually("the second delivery", || async {
        hooks.deliveries().len() == 2
    })
    .await;
    eventually("the purge once acknowledged", || async {
        engine.sweep_once().await.expect("sweep").purged == 1
    })
    .await;
    assert!(matches!(engine.view(&id).await, Err(Error::NotFound)));
    assert_eq!(
        hooks.deliveries(),
        vec![(HookEvent::PostTerminate, id.clone()); 2]
    );
}

#[tokio::test]
async fn a_finish_the_pre_finish_hook_refused_owes_no_post_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Arc::new(RecordingHooks {
        refuse_finish: true,
        ..Default::default()
    });
    let engine = hooked_engine(dir.path(), EngineConfig::default(), hooks.clone()).await;
    let id = create(&engine, 2).await;
    let refused = engine.patch(&id, patch_at(0), body(&[b"ok"])).await;
    assert!(refused.is_err(), "pre-finish refused the answer");
    eventually("the notice is dropped", || async {
        owed(&engine, &id).await.is_none()
    })
    .await;
    assert_eq!(engine.view(&id).await.expect("view").record.offset, 2);
    assert!(hooks.deliveries().is_empty(), "no post-finish");
}

/// The embedded coordinator with faults a remote one has: every `load` takes `load_delay`
/// (a round trip; the most loads running at once are counted), and the acquisitions that
/// `locked` marks true (one entry per call, in order; calls past it go through) answer
/// `Locked`, as if another request held the lease just then.
struct Scripted {
    inner: Arc<EmbeddedCoordinator>,
    load_delay: Duration,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    locked: Mutex<std::collections::VecDeque<bool>>,
    /// Acquisitions that do not wait (tidying's), counted; answered `Locked` while set.
    immediate: std::sync::atomic::AtomicUsize,
    refuse_immediate: std::sync::atomic::AtomicBool,
}

impl Scripted {
    async fn open(dir: &std::path::Path, load_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: EmbeddedCoordinator::open(dir)
                .await
                .expect("open coordinator"),
            load_delay,
            running: Default::default(),
            most: Default::default(),
            locked: Mutex::default(),
            immediate: Default::default(),
            refuse_immediate: Default::default(),
        })
    }
}

#[async_trait]
impl Coordinator for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    async fn create(&self, record: &UploadRecord) -> Result<(), tusk_core::CoordError> {
        self.inner.create(record).await
    }
    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, tusk_core::CoordError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(self.load_delay).await;
        self.running.fetch_sub(1, SeqCst);
        self.inner.load(id).await
    }
    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, tusk_core::CoordError> {
        let locked = self
            .locked
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(false);
        if locked {
            return Err(tusk_core::CoordError::Locked);
        }
        if wait.is_zero() {
            use std::sync::atomic::Ordering::SeqCst;
            self.immediate.fetch_add(1, SeqCst);
            if self.refuse_immediate.load(SeqCst) {
                return Err(tusk_core::CoordError::Locked);
            }
        }
        self.inner.acquire(id, wait).await
    }
    async fn due_for_sweep(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<String>, tusk_core::CoordError> {
        self.inner.due_for_sweep(now, limit).await
    }
    async fn ping(&self) -> Result<(), tusk_core::CoordError> {
        self.inner.ping().await
    }
}

/// A HEAD of a final upload over many unfinished partials loads them concurrently: it
/// costs a few coordinator round trips, not one per partial.
#[tokio::test]
async fn a_final_over_many_unfinished_partials_loads_them_concurrently() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = Scripted::open(dir.path(), Duration::from_millis(20)).await;
    let engine = Engine::new(
        Arc::new(MemStorage::default()),
        coord.clone(),
        EngineConfig::default(),
    );
    let mut parts = Vec::new();
    for _ in 0..40 {
        let partial = CreateUpload {
            length: Some(10),
            concat: Some((tusk_protocol::ConcatRequest::Partial, Vec::new())),
            ..Default::default()
        };
        parts.push(engine.create(partial).await.expect("create partial").id);
    }
    let urls = parts.iter().map(|id| format!("/files/{id}")).collect();
    let final_upload = CreateUpload {
        concat: Some((tusk_protocol::ConcatRequest::Final(urls), parts.clone())),
        ..Default::default()
    };
    let id = engine.create(final_upload).await.expect("create final").id;
    coord.most.store(0, SeqCst);
    let started = std::time::Instant::now();
    let view = engine.view(&id).await.expect("view");
    let took = started.elapsed();
    assert!(!view.offset_known);
    assert_eq!(view.record.length, Some(400));
    assert!(
        coord.most.load(SeqCst) > 1,
        "the partials were loaded one at a time"
    );
    // 41 sequential loads take 820ms; 16 at a time about 80ms.
    assert!(took < Duration::from_millis(400), "HEAD took {took:?}");
}

/// The tidying after a finishing commit waits out a request that holds the lease for a
/// moment (such as a PATCH it answers 409) instead of leaving the upload's stray targets to
/// the sweeper. Before, one `Locked` made it give up: seen as a tail object left in the
/// bucket after two clients raced to finish one upload.
#[tokio::test]
async fn tidying_after_the_finish_waits_out_a_brief_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = Scripted::open(dir.path(), Duration::ZERO).await;
    let storage = Arc::new(MemStorage::default());
    let engine = Engine::new(storage.clone(), coord.clone(), EngineConfig::default());
    let id = create(&engine, 5).await;
    // A writer that stored a target and lost it before committing leaves a stray.
    let lease = coord.acquire(&id, Duration::ZERO).await.expect("lease");
    let stray = lease.reserve().await.expect("reserve");
    storage
        .targets
        .lock()
        .expect("lock")
        .insert((id.clone(), stray), b"stray".to_vec());
    lease.release().await.expect("release");

    // The PATCH takes the lease; the tidying after its finishing commit finds it taken once.
    coord.locked.lock().expect("lock").extend([false, true]);
    let finished = engine
        .patch(&id, patch_at(0), body(&[b"hello"]))
        .await
        .expect("patch");
    assert_eq!(finished.offset, 5);
    eventually("removing the stray target", async || {
        !storage
            .targets
            .lock()
            .expect("lock")
            .contains_key(&(id.clone(), stray))
    })
    .await;
    assert_eq!(read_all(&engine, &id, 5).await, b"hello");
}

/// Tidying waits for the lease off the request's path; PATCHes that fold one after another
/// must leave one waiting task per upload, not one each. Before, 200 one-byte PATCHes (a
/// fold every 14-16) left a task per fold polling the coordinator for up to 30 s.
#[tokio::test]
async fn folds_in_a_row_leave_one_tidying_task_waiting() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = Scripted::open(dir.path(), Duration::ZERO).await;
    let storage = Arc::new(MemStorage::default());
    let config = EngineConfig {
        lease_wait: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let engine = Engine::new(storage.clone(), coord.clone(), config);
    let id = create(&engine, 1000).await;
    // Another request holds the lease whenever tidying asks (it never waits).
    coord.refuse_immediate.store(true, SeqCst);
    for offset in 0..200 {
        engine
            .patch(&id, patch_at(offset), body(&[b"x"]))
            .await
            .expect("patch");
    }
    let before = coord.immediate.load(SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = coord.immediate.load(SeqCst) - before;
    coord.refuse_immediate.store(false, SeqCst);
    assert!(
        attempts <= 8,
        "tidying asked for the lease {attempts} times in a second"
    );
    // The one task forgets every folded target once it gets the lease.
    eventually("the folded targets are removed", async || {
        let record = engine.view(&id).await.expect("view").record;
        let held = storage
            .targets
            .lock()
            .expect("lock")
            .keys()
            .filter(|(upload, _)| *upload == id)
            .count();
        held == record.segments.len()
    })
    .await;
    assert_eq!(read_all(&engine, &id, 200).await, vec![b'x'; 200]);
}
