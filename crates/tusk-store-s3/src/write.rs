//! The PATCH write path: a body cut into parts at multiples of the part size, several parts
//! sent while the body is still being read, and the bytes after the last full part left in
//! a tail object for the next PATCH, on whatever node.
//!
//! Each received byte crosses to S3 at most twice: once in a part, or once in a tail and
//! once more inside the part the next PATCH folds that tail into. A tail is never rewritten
//! as it grows (tusd's quadratic case with small chunks): each PATCH adds one more tail
//! object, and the PATCH that fills the part folds them all.

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinSet;
use tusk_core::fold::pieces_to_fold;
use tusk_core::{
    Chunks, Lease, Segment, StorageError, Stored, UploadRecord, WriteContext, WriteTarget,
    WriteUnits,
};

use crate::client::{self, backend_error};
use crate::layout::{split_parts_and_tails, Session};
use crate::spool::{PartSpool, SpooledPart};
use crate::{S3Storage, CHECKSUM};

pub(crate) async fn write(
    store: &S3Storage,
    context: WriteContext<'_>,
    mut chunks: Chunks<'_>,
) -> Result<Stored, StorageError> {
    let record = context.record();
    let known = Session::of(record)?;
    let session = match &known {
        Some(session) => session.clone(),
        None => Session {
            part_size: store
                .rules
                .part_size_for(context.length.or(record.length).or(store.max_upload_size))?,
            multipart: None,
        },
    };
    let (_, tails) = split_parts_and_tails(&record.segments);
    let mut sender = PartSender {
        store,
        upload: &record.id,
        lease: context.lease,
        stretch: context.stretch,
        session,
        created_multipart: false,
        unfolded: tails,
        fold: 0,
        rewritten: 0,
        in_flight: JoinSet::new(),
        sent: Vec::new(),
        tail: None,
    };
    match sender.run(record, context.length, &mut chunks).await {
        Ok(written) => Ok(sender.stored(written, known.as_ref())),
        Err(error) => {
            sender.clean_up().await;
            Err(error)
        }
    }
}

/// Where a write in `context` completes a part: the first part starts with the committed
/// tails, each later one is a whole part. `None` if the session cannot be read (the write
/// then fails with the reason itself).
pub(crate) fn write_units(store: &S3Storage, context: &WriteContext<'_>) -> Option<WriteUnits> {
    let record = context.record();
    let part_size = match Session::of(record).ok()? {
        Some(session) => session.part_size,
        None => store
            .rules
            .part_size_for(context.length.or(record.length).or(store.max_upload_size))
            .ok()?,
    };
    let (_, tails) = split_parts_and_tails(&record.segments);
    let open = tails.iter().map(|s| s.len).sum::<u64>() % part_size.max(1);
    Some(WriteUnits {
        first: part_size - open,
        every: part_size,
    })
}

/// One write's parts: those being sent, those sent, and the tail it left.
struct PartSender<'a> {
    store: &'a S3Storage,
    upload: &'a str,
    lease: &'a Lease,
    /// Which write of the lease this is; names its tail.
    stretch: u32,
    session: Session,
    /// Whether this write started the multipart upload (to abort it if the write fails).
    created_multipart: bool,
    /// Committed tails not folded yet; the first part this write sends starts with them.
    unfolded: &'a [Segment],
    fold: usize,
    rewritten: u64,
    in_flight: JoinSet<Result<Segment, StorageError>>,
    sent: Vec<Segment>,
    tail: Option<Segment>,
}

