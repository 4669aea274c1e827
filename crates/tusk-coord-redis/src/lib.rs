//! Tusk's coordinator on Redis: the control plane shared by every node of a cluster.
//!
//! Keys, all under one configurable prefix and a hash tag: on one Redis every key has the
//! tag `{t}`; on a Redis Cluster an upload's keys have the tag of its bucket, `{b<n>}` with
//! `n` one of [`BUCKETS`] chosen by the ID, so that uploads spread over every shard while
//! the keys one script touches, the bucket's sweep index among them, share one slot:
//! - `up:<id>`: a hash with the record's mutable fields (`offset`, `length`, `expires_at`,
//!   `state`, `purge_at`, the storage `session`, an owed `notice` as JSON), its immutable
//!   part as JSON (`meta`), and
//!   two counters: `token` (fencing tokens, per upload, only growing) and `seq` (reserved
//!   write targets, which S3 storage uses as part numbers);
//! - `seg:<id>`: the committed segments, one `token:seq:len[:receipt]` per entry; a commit
//!   may replace the last few (a fold) and appends;
//! - `lease:<id>`: the current fencing token, with the lease TTL;
//! - `expiry`: a sorted set of upload IDs by the time the sweeper must look at them (one
//!   per bucket on a cluster);
//! - `leader:<role>`: which node holds a singleton role (the sweeper).
//!
//! Every check-and-change is one Lua script, so a holder whose lease expired can neither
//! reserve nor commit. Requests between nodes (let go of a lease; settle a PATCH for a read
//! on another node) go over pub/sub, see `requests`.

mod connection;
mod link;
mod requests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

pub use crate::connection::SentinelSettings;
use crate::link::{Conn, Link};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tusk_core::{
    Commit, ConcatKind, CoordError, Coordinator, HeldLease, InFlightElsewhere, Leadership, Lease,
    OwedNotice, ReleaseRequest, Segment, SettleLocally, UploadRecord, UploadState, WriteTarget,
};

/// How to reach Redis and how leases behave.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db` or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key and channel, e.g. `tusk:`; lets clusters share one Redis.
    pub prefix: String,
    /// A lease not renewed for this long expires; a streaming PATCH renews it at a third.
    pub lease_ttl: Duration,
    /// Time allowed for one Redis call before the request answers 503.
    pub timeout: Duration,
    /// Find the master through Redis Sentinel (and follow failovers) instead of `url`'s
    /// address; `url` still gives credentials, database and TLS.
    pub sentinel: Option<SentinelSettings>,
    /// After each change, wait until this many replicas have it (Redis `WAIT`), so that a
    /// failover to one of them cannot forget an acknowledged commit. 0: do not wait.
    pub wait_replicas: u32,
    /// Seed nodes of a Redis Cluster (`redis://` URLs); when set, uploads spread over the
    /// cluster's shards and `url` and `sentinel` are not used.
    pub cluster_nodes: Vec<String>,
}

/// Buckets uploads are spread over on a Redis Cluster: each is one hash tag, so one slot;
/// 256 of them land on every shard of any cluster of up to a few dozen shards.
pub const BUCKETS: u32 = 256;

/// The immutable part of a record, stored as JSON.
#[derive(Serialize, Deserialize)]
struct Meta {
    id: String,
    metadata: Option<String>,
    concat: Option<ConcatKind>,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_digest: Option<String>,
}

struct Scripts {
    create: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    reserve: Script,
    commit: Script,
    mark_gone: Script,
    set_notice: Script,
    purge: Script,
    lead: Script,
}

/// Leases this node holds, by upload ID: the token and how to ask the writer to let go.
type LocalLeases = Mutex<HashMap<String, (u64, watch::Sender<bool>)>>;

pub struct RedisCoordinator {
    shared: Arc<Shared>,
}

/// The coordinator's connection and settings, shared with the leases it grants.
struct Shared {
    link: Link,
    settings: RedisSettings,
    scripts: Scripts,
    local: Arc<LocalLeases>,
    /// How this node settles its own PATCHes for reads on other nodes (set by the engine).
    settle_locally: std::sync::OnceLock<SettleLocally>,
    /// Identifies this node as a holder of singleton roles.
    node_id: String,
}

