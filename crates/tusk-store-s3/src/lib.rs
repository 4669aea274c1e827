//! Tusk storage in an S3 bucket (AWS, MinIO, R2, any S3-compatible server).
//!
//! A tus upload is an S3 multipart upload; see [`layout`] for the keys. What S3 needs to
//! resume an upload (the multipart upload ID, the part size, each committed part's number,
//! ETag and checksum, the tail objects) lives in the upload's record, so HEAD and the start
//! of a PATCH cost no S3 call, and nothing is ever learnt from ListParts.
//!
//! Part numbers are reserved under the lease like any write target: a writer that lost its
//! lease can upload a part nobody will complete, never replace a committed one. Finishing
//! completes the multipart upload with exactly the committed parts.

mod budget;
mod client;
mod concat;
pub mod layout;
mod settings;
mod spool;
mod write;

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption, StorageClass};
use tusk_core::{
    ByteStream, Chunks, Concatenation, Lease, Leftovers, Presentation, Presign, Removal, Segment,
    Storage, StorageError, Stored, UploadRecord, UploadState, WriteContext, WriteUnits,
};

use crate::client::{backend_error, error_code};
use crate::layout::{split_parts_and_tails, Keys, PartRules, Session};
pub use crate::settings::S3Settings;

/// The checksum every part and tail is sent with, verified by S3 on arrival.
const CHECKSUM: ChecksumAlgorithm = ChecksumAlgorithm::Crc32;

pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    keys: Keys,
    rules: PartRules,
    parts_in_flight: usize,
    spool: spool::Spool,
    /// The largest upload accepted, used to size the parts of uploads of unknown length.
    max_upload_size: Option<u64>,
    encryption: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    storage_class: Option<StorageClass>,
    leftover_grace: Duration,
}

