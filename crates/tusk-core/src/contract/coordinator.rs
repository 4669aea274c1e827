//! The coordinator contract: what every [`Coordinator`] must do, checked the same way on
//! each. A coordinator crate calls [`coordinator_contract`] from its own tests with a
//! fixture that makes nodes on one fresh backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{new_id, record, segment_commit};
use crate::{
    Commit, CommitStamp, CoordError, Coordinator, HookEvent, OwedNotice, Segment, UploadState,
    WriteTarget,
};

/// Makes nodes of the coordinator under test.
#[async_trait]
pub trait CoordinatorFixture: Send + Sync {
    /// A node; all nodes of one fixture share one backend (a single-node coordinator may
    /// return the same node every time).
    async fn node(&self) -> Arc<dyn Coordinator>;

    /// How long a lease lives unrenewed, if leases expire by themselves; the suite waits
    /// past it, so keep it short (a second or less).
    fn lease_ttl(&self) -> Option<Duration>;
}

/// Runs every case of the contract, in order; panics naming the case that failed.
pub async fn coordinator_contract(fixture: &dyn CoordinatorFixture) {
    records_round_trip(fixture).await;
    one_creation_of_an_id_wins(fixture).await;
    one_lease_at_a_time(fixture).await;
    commits_are_compare_and_set(fixture).await;
    records_of_many_segments_round_trip(fixture).await;
    reserved_targets_never_repeat(fixture).await;
    tokens_never_repeat_across_purge_and_re_creation(fixture).await;
    release_requests_reach_the_holder(fixture).await;
    a_lost_lease_changes_nothing(fixture).await;
    the_sweep_index_lists_what_is_due(fixture).await;
    owed_notices_are_kept_until_cleared_and_fall_due(fixture).await;
    leadership_is_exclusive(fixture).await;
}

pub async fn records_round_trip(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let id = new_id();
    let mut created = record(&id, Some(10), Some(100));
    created.metadata = Some("filename YS50eHQ=".into());
    node.create(&created).await.expect("create");
    assert!(
        matches!(node.create(&created).await, Err(CoordError::AlreadyExists)),
        "records_round_trip: a second create of one ID must fail"
    );
    assert_eq!(node.load(&id).await.expect("load"), Some(created.clone()));
    let elsewhere = fixture.node().await;
    assert_eq!(
        elsewhere.load(&id).await.expect("load"),
        Some(created.clone()),
        "records_round_trip: every node sees the record"
    );
    let lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
    assert_eq!(lease.record(), &created, "the lease carries the record");
    lease.release().await.expect("release");
    assert_eq!(node.load(&new_id()).await.expect("load"), None);
    assert!(matches!(
        node.acquire(&new_id(), Duration::ZERO).await,
        Err(CoordError::NotFound)
    ));
}

