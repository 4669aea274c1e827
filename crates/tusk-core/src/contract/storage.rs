//! The storage contract: what every [`Storage`] must do, checked the same way on each. A
//! storage crate calls [`storage_contract`] from its own tests with a fixture that makes a
//! fresh store and can list what the store holds for an upload.
//!
//! The engine drives the ordinary paths (PATCH, GET, DELETE, concatenation, sweeps) over a
//! [`MemoryCoordinator`], whose leases a case can make lost at will; the fencing cases call
//! the storage directly with a lease that was lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{new_id, MemoryCoordinator};
use crate::fold::MOST_PIECES;
use crate::{
    Commit, ConcatKind, CoordError, Coordinator, CreateUpload, Engine, EngineConfig, Error,
    IncomingBody, PatchRequest, Storage, StorageError, Stored, WriteContext,
};

/// Makes the storage under test and looks inside it.
#[async_trait]
pub trait StorageFixture: Send + Sync {
    /// A fresh, empty store. Leftovers it can report must be reported at once (no grace).
    async fn storage(&self) -> Arc<dyn Storage>;

    /// Whether the store serves the bytes of an unfinished upload.
    fn reads_unfinished(&self) -> bool;

    /// Everything the store holds for `upload`, by any name the fixture likes (files,
    /// objects, multipart uploads), sorted: how removals are checked.
    async fn stored(&self, storage: &dyn Storage, upload: &str) -> Vec<String>;
}

/// Runs every case of the contract, in order; panics naming the case that failed.
pub async fn storage_contract(fixture: &dyn StorageFixture) {
    writes_read_back_exactly(fixture).await;
    writes_of_one_lease_ending_anywhere_read_back_exactly(fixture).await;
    a_refused_write_leaves_nothing(fixture).await;
    termination_removes_everything(fixture).await;
    a_zombie_write_never_changes_committed_bytes(fixture).await;
    removal_under_a_lost_lease_removes_nothing(fixture).await;
    a_commit_whose_answer_was_lost_keeps_its_bytes(fixture).await;
    a_write_that_never_committed_goes_once_the_upload_finishes(fixture).await;
    many_small_writes_keep_few_pieces(fixture).await;
    a_read_goes_on_past_pieces_folded_under_it(fixture).await;
    concatenation_joins_partials(fixture).await;
}

struct Setup {
    storage: Arc<dyn Storage>,
    coordinator: Arc<MemoryCoordinator>,
    engine: Engine,
}

async fn setup(fixture: &dyn StorageFixture) -> Setup {
    let storage = fixture.storage().await;
    let coordinator = MemoryCoordinator::new();
    let config = EngineConfig {
        lease_wait: Duration::ZERO,
        lease_renew_interval: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let engine = Engine::new(storage.clone(), coordinator.clone(), config);
    Setup {
        storage,
        coordinator,
        engine,
    }
}

/// The commit of what a write stored at `expected_offset`, declaring and owing nothing.
fn commit_of(stored: Stored, expected_offset: u64) -> Commit {
    Commit {
        expected_offset,
        added: stored.written,
        append: stored.append,
        fold: stored.fold,
        session: stored.session,
        declare_length: None,
        expires_at: None,
        notice: None,
        stamp: None,
    }
}

/// Bytes that differ at every position, so a misplaced piece shows.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn body(bytes: &[u8]) -> IncomingBody {
    let pieces: Vec<Result<Bytes, crate::BodyError>> = bytes
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(pieces))
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

async fn create(engine: &Engine, length: Option<u64>) -> String {
    let request = CreateUpload {
        length,
        ..CreateUpload::default()
    };
    engine.create(request).await.expect("create").id
}

async fn patch(engine: &Engine, id: &str, offset: usize, bytes: &[u8]) {
    let record = engine
        .patch(id, patch_at(offset as u64), body(bytes))
        .await
        .expect("patch");
    assert_eq!(record.offset, (offset + bytes.len()) as u64, "committed");
}