impl PartSender<'_> {
    fn unfolded_len(&self) -> u64 {
        self.unfolded.iter().map(|s| s.len).sum()
    }

    /// Reads the body, sending every full part; returns the bytes received.
    async fn run(
        &mut self,
        record: &UploadRecord,
        length: Option<u64>,
        chunks: &mut Chunks<'_>,
    ) -> Result<u64, StorageError> {
        let part_size = self.session.part_size;
        // The first part starts with the unfolded tails: room is left for them in front.
        let mut part = PartSpool::new(&self.store.spool, self.unfolded_len());
        let mut written = 0u64;
        loop {
            let next = match chunks.next().now_or_never() {
                Some(next) => next,
                // Nothing more has arrived: what has is written out while the body waits.
                None => {
                    part.flush().await?;
                    chunks.next().await
                }
            };
            let Some(mut chunk) = next else { break };
            written += chunk.len() as u64;
            while !chunk.is_empty() {
                let room = part_size.saturating_sub(part.front() + part.len());
                let take = usize::try_from(room).map_or(chunk.len(), |r| r.min(chunk.len()));
                part.append(chunk.split_to(take)).await?;
                if part.front() + part.len() >= part_size {
                    self.send_part(&mut part).await?;
                }
            }
        }
        if length == Some(record.offset + written) {
            // The upload's last bytes: the last part may be short.
            if self.unfolded_len() > 0 || !part.is_empty() {
                self.send_part(&mut part).await?;
            }
        } else if !part.is_empty() {
            let tail = self.merge_tails(&mut part).await?;
            self.put_tail(tail).await?;
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.sent.push(joined(done)?);
        }
        Ok(written)
    }

    /// Sends `part` as the next part, with the unfolded tails in its front if this is the
    /// first; then waits while as many parts as allowed are held. The part's budget and spool
    /// file are held until it is sent.
    async fn send_part(&mut self, part: &mut PartSpool) -> Result<(), StorageError> {
        if !self.unfolded.is_empty() {
            self.store
                .tails_into(self.upload, self.unfolded, part, 0)
                .await?;
            self.rewritten += self.unfolded_len();
            self.fold = self.unfolded.len();
            self.unfolded = &[];
        }
        let body = part.take(0..part.front() + part.len()).await?;
        let multipart = match &self.session.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self.store.create_multipart(self.upload).await?;
                self.created_multipart = true;
                self.session.multipart = Some(id.clone());
                id
            }
        };
        let target = self.lease.reserve().await?;
        let number = u64::from(target.seq) + 1;
        if number > u64::from(self.store.rules.max_parts) {
            return Err(StorageError::UploadTooLarge(
                "the upload needs more parts than the S3 provider allows",
            ));
        }
        let len = body.len();
        let sending = client::upload_part(
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.store.keys.object(self.upload),
            multipart,
            i32::try_from(number).unwrap_or(i32::MAX),
            body,
        );
        self.in_flight.spawn(async move {
            let receipt = sending.await?;
            Ok(Segment {
                target,
                len,
                receipt: Some(receipt.encode()),
            })
        });
        // Another part is about to be gathered: at most `parts_in_flight` held at once.
        while self.in_flight.len() >= self.store.parts_in_flight {
            if let Some(done) = self.in_flight.join_next().await {
                self.sent.push(joined(done)?);
            }
        }
        Ok(())
    }

    /// This write's tail: the body of `part`, after the trailing committed tails it merges
    /// (see [`pieces_to_fold`]), which its commit then folds.
    async fn merge_tails(&mut self, part: &mut PartSpool) -> Result<SpooledPart, StorageError> {
        let merge = pieces_to_fold(self.unfolded, part.len());
        let (kept, merged) = self.unfolded.split_at(self.unfolded.len() - merge);
        let merged_len: u64 = merged.iter().map(|s| s.len).sum();
        // The front holds all unfolded tails; the merged ones are its end.
        let start = part.front() - merged_len;
        self.store
            .tails_into(self.upload, merged, part, start)
            .await?;
        // A part this write sent has folded every tail, and then nothing merges here.
        self.rewritten += merged_len;
        self.fold += merge;
        self.unfolded = kept;
        part.take(start..part.front() + part.len()).await
    }

    /// Stores the bytes after the last full part as this write's tail object. Its name
    /// carries the fencing token, unique to this writer, and the write's number within the
    /// lease; it is created only if absent.
    async fn put_tail(&mut self, body: SpooledPart) -> Result<(), StorageError> {
        let target = WriteTarget {
            token: self.lease.token(),
            seq: self.stretch,
        };
        let len = body.len();
        self.store
            .client
            .put_object()
            .bucket(&self.store.bucket)
            .key(self.store.keys.tail(self.upload, target))
            .if_none_match("*")
            .checksum_algorithm(CHECKSUM)
            .body(body.body())
            .send()
            .await
            .map_err(|e| backend_error("PutObject (tail)", e))?;
        self.tail = Some(Segment::new(target, len));
        Ok(())
    }

    fn stored(mut self, written: u64, known: Option<&Session>) -> Stored {
        self.sent.sort_by_key(|s| s.target.seq);
        let mut append = std::mem::take(&mut self.sent);
        append.extend(self.tail.take());
        let session =
            (!append.is_empty() && known != Some(&self.session)).then(|| self.session.encode());
        Stored {
            written,
            append,
            fold: self.fold,
            session,
            rewritten: self.rewritten,
        }
    }

    /// Undoes what a failed write stored that no commit will name.
    async fn clean_up(&mut self) {
        self.in_flight.abort_all();
        if let Some(tail) = self.tail.take() {
            if let Err(error) = self.store.delete_tails(self.upload, &[tail]).await {
                tracing::warn!(upload_id = %self.upload, %error, "removing a tail of a failed write");
            }
        }
        if let (true, Some(multipart)) = (self.created_multipart, &self.session.multipart) {
            let key = self.store.keys.object(self.upload);
            let aborted = crate::client::abort_multipart(
                &self.store.client,
                &self.store.bucket,
                &key,
                multipart,
            )
            .await;
            if let Err(error) = aborted {
                tracing::warn!(upload_id = %self.upload, %error, "aborting the multipart upload of a failed write");
            }
        }
    }
}

fn joined(
    done: Result<Result<Segment, StorageError>, tokio::task::JoinError>,
) -> Result<Segment, StorageError> {
    done.map_err(|e| StorageError::Backend(format!("part upload task: {e}")))?
}

impl S3Storage {
    /// Writes the bytes of the committed `tails`, one after the other, into the front of
    /// `part` from `at` on.
    async fn tails_into(
        &self,
        upload: &str,
        tails: &[Segment],
        part: &mut PartSpool,
        mut at: u64,
    ) -> Result<(), StorageError> {
        for tail in tails {
            let missing = || StorageError::MissingSegment {
                upload: upload.to_string(),
                target: tail.target,
            };
            let answer = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.keys.tail(upload, tail.target))
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await;
            let mut body = match answer {
                Ok(output) => output.body,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Err(missing())
                }
                Err(e) => return Err(backend_error("GetObject (tail)", e)),
            };
            let end = at + tail.len;
            while let Some(bytes) = body.next().await {
                let bytes: Bytes =
                    bytes.map_err(|e| StorageError::Backend(format!("reading a tail: {e}")))?;
                if at + bytes.len() as u64 > end {
                    return Err(missing());
                }
                let len = bytes.len() as u64;
                part.fill_front(at, bytes).await?;
                at += len;
            }
            if at != end {
                return Err(missing());
            }
        }
        Ok(())
    }
}
