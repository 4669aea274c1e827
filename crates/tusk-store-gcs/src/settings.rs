use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Google Cloud Storage settings, meant to be embedded in the server's configuration file.
/// Credentials are not settings: they come from Google's default chain
/// (GOOGLE_APPLICATION_CREDENTIALS, workload identity on GKE, the metadata server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsSettings {
    /// The bucket holding the uploads. Required.
    pub bucket: String,
    /// Prefix of every object name Tusk writes, e.g. `uploads/`.
    pub prefix: String,
    /// Endpoint of a GCS-compatible server (an emulator), e.g. `http://fake-gcs:4443`.
    /// Empty: Google Cloud Storage itself.
    pub endpoint: String,
    /// Send no credentials (emulators); otherwise Google's default chain must find some.
    pub anonymous: bool,
    /// Bytes of a PATCH gathered in memory before they are sent as one chunk object.
    pub chunk_size: u64,
    /// Chunks one PATCH holds at most (the one being gathered and those being sent), so a
    /// PATCH holds at most chunk size x this many bytes of memory.
    pub chunks_in_flight: usize,
    /// Answer GET of a finished upload with a redirect to a signed URL of its object, so the
    /// bytes do not pass through Tusk. Signing needs credentials that can sign: a key file,
    /// or on Google Cloud the metadata server's account with iam.serviceAccounts.signBlob.
    pub presigned_get: bool,
    /// How long a signed GET URL is valid (at most 7 days).
    #[serde(with = "humantime_serde")]
    pub presign_ttl: Duration,
    /// A chunk object no record names, older than this, is a leftover the sweeper removes.
    /// Longer than any lease TTL.
    #[serde(with = "humantime_serde")]
    pub leftover_grace: Duration,
}

impl Default for GcsSettings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: String::new(),
            anonymous: false,
            chunk_size: 8 << 20,
            chunks_in_flight: 3,
            presigned_get: false,
            presign_ttl: Duration::from_secs(15 * 60),
            leftover_grace: Duration::from_secs(3600),
        }
    }
}
