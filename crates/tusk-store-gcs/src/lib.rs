//! Tusk storage in a Google Cloud Storage bucket (or a GCS emulator).
//!
//! Every write goes to new chunk objects whose names carry the writer's fencing token (see
//! [`names`]), created only if absent; the commit records each chunk's name, size, CRC32C
//! and generation in the upload's record, so HEAD and the start of a PATCH cost no GCS call
//! and nothing is learnt from listing. No object name is ever written twice, which keeps
//! clear of GCS's limit of one mutation per object per second. Finishing composes the
//! committed chunks, server-side, into the upload's object and checks its CRC32C against the
//! chunks'; concatenation composes the partials' objects the same way.

mod client;
mod compose;
pub mod names;
mod settings;
mod signed;
mod write;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use gcloud_storage::client::{Client, ClientConfig};
use tusk_core::{
    ByteStream, Chunks, Concatenation, Lease, Leftovers, Presentation, Presign, Removal, Segment,
    Storage, StorageError, Stored, UploadRecord, UploadState, WriteContext, WriteTarget,
};

use crate::client::{backend_error, created_at, piece_of, status, Bucket, Piece};
use crate::compose::{combined_crc32c, compose};
use crate::names::{ChunkId, Names, Receipt};
pub use crate::settings::GcsSettings;

pub struct GcsStorage {
    bucket: Bucket,
    /// Where signed URLs point: GCS itself, or the emulator's `scheme://host:port`.
    endpoint: String,
    names: Names,
    chunk_size: usize,
    chunks_in_flight: usize,
    leftover_grace: Duration,
}

impl GcsStorage {
    /// Storage on `settings`, with credentials from Google's default chain (none when
    /// `settings.anonymous`).
    pub async fn connect(settings: &GcsSettings) -> Result<Self, StorageError> {
        let mut config = ClientConfig::default();
        if !settings.endpoint.is_empty() {
            config.storage_endpoint = settings.endpoint.trim_end_matches('/').to_string();
        }
        let config = if settings.anonymous {
            config.anonymous()
        } else {
            config.with_auth().await.map_err(|e| {
                StorageError::Backend(format!(
                    "GCS credentials: {e} (set GOOGLE_APPLICATION_CREDENTIALS, run on GKE with \
                     workload identity, or set storage.gcs.anonymous for an emulator)"
                ))
            })?
        };
        Self::new(Client::new(config), settings)
    }

    /// Storage through an already configured client.
    pub fn new(client: Client, settings: &GcsSettings) -> Result<Self, StorageError> {
        let invalid = |what: &str| StorageError::Backend(format!("invalid GCS settings: {what}"));
        if settings.bucket.is_empty() {
            return Err(invalid("storage.gcs.bucket is required for GCS storage"));
        }
        let chunk_size = usize::try_from(settings.chunk_size)
            .ok()
            .filter(|size| (1..=(1 << 30)).contains(size))
            .ok_or_else(|| invalid("chunk_size must be between 1 byte and 1 GiB"))?;
        if settings.chunks_in_flight < 2 {
            return Err(invalid(
                "chunks_in_flight must be at least 2 (one gathered, one sent)",
            ));
        }
        Ok(Self {
            bucket: Bucket {
                client: Arc::new(client),
                name: settings.bucket.clone(),
            },
            endpoint: settings.endpoint.trim_end_matches('/').to_string(),
            names: Names::new(&settings.prefix),
            chunk_size,
            chunks_in_flight: settings.chunks_in_flight,
            leftover_grace: settings.leftover_grace,
        })
    }

    /// The committed `segments` of `upload` as composable pieces.
    fn pieces(&self, upload: &str, segments: &[Segment]) -> Result<Vec<Piece>, StorageError> {
        segments
            .iter()
            .map(|segment| {
                let receipt = Receipt::of(segment)?;
                Ok(Piece {
                    name: self.names.chunk(upload, receipt.chunk(segment)),
                    generation: receipt.generation,
                    crc32c: receipt.crc32c,
                    len: segment.len,
                })
            })
            .collect()
    }

    /// The finished upload's object, checked against the CRC32C its chunks combine to;
    /// `None` if it is not there yet.
    async fn finished_object(&self, record: &UploadRecord) -> Result<Option<Piece>, StorageError> {
        let pieces = self.pieces(&record.id, &record.segments)?;
        let expected = (combined_crc32c(&pieces), record.offset);
        match self.bucket.get(&self.names.object(&record.id)).await? {
            Some(object) => piece_of(&object, expected).map(Some),
            None => Ok(None),
        }
    }

    /// Removes what `segments` name, best effort: whatever stays is swept as a leftover.
    async fn remove_quietly(&self, upload: &str, segments: &[Segment]) {
        let names: Vec<String> = segments
            .iter()
            .filter_map(|s| Some(self.names.chunk(upload, Receipt::of(s).ok()?.chunk(s))))
            .collect();
        self.remove_names_quietly(&names).await;
    }

