//! Storage and Coordinator wrappers that time every call for the [`Observer`] and run it in
//! a `tracing` span (`storage.<op>` / `coordinator.<op>`, with the backend and upload ID), so
//! each call shows in a request's trace.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{info_span, Instrument, Span};

use crate::{
    ByteStream, Chunks, Commit, Concatenation, CoordError, Coordinator, HeldLease, Leadership,
    Lease, Leftovers, Observer, OwedNotice, Presign, Storage, StorageError, Stored, UploadRecord,
    WriteContext, WriteTarget, WriteUnits,
};

/// The span of one storage call: `storage.<op>` with the backend and the upload ID.
macro_rules! storage_span {
    ($self:ident, $op:literal, $upload:expr) => {
        info_span!(
            concat!("storage.", $op),
            backend = $self.inner.name(),
            upload_id = $upload
        )
    };
}

/// The span of one coordinator call: `coordinator.<op>` with the backend and, for calls about
/// one upload, its ID.
macro_rules! coordinator_span {
    ($self:ident, $op:literal, $upload:expr) => {
        info_span!(
            concat!("coordinator.", $op),
            backend = $self.inner.name(),
            upload_id = $upload
        )
    };
    ($self:ident, $op:literal) => {
        info_span!(concat!("coordinator.", $op), backend = $self.inner.name())
    };
}

/// The span of one call through a held lease: `coordinator.<op>` with the upload ID.
macro_rules! lease_span {
    ($self:ident, $op:literal) => {
        info_span!(
            concat!("coordinator.", $op),
            backend = $self.backend,
            upload_id = %$self.upload_id
        )
    };
}

pub(crate) struct ObservedStorage {
    pub inner: Arc<dyn Storage>,
    pub observer: Arc<dyn Observer>,
}

impl ObservedStorage {
    async fn timed<T>(
        &self,
        op: &'static str,
        span: Span,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let result = call.instrument(span).await;
        self.observer
            .storage_call(self.inner.name(), op, started.elapsed());
        result
    }
}

#[async_trait]
impl Storage for ObservedStorage {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn write(
        &self,
        context: WriteContext<'_>,
        chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError> {
        let span = storage_span!(self, "write", context.lease.upload_id());
        self.timed("write", span, self.inner.write(context, chunks))
            .await
    }

    fn write_units(&self, context: &WriteContext<'_>) -> Option<WriteUnits> {
        self.inner.write_units(context)
    }

    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError> {
        self.timed(
            "discard",
            storage_span!(self, "discard", lease.upload_id()),
            self.inner.discard(lease, stored),
        )
        .await
    }

    async fn finish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.timed(
            "finish",
            storage_span!(self, "finish", &record.id),
            self.inner.finish(record),
        )
        .await
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        self.timed(
            "read",
            storage_span!(self, "read", &record.id),
            self.inner.read(record, range),
        )
        .await
    }

    async fn delete(&self, lease: &Lease) -> Result<(), StorageError> {
        self.timed(
            "delete",
            storage_span!(self, "delete", lease.upload_id()),
            self.inner.delete(lease),
        )
        .await
    }

    async fn remove_uncommitted(&self, lease: &Lease) -> Result<usize, StorageError> {
        self.timed(
            "remove_uncommitted",
            storage_span!(self, "remove_uncommitted", lease.upload_id()),
            self.inner.remove_uncommitted(lease),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }

    fn concatenation(&self) -> Option<&dyn Concatenation> {
        self.inner
            .concatenation()
            .map(|_| self as &dyn Concatenation)
    }

    fn presign(&self) -> Option<&dyn Presign> {
        self.inner.presign()
    }

    fn leftovers(&self) -> Option<&dyn Leftovers> {
        self.inner.leftovers()
    }
}

#[async_trait]
impl Concatenation for ObservedStorage {
    async fn concatenate(
        &self,
        context: WriteContext<'_>,
        partials: &[UploadRecord],
    ) -> Result<Stored, StorageError> {
        let inner = self
            .inner
            .concatenation()
            .ok_or_else(|| StorageError::Backend("concatenation is not supported".into()))?;
        let span = storage_span!(self, "concatenate", context.lease.upload_id());
        self.timed("concatenate", span, inner.concatenate(context, partials))
            .await
    }
}

pub(crate) struct ObservedCoordinator {
    pub inner: Arc<dyn Coordinator>,
    pub observer: Arc<dyn Observer>,
}

impl ObservedCoordinator {
    async fn timed<T>(
        &self,
        op: &'static str,
        span: Span,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let result = call.instrument(span).await;
        self.observer
            .coordinator_call(self.inner.name(), op, started.elapsed());
        result
    }

