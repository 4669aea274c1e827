use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tusk_protocol::{ChecksumHeader, ConcatRequest};

use crate::observed::{ObservedCoordinator, ObservedStorage};
use crate::{
    unix_now, Access, ByteStream, CommitStamp, ConcatKind, CoordError, Coordinator, Error,
    HookEvent, Hooks, Lease, NoHooks, NoObserver, Observer, RequestInfo, Storage, Stored,
    UploadRecord, UploadState,
};

mod concat;
pub(crate) mod in_flight;
mod inspect;
mod outbox;
mod patch;
mod resumed_read;
mod sweep;

pub use in_flight::PatchPhase;
pub use inspect::Inspection;
pub use sweep::SweepReport;

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
    /// A streaming PATCH commits what it received every this many bytes ...
    pub commit_interval_bytes: u64,
    /// ... or this long, whichever comes first (progress commits).
    pub commit_interval: Duration,
    /// Most partial uploads one final upload may name (400 beyond): creating a final, and
    /// a HEAD of one whose partials are unfinished, loads every partial.
    pub max_parts_per_final: usize,
    /// This node's name in the commits it makes (`UploadRecord::last_commit`), so an
    /// operator can tell which node writes an upload.
    pub node: String,
    /// Serve the termination extension (DELETE); off, it is not announced either.
    pub termination: bool,
    /// Serve the concatenation extension (where the storage can); off, `Upload-Concat` is
    /// refused and the extension not announced.
    pub concatenation: bool,
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
            commit_interval_bytes: 64 << 20,
            commit_interval: Duration::from_secs(2),
            max_parts_per_final: 100,
            node: "tusk".into(),
            termination: true,
            concatenation: true,
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
    /// The digest the whole upload must have once complete (the IETF draft's
    /// `Repr-Digest`); checked when it completes.
    pub expected_digest: Option<ChecksumHeader>,
    /// The creating request, for hooks.
    pub request: RequestInfo,
}

/// A PATCH request's headers, already parsed.
#[derive(Debug, Clone)]
pub struct PatchRequest {
    pub offset: u64,
    pub declare_length: Option<u64>,
    /// The upload ends with this body (the draft's `Upload-Complete: ?1`): once the body has
    /// arrived whole, the upload's length is the offset it reached. A body that ends short of
    /// a length already known is committed and refused with [`Error::LengthMismatch`].
    pub ends_upload: bool,
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

/// The tus operations over one storage and one coordinator.
pub struct Engine {
    storage: Arc<dyn Storage>,
    coord: Arc<dyn Coordinator>,
    config: EngineConfig,
    /// Set once on shutdown: streaming PATCHes stop reading and commit, new writes get 503.
    shutting_down: tokio::sync::watch::Sender<bool>,
    observer: Arc<dyn Observer>,
    hooks: Arc<dyn Hooks>,
    in_flight: Arc<in_flight::InFlightPatches>,
    /// Owed notices being delivered by this node (see `outbox`).
    deliveries: Arc<tokio::sync::Semaphore>,
    /// Uploads with a tidying task waiting for their lease on this node, and the folded
    /// segments it is to forget (see `patch.rs`, `tidy_later`).
    tidying: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<crate::Segment>>>>,
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
        let in_flight: Arc<in_flight::InFlightPatches> = Arc::default();
        if let Some(elsewhere) = coord.in_flight_elsewhere() {
            let (patches, bound) = (in_flight.clone(), config.lease_wait);
            elsewhere.serve(Arc::new(move |id: String| {
                let patches = patches.clone();
                Box::pin(async move {
                    patches.settle(&id, bound).await;
                })
            }));
        }
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
            in_flight,
            deliveries: Arc::new(tokio::sync::Semaphore::new(outbox::MAX_DELIVERIES)),
            tidying: Arc::default(),
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

