//! A PATCH's bytes into chunk objects: gathered in memory up to the chunk size, sent while
//! the next is gathered (at most `chunks_in_flight` held at once), each created only if its
//! name is new. Past [`MOST_PIECES`] committed chunks, a write composes them all into one
//! (server-side, no byte through the node) that its commit folds them into.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tusk_core::fold::MOST_PIECES;
use tusk_core::{Chunks, Segment, StorageError, Stored, WriteContext, WriteTarget};

use crate::client::{backend_error, piece_of, Piece};
use crate::compose::compose;
use crate::names::{ChunkId, Receipt};
use crate::GcsStorage;

pub(crate) async fn write(
    store: &GcsStorage,
    context: WriteContext<'_>,
    chunks: Chunks<'_>,
) -> Result<Stored, StorageError> {
    let upload = context.lease.upload_id();
    let target = WriteTarget {
        token: context.lease.token(),
        seq: context.stretch,
    };
    let mut writer = ChunkWriter {
        store,
        upload,
        target,
        next: 0,
        sending: JoinSet::new(),
        sent: Vec::new(),
    };
    let outcome = writer.send_all(chunks).await;
    let sent = writer.finish(outcome).await?;
    let written: u64 = sent.iter().map(|s| s.len).sum();
    let committed = &context.record().segments;
    if written == 0 || committed.len() < MOST_PIECES {
        return Ok(Stored {
            written,
            append: sent,
            ..Stored::default()
        });
    }
    // Composing costs one call whatever the sizes, so every committed chunk folds.
    let folded = fold(store, upload, target, writer.next, committed).await;
    let folded = match folded {
        Ok(folded) => folded,
        Err(e) => {
            store.remove_quietly(upload, &sent).await;
            return Err(e);
        }
    };
    let mut append = vec![folded];
    append.extend(sent);
    Ok(Stored {
        written,
        append,
        fold: committed.len(),
        ..Stored::default()
    })
}

/// Composes the `committed` chunks into one new chunk of this write, numbered from `next`.
async fn fold(
    store: &GcsStorage,
    upload: &str,
    target: WriteTarget,
    next: u32,
    committed: &[Segment],
) -> Result<Segment, StorageError> {
    let sources = store.pieces(upload, committed)?;
    let name_of = |n: u32| store.names.chunk(upload, ChunkId { target, n });
    let mut n = next;
    let dest = name_of(n);
    let (piece, made) = compose(&store.bucket, &dest, sources, || {
        n += 1;
        name_of(n)
    })
    .await?;
    store.remove_names_quietly(&made).await;
    Ok(segment_of(target, next, &piece))
}

fn segment_of(target: WriteTarget, n: u32, piece: &Piece) -> Segment {
    let mut segment = Segment::new(target, piece.len);
    segment.receipt = Some(
        Receipt {
            n,
            crc32c: piece.crc32c,
            generation: piece.generation,
        }
        .encode(),
    );
    segment
}

struct ChunkWriter<'a> {
    store: &'a GcsStorage,
    upload: &'a str,
    target: WriteTarget,
    /// The number of the next chunk.
    next: u32,
    sending: JoinSet<Result<(u32, Piece), StorageError>>,
    sent: Vec<(u32, Piece)>,
}

impl ChunkWriter<'_> {
    async fn send_all(&mut self, mut chunks: Chunks<'_>) -> Result<(), StorageError> {
        let size = self.store.chunk_size;
        let mut gathered = BytesMut::new();
        while let Some(mut bytes) = chunks.next().await {
            while !bytes.is_empty() {
                let take = (size - gathered.len()).min(bytes.len());
                gathered.extend_from_slice(&bytes.split_to(take));
                if gathered.len() == size {
                    self.send(gathered.split().freeze()).await?;
                }
            }
        }
        if !gathered.is_empty() {
            self.send(gathered.freeze()).await?;
        }
        Ok(())
    }

    /// Sends `body` as the next chunk; returns once fewer than `chunks_in_flight - 1` are
    /// being sent, so the next can be gathered.
    async fn send(&mut self, body: Bytes) -> Result<(), StorageError> {
        let n = self.next;
        self.next = n.checked_add(1).ok_or(StorageError::UploadTooLarge(
            "one write of a PATCH needs more chunks than a GCS chunk name can number",
        ))?;
        let name = self.store.names.chunk(
            self.upload,
            ChunkId {
                target: self.target,
                n,
            },
        );
        let bucket = self.store.bucket.clone();
        self.sending.spawn(async move {
            let expected = (crc_fast::crc32_iscsi(&body), body.len() as u64);
            let object = bucket
                .put_new(&name, body)
                .await
                .map_err(|e| backend_error("objects.insert", &name, &e))?;
            Ok((n, piece_of(&object, expected)?))
        });
        while self.sending.len() >= self.store.chunks_in_flight - 1 {
            self.join_one().await?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StorageError> {
        if let Some(done) = self.sending.join_next().await {
            let sent = done.map_err(|e| StorageError::Backend(format!("chunk upload: {e}")))??;
            self.sent.push(sent);
        }
        Ok(())
    }

    /// Waits for every chunk being sent. On any failure, removes what was sent (best effort:
    /// what stays is swept as a leftover) and answers the failure.
    async fn finish(
        &mut self,
        outcome: Result<(), StorageError>,
    ) -> Result<Vec<Segment>, StorageError> {
        let mut outcome = outcome;
        while !self.sending.is_empty() {
            if let Err(e) = self.join_one().await {
                outcome = outcome.and(Err(e));
            }
        }
        self.sent.sort_by_key(|(n, _)| *n);
        let sent: Vec<Segment> = self
            .sent
            .iter()
            .map(|(n, piece)| segment_of(self.target, *n, piece))
            .collect();
        match outcome {
            Ok(()) => Ok(sent),
            Err(e) => {
                self.store.remove_quietly(self.upload, &sent).await;
                Err(e)
            }
        }
    }
}
