//! PATCH: the commit protocol of docs/architecture.md, under the upload's lease.

use std::sync::Arc;
use std::time::Duration;

use super::in_flight::PatchInFlight;
use super::Engine;
use crate::body::{BodyEnd, BodyReader, StretchEnd};
use crate::{
    Commit, CoordError, Coordinator, Error, HookEvent, IncomingBody, Lease, RequestInfo, Segment,
    Stored, UploadRecord, UploadState, WriteContext,
};
use crate::{Hasher, PatchRequest};

/// What a PATCH's body left to do once it was written.
enum Written {
    /// Bytes to commit (or a length to declare).
    Commit(PendingCommit),
    /// Nothing (more) arrived and nothing was declared: the record stays as the lease has it.
    Nothing(UploadRecord),
}

/// How a PATCH left the upload once its lease is let go.
enum Ended {
    /// Its last commit made this record; the refusal is the answer nonetheless.
    Committed(UploadRecord, Option<Error>),
    /// Its last stretch had nothing to commit (progress commits may have).
    Unchanged(UploadRecord),
}

/// What a PATCH's progress commits did before its last stretch.
#[derive(Default)]
struct Progress {
    /// Segments the progress commits folded, to forget once the PATCH is over.
    folded: Vec<Segment>,
}

struct PendingCommit {
    commit: Commit,
    /// The record's segments the commit folds into its first new one.
    folded: Vec<Segment>,
    /// Bytes the storage sent a second time for this write.
    rewritten: u64,
    /// The answer once committed, when the body was to end the upload and did not.
    refusal: Option<Error>,
}

/// Whether a write to `record` may have stored something no commit names. Sequence numbers
/// grow by one per reservation, across leases: if the committed ones run 0, 1, 2, ... up to
/// the last commit's own, every reservation was committed, and a finished upload has nothing
/// to tidy (the usual case, so it costs no lease). A gap, or a last commit that added no
/// segment, means a reservation may have stored bytes that never committed.
fn reservations_were_lost(record: &UploadRecord, last: &Commit) -> bool {
    if last.append.is_empty() {
        return true;
    }
    let mut seqs: Vec<u32> = record.segments.iter().map(|s| s.target.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs.iter().enumerate().any(|(i, &seq)| seq as usize != i)
        || seqs.len() != record.segments.len()
}

/// How long tidying waits for a lease that other requests hold before it leaves the work
/// to the sweeper.
const TIDY_PATIENCE: Duration = Duration::from_secs(30);

/// Takes the upload's lease once it is free, without asking its holder to let go: tidying
/// must not cut a PATCH short, but the holder is often a request about to be refused (a
/// PATCH at a stale offset) that lets go in milliseconds.
async fn acquire_when_free(coord: &dyn Coordinator, id: &str) -> Result<Lease, CoordError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match coord.acquire(id, Duration::ZERO).await {
            Err(CoordError::Locked) if started.elapsed() + pause < TIDY_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            outcome => return outcome,
        }
    }
}

/// Whether a PATCH at `offset` may write to `record`.
pub(super) fn check_patchable(record: &UploadRecord, offset: u64) -> Result<(), Error> {
    check_writable(record)?;
    if offset != record.offset {
        return Err(offset_mismatch(record, offset));
    }
    Ok(())
}

/// Whether any PATCH may write to `record`.
fn check_writable(record: &UploadRecord) -> Result<(), Error> {
    if record.state != UploadState::Active {
        return Err(Error::Gone);
    }
    if record.is_final() {
        return Err(Error::PatchOnFinal);
    }
    Ok(())
}

fn offset_mismatch(record: &UploadRecord, offset: u64) -> Error {
    Error::OffsetMismatch {
        expected: record.offset,
        got: offset,
    }
}