impl S3Storage {
    /// Storage on `settings`, with credentials and region from the AWS default chain.
    pub async fn connect(
        settings: &S3Settings,
        max_upload_size: Option<u64>,
    ) -> Result<Self, StorageError> {
        if settings.bucket.is_empty() {
            return Err(StorageError::Backend(
                "storage.s3.bucket is required for S3 storage".into(),
            ));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !settings.region.is_empty() {
            loader = loader.region(aws_config::Region::new(settings.region.clone()));
        }
        let shared = loader.load().await;
        // Objects are multipart uploads, whose checksum is a composite of the parts' that a
        // GET cannot check (and some servers, moto among them, send it without the `-N`
        // that marks it composite, which the SDK then rejects). Parts are checked by S3 on
        // arrival; tails, single objects, are checked on reading (`ChecksumMode::Enabled`).
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if shared.region().is_none() {
            config = config.region(aws_config::Region::new("us-east-1"));
        }
        if !settings.endpoint.is_empty() {
            config = config.endpoint_url(&settings.endpoint);
        }
        Self::new(
            aws_sdk_s3::Client::from_conf(config.build()),
            settings,
            max_upload_size,
        )
    }

    /// Storage through an already configured client.
    pub fn new(
        client: aws_sdk_s3::Client,
        settings: &S3Settings,
        max_upload_size: Option<u64>,
    ) -> Result<Self, StorageError> {
        let invalid = |what: &str| StorageError::Backend(format!("invalid S3 settings: {what}"));
        if settings.min_part_size == 0 || settings.part_size > layout::S3_MAX_PART {
            return Err(invalid("part sizes must be between 1 byte and 5 GiB"));
        }
        if settings.max_parts == 0 || settings.parts_in_flight == 0 {
            return Err(invalid("max_parts and parts_in_flight must be at least 1"));
        }
        if settings.buffer_budget < settings.part_size {
            return Err(invalid(
                "buffer_budget must hold at least one part (part_size)",
            ));
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Self {
            client,
            bucket: settings.bucket.clone(),
            keys: Keys::new(&settings.prefix),
            rules: PartRules {
                preferred: settings.part_size,
                min: settings.min_part_size,
                max_parts: settings.max_parts,
                equal_parts: settings.equal_parts,
            },
            parts_in_flight: settings.parts_in_flight,
            spool: spool::Spool::new(
                settings.spool_dir(),
                budget::BufferBudget::new(settings.buffer_budget, settings.buffer_wait),
            )?,
            max_upload_size,
            encryption: text(&settings.server_side_encryption)
                .map(|s| ServerSideEncryption::from(s.as_str())),
            kms_key: text(&settings.sse_kms_key_id),
            storage_class: text(&settings.storage_class).map(|s| StorageClass::from(s.as_str())),
            leftover_grace: settings.leftover_grace,
        })
    }

    /// Starts the multipart upload of `upload`, with the object's settings.
    async fn create_multipart(&self, upload: &str) -> Result<String, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.keys.object(upload))
            .checksum_algorithm(CHECKSUM)
            .set_server_side_encryption(self.encryption.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| backend_error("CreateMultipartUpload", e))?;
        created
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError::Backend("CreateMultipartUpload gave no upload ID".into()))
    }

    /// Completes the multipart upload with exactly the committed parts; completing one that
    /// was completed already is not an error.
    async fn complete(
        &self,
        record: &UploadRecord,
        multipart: &str,
        parts: &[Segment],
    ) -> Result<(), StorageError> {
        let completed = parts
            .iter()
            .map(|segment| {
                let receipt = layout::PartReceipt::decode(segment.receipt.as_deref().unwrap_or(""));
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(layout::part_number(segment))
                    .e_tag(receipt.etag)
                    .set_checksum_crc32(receipt.checksum)
                    .build()
            })
            .collect();
        let key = self.keys.object(&record.id);
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(multipart)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if error_code(&e) == Some("NoSuchUpload") && self.object_exists(&key).await? =>
            {
                Ok(())
            }
            Err(e) => Err(backend_error("CompleteMultipartUpload", e)),
        }
    }

    async fn object_exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.object_modified(key).await?.is_some())
    }

    /// `Some(last modified)` if the object exists.
    async fn object_modified(&self, key: &str) -> Result<Option<Option<SystemTime>>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(backend_error("HeadObject", e)),
        }
    }

    async fn put_empty_object(&self, upload: &str) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.keys.object(upload))
            .set_server_side_encryption(self.encryption.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
            .send()
            .await
            .map_err(|e| backend_error("PutObject", e))?;
        Ok(())
    }

    /// Streams `range` of the finished object; `None` if the object does not exist.
    async fn get_range(
        &self,
        upload: &str,
        range: &Range<u64>,
    ) -> Result<Option<ByteStream>, StorageError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.keys.object(upload))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(backend_error("GetObject", e)),
        };
        let body = output.body;
        let stream = futures_util::stream::unfold(body, |mut body| async move {
            let next = body.next().await?;
            Some((
                next.map_err(|e| StorageError::Backend(format!("reading an S3 object: {e}"))),
                body,
            ))
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn delete_tails(&self, upload: &str, tails: &[Segment]) -> Result<(), StorageError> {
        let keys: Vec<String> = tails
            .iter()
            .map(|s| self.keys.tail(upload, s.target))
            .collect();
        client::delete_keys(&self.client, &self.bucket, keys).await
    }

    /// Removes what `scope` allows of `upload`'s multipart uploads, tails and object,
    /// confirming the lease (if any) right before each removal.
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
        let live = record.filter(|r| r.state == UploadState::Active);
        let kept_multipart = match live {
            Some(r) => Session::of(r)?.and_then(|s| s.multipart),
            None => None,
        };
        let kept_tails: Vec<String> = live
            .map(|r| {
                split_parts_and_tails(&r.segments)
                    .1
                    .iter()
                    .map(|s| self.keys.tail(upload, s.target))
                    .collect()
            })
            .unwrap_or_default();
        // What a writer may still be working on: anything younger than the grace, unless
        // no writer can write any more (the upload is gone or finished).
        let settled = record.is_some_and(|r| r.state != UploadState::Active || r.is_finished());
        let grace_start = SystemTime::now()
            .checked_sub(self.leftover_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old_enough = |at: Option<SystemTime>| settled || at.is_some_and(|at| at < grace_start);
        let object = self.keys.object(upload);
        let mut removed = 0;
        for (key, id, started) in
            client::list_multipart_uploads(&self.client, &self.bucket, &object).await?
        {
            if key == object
                && kept_multipart.as_deref() != Some(id.as_str())
                && old_enough(started)
            {
                confirm().await?;
                client::abort_multipart(&self.client, &self.bucket, &key, &id).await?;
                removed += 1;
            }
        }
        let newest_token = lease.map_or(u64::MAX, Lease::token);
        let stray: Vec<String> =
            client::list_keys(&self.client, &self.bucket, &self.keys.tails(upload), None)
                .await?
                .into_iter()
                .filter(|(key, modified)| {
                    // A tail's name carries its writer's token: a newer writer's is never ours
                    // to remove.
                    let token = self.keys.token_of_tail(key);
                    !kept_tails.contains(key)
                        && token.is_some_and(|t| t <= newest_token)
                        && (lease.is_some() || old_enough(*modified))
                })
                .map(|(key, _)| key)
                .collect();
        if !stray.is_empty() {
            removed += stray.len();
            confirm().await?;
            client::delete_keys(&self.client, &self.bucket, stray).await?;
        }
        if scope.takes_the_object() {
            if let Some(modified) = self.object_modified(&object).await? {
                if lease.is_some() || old_enough(modified) {
                    confirm().await?;
                    client::delete_keys(&self.client, &self.bucket, vec![object]).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn write(
        &self,
        context: WriteContext<'_>,
        chunks: Chunks<'_>,
    ) -> Result<Stored, StorageError> {
        write::write(self, context, chunks).await
    }

    fn write_units(&self, context: &WriteContext<'_>) -> Option<WriteUnits> {
        write::write_units(self, context)
    }

    async fn discard(&self, lease: &Lease, stored: &Stored) -> Result<(), StorageError> {
        // Parts need nothing: a part no commit names is left out when the upload completes
        // and goes when it is aborted. A multipart upload the write opened goes now.
        lease.confirm().await?;
        let tails: Vec<Segment> = stored
            .append
            .iter()
            .filter(|s| s.receipt.is_none() && s.target.token <= lease.token())
            .cloned()
            .collect();
        self.delete_tails(lease.upload_id(), &tails).await?;
        let committed = Session::of(lease.record())?.and_then(|s| s.multipart);
        let opened = match &stored.session {
            Some(session) => Session::decode(session)?.multipart,
            None => None,
        };
        if let Some(opened) = opened.filter(|id| committed.as_ref() != Some(id)) {
            let key = self.keys.object(lease.upload_id());
            client::abort_multipart(&self.client, &self.bucket, &key, &opened).await?;
        }
        Ok(())
    }

    async fn finish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let (parts, tails) = split_parts_and_tails(&record.segments);
        if !tails.is_empty() {
            return Err(StorageError::Backend(format!(
                "finished upload {} still has {} tail objects",
                record.id,
                tails.len()
            )));
        }
        match Session::of(record)?.and_then(|s| s.multipart) {
            Some(multipart) => self.complete(record, &multipart, parts).await,
            None if parts.is_empty() => self.put_empty_object(&record.id).await,
            None => Err(StorageError::Backend(format!(
                "upload {} has parts but no multipart upload",
                record.id
            ))),
        }
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        if !record.is_finished() {
            return Err(StorageError::NotFinished);
        }
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        if let Some(stream) = self.get_range(&record.id, &range).await? {
            return Ok(stream);
        }
        // Committed but never completed (the node that finished it failed right after the
        // commit): complete it now.
        self.finish(record).await?;
        self.get_range(&record.id, &range)
            .await?
            .ok_or_else(|| StorageError::Backend(format!("object of {} is missing", record.id)))
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
        let answer = self.client.head_bucket().bucket(&self.bucket).send().await;
        match answer {
            Ok(_) => Ok(()),
            Err(error) => Err(match client::status_of(&error) {
                // HeadBucket answers without a body: the status is all there is.
                Some(404) => StorageError::Misconfigured {
                    setting: "storage.s3.bucket",
                    problem: format!("S3 bucket {:?} does not exist", self.bucket),
                },
                Some(401 | 403) => StorageError::Misconfigured {
                    setting: "the S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                              a profile or a role) or the bucket's policy",
                    problem: format!("S3 refuses access to bucket {:?}", self.bucket),
                },
                _ => backend_error("HeadBucket", error),
            }),
        }
    }

    async fn check_at_start(&self) -> Result<(), StorageError> {
        self.ping().await?;
        // Unique enough: nodes starting at once must not remove each other's probe early.
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let probe = self
            .keys
            .start_probe(&format!("{}-{started}", std::process::id()));
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&probe)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"tusk"))
            .send()
            .await;
        if let Err(error) = put {
            return Err(match client::status_of(&error) {
                Some(401 | 403) => StorageError::Misconfigured {
                    setting: "the S3 credentials or the bucket's policy (Tusk needs \
                              s3:PutObject, see helm/tusk/README.md)",
                    problem: format!("S3 refuses writes to bucket {:?}", self.bucket),
                },
                _ => backend_error("PutObject", error),
            });
        }
        client::delete_keys(&self.client, &self.bucket, vec![probe]).await
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
impl Concatenation for S3Storage {
    async fn concatenate(
        &self,
        context: WriteContext<'_>,
        partials: &[UploadRecord],
    ) -> Result<Stored, StorageError> {
        concat::concatenate(self, context, partials).await
    }
}

#[async_trait]
impl Presign for S3Storage {
    async fn presigned_get(
        &self,
        record: &UploadRecord,
        valid_for: Duration,
        presentation: &Presentation,
    ) -> Result<String, StorageError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(valid_for)
            .map_err(|e| StorageError::Backend(format!("presigning: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.keys.object(&record.id))
            .response_content_type(&presentation.content_type)
            .response_content_disposition(&presentation.content_disposition)
            .presigned(config)
            .await
            .map_err(|e| backend_error("presigning GetObject", e))?;
        Ok(request.uri().to_string())
    }
}

#[async_trait]
impl Leftovers for S3Storage {
    async fn suspects(&self, limit: usize) -> Result<Vec<String>, StorageError> {
        let before = SystemTime::now()
            .checked_sub(self.leftover_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut ids: Vec<String> = Vec::new();
        let mut add = |id: Option<&str>| {
            if let Some(id) = id {
                if !ids.iter().any(|known| known == id) {
                    ids.push(id.to_string());
                }
            }
        };
        let multiparts =
            client::list_multiparts_started_before(&self.client, &self.bucket, &self.keys, before)
                .await?;
        for key in multiparts.iter().take(limit) {
            add(self.keys.upload_of_object(key));
        }
        let tails = client::list_keys(
            &self.client,
            &self.bucket,
            &self.keys.all_tails(),
            Some(limit),
        )
        .await?;
        for (key, modified) in &tails {
            if modified.is_some_and(|m| m < before) {
                add(self.keys.upload_of_tail(key));
            }
        }
        ids.truncate(limit);
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