    /// Runs the pre-access hook (when configured) for `request` doing `access` to the
    /// existing upload `id`.
    pub async fn authorize(
        &self,
        id: &str,
        access: Access,
        request: &RequestInfo,
    ) -> Result<(), Error> {
        if !self.hooks.enabled(HookEvent::PreAccess) {
            return Ok(());
        }
        let record = match self.coord.load(id).await? {
            Some(record) => record,
            None => return Err(Error::NotFound),
        };
        self.authorize_record(&record, access, request).await
    }

    /// [`Engine::authorize`] of a record the caller has loaded.
    async fn authorize_record(
        &self,
        record: &UploadRecord,
        access: Access,
        request: &RequestInfo,
    ) -> Result<(), Error> {
        if !self.hooks.enabled(HookEvent::PreAccess) {
            return Ok(());
        }
        self.hooks
            .pre_access(record, access, request)
            .await
            .map_err(Error::from)
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

    /// The tus extensions this engine and its storage support, for `Tus-Extension`.
    pub fn extensions(&self) -> Vec<&'static str> {
        let mut list = vec!["creation", "creation-with-upload", "creation-defer-length"];
        if self.config.termination {
            list.push("termination");
        }
        list.push("checksum");
        if self.config.expire_after.is_some() {
            list.push("expiration");
        }
        if self.config.concatenation && self.storage.concatenation().is_some() {
            list.extend(["concatenation", "concatenation-unfinished"]);
        }
        list
    }

    fn expiry_from_now(&self) -> Option<u64> {
        self.config.expire_after.map(|d| unix_now() + d.as_secs())
    }