impl Engine {
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
        let mut lease = match self.coord.acquire_to_write(id, Duration::ZERO).await {
            Ok(lease) => lease,
            Err(CoordError::Locked) => {
                // Another request writes: only a request that could succeed once it has
                // committed asks it to stop (an offset it may reach: a client resuming
                // after its connection dropped knows more than the last commit says).
                let record = self.load_active(id).await?;
                check_writable(&record)?;
                if request.offset < record.offset {
                    return Err(offset_mismatch(&record, request.offset));
                }
                self.acquire_to_write(id).await?
            }
            Err(e) => return Err(e.into()),
        };
        let mut progress = Progress::default();
        let in_flight = Arc::new(PatchInFlight::register(self.in_flight.clone(), id));
        let written = self
            .patch_under_lease(&mut lease, request, body, &info, &in_flight, &mut progress)
            .await;
        let committed = match written {
            Ok(Written::Commit(mut pending)) => {
                pending.folded.splice(0..0, progress.folded);
                let refusal = pending.refusal.take();
                self.commit(lease, pending)
                    .await
                    .map(|record| Ended::Committed(record, refusal))
            }
            Ok(Written::Nothing(record)) => {
                self.release(lease).await;
                self.tidy_folded(id, progress.folded);
                Ok(Ended::Unchanged(record))
            }
            Err(e) => {
                self.release(lease).await;
                self.tidy_folded(id, progress.folded);
                Err(e)
            }
        };
        // Reads waiting for this PATCH's last commit go on now, not after the hooks.
        drop(in_flight);
        let result = match committed {
            Ok(Ended::Committed(record, None)) => self.after_commit(record, &info).await,
            Ok(Ended::Committed(record, Some(refusal))) => {
                self.after_commit(record, &info).await?;
                Err(refusal)
            }
            Ok(Ended::Unchanged(record)) => Ok(record),
            Err(e) => Err(e),
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
        if let Err(refusal) = self.check_expected_digest(&record).await {
            // As a refused finish: the bytes stay, the application hears of no finish.
            self.drop_notice_later(&record);
            return Err(refusal);
        }
        if self.hooks.enabled(HookEvent::PreFinish) {
            if let Err(refusal) = self.hooks.pre_finish(&record, info).await {
                // A refused finish gets no post-finish, so the notice its commit owes goes
                // (after a crash right before this, it is delivered after all).
                self.drop_notice_later(&record);
                return Err(refusal.into());
            }
        }
        // Only the commit that completed the upload gets here: one post-finish per upload,
        // whichever node made it.
        self.deliver_later(record.clone(), Some(info.clone()));
        Ok(record)
    }

    /// Reads a completed upload back and compares its digest with the one its creation
    /// named, if any.
    async fn check_expected_digest(&self, record: &UploadRecord) -> Result<(), Error> {
        let Some(expected) = record.expected_digest.as_deref() else {
            return Ok(());
        };
        let expected = tusk_protocol::parse_checksum(expected)
            .map_err(|_| Error::TaskFailed("the record's expected digest does not parse".into()))?;
        let actual = self.digest(record, expected.algorithm).await?;
        if actual == expected.digest {
            Ok(())
        } else {
            Err(Error::DigestMismatch)
        }
    }

    /// The digest of a finished upload's bytes, read back from storage.
    pub async fn digest(
        &self,
        record: &UploadRecord,
        algorithm: tusk_protocol::ChecksumAlgorithm,
    ) -> Result<Vec<u8>, Error> {
        use futures_util::StreamExt as _;
        let mut hasher = Hasher::new(algorithm);
        let mut bytes = self.read_record(record, 0..record.offset).await?;
        while let Some(chunk) = bytes.next().await {
            hasher.update(&chunk.map_err(Error::Storage)?);
        }
        Ok(hasher.finish())
    }

    /// The last step of a PATCH: commit and let go of the lease in one step (one round trip
    /// for remote coordinators). A commit that fails removes nothing: the lease is gone,
    /// and after an ambiguous failure (a timeout) the segments may even be committed; what
    /// a refused commit left behind goes with the tidying of a later commit or the sweeper.
    async fn commit(&self, lease: Lease, pending: PendingCommit) -> Result<UploadRecord, Error> {
        let PendingCommit {
            commit,
            folded,
            rewritten,
            refusal: _,
        } = pending;
        let record = lease.commit_and_release(&commit).await?;
        self.observer.bytes_committed(commit.added);
        if rewritten > 0 {
            self.observer
                .bytes_rewritten(self.storage.name(), rewritten);
        }
        if record.is_finished() {
            self.observer.upload_finished();
            self.finish_in_storage(&record).await;
        }
        let strays_possible = record.is_finished() && reservations_were_lost(&record, &commit);
        if strays_possible || !folded.is_empty() {
            self.tidy_later(&record.id, folded);
        }
        Ok(record)
    }

