use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::{select, Either};
use tusk_protocol::{ChecksumHeader, ConcatRequest};

use crate::body::{BodyEnd, BodyReader};
use crate::observed::{ObservedCoordinator, ObservedStorage};
use crate::{
    unix_now, ByteStream, Commit, ConcatKind, CoordError, Coordinator, Error, Hasher, HookEvent,
    Hooks, IncomingBody, Lease, NoHooks, NoObserver, Observer, RequestInfo, ReserveTargets,
    Segment, Storage, StorageError, UploadRecord, UploadState, WriteContext,
};

/// Engine settings; the server binary fills them from its configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest upload accepted, `None` for no limit.
    pub max_size: Option<u64>,
    /// An unfinished upload without a PATCH for this long expires; `None` turns expiry off.
    pub expire_after: Option<Duration>,
    /// How long a terminated or expired upload answers 410 before it is forgotten (404).
    pub tombstone_ttl: Duration,
    /// How long a PATCH waits for another request to let go of the upload before 423.
    pub lease_wait: Duration,
    /// A PATCH body that sends nothing for this long is cut and its bytes committed.
    pub network_timeout: Duration,
    /// How often a streaming PATCH renews its lease.
    pub lease_renew_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_size: None,
            expire_after: Some(Duration::from_secs(7 * 24 * 3600)),
            tombstone_ttl: Duration::from_secs(24 * 3600),
            lease_wait: Duration::from_secs(3),
            network_timeout: Duration::from_secs(60),
            lease_renew_interval: Duration::from_secs(5),
        }
    }
}

/// A creation request, already parsed by the protocol layer.
#[derive(Debug, Clone, Default)]
pub struct CreateUpload {
    /// `None` for a deferred length (or a final upload, whose length comes from its parts).
    pub length: Option<u64>,
    pub metadata: Option<String>,
    /// Upload-Concat; a final upload's parts are given as upload IDs, resolved from URLs by
    /// the HTTP layer.
    pub concat: Option<(ConcatRequest, Vec<String>)>,
    /// The creating request, for hooks.
    pub request: RequestInfo,
}

/// A PATCH request's headers, already parsed.
#[derive(Debug, Clone)]
pub struct PatchRequest {
    pub offset: u64,
    pub declare_length: Option<u64>,
    pub checksum: Option<ChecksumHeader>,
    /// The declared Content-Length, checked against the upload's length before reading.
    pub content_length: Option<u64>,
    /// The PATCH request itself, for hooks.
    pub request: RequestInfo,
}

/// What HEAD shows of an upload: the record, and for a final upload whether its offset
/// and length may be shown yet.
#[derive(Debug, Clone)]
pub struct UploadView {
    pub record: UploadRecord,
    /// False for a final upload whose partials are not all finished (HEAD omits the offset).
    pub offset_known: bool,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub purged: usize,
    pub failed: usize,
}

/// The tus operations over one storage and one coordinator.
pub struct Engine {
    storage: Arc<dyn Storage>,
    coord: Arc<dyn Coordinator>,
    config: EngineConfig,
    /// Set once on shutdown: streaming PATCHes stop reading and commit, new writes get 503.
    shutting_down: tokio::sync::watch::Sender<bool>,
    observer: Arc<dyn Observer>,
    hooks: Arc<dyn Hooks>,
}

/// What a PATCH's body left to do once it was written.
enum Written {
    /// Bytes to commit (or a length to declare).
    Commit(PendingCommit),
    /// Nothing arrived and nothing was declared: the record stays as it is.
    Nothing(UploadRecord),
}

struct PendingCommit {
    commit: Commit,
    /// The record the commit applies to.
    record: UploadRecord,
    /// The record's segments the commit folds into its first new one.
    folded: Vec<Segment>,
    /// Bytes the storage sent a second time for this write.
    rewritten: u64,
}

/// Reserves targets under one lease, for a storage write.
struct LeaseTargets<'a> {
    coord: &'a dyn Coordinator,
    upload_id: String,
    token: u64,
}

impl<'a> LeaseTargets<'a> {
    fn of(coord: &'a dyn Coordinator, lease: &Lease) -> Self {
        Self {
            coord,
            upload_id: lease.upload_id.clone(),
            token: lease.token,
        }
    }
}