/// [`patch`] as a client does it that retries after 423: the tidying after a fold holds the
/// lease for a moment, off the PATCH's path (the contract's coordinator never waits).
async fn patch_retrying(engine: &Engine, id: &str, offset: usize, bytes: &[u8]) {
    for _ in 0..500 {
        match engine.patch(id, patch_at(offset as u64), body(bytes)).await {
            Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            outcome => {
                let record = outcome.expect("patch");
                assert_eq!(record.offset, (offset + bytes.len()) as u64, "committed");
                return;
            }
        }
    }
    panic!("the upload stayed locked for 5 s");
}

async fn read(engine: &Engine, id: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut stream = engine.read(id, range).await.expect("read");
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.expect("bytes"));
    }
    out
}

/// Waits until what the store holds for `upload` satisfies `done` (tidying after a commit
/// runs off the request's path).
async fn settle(
    fixture: &dyn StorageFixture,
    storage: &dyn Storage,
    upload: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut stored = fixture.stored(storage, upload).await;
    for _ in 0..100 {
        if done(&stored) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = fixture.stored(storage, upload).await;
    }
    stored
}

pub async fn writes_read_back_exactly(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(3 * 1024 * 1024 + 12_345, 1);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    // Small, odd and large PATCHes, as tus clients send them.
    let cuts = [0, 1, 1000, 70_000, 2_000_000, data.len()];
    for pair in cuts.windows(2) {
        patch(&s.engine, &id, pair[0], &data[pair[0]..pair[1]]).await;
        if fixture.reads_unfinished() && pair[1] < data.len() {
            let got = read(&s.engine, &id, 0..pair[1] as u64).await;
            assert!(
                got == data[..pair[1]],
                "writes_read_back_exactly: unfinished"
            );
        }
    }
    let len = data.len() as u64;
    assert!(
        read(&s.engine, &id, 0..len).await == data,
        "writes_read_back_exactly"
    );
    for range in [0..1, 999..1001, 69_999..2_000_001, len - 7..len] {
        let got = read(&s.engine, &id, range.clone()).await;
        assert!(
            got == data[range.start as usize..range.end as usize],
            "writes_read_back_exactly: range {range:?}"
        );
    }
    // A zero-length upload is finished at birth and reads as nothing.
    let empty = create(&s.engine, Some(0)).await;
    assert!(read(&s.engine, &empty, 0..0).await.is_empty());
}

/// A PATCH writes its body stretch by stretch under one lease, committing after each, and a
/// stretch whose client stalls ends wherever it stands (S3: inside a part, leaving a tail).
/// Small writes one after another (each its own piece: an S3 tail, an fs file) leave at
/// most [`MOST_PIECES`] pieces: past it a write folds the trailing ones into its own, and
/// the pieces it replaced are removed. The bytes read back exactly, before and after the
/// upload finishes.
pub async fn many_small_writes_keep_few_pieces(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    const WRITES: usize = 40;
    let piece = 10 << 10;
    let data = payload(WRITES * piece + 1, 11);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    for i in 0..WRITES {
        patch_retrying(&s.engine, &id, i * piece, &data[i * piece..(i + 1) * piece]).await;
    }
    let segments = s
        .engine
        .view(&id)
        .await
        .expect("view")
        .record
        .segments
        .len();
    assert!(
        segments <= MOST_PIECES,
        "{WRITES} small writes left {segments} segments in the record"
    );
    // The pieces, and an S3 multipart upload.
    let stored = settle(fixture, s.storage.as_ref(), &id, |held| {
        held.len() <= MOST_PIECES + 1
    })
    .await;
    assert!(
        stored.len() <= MOST_PIECES + 1,
        "{WRITES} small writes left {} things in the store: {stored:?}",
        stored.len()
    );
    let unfinished = WRITES * piece;
    if fixture.reads_unfinished() {
        assert!(
            read(&s.engine, &id, 0..unfinished as u64).await == data[..unfinished],
            "the unfinished upload reads back different bytes"
        );
    }
    patch_retrying(&s.engine, &id, unfinished, &data[unfinished..]).await;
    assert!(
        read(&s.engine, &id, 0..data.len() as u64).await == data,
        "the finished upload reads back different bytes"
    );
}