    /// Forgets folded segments after a PATCH that ended without a last commit.
    fn tidy_folded(&self, id: &str, folded: Vec<Segment>) {
        if !folded.is_empty() {
            self.tidy_later(id, folded);
        }
    }

    /// After a commit, off the request's path and under a lease of its own: forgets the
    /// segments the commit folded and, once the upload is finished, the targets that never
    /// committed. A writer that takes the upload first wins; what is left then (or after a
    /// crash) goes with a later tidying or the leftovers sweep.
    ///
    /// One task per upload waits at a time: a client whose PATCHes fold one after another
    /// would otherwise leave a task per PATCH polling the coordinator for up to
    /// `TIDY_PATIENCE`. A later call while one waits hands its segments to that one.
    fn tidy_later(&self, id: &str, folded: Vec<Segment>) {
        {
            let mut waiting = lock(&self.tidying);
            if let Some(queued) = waiting.get_mut(id) {
                queued.extend(folded);
                return;
            }
            waiting.insert(id.to_string(), folded);
        }
        let storage = self.storage.clone();
        let coord = self.coord.clone();
        let tidying = self.tidying.clone();
        let renew_every = self.config.lease_renew_interval;
        let id = id.to_string();
        tokio::spawn(async move {
            let acquired = acquire_when_free(coord.as_ref(), &id).await;
            // What was handed over until now is this task's; a later call starts another.
            let folded = lock(&tidying).remove(&id).unwrap_or_default();
            let lease = match acquired {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::debug!(upload_id = %id, %error, "not tidying storage now");
                    return;
                }
            };
            let work = async {
                if !folded.is_empty() {
                    if let Err(error) = storage.discard(&lease, &Stored::folded(folded)).await {
                        tracing::warn!(upload_id = %id, %error, "removing folded segments failed");
                    }
                }
                if lease.record().is_finished() {
                    match storage.remove_uncommitted(&lease).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(upload_id = %id, removed = n, "removed uncommitted targets")
                        }
                        Err(error) => {
                            tracing::warn!(upload_id = %id, %error, "removing uncommitted targets failed")
                        }
                    }
                }
            };
            if lease.hold_while(renew_every, work).await.is_err() {
                tracing::warn!(upload_id = %id, "lease lost while tidying storage; the sweeper finishes it");
            }
            super::release_logged(lease).await;
        });
    }

    /// Streams the body into targets reserved under the lease, committing each stretch but
    /// the last as it ends (progress commits, keeping the lease); says what to commit last.
    async fn patch_under_lease(
        &self,
        lease: &mut Lease,
        request: PatchRequest,
        body: IncomingBody,
        info: &RequestInfo,
        in_flight: &Arc<PatchInFlight>,
        progress: &mut Progress,
    ) -> Result<Written, Error> {
        // The record as of the lease: the previous holder may have committed meanwhile.
        let record = lease.record();
        check_patchable(record, request.offset)?;
        if record.is_finished() && request.content_length.is_some_and(|n| n > 0) {
            return Err(Error::AlreadyComplete);
        }
        let length = self.effective_length(record, request.declare_length)?;
        let limit = match (length, self.config.max_size) {
            (Some(length), _) => length - record.offset,
            (None, Some(max)) => max.saturating_sub(record.offset),
            (None, None) => u64::MAX,
        };
        if request.content_length.is_some_and(|n| n > limit) {
            return Err(Error::TooLarge("the body goes past the upload's length"));
        }

        let hasher = request.checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let mut reader = BodyReader::new(
            body,
            limit,
            self.config.network_timeout,
            lease.release_request(),
            self.shutting_down.subscribe(),
            hasher,
        );
        reader.announced = request.content_length;
        reader.in_flight = Some(in_flight.clone());
        let mut stretch = 0u32;
        loop {
            let context = WriteContext {
                lease,
                length,
                stretch,
            };
            stretch = stretch.saturating_add(1);
            // A checksum covers the whole body: nothing is committed before it is checked.
            let stretch_end = request.checksum.is_none().then(|| StretchEnd {
                bytes: self.config.commit_interval_bytes,
                time: self.config.commit_interval,
                units: self.storage.write_units(&context),
            });
            let write = self.storage.write(context, reader.stretch(stretch_end));
            // A failed write removed what it had stored itself; a lost lease stops the write.
            let stored = lease
                .hold_while(self.config.lease_renew_interval, write)
                .await??;
            let Some(end) = reader.end else {
                self.commit_progress(
                    lease,
                    stored,
                    length,
                    request.declare_length,
                    info,
                    progress,
                )
                .await?;
                continue;
            };
            if end == BodyEnd::ReleaseRequested {
                self.observer.release_honoured();
            }
            let digest = reader.take_digest();
            tracing::debug!(upload_id = %lease.upload_id(), written = stored.written, ?end, "body stored");
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
                self.discard(lease, &stored).await;
                return Err(error);
            }
            let record = lease.record();
            let reached = record.offset + stored.written;
            let mut declare_length = request.declare_length;
            let mut refusal = None;
            if request.ends_upload && end == BodyEnd::Complete {
                match length {
                    None => declare_length = Some(reached),
                    Some(length) if length != reached => {
                        refusal = Some(Error::LengthMismatch { length, reached });
                    }
                    Some(_) => {}
                }
            }
            // Nothing to declare either, or a progress commit declared it already.
            if stored.append.is_empty() && (declare_length.is_none() || record.length.is_some()) {
                return match refusal {
                    Some(refusal) => Err(refusal),
                    None => Ok(Written::Nothing(record.clone())),
                };
            }
            let mut pending =
                self.pending_commit(lease, stored, length.or(declare_length), declare_length);
            pending.refusal = refusal;
            return Ok(Written::Commit(pending));
        }
    }

    /// A progress commit: what one stretch of a still-streaming body stored, committed under
    /// the lease, which stays held. A client polling HEAD sees it, and a crash keeps it.
    async fn commit_progress(
        &self,
        lease: &mut Lease,
        stored: Stored,
        length: Option<u64>,
        declare_length: Option<u64>,
        info: &RequestInfo,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        if stored.append.is_empty() {
            return Ok(());
        }
        let PendingCommit {
            commit,
            folded,
            rewritten,
            refusal: _,
        } = self.pending_commit(lease, stored, length, declare_length);
        if let Err(error) = lease.commit(&commit).await {
            // Nothing of this stretch is committed, and nothing more will be: the lease is
            // lost or the coordinator refused.
            return Err(error.into());
        }
        progress.folded.extend(folded);
        self.observer.bytes_committed(commit.added);
        if rewritten > 0 {
            self.observer
                .bytes_rewritten(self.storage.name(), rewritten);
        }
        self.notify(HookEvent::PostReceive, lease.record(), Some(info));
        Ok(())
    }

    /// The commit of what a write stored on top of `record`.
    fn pending_commit(
        &self,
        lease: &Lease,
        stored: Stored,
        length: Option<u64>,
        declare_length: Option<u64>,
    ) -> PendingCommit {
        let record = lease.record();
        let written = stored.written;
        let finished = length == Some(record.offset + written);
        let folded = record.segments[record.segments.len().saturating_sub(stored.fold)..].to_vec();
        let commit = Commit {
            expected_offset: record.offset,
            added: written,
            append: stored.append,
            fold: stored.fold,
            session: stored.session,
            declare_length: declare_length.filter(|_| record.length.is_none()),
            expires_at: if finished {
                None
            } else {
                self.expiry_from_now()
            },
            notice: if finished {
                self.owe(HookEvent::PostFinish)
            } else {
                None
            },
            stamp: Some(self.stamp(lease)),
        };
        PendingCommit {
            commit,
            folded,
            rewritten: stored.rewritten,
            refusal: None,
        }
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
}

/// The guarded value, also after a panic elsewhere (a map of plain data stays consistent).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