#[async_trait::async_trait]
impl ReserveTargets for LeaseTargets<'_> {
    fn token(&self) -> u64 {
        self.token
    }

    async fn reserve(&self) -> Result<crate::WriteTarget, StorageError> {
        Ok(self.coord.reserve(&self.upload_id, self.token).await?)
    }
}

/// Whether a PATCH at `offset` may write to `record`.
fn check_patchable(record: &UploadRecord, offset: u64) -> Result<(), Error> {
    if record.state != UploadState::Active {
        return Err(Error::Gone);
    }
    if record.is_final() {
        return Err(Error::PatchOnFinal);
    }
    if offset != record.offset {
        return Err(Error::OffsetMismatch {
            expected: record.offset,
            got: offset,
        });
    }
    Ok(())
}

/// Upload IDs carry 144 random bits: 18 bytes, 24 URL-safe base64 characters.
fn new_upload_id() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Engine {
    pub fn new(
        storage: Arc<dyn Storage>,
        coord: Arc<dyn Coordinator>,
        config: EngineConfig,
    ) -> Self {
        Self::observed(storage, coord, config, Arc::new(NoObserver))
    }

    /// An engine that reports to `observer`, timing every storage and coordinator call.
    pub fn observed(
        storage: Arc<dyn Storage>,
        coord: Arc<dyn Coordinator>,
        config: EngineConfig,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            storage: Arc::new(ObservedStorage {
                inner: storage,
                observer: observer.clone(),
            }),
            coord: Arc::new(ObservedCoordinator {
                inner: coord,
                observer: observer.clone(),
            }),
            config,
            shutting_down: tokio::sync::watch::Sender::new(false),
            observer,
            hooks: Arc::new(NoHooks),
        }
    }

    /// The engine calling `hooks` for creation, access, progress, finish and termination.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    fn notify(&self, event: HookEvent, record: &UploadRecord, request: Option<&RequestInfo>) {
        if self.hooks.enabled(event) {
            self.hooks.notify(event, record, request);
        }
    }

    /// Runs the pre-access hook (when configured) for a request on an existing upload.
    pub async fn authorize(&self, id: &str, request: &RequestInfo) -> Result<(), Error> {
        if !self.hooks.enabled(HookEvent::PreAccess) {
            return Ok(());
        }
        let record = match self.coord.load(id).await? {
            Some(record) => record,
            None => return Err(Error::NotFound),
        };
        self.hooks
            .pre_access(&record, request)
            .await
            .map_err(Error::HookRejected)
    }

    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// Starts a graceful shutdown: PATCHes in flight stop reading their bodies, commit what
    /// arrived and release their leases; new creations and PATCHes are refused with 503.
    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }

    /// Whether this node should receive traffic: not draining, coordinator reachable.
    pub async fn ready(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        self.coord
            .ping()
            .await
            .map_err(|e| format!("coordinator: {e}"))?;
        self.storage
            .ping()
            .await
            .map_err(|e| format!("storage: {e}"))
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coord
    }

    /// The tus extensions this engine and its storage support, for `Tus-Extension`.
    pub fn extensions(&self) -> Vec<&'static str> {
        let mut list = vec![
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "termination",
            "checksum",
        ];
        if self.config.expire_after.is_some() {
            list.push("expiration");
        }
        if self.storage.concatenation().is_some() {
            list.extend(["concatenation", "concatenation-unfinished"]);
        }
        list
    }

    fn expiry_from_now(&self) -> Option<u64> {
        self.config.expire_after.map(|d| unix_now() + d.as_secs())
    }

    /// Creates an upload and returns its record.
    pub async fn create(&self, request: CreateUpload) -> Result<UploadRecord, Error> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        if let (Some(max), Some(length)) = (self.config.max_size, request.length) {
            if length > max {
                return Err(Error::TooLarge(
                    "Upload-Length exceeds the maximum upload size",
                ));
            }
        }
        let concat = match request.concat {
            None => None,
            Some((ConcatRequest::Partial, _)) => Some(ConcatKind::Partial),
            Some((ConcatRequest::Final(urls), parts)) => {
                self.check_final_parts(&parts).await?;
                Some(ConcatKind::Final {
                    parts,
                    header: format!("final;{}", urls.join(" ")),
                })
            }
        };
        let mut record = UploadRecord {
            id: new_upload_id(),
            offset: 0,
            length: request.length,
            metadata: request.metadata,
            concat,
            created_at: unix_now(),
            expires_at: if request.length == Some(0) {
                None
            } else {
                self.expiry_from_now()
            },
            state: UploadState::Active,
            segments: Vec::new(),
            session: None,
        };
        if self.hooks.enabled(HookEvent::PreCreate) {
            let changes = self
                .hooks
                .pre_create(&record, &request.request)
                .await
                .map_err(Error::HookRejected)?;
            if let Some(id) = changes.id {
                if !tusk_protocol::is_valid_upload_id(&id) {
                    return Err(Error::HookAnswer("pre-create chose an invalid upload ID"));
                }
                record.id = id;
            }
            if let Some(metadata) = changes.metadata {
                tusk_protocol::parse_metadata(&metadata, usize::MAX)
                    .map_err(|_| Error::HookAnswer("pre-create returned invalid metadata"))?;
                record.metadata = (!metadata.is_empty()).then_some(metadata);
            }
        }
        match self.coord.create(&record).await {
            Err(CoordError::AlreadyExists) => return Err(Error::IdTaken),
            other => other?,
        }
        self.observer.upload_created();
        if record.length == Some(0) {
            // Finished at birth: it still gets its (empty) object in storage.
            self.finish_in_storage(&record).await;
        }
        self.notify(HookEvent::PostCreate, &record, Some(&request.request));
        if record.is_final() {
            // Materialize at once when the partials are already finished.
            return Ok(self.view(&record.id).await?.record);
        }
        Ok(record)
    }

    async fn check_final_parts(&self, parts: &[String]) -> Result<(), Error> {
        if parts.is_empty() {
            return Err(Error::InvalidConcat(
                "a final upload names no partial uploads",
            ));
        }
        let mut total: u64 = 0;
        for id in parts {
            let part = match self.coord.load(id).await? {
                Some(r) if r.state == UploadState::Active => r,
                _ => {
                    return Err(Error::InvalidConcat(
                        "a named partial upload does not exist",
                    ))
                }
            };
            if !part.is_partial() {
                return Err(Error::InvalidConcat(
                    "a named upload is not a partial upload",
                ));
            }
            total = total.saturating_add(part.length.unwrap_or(0));
        }
        if let Some(max) = self.config.max_size {
            if total > max {
                return Err(Error::TooLarge(
                    "the concatenated upload exceeds the maximum size",
                ));
            }
        }
        Ok(())
    }

    /// Loads an upload that exists and is not gone.
    async fn load_active(&self, id: &str) -> Result<UploadRecord, Error> {
        match self.coord.load(id).await? {
            None => Err(Error::NotFound),
            Some(r) if r.state != UploadState::Active => Err(Error::Gone),
            Some(r) => Ok(r),
        }
    }

    /// The upload as HEAD shows it. A final upload whose partials have all finished is
    /// assembled here, on first sight.
    pub async fn view(&self, id: &str) -> Result<UploadView, Error> {
        let record = self.load_active(id).await?;
        let parts = match &record.concat {
            Some(ConcatKind::Final { parts, .. })
                if !record.is_finished() || record.length.is_none() =>
            {
                parts.clone()
            }
            _ => {
                return Ok(UploadView {
                    record,
                    offset_known: true,
                })
            }
        };
        let mut partials = Vec::with_capacity(parts.len());
        for part in &parts {
            match self.coord.load(part).await? {
                Some(p) if p.state == UploadState::Active => partials.push(p),
                _ => {
                    return Err(Error::InvalidConcat(
                        "a partial upload of this final upload is gone",
                    ))
                }
            }
        }
        if partials.iter().all(UploadRecord::is_finished) {
            let record = self.assemble_final(record, &partials).await?;
            return Ok(UploadView {
                record,
                offset_known: true,
            });
        }
        let mut record = record;
        // The length is known once every partial's length is, even before they finish.
        record.length = partials.iter().map(|p| p.length).sum::<Option<u64>>();
        Ok(UploadView {
            record,
            offset_known: false,
        })
    }

    async fn assemble_final(
        &self,
        record: UploadRecord,
        partials: &[UploadRecord],
    ) -> Result<UploadRecord, Error> {
        let concatenation = self
            .storage
            .concatenation()
            .ok_or(Error::InvalidConcat("this storage cannot concatenate"))?;
        let lease = self.acquire(&record.id).await?;
        let result = async {
            let current = lease.record.clone();
            if current.state != UploadState::Active {
                return Err(Error::Gone);
            }
            if current.is_finished() && current.length.is_some() {
                return Ok(current); // another request assembled it meanwhile
            }
            let total = partials.iter().map(|p| p.offset).sum::<u64>();
            let targets = LeaseTargets::of(self.coord.as_ref(), &lease);
            let context = WriteContext {
                record: &current,
                length: Some(total),
                targets: &targets,
            };
            let stored = concatenation.concatenate(context, partials).await?;
            let commit = Commit {
                expected_offset: 0,
                added: stored.written,
                append: stored.append.clone(),
                fold: 0,
                session: stored.session,
                declare_length: Some(total),
                expires_at: None,
            };
            if let Err(e) = self.coord.commit(&lease, &commit).await {
                self.discard(&record.id, &stored.append).await;
                return Err(e.into());
            }
            self.observer.upload_finished();
            let mut assembled = current;
            assembled.apply_commit(&commit);
            self.finish_in_storage(&assembled).await;
            self.notify(HookEvent::PostFinish, &assembled, None);
            Ok(assembled)
        }
        .await;
        self.release(lease).await;
        result
    }

    async fn acquire(&self, id: &str) -> Result<Lease, Error> {
        match self.coord.acquire(id, self.config.lease_wait).await {
            Ok(lease) => Ok(lease),
            Err(CoordError::Locked) => Err(Error::Locked {
                retry_after: self.config.lease_wait,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, lease: Lease) {
        let id = lease.upload_id.clone();
        if let Err(error) = self.coord.release(lease).await {
            // The lease runs out by itself; the next writer waits at most its TTL.
            tracing::warn!(upload_id = %id, %error, "releasing a lease failed");
        }
    }

    /// Appends a PATCH body to an upload: the commit protocol of docs/architecture.md.
    ///
    /// Returns the committed record. Bytes received before an interruption, an idle timeout
    /// or a release request are committed; nothing is committed on a checksum mismatch or
    /// a body beyond the upload's length.
    pub async fn patch(
        &self,
        id: &str,
        mut request: PatchRequest,
        body: IncomingBody,
    ) -> Result<UploadRecord, Error> {
        let info = std::mem::take(&mut request.request);
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let started = std::time::Instant::now();
        // Most PATCHes find the lease free: taking it also returns the record.
        let mut lease = match self.coord.acquire(id, Duration::ZERO).await {
            Ok(lease) => lease,
            Err(CoordError::Locked) => {
                // Another request writes: only a request that could succeed asks it to stop.
                let record = self.load_active(id).await?;
                check_patchable(&record, request.offset)?;
                self.acquire(id).await?
            }
            Err(e) => return Err(e.into()),
        };
        let result = match self.patch_under_lease(&mut lease, request, body).await {
            Ok(Written::Commit(pending)) => match self.commit_and_release(lease, pending).await {
                Ok(record) => self.after_commit(record, &info).await,
                Err(e) => Err(e),
            },
            Ok(Written::Nothing(record)) => {
                self.release(lease).await;
                Ok(record)
            }
            Err(e) => {
                self.release(lease).await;
                Err(e)
            }
        };
        self.observer.patch_handled(started.elapsed());
        result
    }

    /// Progress and finish hooks once a PATCH's bytes are committed. A pre-finish
    /// rejection changes only the answer: the bytes are committed already.
    async fn after_commit(
        &self,
        record: UploadRecord,
        info: &RequestInfo,
    ) -> Result<UploadRecord, Error> {
        if !record.is_finished() {
            self.notify(HookEvent::PostReceive, &record, Some(info));
            return Ok(record);
        }
        if self.hooks.enabled(HookEvent::PreFinish) {
            self.hooks
                .pre_finish(&record, info)
                .await
                .map_err(Error::HookRejected)?;
        }
        // Only the commit that completed the upload gets here: one post-finish per upload,
        // whichever node made it.
        self.notify(HookEvent::PostFinish, &record, Some(info));
        Ok(record)
    }

    /// The last step of a PATCH: commit and let go of the lease together (one round trip
    /// for remote coordinators).
    async fn commit_and_release(
        &self,
        lease: Lease,
        pending: PendingCommit,
    ) -> Result<UploadRecord, Error> {
        let id = lease.upload_id.clone();
        let PendingCommit {
            commit,
            mut record,
            folded,
            rewritten,
        } = pending;
        match self.coord.commit_and_release(lease, &commit).await {
            Ok(()) => {
                record.apply_commit(&commit);
                self.observer.bytes_committed(commit.added);
                if rewritten > 0 {
                    self.observer
                        .bytes_rewritten(self.storage.name(), rewritten);
                }
                if !folded.is_empty() {
                    self.discard_later(&record.id, folded);
                }
                if record.is_finished() {
                    self.observer.upload_finished();
                    self.finish_in_storage(&record).await;
                    self.remove_uncommitted_later(&record);
                }
                Ok(record)
            }
            Err(e) => {
                self.discard(&id, &commit.append).await;
                Err(e.into())
            }
        }
    }

    /// Makes a just finished upload whole in storage. A failure leaves the upload readable:
    /// the backend finishes it again on the first read.
    async fn finish_in_storage(&self, record: &UploadRecord) {
        if let Err(error) = self.storage.finish(record).await {
            tracing::warn!(upload_id = %record.id, %error, "finishing the upload in storage failed; the first read retries");
        }
    }

    /// Streams the body into a reserved target under the lease; says what to commit.
    async fn patch_under_lease(
        &self,
        lease: &mut Lease,
        request: PatchRequest,
        body: IncomingBody,
    ) -> Result<Written, Error> {
        // The record as of the lease: the previous holder may have committed meanwhile.
        let record = lease.record.clone();
        check_patchable(&record, request.offset)?;
        let length = self.effective_length(&record, request.declare_length)?;
        let limit = match (length, self.config.max_size) {
            (Some(length), _) => length - record.offset,
            (None, Some(max)) => max.saturating_sub(record.offset),
            (None, None) => u64::MAX,
        };
        if request.content_length.is_some_and(|n| n > limit) {
            return Err(Error::TooLarge("the body goes past the upload's length"));
        }

        let hasher = request.checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let targets = LeaseTargets::of(self.coord.as_ref(), lease);
        let mut reader = BodyReader::new(
            body,
            limit,
            self.config.network_timeout,
            &mut lease.release,
            self.shutting_down.subscribe(),
            hasher,
        );
        let stored = {
            let context = WriteContext {
                record: &record,
                length,
                targets: &targets,
            };
            let write = self.storage.write(context, reader.chunks());
            let keep_alive = keep_lease_alive(
                self.coord.as_ref(),
                &lease.upload_id,
                lease.token,
                self.config.lease_renew_interval,
            );
            match select(Box::pin(write), Box::pin(keep_alive)).await {
                // A failed write removed what it had stored itself.
                Either::Left((stored, _)) => stored?,
                Either::Right(((), _)) => return Err(Error::LeaseLost),
            }
        };
        let end = reader.end.unwrap_or(BodyEnd::Complete);
        if end == BodyEnd::ReleaseRequested {
            self.observer.release_honoured();
        }
        let digest = reader.take_digest();
        drop(reader);
        let written = stored.written;
        tracing::debug!(upload_id = %lease.upload_id, written, ?end, "body stored");

        let refused = if end == BodyEnd::TooLarge {
            Some(Error::TooLarge("the body goes past the upload's length"))
        } else {
            match (&request.checksum, digest) {
                (Some(_), Some(_)) if end != BodyEnd::Complete => {
                    Some(Error::IncompleteChecksummedBody)
                }
                (Some(expected), Some(actual)) if expected.digest != actual => {
                    Some(Error::ChecksumMismatch)
                }
                _ => None,
            }
        };
        if let Some(error) = refused {
            self.discard(&lease.upload_id, &stored.append).await;
            return Err(error);
        }
        if stored.append.is_empty() && request.declare_length.is_none() {
            return Ok(Written::Nothing(record));
        }
        let new_offset = record.offset + written;
        let finished = length == Some(new_offset);
        let folded = record.segments[record.segments.len().saturating_sub(stored.fold)..].to_vec();
        let commit = Commit {
            expected_offset: record.offset,
            added: written,
            append: stored.append,
            fold: stored.fold,
            session: stored.session,
            declare_length: request.declare_length.filter(|_| record.length.is_none()),
            expires_at: if finished {
                None
            } else {
                self.expiry_from_now()
            },
        };
        Ok(Written::Commit(PendingCommit {
            commit,
            record,
            folded,
            rewritten: stored.rewritten,
        }))
    }

    /// Forgets segments a commit folded into a later one, off the request's path; a crash
    /// leaves them to the leftovers sweep.
    fn discard_later(&self, id: &str, segments: Vec<Segment>) {
        let storage = self.storage.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(error) = storage.discard(&id, &segments).await {
                tracing::warn!(upload_id = %id, %error, "removing folded segments failed");
            }
        });
    }

    /// Sweeps targets that never committed, off the request's path.
    fn remove_uncommitted_later(&self, record: &UploadRecord) {
        let storage = self.storage.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let id = &record.id;
            match storage.remove_uncommitted(&record).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(upload_id = %id, removed = n, "removed uncommitted targets")
                }
                Err(error) => {
                    tracing::warn!(upload_id = %id, %error, "removing uncommitted targets failed")
                }
            }
        });
    }

    /// The upload's length after this request: the recorded one, or the one it declares.
    fn effective_length(
        &self,
        record: &UploadRecord,
        declared: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        match (record.length, declared) {
            (Some(set), Some(new)) if set != new => Err(Error::LengthAlreadySet(set)),
            (Some(set), _) => Ok(Some(set)),
            (None, Some(new)) => {
                if self.config.max_size.is_some_and(|max| new > max) {
                    return Err(Error::TooLarge(
                        "Upload-Length exceeds the maximum upload size",
                    ));
                }
                if new < record.offset {
                    return Err(Error::TooLarge(
                        "Upload-Length is below the upload's offset",
                    ));
                }
                Ok(Some(new))
            }
            (None, None) => Ok(None),
        }
    }

    async fn discard(&self, id: &str, segments: &[Segment]) {
        if segments.is_empty() {
            return;
        }
        if let Err(error) = self.storage.discard(id, segments).await {
            tracing::warn!(upload_id = %id, %error, "discarding uncommitted segments failed");
        }
    }

    /// Terminates an upload: its bytes are deleted and it answers 410 until purged.
    pub async fn terminate(&self, id: &str, request: &RequestInfo) -> Result<(), Error> {
        self.load_active(id).await?;
        let lease = self.acquire(id).await?;
        let record = lease.record.clone();
        let result = self.remove_under_lease(&lease).await;
        self.release(lease).await;
        if result.is_ok() {
            self.observer.upload_terminated();
            self.notify(HookEvent::PostTerminate, &record, Some(request));
        }
        result
    }

    async fn remove_under_lease(&self, lease: &Lease) -> Result<(), Error> {
        if lease.record.state != UploadState::Active {
            return Err(Error::Gone);
        }
        let purge_at = unix_now() + self.config.tombstone_ttl.as_secs();
        // Mark gone first: a crash between the two leaves bytes for the sweeper, never a
        // record that points at deleted bytes.
        self.coord.mark_gone(lease, purge_at).await?;
        self.storage.delete(&lease.upload_id).await?;
        Ok(())
    }

    /// Committed bytes of an upload for GET: a stream of `range`, clamped to the committed
    /// offset. Takes no lease: reads never wait for writers.
    pub async fn read(&self, id: &str, range: Range<u64>) -> Result<ByteStream, Error> {
        let view = self.view(id).await?;
        self.read_record(&view.record, range).await
    }

    /// [`Engine::read`] of a record the caller has just loaded with [`Engine::view`].
    pub async fn read_record(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, Error> {
        let end = range.end.min(record.offset);
        let start = range.start.min(end);
        Ok(self.storage.read(record, start..end).await?)
    }

    /// A link valid for `valid_for` to download the finished upload of `record` straight from
    /// storage, if the storage can make one (`None` for an unfinished upload).
    pub async fn presigned_download(
        &self,
        record: &UploadRecord,
        valid_for: Duration,
        presentation: &crate::Presentation,
    ) -> Result<Option<String>, Error> {
        match self.storage.presign() {
            Some(presign) if record.is_finished() => Ok(Some(
                presign
                    .presigned_get(record, valid_for, presentation)
                    .await?,
            )),
            _ => Ok(None),
        }
    }

    /// Expires overdue unfinished uploads and purges old tombstones; returns what it did.
    pub async fn sweep_once(&self) -> Result<SweepReport, Error> {
        let now = unix_now();
        let mut report = SweepReport::default();
        for id in self.coord.due_for_sweep(now, 1000).await? {
            // A busy upload is not due; skip it rather than wait.
            let lease = match self.coord.acquire(&id, Duration::ZERO).await {
                Ok(lease) => lease,
                Err(_) => continue,
            };
            let outcome = self.sweep_one(&lease, now).await;
            self.release(lease).await;
            match outcome {
                Ok(Some(true)) => report.expired += 1,
                Ok(Some(false)) => report.purged += 1,
                Ok(None) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(upload_id = %id, %error, "sweeping an upload failed");
                }
            }
        }
        Ok(report)
    }

    /// Removes what storage holds for uploads that no record accounts for (a writer that
    /// crashed or lost its lease after storing, before committing). Each upload is looked at
    /// under its lease, so no writer can commit what is being removed.
    pub async fn sweep_leftovers(&self) -> Result<usize, Error> {
        let Some(leftovers) = self.storage.leftovers() else {
            return Ok(0);
        };
        let mut removed = 0;
        for id in leftovers.suspects(1000).await? {
            let outcome = match self.coord.acquire(&id, Duration::ZERO).await {
                Ok(lease) => {
                    let outcome = leftovers.remove_leftovers(&id, Some(&lease.record)).await;
                    self.release(lease).await;
                    outcome
                }
                Err(CoordError::NotFound) => leftovers.remove_leftovers(&id, None).await,
                // Busy (its writer may still commit) or unreachable: next time.
                Err(_) => continue,
            };
            match outcome {
                Ok(n) => removed += n,
                Err(error) => {
                    tracing::warn!(upload_id = %id, %error, "removing stored leftovers failed")
                }
            }
        }
        Ok(removed)
    }

    /// Some(true): expired, Some(false): purged, None: no longer due.
    async fn sweep_one(&self, lease: &Lease, now: u64) -> Result<Option<bool>, Error> {
        let record = &lease.record;
        match record.state {
            UploadState::Gone { purge_at } if purge_at <= now => {
                self.coord.purge(lease).await?;
                Ok(Some(false))
            }
            UploadState::Active if record.expires_at.is_some_and(|t| t <= now) => {
                self.remove_under_lease(lease).await?;
                Ok(Some(true))
            }
            _ => Ok(None),
        }
    }

    /// Runs [`Engine::sweep_once`] every `interval` until `shutdown` resolves.
    pub async fn run_sweeper(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            // One sweeper per cluster; a node that loses the role simply skips its turns.
            match self.coord.lead("sweeper", interval.saturating_mul(3)).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether this node sweeps");
                    continue;
                }
            }
            let swept = self.sweep_once().await;
            match self.sweep_leftovers().await {
                Ok(0) => {}
                Ok(removed) => {
                    self.observer.leftovers_removed(removed);
                    tracing::info!(removed, "removed stored leftovers of no record");
                }
                Err(error) => tracing::warn!(%error, "sweeping stored leftovers failed"),
            }
            if let Ok(r) = &swept {
                self.observer.sweep(r.expired, r.purged);
            }
            match swept {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(
                        expired = r.expired,
                        purged = r.purged,
                        failed = r.failed,
                        "sweep"
                    )
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweep failed"),
            }
        }
    }
}

/// Renews the lease every `interval`; resolves only when the lease is lost.
async fn keep_lease_alive(
    coord: &dyn Coordinator,
    upload_id: &str,
    token: u64,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        match coord.renew(upload_id, token).await {
            Ok(()) => {}
            Err(CoordError::LeaseLost) => return,
            Err(error) => tracing::warn!(%upload_id, %error, "renewing a lease failed; retrying"),
        }
    }
}
