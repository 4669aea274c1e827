//! Signed GET URLs (V4) of finished objects, answering with the download's presentation.
//! They point at GCS itself, or at the configured endpoint (an emulator), path-style.

use std::collections::HashMap;
use std::time::Duration;

use gcloud_storage::sign::{SignedURLMethod, SignedURLOptions, URLStyle};
use tusk_core::{Presentation, StorageError};

use crate::client::Bucket;

/// GCS's own host, where signed URLs point without an endpoint.
const GCS_HOST: &str = "storage.googleapis.com";

/// `host[:port]/bucket/object` on the given host.
struct PathOn(String);

impl URLStyle for PathOn {
    fn host(&self, _bucket: &str) -> String {
        self.0.clone()
    }

    fn path(&self, bucket: &str, object: &str) -> String {
        format!("{bucket}/{object}")
    }
}

pub(crate) async fn signed_get(
    bucket: &Bucket,
    endpoint: &str,
    object: &str,
    valid_for: Duration,
    presentation: &Presentation,
) -> Result<String, StorageError> {
    let (insecure, host) = match endpoint.split_once("://") {
        Some((scheme, host)) => (scheme == "http", host.to_string()),
        None => (false, GCS_HOST.to_string()),
    };
    let query = HashMap::from([
        (
            "response-content-type".to_string(),
            vec![presentation.content_type.clone()],
        ),
        (
            "response-content-disposition".to_string(),
            vec![presentation.content_disposition.clone()],
        ),
    ]);
    let options = SignedURLOptions {
        method: SignedURLMethod::GET,
        expires: valid_for,
        query_parameters: query,
        style: Box::new(PathOn(host)),
        insecure,
        ..SignedURLOptions::default()
    };
    bucket
        .client
        .signed_url(&bucket.name, object, None, None, options)
        .await
        .map_err(|e| {
            StorageError::Backend(format!(
                "signing a GET of GCS object {object}: {e} (presigned GET needs credentials \
                 that can sign: a key file, or the metadata server's account with \
                 iam.serviceAccounts.signBlob)"
            ))
        })
}
