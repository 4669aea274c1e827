//! The PATCH write path: a body cut into parts at multiples of the part size, several parts
//! sent while the body is still being read, and the bytes after the last full part left in
//! a tail object for the next PATCH, on whatever node.
//!
//! Each received byte crosses to S3 at most twice: once in a part, or once in a tail and
//! once more inside the part the next PATCH folds that tail into. A tail is never rewritten
//! as it grows (tusd's quadratic case with small chunks): each PATCH adds one more tail
//! object, and the PATCH that fills the part folds them all.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tusk_core::fold::pieces_to_fold;
use tusk_core::{
    Chunks, Lease, Segment, StorageError, Stored, UploadRecord, WriteContext, WriteTarget,
    WriteUnits,
};

use crate::budget::{Held, PartBuffer};
use crate::client::{self, backend_error};
use crate::layout::{split_parts_and_tails, Session};
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
        let mut buffer = PartBuffer::new(self.store.budget.clone());
        let mut written = 0u64;
        while let Some(mut chunk) = chunks.next().await {
            written += chunk.len() as u64;
            while !chunk.is_empty() {
                let room = part_size.saturating_sub(self.unfolded_len() + buffer.len() as u64);
                let room = usize::try_from(room).unwrap_or(usize::MAX);
                let take = room.min(chunk.len());
                buffer.extend(&chunk.split_to(take), room).await?;
                if buffer.len() as u64 + self.unfolded_len() >= part_size {
                    self.send_part(buffer.take()).await?;
                }
            }
        }
        if length == Some(record.offset + written) {
            // The upload's last bytes: the last part may be short.
            if self.unfolded_len() > 0 || !buffer.is_empty() {
                self.send_part(buffer.take()).await?;
            }
        } else if !buffer.is_empty() {
            // The budget is held until the tail is stored.
            let (tail, _held) = self.merge_tails(buffer.take()).await?;
            self.put_tail(tail).await?;
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.sent.push(joined(done)?);
        }
        Ok(written)
    }

    /// Sends `body` as the next part (after the unfolded tails, if any), then waits while
    /// as many parts as allowed are in memory. The part's budget is held until it is sent.
    async fn send_part(&mut self, (body, held): (Bytes, Held)) -> Result<(), StorageError> {
        let (body, held) = if self.unfolded.is_empty() {
            (body, held)
        } else {
            // The body's budget plus room for the tails, taken before they are read. Asking
            // for the whole part while holding the body's could never succeed with a budget
            // of one part. While the body is copied in, it exists twice for a moment.
            let len = self.unfolded_len() as usize + body.len();
            let mut held = held;
            held.cover(&self.store.budget, len).await?;
            let mut whole = BytesMut::with_capacity(len);
            for tail in self.unfolded {
                whole.extend_from_slice(&self.store.read_tail(self.upload, tail).await?);
            }
            whole.extend_from_slice(&body);
            drop(body);
            self.rewritten += self.unfolded_len();
            self.fold = self.unfolded.len();
            self.unfolded = &[];
            (whole.freeze(), held)
        };
        let body_len = body.len() as u64;
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
        let sending = client::upload_part(
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.store.keys.object(self.upload),
            multipart,
            i32::try_from(number).unwrap_or(i32::MAX),
            body,
        );
        let len = body_len;
        self.in_flight.spawn(async move {
            let receipt = sending.await?;
            drop(held);
            Ok(Segment {
                target,
                len,
                receipt: Some(receipt.encode()),
            })
        });
        // One buffer is about to fill again: at most `parts_in_flight` in memory.
        while self.in_flight.len() >= self.store.parts_in_flight {
            if let Some(done) = self.in_flight.join_next().await {
                self.sent.push(joined(done)?);
            }
        }
        Ok(())
    }

    /// The bytes of this write's tail: `body`, after the trailing committed tails it merges
    /// (see [`pieces_to_fold`]), which its commit then folds. The budget covers them all
    /// before they are read.
    async fn merge_tails(
        &mut self,
        (body, held): (Bytes, Held),
    ) -> Result<(Bytes, Held), StorageError> {
        let merge = pieces_to_fold(self.unfolded, body.len() as u64);
        if merge == 0 {
            return Ok((body, held));
        }
        let merged = &self.unfolded[self.unfolded.len() - merge..];
        let merged_len: u64 = merged.iter().map(|s| s.len).sum();
        let len = merged_len as usize + body.len();
        let mut held = held;
        held.cover(&self.store.budget, len).await?;
        let mut whole = BytesMut::with_capacity(len);
        for tail in merged {
            whole.extend_from_slice(&self.store.read_tail(self.upload, tail).await?);
        }
        whole.extend_from_slice(&body);
        self.rewritten += merged_len;
        self.fold = merge;
        self.unfolded = &self.unfolded[..self.unfolded.len() - merge];
        Ok((whole.freeze(), held))
    }

    /// Stores the bytes after the last full part as this write's tail object. Its name
    /// carries the fencing token, unique to this writer, and the write's number within the
    /// lease; it is created only if absent.
    async fn put_tail(&mut self, body: Bytes) -> Result<(), StorageError> {
        let target = WriteTarget {
            token: self.lease.token(),
            seq: self.stretch,
        };
        let len = body.len() as u64;
        self.store
            .client
            .put_object()
            .bucket(&self.store.bucket)
            .key(self.store.keys.tail(self.upload, target))
            .if_none_match("*")
            .checksum_algorithm(CHECKSUM)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
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
    /// The bytes of a committed tail.
    pub(crate) async fn read_tail(
        &self,
        upload: &str,
        tail: &Segment,
    ) -> Result<Bytes, StorageError> {
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
        let output = match answer {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(missing())
            }
            Err(e) => return Err(backend_error("GetObject (tail)", e)),
        };
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Backend(format!("reading a tail: {e}")))?
            .into_bytes();
        if bytes.len() as u64 != tail.len {
            return Err(missing());
        }
        Ok(bytes)
    }
}