/// Concurrent creations of one ID (a pre-create hook may choose it) on several nodes: one is
/// stored, every other is refused with `AlreadyExists`, and the record is the winner's.
pub async fn one_creation_of_an_id_wins(fixture: &dyn CoordinatorFixture) {
    let id = new_id();
    let mut tasks = Vec::new();
    for n in 0..8u64 {
        let node = fixture.node().await;
        let created = record(&id, Some(n + 1), None);
        tasks.push(tokio::spawn(async move {
            let result = node.create(&created).await;
            (created, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (created, Ok(())) => winners.push(created),
            (_, Err(CoordError::AlreadyExists)) => {}
            (_, Err(other)) => panic!("one_creation_of_an_id_wins: {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "one_creation_of_an_id_wins: concurrent creations of one ID"
    );
    let node = fixture.node().await;
    assert_eq!(
        node.load(&id).await.expect("load"),
        winners.pop(),
        "one_creation_of_an_id_wins: the record is the winner's"
    );
}

pub async fn one_lease_at_a_time(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let id = new_id();
    node.create(&record(&id, Some(10), None))
        .await
        .expect("create");
    let first = node.acquire(&id, Duration::ZERO).await.expect("lease");
    let other = fixture.node().await;
    assert!(
        matches!(
            other.acquire(&id, Duration::ZERO).await,
            Err(CoordError::Locked)
        ),
        "one_lease_at_a_time: a held lease is not handed out again"
    );
    first.release().await.expect("release");
    // Concurrent acquires from several nodes: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let node = fixture.node().await;
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            node.acquire(&id, Duration::ZERO).await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(lease) => winners.push(lease),
            Err(CoordError::Locked) => {}
            Err(other) => panic!("one_lease_at_a_time: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "one_lease_at_a_time: concurrent acquires");
    for lease in winners {
        lease.release().await.expect("release");
    }
}

pub async fn commits_are_compare_and_set(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let id = new_id();
    let created = record(&id, None, Some(100));
    node.create(&created).await.expect("create");
    let mut lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
    let (a, b, c) = (
        lease.reserve().await.expect("reserve"),
        lease.reserve().await.expect("reserve"),
        lease.reserve().await.expect("reserve"),
    );
    let mut expected = created.clone();
    let stamp = |node: &str, at: u64| {
        Some(CommitStamp {
            node: node.into(),
            token: lease.token(),
            at,
        })
    };
    // The first commit stamps the record, the second leaves that stamp, the third replaces it.
    let commits = [
        Commit {
            stamp: stamp("node-a/1", 1_700_000_000),
            ..segment_commit(0, a, 4, Some(200))
        },
        Commit {
            session: Some("opaque backend state".into()),
            ..segment_commit(4, b, 6, Some(300))
        },
        // Replaces the last segment (its bytes stored again in the new one), declares the
        // length and finishes: no expiry any more.
        Commit {
            expected_offset: 10,
            added: 2,
            append: vec![Segment {
                target: c,
                len: 8,
                receipt: Some("etag checksum".into()),
            }],
            fold: 1,
            session: None,
            declare_length: Some(12),
            expires_at: None,
            notice: None,
            stamp: stamp("node-b/2", 1_700_000_009),
        },
    ];
    for commit in &commits {
        lease.commit(commit).await.expect("commit");
        expected.apply_commit(commit);
        assert_eq!(
            lease.record(),
            &expected,
            "commits_are_compare_and_set: the lease's record"
        );
        assert_eq!(
            node.load(&id).await.expect("load").as_ref(),
            Some(&expected),
            "commits_are_compare_and_set: the stored record is the one apply_commit defines"
        );
    }
    let stale = lease.commit(&segment_commit(4, c, 1, None)).await;
    assert!(
        matches!(
            stale,
            Err(CoordError::OffsetChanged {
                expected: 4,
                found: 12
            })
        ),
        "commits_are_compare_and_set: a commit from a moved offset: {stale:?}"
    );
    assert_eq!(node.load(&id).await.expect("load"), Some(expected.clone()));
    // The last commit of a PATCH lets go of the lease in the same step.
    let last = Commit {
        expected_offset: 12,
        added: 0,
        append: vec![],
        fold: 0,
        session: None,
        declare_length: None,
        expires_at: None,
        notice: None,
        stamp: None,
    };
    let committed = lease.commit_and_release(&last).await.expect("commit");
    assert_eq!(committed, expected);
    let again = node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("commit_and_release lets go of the lease");
    again.release().await.expect("release");
}

/// A final upload over many partials commits all their pieces at once (100 partials of 16
/// files on fs), and a fold later replaces most of them: both are single commits however
/// the coordinator stores a record, and the record read back is the one committed.
pub async fn records_of_many_segments_round_trip(fixture: &dyn CoordinatorFixture) {
    const PIECES: u32 = 1_600;
    let node = fixture.node().await;
    let id = new_id();
    let created = record(&id, None, Some(100));
    node.create(&created).await.expect("create");
    let mut lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
    let token = lease.token();
    let pieces: Vec<Segment> = (0..PIECES)
        .map(|seq| Segment {
            target: WriteTarget { token, seq },
            len: 1 << 20,
            receipt: Some(format!("\"{seq:032x}\" crc32c=AAAAAA==")),
        })
        .collect();
    let all = Commit {
        expected_offset: 0,
        added: u64::from(PIECES) << 20,
        append: pieces,
        fold: 0,
        session: None,
        declare_length: None,
        expires_at: Some(200),
        notice: None,
        stamp: None,
    };
    let folded = Commit {
        expected_offset: all.added,
        added: 1,
        append: vec![Segment::new(
            WriteTarget { token, seq: PIECES },
            (1_500 << 20) + 1,
        )],
        fold: 1_500,
        session: None,
        declare_length: None,
        expires_at: Some(300),
        notice: None,
        stamp: None,
    };
    let mut expected = created.clone();
    for (commit, what) in [(&all, "1,600 pieces at once"), (&folded, "a fold of 1,500")] {
        lease.commit(commit).await.unwrap_or_else(|e| {
            panic!("records_of_many_segments_round_trip: committing {what}: {e}")
        });
        expected.apply_commit(commit);
        assert!(
            node.load(&id).await.expect("load").as_ref() == Some(&expected),
            "records_of_many_segments_round_trip: the record after {what} reads back as committed"
        );
    }
    lease.release().await.expect("release");
    let again = node.acquire(&id, Duration::ZERO).await.expect("lease");
    assert!(
        again.record() == &expected,
        "records_of_many_segments_round_trip: a new lease carries the whole record"
    );
    again.release().await.expect("release");
}

pub async fn reserved_targets_never_repeat(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let id = new_id();
    node.create(&record(&id, None, None)).await.expect("create");
    let mut seen: Vec<WriteTarget> = Vec::new();
    let mut last_seq = None;
    // Leases taken to write may reserve their first target as they are taken; one of them
    // (round 2) reserves nothing, and what it held must not be given out again either.
    for round in 0..4 {
        let mut lease = if round % 2 == 0 {
            node.acquire_to_write(&id, Duration::ZERO).await
        } else {
            node.acquire(&id, Duration::ZERO).await
        }
        .expect("lease");
        let mut mine = Vec::new();
        let reservations = if round == 2 { 0 } else { 3 };
        for _ in 0..reservations {
            let target = lease.reserve().await.expect("reserve");
            assert!(
                !seen.contains(&target),
                "reserved_targets_never_repeat: {target:?} again"
            );
            assert!(
                last_seq.is_none_or(|last| target.seq > last),
                "reserved_targets_never_repeat: sequence numbers grow across leases"
            );
            last_seq = Some(target.seq);
            seen.push(target);
            mine.push(target);
        }
        // Only the first round commits: uncommitted reservations must not be reused either.
        if round == 0 {
            let offset = lease.record().offset;
            lease
                .commit(&segment_commit(offset, mine[0], 1, None))
                .await
                .expect("commit");
        }
        lease.release().await.expect("release");
    }
}

pub async fn tokens_never_repeat_across_purge_and_re_creation(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let id = new_id();
    node.create(&record(&id, Some(5), None))
        .await
        .expect("create");
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..2 {
        let lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
        tokens.push(lease.token());
        targets.push(lease.reserve().await.expect("reserve"));
        lease.release().await.expect("release");
    }
    let mut lease = node.acquire(&id, Duration::ZERO).await.expect("lease");
    tokens.push(lease.token());
    lease.mark_gone(1, None).await.expect("mark gone");
    let gone = node.load(&id).await.expect("load").expect("tombstone");
    assert_eq!(
        (gone.state, gone.segments.len()),
        (UploadState::Gone { purge_at: 1 }, 0)
    );
    lease.purge().await.expect("purge");
    assert_eq!(node.load(&id).await.expect("load"), None, "purged");
    // The same ID again (a pre-create hook may choose IDs).
    node.create(&record(&id, Some(5), None))
        .await
        .expect("create the same ID again");
    for _ in 0..2 {
        let lease = fixture
            .node()
            .await
            .acquire(&id, Duration::ZERO)
            .await
            .expect("lease");
        let token = lease.token();
        assert!(
            tokens.iter().all(|&t| token > t),
            "tokens_never_repeat: {token} after {tokens:?}"
        );
        tokens.push(token);
        let target = lease.reserve().await.expect("reserve");
        assert!(
            !targets.contains(&target),
            "tokens_never_repeat: target {target:?} again"
        );
        targets.push(target);
        lease.release().await.expect("release");
    }
}

pub async fn release_requests_reach_the_holder(fixture: &dyn CoordinatorFixture) {
    let holder_node = fixture.node().await;
    let waiter_node = fixture.node().await;
    let id = new_id();
    holder_node
        .create(&record(&id, Some(10), None))
        .await
        .expect("create");
    let lease = holder_node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    let mut asked = lease.release_request();
    let holder = tokio::spawn(async move {
        asked.requested().await;
        lease.release().await.expect("release");
    });
    let started = tokio::time::Instant::now();
    let taken = waiter_node
        .acquire(&id, Duration::from_secs(5))
        .await
        .expect("release_requests_reach_the_holder: handed over");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "release_requests_reach_the_holder: took {:?}",
        started.elapsed()
    );
    assert!(taken.waited(), "the lease says it waited");
    holder.await.expect("holder");
    // A caller that will not wait does not interrupt a holder.
    let mut asked = taken.release_request();
    assert!(matches!(
        holder_node.acquire(&id, Duration::ZERO).await,
        Err(CoordError::Locked)
    ));
    let interrupted = tokio::time::timeout(Duration::from_millis(300), asked.requested()).await;
    assert!(
        interrupted.is_err(),
        "release_requests_reach_the_holder: a zero-wait acquire asked the holder to let go"
    );
    taken.release().await.expect("release");
}

pub async fn a_lost_lease_changes_nothing(fixture: &dyn CoordinatorFixture) {
    // A lease that never expires by itself is lost only by being released, which consumes
    // it: there is nothing left to misuse.
    let Some(ttl) = fixture.lease_ttl() else {
        return;
    };
    let zombie_node = fixture.node().await;
    let live_node = fixture.node().await;
    let id = new_id();
    zombie_node
        .create(&record(&id, Some(10), Some(100)))
        .await
        .expect("create");
    let mut zombie = zombie_node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    let zombie_target = zombie.reserve().await.expect("reserve");
    // A writer's lease whose first target was reserved as it was taken, never used.
    let other = new_id();
    zombie_node
        .create(&record(&other, Some(10), Some(100)))
        .await
        .expect("create");
    let writer = zombie_node
        .acquire_to_write(&other, Duration::ZERO)
        .await
        .expect("lease");
    // The holder pauses past its TTL (a GC pause, SIGSTOP, a partition)...
    tokio::time::sleep(ttl * 2).await;
    let mut live = live_node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("taken over");
    assert!(live.token() > zombie.token(), "tokens grow");
    let target = live.reserve().await.expect("reserve");
    live.commit(&segment_commit(0, target, 3, Some(100)))
        .await
        .expect("commit");
    let committed = live_node.load(&id).await.expect("load");
    // ...and wakes up: every change through its lease is refused.
    let lost = |what: &str, result: Result<(), CoordError>| {
        assert!(
            matches!(result, Err(CoordError::LeaseLost)),
            "a_lost_lease_changes_nothing: {what}: {result:?}"
        );
    };
    lost("confirm", zombie.confirm().await);
    lost("reserve", zombie.reserve().await.map(|_| ()));
    lost(
        "reserve of the target reserved with the lease",
        writer.reserve().await.map(|_| ()),
    );
    lost(
        "commit",
        zombie
            .commit(&segment_commit(0, zombie_target, 5, None))
            .await,
    );
    lost("mark_gone", zombie.mark_gone(1, None).await);
    lost("set_notice", zombie.set_notice(None).await);
    let Err(CoordError::LeaseLost) = zombie
        .commit_and_release(&segment_commit(3, zombie_target, 5, None))
        .await
    else {
        panic!("a_lost_lease_changes_nothing: commit_and_release");
    };
    assert!(
        matches!(
            zombie_node.acquire(&id, Duration::ZERO).await,
            Err(CoordError::Locked)
        ),
        "a_lost_lease_changes_nothing: the live lease is still held"
    );
    assert_eq!(
        live_node.load(&id).await.expect("load"),
        committed,
        "a_lost_lease_changes_nothing: the record"
    );
    live.confirm().await.expect("the live lease survived");
    live.release().await.expect("release");
    // Purging under a lost lease is refused too.
    let lease = zombie_node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("lease");
    tokio::time::sleep(ttl * 2).await;
    let newer = live_node
        .acquire(&id, Duration::ZERO)
        .await
        .expect("taken over");
    lost("purge", lease.purge().await);
    assert!(live_node.load(&id).await.expect("load").is_some());
    newer.release().await.expect("release");
}

pub async fn the_sweep_index_lists_what_is_due(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    // Times far from now and from other cases': each case's records have their own.
    let base = 1_000_000 + u64::from(rand::random::<u16>()) * 1000;
    let (expiring, later, finishing, gone) = (new_id(), new_id(), new_id(), new_id());
    node.create(&record(&expiring, Some(10), Some(base)))
        .await
        .expect("create");
    node.create(&record(&later, Some(10), Some(base + 500)))
        .await
        .expect("create");
    node.create(&record(&finishing, Some(1), Some(base)))
        .await
        .expect("create");
    node.create(&record(&gone, Some(10), Some(base + 900)))
        .await
        .expect("create");
    let lease = node
        .acquire(&finishing, Duration::ZERO)
        .await
        .expect("lease");
    let target = lease.reserve().await.expect("reserve");
    lease
        .commit_and_release(&segment_commit(0, target, 1, None))
        .await
        .expect("finish");
    let mut lease = node.acquire(&gone, Duration::ZERO).await.expect("lease");
    lease.mark_gone(base + 200, None).await.expect("gone");
    lease.release().await.expect("release");
    let ours = [&expiring, &later, &finishing, &gone];
    let due = |now: u64| {
        let node = node.clone();
        async move {
            let mut due: Vec<String> = node
                .due_for_sweep(now, 100_000)
                .await
                .expect("due")
                .into_iter()
                .filter(|id| ours.contains(&id))
                .collect();
            due.sort();
            due
        }
    };
    let sorted = |mut ids: Vec<&String>| {
        ids.sort();
        ids.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(due(base - 1).await, Vec::<String>::new(), "nothing due yet");
    assert_eq!(due(base).await, sorted(vec![&expiring]), "expired");
    assert_eq!(
        due(base + 200).await,
        sorted(vec![&expiring, &gone]),
        "a tombstone is due at its purge time"
    );
    assert_eq!(
        due(base + 500).await,
        sorted(vec![&expiring, &later, &gone])
    );
}

/// The IDs among `ours` that `node` says are due for the sweeper at `now`, sorted.
async fn due_among(node: &dyn Coordinator, now: u64, ours: &[&String]) -> Vec<String> {
    let mut due: Vec<String> = node
        .due_for_sweep(now, 100_000)
        .await
        .expect("due")
        .into_iter()
        .filter(|id| ours.contains(&id))
        .collect();
    due.sort();
    due
}

pub async fn owed_notices_are_kept_until_cleared_and_fall_due(fixture: &dyn CoordinatorFixture) {
    let node = fixture.node().await;
    let base = 2_000_000_000 + u64::from(rand::random::<u16>()) * 1000;
    let (finished, terminated) = (new_id(), new_id());
    let ours = [&finished, &terminated];
    for id in ours {
        node.create(&record(id, Some(4), Some(base + 5000)))
            .await
            .expect("create");
    }
    // The commit that finishes an upload owes post-finish in the same step.
    let owed = OwedNotice {
        event: HookEvent::PostFinish,
        due_at: base + 100,
        claims: 0,
    };
    let mut lease = node
        .acquire(&finished, Duration::ZERO)
        .await
        .expect("lease");
    let target = lease.reserve().await.expect("reserve");
    let mut finishing = segment_commit(0, target, 4, None);
    finishing.notice = Some(owed);
    lease.commit(&finishing).await.expect("commit");
    lease.release().await.expect("release");
    let other = fixture.node().await;
    let stored = other.load(&finished).await.expect("load").expect("record");
    assert_eq!(
        (stored.offset, stored.notice),
        (4, Some(owed)),
        "owed_notices: every node sees the notice the commit owes"
    );
    // A termination owes post-terminate in the same step; the tombstone is purged only once
    // it is delivered, so it falls due at the notice's time, not at its purge time.
    let terminating = OwedNotice {
        event: HookEvent::PostTerminate,
        due_at: base + 300,
        claims: 0,
    };
    let mut lease = node
        .acquire(&terminated, Duration::ZERO)
        .await
        .expect("lease");
    lease
        .mark_gone(base + 200, Some(terminating))
        .await
        .expect("gone");
    lease.release().await.expect("release");
    let tombstone = other
        .load(&terminated)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(tombstone.notice, Some(terminating));
    assert_eq!(
        due_among(node.as_ref(), base + 99, &ours).await,
        Vec::<String>::new()
    );
    assert_eq!(
        due_among(node.as_ref(), base + 200, &ours).await,
        vec![finished.clone()],
        "owed_notices: a notice falls due at its time; a tombstone owing one is not purged"
    );
    let mut both = vec![finished.clone(), terminated.clone()];
    both.sort();
    assert_eq!(due_among(node.as_ref(), base + 300, &ours).await, both);
    // Claimed for another delivery: due again later, the claim counted.
    let claimed = owed.claimed(base + 100, 50);
    let mut lease = other
        .acquire(&finished, Duration::ZERO)
        .await
        .expect("lease");
    lease.set_notice(Some(claimed)).await.expect("claim");
    lease.release().await.expect("release");
    assert_eq!(
        node.load(&finished)
            .await
            .expect("load")
            .expect("record")
            .notice,
        Some(claimed)
    );
    assert_eq!(
        due_among(node.as_ref(), claimed.due_at - 1, &ours).await,
        Vec::<String>::new()
    );
    assert_eq!(
        due_among(node.as_ref(), claimed.due_at, &ours).await,
        vec![finished.clone()],
        "owed_notices: a claimed notice is due at its new time"
    );
    // Delivered: cleared. A finished upload is then never due; the tombstone is due at its
    // purge time again.
    for id in ours {
        let mut lease = node.acquire(id, Duration::ZERO).await.expect("lease");
        lease.set_notice(None).await.expect("clear");
        lease.release().await.expect("release");
        assert_eq!(
            other.load(id).await.expect("load").expect("record").notice,
            None,
            "owed_notices: a cleared notice is gone"
        );
    }
    assert_eq!(
        due_among(node.as_ref(), base + 199, &ours).await,
        Vec::<String>::new()
    );
    assert_eq!(
        due_among(node.as_ref(), u64::from(u32::MAX), &ours).await,
        vec![terminated.clone()],
        "owed_notices: once delivered, the finished upload is not due and the tombstone is due to purge"
    );
}

pub async fn leadership_is_exclusive(fixture: &dyn CoordinatorFixture) {
    let (first, second) = (fixture.node().await, fixture.node().await);
    let (Some(a), Some(b)) = (first.leadership(), second.leadership()) else {
        // A single-node coordinator: its node leads every role.
        assert!(
            fixture.lease_ttl().is_none(),
            "leadership_is_exclusive: a coordinator shared by nodes needs leadership"
        );
        return;
    };
    let role = format!("contract-{}", new_id());
    let ttl = Duration::from_millis(600);
    assert!(
        a.lead(&role, ttl).await.expect("lead"),
        "the first node leads"
    );
    assert!(
        !b.lead(&role, ttl).await.expect("lead"),
        "leadership_is_exclusive: a second node while the first holds the role"
    );
    assert!(
        a.lead(&role, ttl).await.expect("lead"),
        "the leader keeps it"
    );
    tokio::time::sleep(ttl * 2).await;
    assert!(
        b.lead(&role, ttl).await.expect("lead"),
        "leadership_is_exclusive: the role passes on once the leader stops renewing"
    );
    assert!(!a.lead(&role, ttl).await.expect("lead"));
}