/// A read of an unfinished upload takes no lease: a write may fold the pieces it has not
/// reached yet, and they are removed. The read goes on from where it was, byte-exact.
pub async fn a_read_goes_on_past_pieces_folded_under_it(fixture: &dyn StorageFixture) {
    if !fixture.reads_unfinished() {
        return;
    }
    let s = setup(fixture).await;
    let piece = 10 << 10;
    let data = payload((MOST_PIECES + 2) * piece + 1, 12);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    let before = (MOST_PIECES - 1) * piece;
    for i in 0..MOST_PIECES - 1 {
        patch_retrying(&s.engine, &id, i * piece, &data[i * piece..(i + 1) * piece]).await;
    }
    let mut reading = s.engine.read(&id, 0..before as u64).await.expect("read");
    let mut got = reading
        .next()
        .await
        .expect("a first chunk")
        .expect("bytes")
        .to_vec();
    assert!(got.len() < before, "the first chunk was the whole range");
    // The second of these writes finds MOST_PIECES pieces and folds them all (each is no
    // bigger than those after it).
    for i in MOST_PIECES - 1..MOST_PIECES + 1 {
        patch_retrying(&s.engine, &id, i * piece, &data[i * piece..(i + 1) * piece]).await;
    }
    settle(fixture, s.storage.as_ref(), &id, |held| held.len() <= 2).await;
    while let Some(chunk) = reading.next().await {
        got.extend_from_slice(&chunk.expect("the read went on after the fold"));
    }
    assert!(got == data[..before], "the read got different bytes");
}

/// Three such writes under one lease, then the rest in a PATCH, read back exactly.
pub async fn writes_of_one_lease_ending_anywhere_read_back_exactly(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(300_000, 13);
    let len = data.len() as u64;
    let id = create(&s.engine, Some(len)).await;
    let mut lease = s
        .coordinator
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    let cuts = [0, 70_001, 140_003, 210_007];
    for (stretch, piece) in (0u32..).zip(cuts.windows(2)) {
        let bytes = Bytes::copy_from_slice(&data[piece[0]..piece[1]]);
        let chunks: crate::Chunks<'_> = Box::pin(futures_util::stream::iter(vec![bytes]));
        let context = WriteContext {
            lease: &lease,
            length: Some(len),
            stretch,
        };
        let stored = s.storage.write(context, chunks).await.unwrap_or_else(|e| {
            panic!("writes_of_one_lease_ending_anywhere_read_back_exactly: write {stretch}: {e}")
        });
        let commit = commit_of(stored, piece[0] as u64);
        lease.commit(&commit).await.expect("progress commit");
    }
    lease.release().await.expect("release");
    let last = cuts[cuts.len() - 1];
    patch(&s.engine, &id, last, &data[last..]).await;
    assert!(
        read(&s.engine, &id, 0..len).await == data,
        "writes_of_one_lease_ending_anywhere_read_back_exactly: the bytes read back differ"
    );
}

pub async fn a_refused_write_leaves_nothing(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(200_000, 2);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    patch(&s.engine, &id, 0, &data[..1000]).await;
    let before = settle(fixture, s.storage.as_ref(), &id, |_| true).await;
    let wrong = tusk_protocol::parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
        .expect("checksum header");
    let request = PatchRequest {
        checksum: Some(wrong),
        ..patch_at(1000)
    };
    let refused = s.engine.patch(&id, request, body(&data[1000..])).await;
    assert!(
        matches!(refused, Err(Error::ChecksumMismatch)),
        "a_refused_write_leaves_nothing: {refused:?}"
    );
    let after = fixture.stored(s.storage.as_ref(), &id).await;
    assert_eq!(before, after, "a_refused_write_leaves_nothing: stored");
    patch(&s.engine, &id, 1000, &data[1000..]).await;
    assert!(read(&s.engine, &id, 0..data.len() as u64).await == data);
}

pub async fn termination_removes_everything(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(300_000, 3);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    patch(&s.engine, &id, 0, &data[..100_000]).await;
    assert!(!fixture.stored(s.storage.as_ref(), &id).await.is_empty());
    s.engine
        .terminate(&id, &Default::default())
        .await
        .expect("terminate");
    assert_eq!(
        fixture.stored(s.storage.as_ref(), &id).await,
        Vec::<String>::new(),
        "termination_removes_everything"
    );
    assert!(matches!(s.engine.view(&id).await, Err(Error::Gone)));
}

