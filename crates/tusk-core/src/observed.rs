//! Storage and Coordinator wrappers that time every call for the [`Observer`] and run it in
//! a `tracing` span (`storage.<op>` / `coordinator.<op>`, with the backend and upload ID), so
//! each call shows in a request's trace.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{info_span, Instrument, Span};

use crate::{
    ByteStream, Chunks, Commit, Concatenation, CoordError, Coordinator, Lease, Leftovers, Observer,
    Presign, Segment, Storage, StorageError, Stored, UploadRecord, WriteContext, WriteTarget,
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
        let span = storage_span!(self, "write", &context.record.id);
        self.timed("write", span, self.inner.write(context, chunks))
            .await
    }

    async fn discard(&self, upload: &str, segments: &[Segment]) -> Result<(), StorageError> {
        self.timed(
            "discard",
            storage_span!(self, "discard", upload),
            self.inner.discard(upload, segments),
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

    async fn delete(&self, upload: &str) -> Result<(), StorageError> {
        self.timed(
            "delete",
            storage_span!(self, "delete", upload),
            self.inner.delete(upload),
        )
        .await
    }

    async fn remove_uncommitted(&self, record: &UploadRecord) -> Result<usize, StorageError> {
        self.timed(
            "remove_uncommitted",
            storage_span!(self, "remove_uncommitted", &record.id),
            self.inner.remove_uncommitted(record),
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
        let span = storage_span!(self, "concatenate", &context.record.id);
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

    fn fenced<T>(&self, result: Result<T, CoordError>) -> Result<T, CoordError> {
        if matches!(result, Err(CoordError::LeaseLost)) {
            self.observer.lease_lost();
        }
        result
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
        // Waiting means the holder was asked to let go (the embedded and Redis
        // coordinators ask whenever they wait).
        let asked = match &lease {
            Ok(lease) => lease.waited,
            Err(CoordError::Locked) => !wait.is_zero(),
            Err(_) => false,
        };
        if asked {
            self.observer.release_requested();
        }
        let lease = lease?;
        self.observer.lease_acquired(lease.waited);
        Ok(lease)
    }

    async fn renew(&self, upload_id: &str, token: u64) -> Result<(), CoordError> {
        let result = self
            .timed(
                "renew",
                coordinator_span!(self, "renew", upload_id),
                self.inner.renew(upload_id, token),
            )
            .await;
        self.fenced(result)
    }

    async fn reserve(&self, upload_id: &str, token: u64) -> Result<WriteTarget, CoordError> {
        let result = self
            .timed(
                "reserve",
                coordinator_span!(self, "reserve", upload_id),
                self.inner.reserve(upload_id, token),
            )
            .await;
        self.fenced(result)
    }

    async fn commit(&self, lease: &Lease, commit: &Commit) -> Result<(), CoordError> {
        let result = self
            .timed(
                "commit",
                coordinator_span!(self, "commit", &lease.upload_id),
                self.inner.commit(lease, commit),
            )
            .await;
        self.fenced(result)
    }

    async fn commit_and_release(&self, lease: Lease, commit: &Commit) -> Result<(), CoordError> {
        let result = self
            .timed(
                "commit_and_release",
                coordinator_span!(self, "commit_and_release", &lease.upload_id),
                self.inner.commit_and_release(lease, commit),
            )
            .await;
        self.observer.lease_released();
        self.fenced(result)
    }

    async fn mark_gone(&self, lease: &Lease, purge_at: u64) -> Result<(), CoordError> {
        let result = self
            .timed(
                "mark_gone",
                coordinator_span!(self, "mark_gone", &lease.upload_id),
                self.inner.mark_gone(lease, purge_at),
            )
            .await;
        self.fenced(result)
    }

    async fn purge(&self, lease: &Lease) -> Result<(), CoordError> {
        let result = self
            .timed(
                "purge",
                coordinator_span!(self, "purge", &lease.upload_id),
                self.inner.purge(lease),
            )
            .await;
        self.fenced(result)
    }

    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        let result = self
            .timed(
                "release",
                coordinator_span!(self, "release", &lease.upload_id),
                self.inner.release(lease),
            )
            .await;
        self.observer.lease_released();
        result
    }

    async fn due_for_sweep(&self, now: u64, limit: usize) -> Result<Vec<String>, CoordError> {
        self.timed(
            "due_for_sweep",
            coordinator_span!(self, "due_for_sweep"),
            self.inner.due_for_sweep(now, limit),
        )
        .await
    }

    async fn lead(&self, role: &str, ttl: Duration) -> Result<bool, CoordError> {
        self.timed(
            "lead",
            coordinator_span!(self, "lead"),
            self.inner.lead(role, ttl),
        )
        .await
    }

    async fn ping(&self) -> Result<(), CoordError> {
        self.timed("ping", coordinator_span!(self, "ping"), self.inner.ping())
            .await
    }
}
