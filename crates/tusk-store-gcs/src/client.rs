//! The GCS calls Tusk makes, each one line for the rest of the crate: create-only uploads and
//! composes, reads pinned to a generation, listings with their paging, removals that take
//! "already gone" for done, and the error mapping.

use std::ops::Range;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use gcloud_storage::client::Client;
use gcloud_storage::http::buckets::get::GetBucketRequest;
use gcloud_storage::http::objects::compose::{ComposeObjectRequest, ComposingTargets};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range as ByteRange;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::{Object, SourceObjects};
use gcloud_storage::http::Error;
use tusk_core::StorageError;

/// One stored object as Tusk tracks it: enough to compose it by generation and to check a
/// composition's CRC32C without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub name: String,
    pub generation: i64,
    pub crc32c: u32,
    pub len: u64,
}

/// The HTTP status of a failed call, if it got that far.
pub(crate) fn status(error: &Error) -> Option<u16> {
    match error {
        Error::Response(response) => Some(response.code),
        Error::HttpClient(e) | Error::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

/// A GCS failure as a storage error: one line naming the call and the object.
pub(crate) fn backend_error(call: &str, name: &str, error: &Error) -> StorageError {
    let status = status(error).map(|s| format!(" ({s})")).unwrap_or_default();
    StorageError::Backend(format!("GCS {call} {name}{status}: {error}"))
}

/// The CRC32C GCS reports for an object (base64 of its big-endian bytes).
fn crc32c_of(object: &Object) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(object.crc32c.as_deref()?)
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// What GCS answered for an object as a [`Piece`], refusing an answer that lacks a CRC32C or
/// disagrees with what was sent.
pub(crate) fn piece_of(object: &Object, expected: (u32, u64)) -> Result<Piece, StorageError> {
    let (crc32c, len) = expected;
    let got = crc32c_of(object);
    if got != Some(crc32c) || u64::try_from(object.size).ok() != Some(len) {
        return Err(StorageError::Backend(format!(
            "GCS object {} holds {} bytes with CRC32C {got:08x?}, expected {len} bytes with \
             CRC32C {crc32c:08x}",
            object.name, object.size
        )));
    }
    Ok(Piece {
        name: object.name.clone(),
        generation: object.generation,
        crc32c,
        len,
    })
}

pub(crate) fn created_at(object: &Object) -> Option<SystemTime> {
    object.time_created.or(object.updated).map(SystemTime::from)
}

#[derive(Clone)]
pub(crate) struct Bucket {
    pub client: std::sync::Arc<Client>,
    pub name: String,
}

impl Bucket {
    /// Creates `name` holding `body` only if no object has that name.
    pub async fn put_new(&self, name: &str, body: Bytes) -> Result<Object, Error> {
        let mut media = Media::new(name.to_string());
        media.content_length = Some(body.len() as u64);
        let request = UploadObjectRequest {
            bucket: self.name.clone(),
            if_generation_match: Some(0),
            ..UploadObjectRequest::default()
        };
        self.client
            .upload_object(&request, body, &UploadType::Simple(media))
            .await
    }

    /// Composes `sources` (each pinned to its generation), in order, into `name`, only if no
    /// object has that name.
    pub async fn compose_new(&self, name: &str, sources: &[Piece]) -> Result<Object, Error> {
        let request = ComposeObjectRequest {
            bucket: self.name.clone(),
            destination_object: name.to_string(),
            composing_targets: ComposingTargets {
                destination: None,
                source_objects: sources
                    .iter()
                    .map(|piece| SourceObjects {
                        name: piece.name.clone(),
                        generation: Some(piece.generation),
                        object_preconditions: None,
                    })
                    .collect(),
            },
            if_generation_match: Some(0),
            ..ComposeObjectRequest::default()
        };
        self.client.compose_object(&request).await
    }

    /// The object's metadata, `None` if there is no such object.
    pub async fn get(&self, name: &str) -> Result<Option<Object>, StorageError> {
        let request = GetObjectRequest {
            bucket: self.name.clone(),
            object: name.to_string(),
            ..GetObjectRequest::default()
        };
        match self.client.get_object(&request).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(backend_error("objects.get", name, &e)),
        }
    }

    /// Streams `range` of the object (of `generation`, if given).
    pub async fn read(
        &self,
        name: &str,
        generation: Option<i64>,
        range: Range<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + use<>, Error> {
        let request = GetObjectRequest {
            bucket: self.name.clone(),
            object: name.to_string(),
            generation,
            ..GetObjectRequest::default()
        };
        let range = ByteRange(Some(range.start), Some(range.end - 1));
        self.client.download_streamed_object(&request, &range).await
    }

    /// Removes `name`; one that is already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let request = DeleteObjectRequest {
            bucket: self.name.clone(),
            object: name.to_string(),
            ..DeleteObjectRequest::default()
        };
        match self.client.delete_object(&request).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(backend_error("objects.delete", name, &e)),
        }
    }

    /// Objects whose names start with `prefix`, all of them or the first `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Object>, StorageError> {
        let mut found = Vec::new();
        let mut page_token = None;
        loop {
            let request = ListObjectsRequest {
                bucket: self.name.clone(),
                prefix: Some(prefix.to_string()),
                page_token: page_token.take(),
                ..ListObjectsRequest::default()
            };
            let page = self
                .client
                .list_objects(&request)
                .await
                .map_err(|e| backend_error("objects.list", prefix, &e))?;
            found.extend(page.items.unwrap_or_default());
            if let Some(limit) = limit.filter(|l| found.len() >= *l) {
                found.truncate(limit);
                return Ok(found);
            }
            match page.next_page_token {
                Some(next) if !next.is_empty() => page_token = Some(next),
                _ => return Ok(found),
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        let request = GetBucketRequest {
            bucket: self.name.clone(),
            ..GetBucketRequest::default()
        };
        match self.client.get_bucket(&request).await {
            Ok(_) => Ok(()),
            Err(error) => Err(match status(&error) {
                Some(404) => StorageError::Misconfigured {
                    setting: "storage.gcs.bucket",
                    problem: format!("GCS bucket {:?} does not exist", self.name),
                },
                Some(401 | 403) => StorageError::Misconfigured {
                    setting: "the GCS credentials (GOOGLE_APPLICATION_CREDENTIALS or the \
                              metadata server's account; storage.gcs.anonymous) or the \
                              bucket's IAM",
                    problem: format!("GCS refuses access to bucket {:?}", self.name),
                },
                _ => backend_error("buckets.get", &self.name, &error),
            }),
        }
    }
}