pub async fn a_zombie_write_never_changes_committed_bytes(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(150_000, 4);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    patch(&s.engine, &id, 0, &data[..50_000]).await;
    // A writer takes the lease, then pauses past it; another writer finishes the upload.
    let zombie = s
        .coordinator
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    s.coordinator.expire(&id);
    patch(&s.engine, &id, 50_000, &data[50_000..]).await;
    // The zombie wakes up and writes what it had for the same range.
    let junk = vec![0xEE; 100_000];
    let chunks: crate::Chunks<'_> = Box::pin(futures_util::stream::iter(vec![Bytes::from(junk)]));
    let context = WriteContext {
        lease: &zombie,
        length: Some(data.len() as u64),
        stretch: 0,
    };
    match s.storage.write(context, chunks).await {
        // Refused for its lease, or failed on its own (what it read may be gone already).
        Err(_) => {}
        // A backend may store without reserving (a tail named by the token alone); the
        // commit is what it can never do.
        Ok(stored) => {
            let commit = commit_of(stored, 50_000);
            let late = zombie.commit_and_release(&commit).await;
            assert!(
                matches!(late, Err(CoordError::LeaseLost)),
                "a_zombie_write_never_changes_committed_bytes: commit {late:?}"
            );
        }
    }
    assert!(
        read(&s.engine, &id, 0..data.len() as u64).await == data,
        "a_zombie_write_never_changes_committed_bytes"
    );
}

pub async fn removal_under_a_lost_lease_removes_nothing(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(400_000, 5);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    patch(&s.engine, &id, 0, &data[..100_000]).await;
    // The remover's lease and its view of the record, then the lease is lost and another
    // writer commits more (new targets under a newer token).
    let stale = s
        .coordinator
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    s.coordinator.expire(&id);
    patch(&s.engine, &id, 100_000, &data[100_000..250_000]).await;
    let stored = fixture.stored(s.storage.as_ref(), &id).await;
    let newer = s.engine.view(&id).await.expect("view").record.segments;
    let lost = |what: &str, result: Result<(), StorageError>| {
        assert!(
            matches!(result, Err(StorageError::Lease(CoordError::LeaseLost))),
            "removal_under_a_lost_lease_removes_nothing: {what}: {result:?}"
        );
    };
    lost(
        "discard",
        s.storage.discard(&stale, &Stored::folded(newer)).await,
    );
    lost(
        "remove_uncommitted",
        s.storage.remove_uncommitted(&stale).await.map(|_| ()),
    );
    lost("delete", s.storage.delete(&stale).await);
    if let Some(leftovers) = s.storage.leftovers() {
        lost(
            "remove_leftovers",
            leftovers
                .remove_leftovers(&id, Some(&stale))
                .await
                .map(|_| ()),
        );
    }
    assert_eq!(
        fixture.stored(s.storage.as_ref(), &id).await,
        stored,
        "removal_under_a_lost_lease_removes_nothing: stored"
    );
    // The sweep, under a live lease, keeps everything committed.
    s.engine.sweep_leftovers().await.expect("sweep");
    patch(&s.engine, &id, 250_000, &data[250_000..]).await;
    assert!(
        read(&s.engine, &id, 0..data.len() as u64).await == data,
        "removal_under_a_lost_lease_removes_nothing"
    );
}

pub async fn a_commit_whose_answer_was_lost_keeps_its_bytes(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let data = payload(600_000, 9);
    let id = create(&s.engine, Some(data.len() as u64)).await;
    patch(&s.engine, &id, 0, &data[..10_000]).await;
    // The coordinator applies the next commits but their answers are lost (a timeout): the
    // writer cannot know they happened, so it must not remove what they name.
    s.coordinator.lose_commit_replies(true);
    for range in [10_000..20_000, 20_000..600_000] {
        let answer = s
            .engine
            .patch(
                &id,
                patch_at(range.start as u64),
                body(&data[range.clone()]),
            )
            .await;
        assert!(
            matches!(answer, Err(Error::Coordinator(CoordError::Unavailable(_)))),
            "a_commit_whose_answer_was_lost_keeps_its_bytes: {answer:?}"
        );
        // The client retries after HEAD, which shows the commit happened.
        let view = s.engine.view(&id).await.expect("view");
        assert_eq!(view.record.offset, range.end as u64);
        s.coordinator.expire(&id);
    }
    s.coordinator.lose_commit_replies(false);
    // Whatever tidying the lost answers left undone is the sweepers' to do.
    s.engine.sweep_leftovers().await.expect("sweep");
    assert!(
        read(&s.engine, &id, 0..data.len() as u64).await == data,
        "a_commit_whose_answer_was_lost_keeps_its_bytes"
    );
}