    async fn remove_names_quietly(&self, names: &[String]) {
        for name in names {
            if let Err(e) = self.bucket.delete(name).await {
                tracing::warn!(error = %e, "a GCS object stays until the leftovers sweep");
            }
        }
    }

    /// Removes what `scope` allows of `upload`'s chunks and object, confirming the lease (if
    /// any) right before the removals.
    async fn remove_stored(&self, upload: &str, scope: Removal<'_>) -> Result<usize, StorageError> {
        let lease = scope.lease();
        let confirm = || async {
            match lease {
                Some(lease) => lease.confirm().await.map_err(StorageError::from),
                None => Ok(()),
            }
        };
        confirm().await?;
        let record = lease.map(Lease::record);
        // Once the object is whole, the chunks it was composed of are no longer needed.
        let whole = match record {
            Some(r) if r.state == UploadState::Active && r.is_finished() => {
                self.finished_object(r).await?.is_some()
            }
            _ => false,
        };
        let kept: Vec<String> = match record {
            Some(r) if r.state == UploadState::Active && !whole => self
                .pieces(upload, &r.segments)?
                .into_iter()
                .map(|p| p.name)
                .collect(),
            _ => Vec::new(),
        };
        // What a writer may still be working on: anything younger than the grace, unless
        // no writer can write any more (the upload is gone or finished).
        let settled = record.is_some_and(|r| r.state != UploadState::Active || r.is_finished());
        let grace_start = SystemTime::now()
            .checked_sub(self.leftover_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old_enough = |object| settled || created_at(object).is_some_and(|at| at < grace_start);
        let newest_token = lease.map_or(u64::MAX, Lease::token);
        let chunks = self.bucket.list(&self.names.chunks(upload), None).await?;
        let mut doomed: Vec<String> = chunks
            .iter()
            .filter(|object| !kept.contains(&object.name))
            .filter(|object| match self.names.token_of_chunk(&object.name) {
                // A newer writer's chunk is never ours to remove.
                Some(token) => token <= newest_token && (lease.is_some() || old_enough(object)),
                // Intermediates of a finish.
                None => old_enough(object),
            })
            .map(|object| object.name.clone())
            .collect();
        if scope.takes_the_object() {
            let name = self.names.object(upload);
            if let Some(object) = self.bucket.get(&name).await? {
                if lease.is_some() || old_enough(&object) {
                    doomed.push(name);
                }
            }
        }
        if !doomed.is_empty() {
            confirm().await?;
        }
        for name in &doomed {
            self.bucket.delete(name).await?;
        }
        Ok(doomed.len())
    }

    /// Streams `range` of the committed chunks of an unfinished upload, chunk after chunk,
    /// each pinned to its committed generation.
    fn read_chunks(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let mut plan = Vec::new();
        let mut start = 0u64;
        for segment in &record.segments {
            let end = start + segment.len;
            if end > range.start && start < range.end {
                let receipt = Receipt::of(segment)?;
                let from = range.start.max(start) - start;
                let to = range.end.min(end) - start;
                plan.push((
                    self.names.chunk(&record.id, receipt.chunk(segment)),
                    receipt.generation,
                    from..to,
                    segment.target,
                ));
            }
            start = end;
        }
        let bucket = self.bucket.clone();
        let upload = record.id.clone();
        let stream = futures_util::stream::iter(plan)
            .then(move |(name, generation, within, target)| {
                let bucket = bucket.clone();
                let upload = upload.clone();
                async move { open(&bucket, &upload, &name, Some(generation), within, target).await }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }
}

/// Opens a ranged read of one object; a missing one is the segment `target` gone.
async fn open(
    bucket: &Bucket,
    upload: &str,
    name: &str,
    generation: Option<i64>,
    range: Range<u64>,
    target: WriteTarget,
) -> Result<ByteStream, StorageError> {
    match bucket.read(name, generation, range).await {
        Ok(stream) => {
            let name = name.to_string();
            Ok(Box::pin(
                stream.map_err(move |e| backend_error("reading", &name, &e)),
            ))
        }
        Err(e) if status(&e) == Some(404) => Err(StorageError::MissingSegment {
            upload: upload.to_string(),
            target,
        }),
        Err(e) => Err(backend_error("objects.get (media)", name, &e)),
    }
}

#[async_trait]
impl Storage for GcsStorage {
    fn name(&self) -> &'static str {
        "gcs"
    }

    async fn write(
        &self,
        context: WriteContext<'_>,
        chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError> {
        write::write(self, context, chunks).await
    }

    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError> {
        lease.confirm().await?;
        let ours: Vec<Segment> = stored
            .append
            .iter()
            .filter(|s| s.target.token <= lease.token())
            .cloned()
            .collect();
        for piece in self.pieces(lease.upload_id(), &ours)? {
            self.bucket.delete(&piece.name).await?;
        }
        Ok(())
    }

    async fn finish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let name = self.names.object(&record.id);
        if self.finished_object(record).await?.is_none() {
            if record.segments.is_empty() {
                match self.bucket.put_new(&name, Bytes::new()).await {
                    Ok(_) => {}
                    Err(e) if status(&e) == Some(412) => {}
                    Err(e) => return Err(backend_error("objects.insert", &name, &e)),
                }
                return Ok(());
            }
            let sources = self.pieces(&record.id, &record.segments)?;
            let mut made_count = 0;
            let composed = compose(&self.bucket, &name, sources, || {
                made_count += 1;
                self.names.intermediate(&record.id, made_count)
            })
            .await;
            let made = match composed {
                Ok((_, made)) => made,
                // Another node finished it and removed the chunks meanwhile.
                Err(e) => match self.finished_object(record).await? {
                    Some(_) => Vec::new(),
                    None => return Err(e),
                },
            };
            self.remove_names_quietly(&made).await;
        }
        // The object is whole and checked: its chunks go.
        self.remove_quietly(&record.id, &record.segments).await;
        Ok(())
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        if !record.is_finished() {
            return self.read_chunks(record, range);
        }
        let name = self.names.object(&record.id);
        let target = WriteTarget { token: 0, seq: 0 };
        match open(&self.bucket, &record.id, &name, None, range.clone(), target).await {
            Err(StorageError::MissingSegment { .. }) => {
                // Committed but never composed (the node that finished it failed right
                // after the commit): compose it now.
                self.finish(record).await?;
                open(&self.bucket, &record.id, &name, None, range, target).await
            }
            other => other,
        }
    }

    async fn delete(&self, lease: &Lease) -> Result<(), StorageError> {
        self.remove_stored(lease.upload_id(), Removal::Gone(lease))
            .await
            .map(|_| ())
    }

    async fn remove_uncommitted(&self, lease: &Lease) -> Result<usize, StorageError> {
        self.remove_stored(lease.upload_id(), Removal::Unreferenced(lease))
            .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.bucket.ping().await
    }

    fn concatenation(&self) -> Option<&dyn Concatenation> {
        Some(self)
    }

    fn presign(&self) -> Option<&dyn Presign> {
        Some(self)
    }

    fn leftovers(&self) -> Option<&dyn Leftovers> {
        Some(self)
    }
}

#[async_trait]
impl Concatenation for GcsStorage {
    /// Composes the partials' objects server-side into one chunk of the final upload.
    async fn concatenate(
        &self,
        context: WriteContext<'_>,
        partials: &[UploadRecord],
    ) -> Result<Stored, StorageError> {
        let mut sources = Vec::with_capacity(partials.len());
        for partial in partials.iter().filter(|p| p.offset > 0) {
            let piece = match self.finished_object(partial).await? {
                Some(piece) => piece,
                None => {
                    self.finish(partial).await?;
                    self.finished_object(partial).await?.ok_or_else(|| {
                        StorageError::Backend(format!("object of {} is missing", partial.id))
                    })?
                }
            };
            sources.push(piece);
        }
        if sources.is_empty() {
            return Ok(Stored::default());
        }
        let upload = context.lease.upload_id();
        let target = WriteTarget {
            token: context.lease.token(),
            seq: context.stretch,
        };
        let name_of = |n: u32| self.names.chunk(upload, ChunkId { target, n });
        let mut n = 0;
        let (piece, made) = compose(&self.bucket, &name_of(0), sources, || {
            n += 1;
            name_of(n)
        })
        .await?;
        self.remove_names_quietly(&made).await;
        let mut segment = Segment::new(target, piece.len);
        segment.receipt = Some(
            Receipt {
                n: 0,
                crc32c: piece.crc32c,
                generation: piece.generation,
            }
            .encode(),
        );
        Ok(Stored {
            written: piece.len,
            append: vec![segment],
            ..Stored::default()
        })
    }
}

#[async_trait]
impl Presign for GcsStorage {
    async fn presigned_get(
        &self,
        record: &UploadRecord,
        valid_for: Duration,
        presentation: &Presentation,
    ) -> Result<String, StorageError> {
        signed::signed_get(
            &self.bucket,
            &self.endpoint,
            &self.names.object(&record.id),
            valid_for,
            presentation,
        )
        .await
    }
}

#[async_trait]
impl Leftovers for GcsStorage {
    async fn suspects(&self, limit: usize) -> Result<Vec<String>, StorageError> {
        let before = SystemTime::now()
            .checked_sub(self.leftover_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut ids: Vec<String> = Vec::new();
        // Young chunks of open uploads come first in the listing as often as old ones; a
        // window this much wider than `limit` finds the old ones without listing a whole
        // bucket of open uploads per sweep.
        let window = limit.saturating_mul(64);
        for object in self
            .bucket
            .list(&self.names.all_chunks(), Some(window))
            .await?
        {
            if ids.len() >= limit {
                break;
            }
            let old = created_at(&object).is_some_and(|at| at < before);
            if let Some(id) = self.names.upload_of_chunk(&object.name).filter(|_| old) {
                if !ids.iter().any(|known| known == id) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    async fn remove_leftovers(
        &self,
        upload: &str,
        lease: Option<&Lease>,
    ) -> Result<usize, StorageError> {
        self.remove_stored(upload, Removal::of_leftovers(lease))
            .await
    }
}
