use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// S3 storage settings, meant to be embedded in the server's configuration file.
/// Credentials are not settings: they come from the AWS default chain (environment,
/// shared profile, web identity / IRSA, container and instance metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket holding the uploads. Required.
    pub bucket: String,
    /// Prefix of every key Tusk writes, e.g. `uploads/`.
    pub prefix: String,
    /// Endpoint of an S3-compatible server (MinIO, R2, moto), e.g. `http://minio:9000`.
    /// Empty: AWS itself.
    pub endpoint: String,
    /// Region; empty takes it from the AWS chain (AWS_REGION, profile), else `us-east-1`.
    pub region: String,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (MinIO, moto).
    pub path_style: bool,
    /// Preferred part size in bytes; grown per upload so that its length (or the maximum
    /// upload size) fits in the part count.
    pub part_size: u64,
    /// The provider's smallest part but the last, bytes.
    pub min_part_size: u64,
    /// The provider's largest part number: 10,000 on AWS, fewer on some providers.
    pub max_parts: u32,
    /// Every part but the last must have the same size (Cloudflare R2).
    pub equal_parts: bool,
    /// Parts one PATCH holds at most (the one being gathered and those being sent), so one
    /// PATCH holds at most part size x this many bytes of spool.
    pub parts_in_flight: usize,
    /// Directory of the spool files parts are gathered in on their way to S3 (unnamed
    /// files, gone when sent or when the process dies), on local disk rather than tmpfs.
    /// Empty: the system's temporary directory ($TMPDIR, else /tmp).
    pub spool_dir: PathBuf,
    /// Bytes all PATCHes of this node may hold in spool files together: the disk the spool
    /// may use. A PATCH that needs more waits (not reading its body) and past `buffer_wait`
    /// gets 503 with Retry-After. At least part size x parts in flight x the PATCHes
    /// expected at once at full speed.
    pub buffer_budget: u64,
    /// How long a PATCH waits for spool budget before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub buffer_wait: Duration,
    /// Server-side encryption of the objects: empty, `AES256` or `aws:kms`.
    pub server_side_encryption: String,
    /// The KMS key for `aws:kms`; empty: the bucket's default key.
    pub sse_kms_key_id: String,
    /// Storage class of the objects, e.g. `STANDARD_IA`; empty: the bucket's default.
    pub storage_class: String,
    /// Answer GET of a finished upload with a redirect to a presigned URL of its object, so
    /// the bytes do not pass through Tusk.
    pub presigned_get: bool,
    /// How long a presigned GET URL is valid.
    #[serde(with = "humantime_serde")]
    pub presign_ttl: Duration,
    /// An unreferenced multipart upload or tail object older than this is a leftover the
    /// sweeper removes. Longer than any lease TTL.
    #[serde(with = "humantime_serde")]
    pub leftover_grace: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: String::new(),
            region: String::new(),
            path_style: false,
            part_size: 16 << 20,
            min_part_size: crate::layout::S3_MIN_PART,
            max_parts: 10_000,
            equal_parts: false,
            parts_in_flight: 4,
            spool_dir: PathBuf::new(),
            buffer_budget: 256 << 20,
            buffer_wait: Duration::from_secs(10),
            server_side_encryption: String::new(),
            sse_kms_key_id: String::new(),
            storage_class: String::new(),
            presigned_get: false,
            presign_ttl: Duration::from_secs(15 * 60),
            leftover_grace: Duration::from_secs(3600),
        }
    }
}

impl S3Settings {
    /// The spool directory in effect.
    pub fn spool_dir(&self) -> PathBuf {
        if self.spool_dir.as_os_str().is_empty() {
            std::env::temp_dir()
        } else {
            self.spool_dir.clone()
        }
    }
}