pub async fn a_write_that_never_committed_goes_once_the_upload_finishes(
    fixture: &dyn StorageFixture,
) {
    let s = setup(fixture).await;
    let data = payload(200_000, 11);
    let len = data.len() as u64;
    // The same PATCHes twice: on one upload a writer also stores bytes and dies before
    // committing them; once both are finished, both hold the same number of objects.
    let clean = create(&s.engine, Some(len)).await;
    let crashed = create(&s.engine, Some(len)).await;
    for id in [&clean, &crashed] {
        patch(&s.engine, id, 0, &data[..50_000]).await;
    }
    let dying = s
        .coordinator
        .acquire(&crashed, Duration::ZERO)
        .await
        .expect("lease");
    let chunks: crate::Chunks<'_> = Box::pin(futures_util::stream::iter(vec![Bytes::from(vec![
            0xAB;
            30_000
        ])]));
    let context = WriteContext {
        lease: &dying,
        length: Some(len),
        stretch: 0,
    };
    s.storage
        .write(context, chunks)
        .await
        .expect("a write that never commits");
    drop(dying);
    s.coordinator.expire(&crashed);
    for id in [&clean, &crashed] {
        patch(&s.engine, id, 50_000, &data[50_000..]).await;
    }
    // Storage that can leave leftovers nothing else removes reports them to the sweep.
    s.engine.sweep_leftovers().await.expect("sweep");
    let expected = settle(fixture, s.storage.as_ref(), &clean, |_| true)
        .await
        .len();
    let left = settle(fixture, s.storage.as_ref(), &crashed, |stored| {
        stored.len() == expected
    })
    .await;
    assert_eq!(
        left.len(),
        expected,
        "a_write_that_never_committed_goes_once_the_upload_finishes: {left:?}"
    );
    assert!(read(&s.engine, &crashed, 0..len).await == data);
}

pub async fn concatenation_joins_partials(fixture: &dyn StorageFixture) {
    let s = setup(fixture).await;
    let Some(_) = s.storage.concatenation() else {
        let refused = s
            .engine
            .create(CreateUpload {
                concat: Some((
                    tusk_protocol::ConcatRequest::Final(vec!["/files/x".into()]),
                    vec![new_id()],
                )),
                ..CreateUpload::default()
            })
            .await;
        assert!(
            refused.is_err(),
            "concatenation_joins_partials: a store without it refuses a final upload"
        );
        assert!(!s.engine.extensions().contains(&"concatenation"));
        return;
    };
    assert!(s.engine.extensions().contains(&"concatenation"));
    let pieces = [payload(70_000, 6), payload(1, 7), payload(300_000, 8)];
    let mut ids = Vec::new();
    for piece in &pieces {
        let created = s
            .engine
            .create(CreateUpload {
                length: Some(piece.len() as u64),
                concat: Some((tusk_protocol::ConcatRequest::Partial, Vec::new())),
                ..CreateUpload::default()
            })
            .await
            .expect("partial");
        patch(&s.engine, &created.id, 0, piece).await;
        ids.push(created.id);
    }
    let urls = ids.iter().map(|id| format!("/files/{id}")).collect();
    let final_upload = s
        .engine
        .create(CreateUpload {
            concat: Some((tusk_protocol::ConcatRequest::Final(urls), ids.clone())),
            ..CreateUpload::default()
        })
        .await
        .expect("final");
    assert!(matches!(
        final_upload.concat,
        Some(ConcatKind::Final { .. })
    ));
    let whole: Vec<u8> = pieces.concat();
    assert!(
        read(&s.engine, &final_upload.id, 0..whole.len() as u64).await == whole,
        "concatenation_joins_partials"
    );
    // Removing a partial later leaves the final upload's bytes alone.
    s.engine
        .terminate(&ids[0], &Default::default())
        .await
        .expect("terminate");
    assert!(read(&s.engine, &final_upload.id, 0..whole.len() as u64).await == whole);
}
