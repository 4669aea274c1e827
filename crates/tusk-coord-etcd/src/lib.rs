//! Tusk's coordinator on etcd: the control plane shared by every node of a cluster, in one
//! etcd cluster's linearizable transactions. See [`keys`] for what is stored where.
//!
//! Every check-and-change is one etcd `Txn`. The fencing token of a lease is the
//! `create_revision` of the upload's lock key, which etcd hands out and never repeats for
//! the life of the cluster (also after an ID is purged and created again), and every change
//! under a lease compares it: a writer whose lease was taken over can neither reserve nor
//! commit, whatever the clocks say. A lease expires at a time written in the lock key's
//! value, renewed by its holder, so the nodes' clocks decide only *when* a silent holder
//! can be taken over, never whether two writers can both change an upload.

mod endpoints;
mod keys;
mod lease;
mod requests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tusk_core::{
    CoordError, Coordinator, InFlightElsewhere, Leadership, Lease, ReleaseRequest, SettleLocally,
    UploadRecord,
};

use crate::endpoints::Endpoints;
use crate::keys::{assemble, padded, Head, Keys};
use crate::lease::EtcdLease;

/// How to reach etcd and how leases behave.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Client URLs of the etcd members, e.g. `http://etcd-0:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of every key, e.g. `tusk/`; lets clusters share one etcd.
    pub prefix: String,
    /// A lease not renewed for this long can be taken over; a streaming PATCH renews it at a
    /// third.
    pub lease_ttl: Duration,
    /// Time allowed for one etcd call (and for connecting) before the request answers 503.
    pub timeout: Duration,
    /// User name and password, when etcd has authentication on.
    pub credentials: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// What a node trusts and shows when it talks to etcd over TLS.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// PEM of the CA certificates that alone are trusted for etcd's certificate.
    pub ca_pem: Vec<u8>,
    /// PEM of this node's client certificate (chain) and its key, for etcd's
    /// `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Leases this node holds, by upload ID: the token and how to ask the writer to let go.
type LocalLeases = Mutex<HashMap<String, (u64, watch::Sender<bool>)>>;

pub struct EtcdCoordinator {
    shared: Arc<Shared>,
}

/// The client and settings, shared with the leases this node grants.
struct Shared {
    endpoints: Endpoints,
    keys: Keys,
    settings: EtcdSettings,
    local: LocalLeases,
    /// Identifies this node as a holder of singleton roles.
    node_id: String,
    /// How this node settles its own PATCHes for reads on other nodes (set by the engine).
    settle_locally: std::sync::OnceLock<SettleLocally>,
}

pub(crate) fn unavailable(e: etcd_client::Error) -> CoordError {
    CoordError::Unavailable(format!("etcd: {}", one_line(&e)))
}

