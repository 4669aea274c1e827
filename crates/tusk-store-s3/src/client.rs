//! The S3 calls that take more than one line: listings with their paging, deletions, and
//! the error mapping.

use std::time::SystemTime;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use tusk_core::StorageError;

use crate::layout::{Keys, PartReceipt};
use crate::spool::SpooledPart;
use crate::CHECKSUM;

/// An S3 failure as a storage error of one line: the call, then the service's error code
/// and message, or what kept the request from an answer. The whole cause chain (with the raw
/// response) goes to the debug log.
pub(crate) fn backend_error<E, R>(call: &str, error: SdkError<E, R>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    tracing::debug!(call, error = %DisplayErrorContext(&error), "S3 call failed");
    StorageError::Backend(format!("S3 {call}: {}", one_line(&error)))
}

/// `NoSuchBucket: The specified bucket does not exist`, or `dispatch failure: Connection
/// refused (os error 111)`.
fn one_line<E, R>(error: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(service) = error.as_service_error() {
        let code = service.code().unwrap_or("unknown error");
        return match service.message().filter(|m| !m.is_empty()) {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    // The innermost cause says what happened (a refused connection, a timeout).
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, error as &dyn std::error::Error) {
        error.to_string()
    } else {
        format!("{error}: {cause}")
    }
}

/// The HTTP status S3 answered, if it answered.
pub(crate) fn status_of<E, R: HttpStatus>(error: &SdkError<E, R>) -> Option<u16> {
    error.raw_response().map(HttpStatus::status_code)
}

/// The status of a raw response of the SDK.
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The S3 error code of a service error (e.g. `NoSuchUpload`).
pub(crate) fn error_code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// Keys under `prefix` with their last-modified time, all of them or the first `limit`.
pub(crate) async fn list_keys(
    client: &Client,
    bucket: &str,
    prefix: &str,
    limit: Option<usize>,
) -> Result<Vec<(String, Option<SystemTime>)>, StorageError> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| backend_error("ListObjectsV2", e))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                keys.push((key.to_string(), to_system_time(object.last_modified())));
            }
        }
        if limit.is_some_and(|l| keys.len() >= l) {
            keys.truncate(limit.unwrap_or(usize::MAX));
            return Ok(keys);
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return Ok(keys),
        }
    }
}

/// Multipart uploads in progress on keys starting with `prefix`: (key, upload ID, started).
pub(crate) async fn list_multipart_uploads(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, String, Option<SystemTime>)>, StorageError> {
    let mut found = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut id_marker: Option<String> = None;
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .map_err(|e| backend_error("ListMultipartUploads", e))?;
        for upload in page.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                found.push((
                    key.to_string(),
                    id.to_string(),
                    to_system_time(upload.initiated()),
                ));
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(found);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() {
            return Ok(found);
        }
    }
}

/// Multipart uploads in progress whose key starts with `prefix`: (key, upload ID).
pub(crate) async fn list_multiparts_started_before(
    client: &Client,
    bucket: &str,
    keys: &Keys,
    before: SystemTime,
) -> Result<Vec<String>, StorageError> {
    Ok(list_multipart_uploads(client, bucket, keys.prefix())
        .await?
        .into_iter()
        .filter(|(_, _, started)| started.is_some_and(|s| s < before))
        .map(|(key, _, _)| key)
        .collect())
}

pub(crate) async fn abort_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), StorageError> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(backend_error("AbortMultipartUpload", e)),
    }
}

/// Deletes `keys`; a key that is already gone is not an error.
pub(crate) async fn delete_keys(
    client: &Client,
    bucket: &str,
    keys: Vec<String>,
) -> Result<(), StorageError> {
    for key in keys {
        client
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| backend_error("DeleteObject", e))?;
    }
    Ok(())
}

/// Sends `body` as part `number` of the multipart upload `multipart` on `key`, with its
/// checksum for S3 to verify; returns what completing the upload needs of it.
pub(crate) async fn upload_part(
    client: Client,
    bucket: String,
    key: String,
    multipart: String,
    number: i32,
    body: SpooledPart,
) -> Result<PartReceipt, StorageError> {
    let sent = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(multipart)
        .part_number(number)
        .checksum_algorithm(CHECKSUM)
        .body(body.body())
        .send()
        .await
        .map_err(|e| backend_error("UploadPart", e))?;
    // The part's spool file and budget are given back now, not when its receipt is used.
    drop(body);
    let etag = sent
        .e_tag()
        .ok_or_else(|| StorageError::Backend("UploadPart gave no ETag".into()))?;
    Ok(PartReceipt {
        etag: etag.to_string(),
        checksum: sent.checksum_crc32().map(str::to_string),
    })
}