    /// The stamp of a commit this node makes under `lease` now.
    fn stamp(&self, lease: &Lease) -> CommitStamp {
        CommitStamp {
            node: self.config.node.clone(),
            token: lease.token(),
            at: unix_now(),
        }
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
        if request.concat.is_some() && !self.config.concatenation {
            return Err(Error::InvalidConcat(
                "concatenation is disabled on this server",
            ));
        }
        let concat = match request.concat {
            None => None,
            Some((ConcatRequest::Partial, _)) => Some(ConcatKind::Partial),
            Some((ConcatRequest::Final(urls), parts)) => {
                self.check_final_parts(&parts, &request.request).await?;
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
            last_commit: None,
            expires_at: if request.length == Some(0) {
                None
            } else {
                self.expiry_from_now()
            },
            state: UploadState::Active,
            segments: Vec::new(),
            session: None,
            notice: None,
            expected_digest: request.expected_digest.as_ref().map(ChecksumHeader::render),
        };
        if self.hooks.enabled(HookEvent::PreCreate) {
            let changes = self
                .hooks
                .pre_create(&record, &request.request)
                .await
                .map_err(Error::from)?;
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

    /// Checks the partials a final upload names, and that the creating `request` may read
    /// each of them: a final upload is a copy of their bytes, so pre-access decides as it
    /// would for a GET of each ([`Access::Concatenate`]).
    async fn check_final_parts(
        &self,
        parts: &[String],
        request: &RequestInfo,
    ) -> Result<(), Error> {
        self.check_part_list(parts)?;
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
            self.authorize_record(&part, Access::Concatenate, request)
                .await?;
            total = concat::add_length(total, part.length.unwrap_or(0))?;
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
        let bound = self.config.lease_wait;
        if !self.in_flight.settle(id, bound).await {
            if let Some(elsewhere) = self.coord.in_flight_elsewhere() {
                elsewhere.settle(id, bound).await;
            }
        }
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
        let partials = self.load_partials(&parts).await?;
        if partials.iter().all(UploadRecord::is_finished) {
            let record = self.assemble_final(record, &partials).await?;
            return Ok(UploadView {
                record,
                offset_known: true,
            });
        }
        let mut record = record;
        // The length is known once every partial's length is, even before they finish; a
        // sum past u64 (partials of deferred length can declare anything) is shown as unknown.
        record.length = partials
            .iter()
            .try_fold(0u64, |total, p| total.checked_add(p.length?));
        Ok(UploadView {
            record,
            offset_known: false,
        })
    }

    async fn acquire(&self, id: &str) -> Result<Lease, Error> {
        let acquired = self.coord.acquire(id, self.config.lease_wait).await;
        self.lease_or_locked(acquired)
    }

    /// Takes the lease for a write, waiting for its holder (see `Coordinator::acquire_to_write`).
    async fn acquire_to_write(&self, id: &str) -> Result<Lease, Error> {
        let acquired = self
            .coord
            .acquire_to_write(id, self.config.lease_wait)
            .await;
        self.lease_or_locked(acquired)
    }

    /// A lease still held after `lease_wait` is a 423 with Retry-After.
    fn lease_or_locked(&self, acquired: Result<Lease, CoordError>) -> Result<Lease, Error> {
        match acquired {
            Ok(lease) => Ok(lease),
            Err(CoordError::Locked) => Err(Error::Locked {
                retry_after: self.config.lease_wait,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, lease: Lease) {
        release_logged(lease).await;
    }

    /// Makes a just finished upload whole in storage. A failure leaves the upload readable:
    /// the backend finishes it again on the first read.
    async fn finish_in_storage(&self, record: &UploadRecord) {
        if let Err(error) = self.storage.finish(record).await {
            tracing::warn!(upload_id = %record.id, %error, "finishing the upload in storage failed; the first read retries");
        }
    }

    /// Removes what this lease's write stored that will never be committed.
    async fn discard(&self, lease: &Lease, stored: &Stored) {
        if stored.append.is_empty() && stored.session.is_none() {
            return;
        }
        if let Err(error) = self.storage.discard(lease, stored).await {
            tracing::warn!(upload_id = %lease.upload_id(), %error, "discarding uncommitted segments failed");
        }
    }

    /// Terminates an upload: its bytes are deleted and it answers 410 until purged.
    pub async fn terminate(&self, id: &str, request: &RequestInfo) -> Result<(), Error> {
        self.load_active(id).await?;
        let mut lease = self.acquire(id).await?;
        let mut record = lease.record().clone();
        let notice = self.owe(HookEvent::PostTerminate);
        let result = self.remove_under_lease(&mut lease, notice).await;
        self.release(lease).await;
        if result.is_ok() {
            self.observer.upload_terminated();
            // The hook describes the upload as it was before its bytes went.
            record.notice = notice;
            self.deliver_later(record, Some(request.clone()));
        }
        result
    }

    /// Marks the upload gone, owing `notice` (in the same step), and deletes its bytes.
    async fn remove_under_lease(
        &self,
        lease: &mut Lease,
        notice: Option<crate::OwedNotice>,
    ) -> Result<(), Error> {
        if lease.record().state != UploadState::Active {
            return Err(Error::Gone);
        }
        let purge_at = unix_now() + self.config.tombstone_ttl.as_secs();
        // Mark gone first: a crash between the two leaves bytes for the sweeper, never a
        // record that points at deleted bytes.
        lease.mark_gone(purge_at, notice).await?;
        let lease = &*lease;
        lease
            .hold_while(self.config.lease_renew_interval, self.storage.delete(lease))
            .await??;
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
        let opened = match self.storage.read(record, start..end).await {
            Err(error) if !matches!(error, crate::StorageError::MissingSegment { .. }) => {
                return Err(error.into())
            }
            opened => opened,
        };
        Ok(resumed_read::resuming(
            self.storage.clone(),
            self.coord.clone(),
            &record.id,
            start..end,
            opened,
        ))
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
}

/// Lets go of `lease`, logging a failure: the lease then runs out by itself, and the next
/// writer waits at most its TTL.
async fn release_logged(lease: Lease) {
    let id = lease.upload_id().to_string();
    if let Err(error) = lease.release().await {
        tracing::warn!(upload_id = %id, %error, "releasing a lease failed");
    }
}