/// A gRPC status as `code: message (innermost cause)`; tonic's own text is a debug dump of
/// its transport error. The whole error goes to the debug log.
fn one_line(e: &etcd_client::Error) -> String {
    tracing::debug!(error = ?e, "etcd call failed");
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(next) = cause {
        innermost = Some(next);
        cause = next.source();
    }
    match innermost {
        Some(root) => format!("{:?}: {} ({root})", status.code(), status.message()),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// Milliseconds since the Unix epoch on this node's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A lease etcd granted, as `try_acquire` took it.
pub(crate) struct Taken {
    /// The lock key's create revision.
    token: u64,
    record: UploadRecord,
    /// The next write target's sequence number.
    seq: u32,
    head_revision: i64,
    /// The write target reserved with the lease, for its holder's first reservation.
    first_target: Option<u32>,
}

/// The first key-value pair of the `n`th response of a transaction, if it was a range read.
pub(crate) fn read_kvs(responses: &[TxnOpResponse], n: usize) -> &[etcd_client::KeyValue] {
    match responses.get(n) {
        Some(TxnOpResponse::Get(get)) => get.kvs(),
        _ => &[],
    }
}

impl EtcdCoordinator {
    /// Connects to etcd and starts listening for release requests.
    pub async fn connect(settings: EtcdSettings) -> Result<Arc<Self>, CoordError> {
        let mut options = ConnectOptions::new()
            .with_timeout(settings.timeout)
            .with_connect_timeout(settings.timeout)
            .with_keep_alive(Duration::from_secs(10), settings.timeout)
            // A member cut off from the leader answers nothing rather than stale reads.
            .with_require_leader(true);
        if let Some((user, password)) = &settings.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let https = settings.endpoints.iter().any(|e| e.starts_with("https://"));
        match &settings.tls {
            Some(tls) => {
                let mut config = etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(etcd_client::Identity::from_pem(cert, key));
                }
                options = options.with_tls(config);
            }
            None if https => {
                return Err(CoordError::Unavailable(
                    "etcd: https endpoints need the CA that signed etcd's certificate \
                     (coordinator.etcd.ca_file)"
                        .into(),
                ))
            }
            None => {}
        }
        let endpoints = Endpoints::connect(&settings.endpoints, options)
            .await
            .map_err(unavailable)?;
        let shared = Arc::new(Shared {
            endpoints,
            keys: Keys::new(&settings.prefix),
            local: Mutex::default(),
            node_id: format!("{:032x}", rand::random::<u128>()),
            settle_locally: std::sync::OnceLock::new(),
            settings,
        });
        tokio::spawn(requests::listen(Arc::downgrade(&shared)));
        Ok(Arc::new(Self { shared }))
    }

    /// Takes the lease of `id` (see `Coordinator::acquire`); with `reserve_first`, reserves
    /// the first write target in the same transaction.
    async fn acquire_reserving(
        &self,
        id: &str,
        wait: Duration,
        reserve_first: bool,
    ) -> Result<Lease, CoordError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked_at: Option<tokio::time::Instant> = None;
        let mut pause = Duration::from_millis(10);
        loop {
            // The TTL starts when the transaction runs, not when this request began waiting.
            let attempt_at = tokio::time::Instant::now();
            if let Some(taken) = self.shared.try_acquire(id, reserve_first).await? {
                let (ask, release) = ReleaseRequest::channel();
                self.shared
                    .local()
                    .insert(id.to_string(), (taken.token, ask));
                let record = taken.record.clone();
                let held = EtcdLease::new(self.shared.clone(), id.to_string(), taken);
                return Ok(Lease::grant(
                    Box::new(held),
                    record,
                    release,
                    asked_at.is_some(),
                    attempt_at,
                ));
            }
            let now = tokio::time::Instant::now();
            if wait.is_zero() || now >= deadline {
                return Err(CoordError::Locked);
            }
            // Ask the holder (on whatever node) to let go; again now and then in case a
            // request was missed while a watch reconnected.
            if asked_at.is_none_or(|at| now.duration_since(at) > Duration::from_millis(500)) {
                self.shared.ask_to_release(id).await?;
                asked_at = Some(now);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Shared {
    fn kv(&self) -> &Endpoints {
        &self.endpoints
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, watch::Sender<bool>)>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops routing release requests for a lease this node is letting go of.
    fn forget_local(&self, id: &str, token: u64) {
        let mut local = self.local();
        if local.get(id).is_some_and(|(t, _)| *t == token) {
            local.remove(id);
        }
    }

    /// Takes the lease of `id` if it is free or expired; `Ok(None)` while another holds it.
    /// With `reserve_first`, also reserves the first write target.
    async fn try_acquire(
        &self,
        id: &str,
        reserve_first: bool,
    ) -> Result<Option<Taken>, CoordError> {
        // An expired lock is cleared by the first attempt and taken by the second (or by
        // whoever came first: then this one finds it held).
        for _ in 0..2 {
            if let Some(taken) = self.try_acquire_once(id, reserve_first).await? {
                return Ok(Some(taken));
            }
        }
        Ok(None)
    }

    /// One attempt at taking the lease of `id`. `Ok(Some)`: taken; `Ok(None)`: held by
    /// another (after clearing it if it had expired, so the next attempt may take it).
    async fn try_acquire_once(
        &self,
        id: &str,
        reserve_first: bool,
    ) -> Result<Option<Taken>, CoordError> {
        let (lock, head) = (self.keys.lock(id), self.keys.head(id));
        let expires = padded(now_ms().saturating_add(ms(self.settings.lease_ttl)));
        // The record is read before the reservation is counted: its sequence number is the
        // one reserved.
        let mut take = vec![
            TxnOp::put(lock.as_str(), expires, None),
            TxnOp::get(self.keys.upload(id), Some(GetOptions::new().with_prefix())),
        ];
        if reserve_first {
            take.push(TxnOp::put(self.keys.reservations(id), "", None));
        }
        let answer = self
            .kv()
            .txn(
                Txn::new()
                    .when([
                        Compare::create_revision(lock.as_str(), CompareOp::Equal, 0),
                        Compare::version(head.as_str(), CompareOp::Greater, 0),
                    ])
                    .and_then(take)
                    .or_else([
                        TxnOp::get(lock.as_str(), None),
                        TxnOp::get(head.as_str(), None),
                    ]),
            )
            .await
            .map_err(unavailable)?;
        let responses = answer.op_responses();
        if answer.succeeded() {
            // The transaction made one revision, which created the lock key.
            let token = answer
                .header()
                .map(|h| h.revision())
                .and_then(|r| u64::try_from(r).ok())
                .ok_or_else(|| keys::corrupt("a transaction without a revision"))?;
            let (record, seq, head_revision) =
                assemble(&self.keys, id, read_kvs(&responses, 1))?
                    .ok_or_else(|| keys::corrupt(format!("upload {id} vanished under its lock")))?;
            let (first_target, seq) = if reserve_first {
                let next = seq
                    .checked_add(1)
                    .ok_or_else(|| CoordError::Corrupt("write target numbers ran out".into()))?;
                (Some(seq), next)
            } else {
                (None, seq)
            };
            return Ok(Some(Taken {
                token,
                record,
                seq,
                head_revision,
                first_target,
            }));
        }
        if read_kvs(&responses, 1).is_empty() {
            return Err(CoordError::NotFound);
        }
        if let Some(held) = read_kvs(&responses, 0).first() {
            if held.value() < padded(now_ms()).as_bytes() {
                // Expired: remove exactly that lock (not one taken meanwhile) and try again.
                self.kv()
                    .txn(
                        Txn::new()
                            .when([Compare::mod_revision(
                                lock.as_str(),
                                CompareOp::Equal,
                                held.mod_revision(),
                            )])
                            .and_then([TxnOp::delete(lock.as_str(), None)]),
                    )
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(None)
    }

    /// Asks whichever node holds the lease of `id` to let go (see `requests`).
    async fn ask_to_release(&self, id: &str) -> Result<(), CoordError> {
        let nonce = format!("{:016x}", rand::random::<u64>());
        self.kv()
            .put(self.keys.release_request(id), nonce, None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError> {
        let keys = &self.shared.keys;
        let head = keys.head(&record.id);
        let mut ops = vec![TxnOp::put(
            head.as_str(),
            Head::of(record, 0).encode()?,
            None,
        )];
        ops.extend(keys::segment_writes(
            keys,
            &record.id,
            &record.segments,
            0,
            0,
        )?);
        if let Some(at) = record.sweep_at() {
            ops.push(TxnOp::put(keys.swept_at(at, &record.id), "", None));
        }
        let answer = self
            .shared
            .kv()
            .txn(
                Txn::new()
                    .when([Compare::version(head.as_str(), CompareOp::Equal, 0)])
                    .and_then(ops),
            )
            .await
            .map_err(unavailable)?;
        if answer.succeeded() {
            Ok(())
        } else {
            Err(CoordError::AlreadyExists)
        }
    }

    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError> {
        let keys = &self.shared.keys;
        let answer = self
            .shared
            .kv()
            .get(keys.upload(id), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        Ok(assemble(keys, id, answer.kvs())?.map(|(record, _, _)| record))
    }

    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        self.acquire_reserving(id, wait, false).await
    }

    async fn acquire_to_write(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        self.acquire_reserving(id, wait, true).await
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        let keys = &self.shared.keys;
        let end = keys.swept_at(now.saturating_add(1), "");
        let answer = self
            .shared
            .kv()
            .get(
                keys.sweep_index(),
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
                ),
            )
            .await
            .map_err(unavailable)?;
        let mut due: Vec<String> = answer
            .kvs()
            .iter()
            .filter_map(|kv| keys.id_of_swept(kv.key()))
            .collect();
        due.dedup();
        Ok(due)
    }

    async fn ping(&self) -> Result<(), CoordError> {
        self.shared
            .kv()
            .get(
                self.shared.keys.ping(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn leadership(&self) -> Option<&dyn Leadership> {
        Some(self)
    }

    fn in_flight_elsewhere(&self) -> Option<&dyn InFlightElsewhere> {
        Some(self)
    }
}

#[async_trait]
impl Leadership for EtcdCoordinator {
    /// The role's key holds `<node id> <until>`; the holder renews it, anyone may take it
    /// once `until` has passed. Each change compares the revision it read.
    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError> {
        let shared = &self.shared;
        let key = shared.keys.role(role);
        let now = now_ms();
        let answer = shared
            .kv()
            .get(key.as_str(), None)
            .await
            .map_err(unavailable)?;
        let compare = match answer.kvs().first() {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(kv) => {
                let value = String::from_utf8_lossy(kv.value());
                let (holder, until) = value.split_once(' ').unwrap_or((&value, "0"));
                let lapsed = until.parse::<u64>().map_or(true, |until| until < now);
                if holder != shared.node_id && !lapsed {
                    return Ok(false);
                }
                Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())
            }
        };
        let value = format!("{} {}", shared.node_id, now.saturating_add(ms(ttl)));
        let answer = shared
            .kv()
            .txn(
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.as_str(), value, None)]),
            )
            .await
            .map_err(unavailable)?;
        Ok(answer.succeeded())
    }
}