    /// Counts what taking a lease took, and wraps the lease so its calls are timed too.
    fn observe_lease(
        &self,
        lease: Result<Lease, CoordError>,
        wait: Duration,
    ) -> Result<Lease, CoordError> {
        // Waiting means the holder was asked to let go (the embedded and Redis
        // coordinators ask whenever they wait).
        let asked = match &lease {
            Ok(lease) => lease.waited(),
            Err(CoordError::Locked) => !wait.is_zero(),
            Err(_) => false,
        };
        if asked {
            self.observer.release_requested();
        }
        let lease = lease?;
        self.observer.lease_acquired(lease.waited());
        let upload_id = lease.upload_id().to_string();
        let backend = self.inner.name();
        let observer = self.observer.clone();
        Ok(lease.wrap_held(|inner| {
            Box::new(ObservedLease {
                inner,
                upload_id,
                backend,
                observer,
            })
        }))
    }
}

#[async_trait]
impl Coordinator for ObservedCoordinator {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn create(&self, record: &UploadRecord) -> Result<(), CoordError> {
        self.timed(
            "create",
            coordinator_span!(self, "create", &record.id),
            self.inner.create(record),
        )
        .await
    }

    async fn load(&self, id: &str) -> Result<Option<UploadRecord>, CoordError> {
        self.timed(
            "load",
            coordinator_span!(self, "load", id),
            self.inner.load(id),
        )
        .await
    }

    async fn acquire(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        let lease = self
            .timed(
                "acquire",
                coordinator_span!(self, "acquire", id),
                self.inner.acquire(id, wait),
            )
            .await;
        self.observe_lease(lease, wait)
    }

    async fn acquire_to_write(&self, id: &str, wait: Duration) -> Result<Lease, CoordError> {
        let lease = self
            .timed(
                "acquire",
                coordinator_span!(self, "acquire", id),
                self.inner.acquire_to_write(id, wait),
            )
            .await;
        self.observe_lease(lease, wait)
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        self.timed(
            "due_for_sweep",
            coordinator_span!(self, "due_for_sweep"),
            self.inner.due_for_sweep(now, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), CoordError> {
        self.timed("ping", coordinator_span!(self, "ping"), self.inner.ping())
            .await
    }

    fn leadership(&self) -> Option<&dyn Leadership> {
        self.inner.leadership().map(|_| self as &dyn Leadership)
    }

    fn in_flight_elsewhere(&self) -> Option<&dyn crate::InFlightElsewhere> {
        self.inner.in_flight_elsewhere()
    }
}

#[async_trait]
impl Leadership for ObservedCoordinator {
    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError> {
        let Some(inner) = self.inner.leadership() else {
            return Ok(true);
        };
        self.timed(
            "lead",
            coordinator_span!(self, "lead"),
            inner.lead(role, ttl),
        )
        .await
    }
}

/// A held lease whose every coordinator call is timed and traced like the coordinator's.
struct ObservedLease {
    inner: Box<dyn HeldLease>,
    upload_id: String,
    backend: &'static str,
    observer: Arc<dyn Observer>,
}

impl ObservedLease {
    async fn timed<T>(
        &self,
        op: &'static str,
        span: Span,
        call: impl std::future::Future<Output = Result<T, CoordError>>,
    ) -> Result<T, CoordError> {
        let started = Instant::now();
        let result = call.instrument(span).await;
        self.observer
            .coordinator_call(self.backend, op, started.elapsed());
        if matches!(result, Err(CoordError::LeaseLost)) {
            self.observer.lease_lost();
        }
        result
    }
}

#[async_trait]
impl HeldLease for ObservedLease {
    fn token(&self) -> u64 {
        self.inner.token()
    }

    fn ttl(&self) -> Option<Duration> {
        self.inner.ttl()
    }

    async fn renew(&self) -> Result<(), CoordError> {
        self.timed("renew", lease_span!(self, "renew"), self.inner.renew())
            .await
    }

    async fn reserve(&self) -> Result<WriteTarget, CoordError> {
        self.timed(
            "reserve",
            lease_span!(self, "reserve"),
            self.inner.reserve(),
        )
        .await
    }

    async fn commit(&self, commit: &Commit, release: bool) -> Result<(), CoordError> {
        let (op, span) = if release {
            (
                "commit_and_release",
                lease_span!(self, "commit_and_release"),
            )
        } else {
            ("commit", lease_span!(self, "commit"))
        };
        let result = self
            .timed(op, span, self.inner.commit(commit, release))
            .await;
        if release {
            self.observer.lease_released();
        }
        result
    }

    async fn mark_gone(&self, purge_at: u64, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.timed(
            "mark_gone",
            lease_span!(self, "mark_gone"),
            self.inner.mark_gone(purge_at, notice),
        )
        .await
    }

    async fn set_notice(&self, notice: Option<OwedNotice>) -> Result<(), CoordError> {
        self.timed(
            "set_notice",
            lease_span!(self, "set_notice"),
            self.inner.set_notice(notice),
        )
        .await
    }

    async fn purge(&self) -> Result<(), CoordError> {
        let result = self
            .timed("purge", lease_span!(self, "purge"), self.inner.purge())
            .await;
        self.observer.lease_released();
        result
    }

    async fn release(&self) -> Result<(), CoordError> {
        let result = self
            .timed(
                "release",
                lease_span!(self, "release"),
                self.inner.release(),
            )
            .await;
        self.observer.lease_released();
        result
    }
}