fn unavailable(e: redis::RedisError) -> CoordError {
    CoordError::Unavailable(format!("redis: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> CoordError {
    CoordError::Corrupt(format!("redis record: {what}"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX).max(1)
}

impl RedisCoordinator {
    /// Connects to Redis and starts listening for release requests.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>, CoordError> {
        let link = if settings.cluster_nodes.is_empty() {
            Link::single(&settings.url, settings.sentinel.clone(), settings.timeout).await?
        } else {
            Link::cluster(&settings.cluster_nodes, settings.timeout).await?
        };
        let shared = Arc::new(Shared {
            link,
            scripts: Scripts {
                create: Script::new(include_str!("lua/create.lua")),
                acquire: Script::new(include_str!("lua/acquire.lua")),
                renew: Script::new(include_str!("lua/renew.lua")),
                release: Script::new(include_str!("lua/release.lua")),
                reserve: Script::new(include_str!("lua/reserve.lua")),
                commit: Script::new(concat!(
                    include_str!("lua/sweep_index.lua"),
                    include_str!("lua/commit.lua")
                )),
                mark_gone: Script::new(concat!(
                    include_str!("lua/sweep_index.lua"),
                    include_str!("lua/mark_gone.lua")
                )),
                set_notice: Script::new(concat!(
                    include_str!("lua/sweep_index.lua"),
                    include_str!("lua/set_notice.lua")
                )),
                purge: Script::new(include_str!("lua/purge.lua")),
                lead: Script::new(include_str!("lua/lead.lua")),
            },
            local: Arc::default(),
            settle_locally: std::sync::OnceLock::new(),
            node_id: format!("{:032x}", rand::random::<u128>()),
            settings,
        });
        tokio::spawn(requests::listen(Arc::downgrade(&shared)));
        Ok(Arc::new(Self { shared }))
    }

    /// Takes the lease of `id` (see `Coordinator::acquire`); with `reserve_first`, reserves
    /// the first write target in the same script.
    async fn acquire_reserving(
        &self,
        id: &str,
        wait: Duration,
        reserve_first: bool,
    ) -> Result<Lease, CoordError> {
        let [lease_key, up, seg, _] = self.shared.upload_keys(id);
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked_at: Option<tokio::time::Instant> = None;
        let mut pause = Duration::from_millis(10);
        loop {
            // The TTL starts when the script runs, not when this request began waiting.
            let attempt_at = tokio::time::Instant::now();
            let answer: Vec<redis::Value> = self
                .shared
                .scripts
                .acquire
                .key(&up)
                .key(&lease_key)
                .key(&seg)
                .arg(ms(self.shared.settings.lease_ttl))
                .arg(if reserve_first { "1" } else { "0" })
                .invoke_async(&mut self.shared.conn())
                .await
                .map_err(unavailable)?;
            match answer.as_slice() {
                [redis::Value::Int(-1)] => return Err(CoordError::NotFound),
                [redis::Value::Int(0)] => {}
                [redis::Value::Int(token), fields, segments, redis::Value::Int(first)]
                    if *token > 0 =>
                {
                    let token = *token as u64;
                    let fields: HashMap<String, String> =
                        redis::FromRedisValue::from_redis_value(fields.clone()).map_err(corrupt)?;
                    let segments: Vec<String> =
                        redis::FromRedisValue::from_redis_value(segments.clone())
                            .map_err(corrupt)?;
                    let record = parse_record(fields, segments)?;
                    let (ask, release) = ReleaseRequest::channel();
                    self.shared.local().insert(id.to_string(), (token, ask));
                    let held = RedisLease {
                        shared: self.shared.clone(),
                        upload_id: id.to_string(),
                        token,
                        first_target: Mutex::new(u32::try_from(*first).ok()),
                    };
                    return Ok(Lease::grant(
                        Box::new(held),
                        record,
                        release,
                        asked_at.is_some(),
                        attempt_at,
                    ));
                }
                other => return Err(corrupt(format!("acquire answered {other:?}"))),
            }
            let now = tokio::time::Instant::now();
            if wait.is_zero() || now >= deadline {
                return Err(CoordError::Locked);
            }
            // Ask the holder (on whatever node) to let go; again now and then in case a
            // message was lost while a subscriber reconnected.
            if asked_at.is_none_or(|at| now.duration_since(at) > Duration::from_millis(500)) {
                let _: i64 = self
                    .shared
                    .conn()
                    .publish(self.shared.key("release"), id)
                    .await
                    .map_err(unavailable)?;
                asked_at = Some(now);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Shared {
    /// `<prefix>{t}:<name>`: a key of no upload (see the module docs).
    fn key(&self, name: &str) -> String {
        self.tagged("t", name)
    }

    /// `<prefix>{<tag>}:<name>`.
    fn tagged(&self, tag: &str, name: &str) -> String {
        format!("{}{{{tag}}}:{name}", self.settings.prefix)
    }

    fn conn(&self) -> Conn {
        self.link.conn()
    }

    /// The hash tag of every key of upload `id`.
    fn tag(&self, id: &str) -> String {
        if self.link.is_cluster() {
            format!("b{}", bucket(id))
        } else {
            "t".into()
        }
    }

    /// Every hash tag there is: each has its own sweep index.
    fn tags(&self) -> Vec<String> {
        if self.link.is_cluster() {
            (0..BUCKETS).map(|n| format!("b{n}")).collect()
        } else {
            vec!["t".into()]
        }
    }

    /// With `wait_replicas`, waits until that many replicas of the node holding `key` have
    /// every change made so far on this connection; a change not replicated in time is
    /// reported unavailable.
    async fn replicated(&self, key: &str) -> Result<(), CoordError> {
        if self.settings.wait_replicas == 0 {
            return Ok(());
        }
        // Half the call timeout, so that WAIT answers before the connection gives up.
        let acked = self
            .link
            .wait(
                key,
                self.settings.wait_replicas,
                ms(self.settings.timeout / 2),
            )
            .await?;
        if acked < i64::from(self.settings.wait_replicas) {
            return Err(CoordError::Unavailable(format!(
                "only {acked} of {} redis replicas acknowledged",
                self.settings.wait_replicas
            )));
        }
        Ok(())
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, watch::Sender<bool>)>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a lease-checked script that answers 1 on success, 0 when the lease is lost.
    async fn fenced(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<(), CoordError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        let ok: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if ok == 1 {
            Ok(())
        } else {
            Err(CoordError::LeaseLost)
        }
    }

    /// The commit script; with `release`, the lease key goes in the same round trip.
    async fn run_commit(
        &self,
        lease: &RedisLease,
        commit: &Commit,
        release: bool,
    ) -> Result<(), CoordError> {
        let [lease_key, up, seg, expiry] = self.upload_keys(&lease.upload_id);
        let mut invocation = self.scripts.commit.prepare_invoke();
        invocation
            .key(&lease_key)
            .key(up)
            .key(seg)
            .key(expiry)
            .arg(lease.token)
            .arg(commit.expected_offset)
            .arg(commit.added)
            .arg(
                commit
                    .declare_length
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
            )
            .arg(commit.expires_at.map(|t| t.to_string()).unwrap_or_default())
            .arg(&lease.upload_id)
            .arg(if release { "1" } else { "0" })
            .arg(commit.fold)
            .arg(commit.session.as_deref().unwrap_or_default())
            .arg(notice_json(commit.notice.as_ref())?)
            .arg(match &commit.stamp {
                Some(stamp) => serde_json::to_string(stamp).map_err(corrupt)?,
                None => String::new(),
            });
        for s in &commit.append {
            invocation.arg(format_segment(s));
        }
        let answer: Vec<redis::Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let code = match answer.first() {
            Some(redis::Value::Int(code)) => *code,
            other => return Err(corrupt(format!("commit answered {other:?}"))),
        };
        match code {
            1 => self.replicated(&lease_key).await,
            -1 => Err(CoordError::LeaseLost),
            _ => {
                let found = match answer.get(1) {
                    Some(redis::Value::BulkString(b)) => {
                        String::from_utf8_lossy(b).parse::<u64>().map_err(corrupt)?
                    }
                    _ => return Err(CoordError::NotFound),
                };
                Err(CoordError::OffsetChanged {
                    expected: commit.expected_offset,
                    found,
                })
            }
        }
    }

    /// Stops routing release requests for a lease this node is letting go of.
    fn forget_local(&self, lease: &RedisLease) {
        let mut local = self.local();
        if local
            .get(&lease.upload_id)
            .is_some_and(|(t, _)| *t == lease.token)
        {
            local.remove(&lease.upload_id);
        }
    }

    /// The lease, record hash, segment list and sweep index of upload `id`, all with one
    /// hash tag.
    fn upload_keys(&self, id: &str) -> [String; 4] {
        let tag = self.tag(id);
        [
            self.tagged(&tag, &format!("lease:{id}")),
            self.tagged(&tag, &format!("up:{id}")),
            self.tagged(&tag, &format!("seg:{id}")),
            self.tagged(&tag, "expiry"),
        ]
    }
}

/// The bucket of upload `id` on a cluster (FNV-1a, so that every node and version agree).
fn bucket(id: &str) -> u32 {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % BUCKETS
}

/// A notice as its hash field (JSON, which the scripts read its due time from), or `''` for
/// none.
fn notice_json(notice: Option<&OwedNotice>) -> Result<String, CoordError> {
    notice.map_or(Ok(String::new()), |n| {
        serde_json::to_string(n).map_err(|e| corrupt(format!("notice: {e}")))
    })
}

/// A segment as its list entry: `token:seq:len`, then `:receipt` if it has one.
fn format_segment(s: &Segment) -> String {
    let mut entry = format!("{}:{}:{}", s.target.token, s.target.seq, s.len);
    if let Some(receipt) = &s.receipt {
        entry.push(':');
        entry.push_str(receipt);
    }
    entry
}

fn parse_segment(entry: &str) -> Result<Segment, CoordError> {
    let bad = || corrupt(format!("bad segment {entry:?}"));
    let mut parts = entry.splitn(4, ':');
    let mut number = || {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(bad)
    };
    let (token, seq, len) = (number()?, number()?, number()?);
    Ok(Segment {
        target: WriteTarget {
            token,
            seq: u32::try_from(seq).map_err(|_| bad())?,
        },
        len,
        receipt: parts.next().map(str::to_string),
    })
}

fn parse_record(
    fields: HashMap<String, String>,
    segments: Vec<String>,
) -> Result<UploadRecord, CoordError> {
    let number = |name: &str| -> Result<Option<u64>, CoordError> {
        fields
            .get(name)
            .map(|v| v.parse::<u64>().map_err(corrupt))
            .transpose()
    };
    let meta: Meta = serde_json::from_str(fields.get("meta").ok_or_else(|| corrupt("no meta"))?)
        .map_err(corrupt)?;
    let state = match fields.get("state").map(String::as_str) {
        Some("gone") => UploadState::Gone {
            purge_at: number("purge_at")?.unwrap_or(0),
        },
        _ => UploadState::Active,
    };
    Ok(UploadRecord {
        id: meta.id,
        offset: number("offset")?.unwrap_or(0),
        length: number("length")?,
        metadata: meta.metadata,
        concat: meta.concat,
        expected_digest: meta.expected_digest,
        created_at: meta.created_at,
        expires_at: number("expires_at")?,
        state,
        session: fields.get("session").cloned(),
        notice: fields
            .get("notice")
            .map(|n| serde_json::from_str(n).map_err(corrupt))
            .transpose()?,
        segments: segments
            .iter()
            .map(|s| parse_segment(s))
            .collect::<Result<_, _>>()?,
        last_commit: fields
            .get("last_commit")
            .map(|n| serde_json::from_str(n).map_err(corrupt))
            .transpose()?,
    })
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError> {
        let meta = serde_json::to_string(&Meta {
            id: record.id.clone(),
            metadata: record.metadata.clone(),
            concat: record.concat.clone(),
            created_at: record.created_at,
            expected_digest: record.expected_digest.clone(),
        })
        .map_err(corrupt)?;
        let [_, up, _, expiry] = self.shared.upload_keys(&record.id);
        let created: i64 = self
            .shared
            .scripts
            .create
            .key(&up)
            .key(expiry)
            .arg(&record.id)
            .arg(meta)
            .arg(record.length.map(|l| l.to_string()).unwrap_or_default())
            .arg(record.expires_at.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut self.shared.conn())
            .await
            .map_err(unavailable)?;
        if created == 1 {
            self.shared.replicated(&up).await
        } else {
            Err(CoordError::AlreadyExists)
        }
    }

    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError> {
        let [_, up, seg, _] = self.shared.upload_keys(id);
        let (fields, segments): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(up)
            .lrange(seg, 0, -1)
            .query_async(&mut self.shared.conn())
            .await
            .map_err(unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(fields, segments).map(Some)
    }

    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        self.acquire_reserving(id, wait, false).await
    }

    async fn acquire_to_write(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        self.acquire_reserving(id, wait, true).await
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        // Each bucket's earliest `limit`, then the earliest `limit` of them all. One command
        // per bucket, all sent at once: the cluster client refuses a pipeline across
        // slots.
        let count = isize::try_from(limit).unwrap_or(isize::MAX);
        let reads = self.shared.tags().into_iter().map(|tag| {
            let (mut conn, index) = (self.shared.conn(), self.shared.tagged(&tag, "expiry"));
            async move {
                conn.zrangebyscore_limit_withscores::<_, _, _, Vec<(String, u64)>>(
                    index, "-inf", now, 0, count,
                )
                .await
            }
        });
        let answers = futures_util::future::try_join_all(reads)
            .await
            .map_err(unavailable)?;
        let mut due: Vec<(String, u64)> = answers.into_iter().flatten().collect();
        due.sort_by_key(|(_, at)| *at);
        Ok(due.into_iter().take(limit).map(|(id, _)| id).collect())
    }

    fn leadership(&self) -> Option<&dyn Leadership> {
        Some(self)
    }

    fn in_flight_elsewhere(&self) -> Option<&dyn InFlightElsewhere> {
        Some(self)
    }

    async fn ping(&self) -> Result<(), CoordError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.shared.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Leadership for RedisCoordinator {
    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError> {
        let held: i64 = self
            .shared
            .scripts
            .lead
            .key(self.shared.key(&format!("leader:{role}")))
            .arg(&self.shared.node_id)
            .arg(ms(ttl))
            .invoke_async(&mut self.shared.conn())
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }
}

/// A lease granted by Redis: its key holds the token with a TTL, and every change is a
/// script that first checks the key still holds it.
struct RedisLease {
    shared: Arc<Shared>,
    upload_id: String,
    token: u64,
    /// The sequence number the acquiring script reserved, until the first `reserve` takes it.
    first_target: Mutex<Option<u32>>,
}

#[async_trait]
impl HeldLease for RedisLease {
    fn token(&self) -> u64 {
        self.token
    }

    fn ttl(&self) -> Option<Duration> {
        Some(self.shared.settings.lease_ttl)
    }

    async fn renew(&self) -> Result<(), CoordError> {
        let shared = &self.shared;
        let [lease_key, ..] = shared.upload_keys(&self.upload_id);
        shared
            .fenced(
                &shared.scripts.renew,
                &[lease_key],
                &[
                    self.token.to_string(),
                    ms(shared.settings.lease_ttl).to_string(),
                ],
            )
            .await
    }

    async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        let reserved = self
            .first_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(seq) = reserved {
            return Ok(WriteTarget {
                token: self.token,
                seq,
            });
        }
        let shared = &self.shared;
        let [lease_key, up, _, _] = shared.upload_keys(&self.upload_id);
        let seq: i64 = shared
            .scripts
            .reserve
            .key(lease_key)
            .key(up)
            .arg(self.token)
            .invoke_async(&mut shared.conn())
            .await
            .map_err(unavailable)?;
        let seq = u32::try_from(seq).map_err(|_| CoordError::LeaseLost)?;
        Ok(WriteTarget {
            token: self.token,
            seq,
        })
    }

    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError> {
        if release {
            self.shared.forget_local(self);
        }
        self.shared.run_commit(self, commit, release).await
    }

    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        let shared = &self.shared;
        let keys = shared.upload_keys(&self.upload_id);
        let args = [
            self.token.to_string(),
            purge_at.to_string(),
            self.upload_id.clone(),
            notice_json(notice.as_ref())?,
        ];
        shared
            .fenced(&shared.scripts.mark_gone, &keys, &args)
            .await?;
        shared.replicated(&keys[0]).await
    }

    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        let shared = &self.shared;
        let keys = shared.upload_keys(&self.upload_id);
        let args = [
            self.token.to_string(),
            self.upload_id.clone(),
            notice_json(notice.as_ref())?,
        ];
        shared
            .fenced(&shared.scripts.set_notice, &keys, &args)
            .await?;
        shared.replicated(&keys[0]).await
    }

    async fn purge(&self) -> Result<(), CoordError> {
        let shared = &self.shared;
        shared.forget_local(self);
        let keys = shared.upload_keys(&self.upload_id);
        let args = [self.token.to_string(), self.upload_id.clone()];
        shared.fenced(&shared.scripts.purge, &keys, &args).await?;
        shared.replicated(&keys[0]).await
    }

    async fn release(&self) -> Result<(), CoordError> {
        let shared = &self.shared;
        shared.forget_local(self);
        let [lease_key, ..] = shared.upload_keys(&self.upload_id);
        // Answering 0 means the lease had expired already: nothing to let go of.
        let _: i64 = shared
            .scripts
            .release
            .key(lease_key)
            .arg(self.token)
            .invoke_async(&mut shared.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
