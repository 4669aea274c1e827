//! S3 for the end-to-end tests: a real S3-compatible server on loopback (moto's server,
//! pinned to 5.1.x), a client that looks into its bucket ([`S3Inspector`]), the
//! [`S3Storage`] half (nodes storing bytes in one bucket), and [`S3Redis`], the name the
//! cluster tests give it with Redis.
//!
//! moto must be installed: `pip install 'moto[server]==5.1.22'` (tests/run.sh does this). A
//! missing or other moto fails the test with that command; nothing is skipped. The server
//! runs as `python3 -m moto.server` (or with the interpreter of a `moto_server` script, or
//! of `TUSK_TEST_PYTHON` when set).
//!
//! How a node lays out an upload in the bucket (what the inspector checks): a finished upload
//! is the object `<prefix><id>`; an unfinished one is the parts of one S3 multipart upload on
//! the key `<prefix><id>` plus small tail objects whose keys name the upload (e.g.
//! `<prefix>.tails/<id>/<16 hex digits>`); after termination (and sweeping) nothing of it is
//! left, neither an object nor a multipart upload. The inspector counts every key under the
//! prefix that contains the upload id as the upload's (ids are random and 22+ characters), so
//! its checks hold whatever the exact names of the tails are.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use aws_sdk_s3::error::DisplayErrorContext;
use sha2::Digest as _;
use tokio::process::{Child, Command};

use crate::cluster::ClusterBackend;
use crate::deploy::{Pair, Shared, SharedByNodes, StorageHalf};
use crate::harness::BoxFuture;
use crate::process::{free_port, tail, unique_name, wait_listening};
use crate::redis::Redis;

/// The moto release the S3 tests run against (5.2.x is known not to work).
pub const MOTO_VERSION: &str = "5.1.22";

/// The command that installs it, quoted in every "moto is missing" failure.
pub const MOTO_INSTALL: &str = "pip install 'moto[server]==5.1.22'";

/// Region and credentials every node and the inspector use (moto accepts any).
pub const AWS_REGION: &str = "us-east-1";

/// The environment a node needs to reach moto through the AWS default credential chain.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", AWS_REGION),
        // Nothing to find there on a test machine; don't wait for it.
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// moto

/// How to run moto's server: `python -m moto.server` with the interpreter that imports it.
#[derive(Clone, Debug)]
struct MotoCommand {
    python: PathBuf,
    version: String,
}

/// Finds a Python that imports `moto.server` (python3 on PATH, or the interpreter of a
/// `moto_server` script), once per test process.
fn moto_command() -> Result<MotoCommand> {
    static FOUND: OnceLock<std::result::Result<MotoCommand, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| find_moto().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_moto() -> Result<MotoCommand> {
    let mut pythons: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TUSK_TEST_PYTHON") {
        pythons.push(PathBuf::from(p));
    }
    pythons.extend(on_path("python3"));
    // A `moto_server` console script names its interpreter in its first line.
    let script = on_path("moto_server");
    if let Some(script) = &script {
        let first = std::fs::read_to_string(script)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default();
        if let Some(interp) = first.strip_prefix("#!") {
            let interp = interp.trim();
            if interp.contains("python") && !interp.contains(' ') {
                pythons.push(PathBuf::from(interp));
            }
        }
    }
    let mut tried = Vec::new();
    for python in pythons {
        let out = std::process::Command::new(&python)
            .args(["-c", "import moto, moto.server; print(moto.__version__)"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
                ensure!(
                    version.starts_with("5.1."),
                    "{} imports moto {version}, but the S3 tests need moto 5.1.x (5.2.x does \
                     not work with them); install with: {MOTO_INSTALL}",
                    python.display()
                );
                return Ok(MotoCommand { python, version });
            }
            Ok(out) => tried.push(format!(
                "{}: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("fails")
            )),
            Err(e) => tried.push(format!("{}: {e}", python.display())),
        }
    }
    bail!(
        "moto's S3 server is not installed (the S3 tests start one); install with: \
         {MOTO_INSTALL} (tests/run.sh does this). moto_server on PATH: {}; tried: {}",
        script
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| "none".into()),
        if tried.is_empty() {
            "no python3 on PATH".to_string()
        } else {
            tried.join("; ")
        }
    )
}

/// moto's S3 server (`python -m moto.server`) on a free loopback port, its log in a
/// directory; killed when dropped. Everything it stores is in its memory (and temp files).
pub struct MotoServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// The directory holding its log (`moto.log`).
    pub dir: PathBuf,
    /// The moto version running.
    pub version: String,
}

impl MotoServer {
    /// Starts moto with its log in `dir` (created if needed) and waits until it answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        let command = moto_command()?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..3 {
            let mut moto = MotoServer {
                child: None,
                port: free_port()?,
                dir: dir.to_path_buf(),
                version: command.version.clone(),
            };
            match moto.spawn(&command).await {
                Ok(()) => return Ok(moto),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("moto did not start")))
    }

    /// `http://127.0.0.1:PORT`, what `--s3-endpoint` points at.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The path of its log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("moto.log")
    }

    /// The last lines of its log, for messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    async fn spawn(&mut self, command: &MotoCommand) -> Result<()> {
        let log = std::fs::File::create(self.log())?;
        let mut child = Command::new(&command.python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} -m moto.server", command.python.display()))?;
        let addr = format!("127.0.0.1:{}", self.port);
        wait_listening(&mut child, &addr, "moto", &self.log()).await?;
        self.child = Some(child);
        // Listening is not answering yet: wait for ListBuckets to succeed.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match http.get(format!("{}/", self.endpoint())).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => bail!(
                    "moto on {addr} does not answer ListBuckets ({:?}); its log:\n{}",
                    other.map(|r| r.status()),
                    self.log_tail(30)
                ),
            }
        }
    }

    /// A client for `bucket` on this server (the bucket need not exist yet).
    pub async fn inspector(&self, bucket: &str) -> Result<S3Inspector> {
        S3Inspector::connect(&self.endpoint(), bucket).await
    }

    /// Creates `bucket` and returns a client for it.
    pub async fn create_bucket(&self, bucket: &str) -> Result<S3Inspector> {
        let s3 = self.inspector(bucket).await?;
        s3.create_bucket().await?;
        Ok(s3)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Looking into the bucket

/// One S3 multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartUpload {
    /// Its object key.
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
}

/// Everything in the bucket that belongs to one tus upload: the objects under the prefix
/// whose key contains the upload id (its final object `<prefix><id>`, its tails), and the
/// multipart uploads on such keys.
#[derive(Clone, Debug, Default)]
pub struct UploadObjects {
    /// The key of the final object, `<prefix><id>`.
    pub key: String,
    /// Every object key under the prefix that contains the upload id.
    pub keys: Vec<String>,
    /// Multipart uploads on such keys.
    pub multipart: Vec<MultipartUpload>,
}

impl UploadObjects {
    /// Whether nothing of the upload is in the bucket.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.multipart.is_empty()
    }

    /// Whether the final object `<prefix><id>` exists.
    pub fn has_object(&self) -> bool {
        self.keys.contains(&self.key)
    }

    /// The objects of the upload other than its final object: its tails.
    pub fn tails(&self) -> Vec<&String> {
        self.keys.iter().filter(|k| **k != self.key).collect()
    }
}

impl fmt::Display for UploadObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "objects {:?}, multipart uploads {:?}",
            self.keys,
            self.multipart
                .iter()
                .map(|m| format!("{} ({})", m.key, m.upload_id))
                .collect::<Vec<_>>()
        )
    }
}

/// A plain S3 client on one bucket (path-style, static test credentials), for checking what
/// the nodes left there.
#[derive(Clone)]
pub struct S3Inspector {
    client: aws_sdk_s3::Client,
    /// The bucket.
    pub bucket: String,
}

fn sdk_error<E>(what: &str, e: E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    anyhow!("{what}: {}", DisplayErrorContext(&e))
}

impl S3Inspector {
    /// A client for `bucket` at `endpoint` (`http://127.0.0.1:PORT`).
    pub async fn connect(endpoint: &str, bucket: &str) -> Result<Self> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(AWS_REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "tusk-tests",
            ))
            .endpoint_url(endpoint)
            .load()
            .await;
        // The tests compare sha256 themselves; the SDK's own response checksum validation
        // would reject moto's whole-object CRC of a multipart object.
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Ok(S3Inspector {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: bucket.to_string(),
        })
    }

    /// Creates the bucket.
    pub async fn create_bucket(&self) -> Result<()> {
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("CreateBucket {}", self.bucket), e))?;
        Ok(())
    }

    /// Every object key under `prefix`, sorted.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(&format!("ListObjectsV2 {prefix:?}"), e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Every multipart upload in progress on a key under `prefix`.
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| sdk_error(&format!("ListMultipartUploads {prefix:?}"), e))?;
            for u in out.uploads() {
                uploads.push(MultipartUpload {
                    key: u.key().unwrap_or_default().to_string(),
                    upload_id: u.upload_id().unwrap_or_default().to_string(),
                });
            }
            match (
                out.is_truncated(),
                out.next_key_marker(),
                out.next_upload_id_marker(),
            ) {
                (Some(true), Some(k), id) => {
                    key_marker = Some(k.to_string());
                    id_marker = id.map(str::to_string);
                }
                _ => break,
            }
        }
        // A server may ignore the prefix (moto filters it; be sure).
        uploads.retain(|u| u.key.starts_with(prefix));
        Ok(uploads)
    }

    /// An object's bytes (None when there is no such key).
    pub async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut body) = self.open(key).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| sdk_error(&format!("GetObject {key}: reading the body"), e))?
        {
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// An object's length and hex sha256, streamed (None when there is no such key).
    pub async fn object_sha256(&self, key: &str) -> Result<Option<(u64, String)>> {
        let Some(mut body) = self.open(key).await? else {
            return Ok(None);
        };
        let mut hasher = sha2::Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| sdk_error(&format!("GetObject {key}: reading the body"), e))?
        {
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some((len, hex::encode(hasher.finalize()))))
    }

    async fn open(&self, key: &str) -> Result<Option<aws_sdk_s3::primitives::ByteStream>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(sdk_error(&format!("GetObject {key}"), e)),
        }
    }

    /// What the bucket holds of upload `id` under `prefix`: every object and multipart
    /// upload whose key under `prefix` contains `id`.
    pub async fn upload_objects(&self, prefix: &str, id: &str) -> Result<UploadObjects> {
        ensure!(
            id.len() >= 16,
            "upload id {id:?} is too short to tell its objects apart"
        );
        let key = format!("{prefix}{id}");
        let mine = |k: &str| k.strip_prefix(prefix).is_some_and(|rest| rest.contains(id));
        let keys = self
            .list_keys(prefix)
            .await?
            .into_iter()
            .filter(|k| mine(k))
            .collect();
        let multipart = self
            .list_multipart_uploads(prefix)
            .await?
            .into_iter()
            .filter(|u| mine(&u.key))
            .collect();
        Ok(UploadObjects {
            key,
            keys,
            multipart,
        })
    }

    /// Fails unless nothing of upload `id` is in the bucket: no object under `prefix` whose
    /// key contains the id, no multipart upload on such a key.
    pub async fn assert_nothing_left(&self, prefix: &str, id: &str) -> Result<()> {
        let objects = self.upload_objects(prefix, id).await?;
        ensure!(
            objects.is_empty(),
            "S3: expected nothing left of upload {id} in bucket {}, found {objects}",
            self.bucket
        );
        Ok(())
    }

    /// Polls until nothing of upload `id` is in the bucket, for at most `within`.
    pub async fn wait_nothing_left(&self, prefix: &str, id: &str, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let objects = self.upload_objects(prefix, id).await?;
            if objects.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "S3: {within:?} after it should be gone, upload {id} still has in bucket \
                     {}: {objects}",
                    self.bucket
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls (for at most `within`) until the bucket holds upload `id` as a finished upload
    /// and nothing else of it: the object `<prefix><id>` of `len` bytes with sha256 `sha`, no
    /// multipart upload, no tail or other object whose key contains the id.
    pub async fn wait_finished_clean(
        &self,
        prefix: &str,
        id: &str,
        len: u64,
        sha: &str,
        within: Duration,
    ) -> Result<()> {
        let key = format!("{prefix}{id}");
        let got = self
            .object_sha256(&key)
            .await?
            .with_context(|| format!("S3: the finished upload {id} has no object {key}"))?;
        ensure!(
            got == (len, sha.to_string()),
            "S3: object {key} holds {} bytes with sha256 {}, the client sent {len} bytes with \
             sha256 {sha}",
            got.0,
            got.1
        );
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let objects = self.upload_objects(prefix, id).await?;
            if objects.keys == [key.clone()] && objects.multipart.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "S3: {within:?} after upload {id} finished the bucket should hold only the \
                     object {key}, but it has: {objects} ({} tail objects)",
                    objects.tails().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Whatever was cleaned up meanwhile, the object is still the same.
        let again = self.object_sha256(&key).await?;
        ensure!(
            again.as_ref() == Some(&got),
            "S3: object {key} changed while its leftovers were removed: now {again:?}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The storage half

/// The bucket a cluster's nodes share, on the moto server started for it.
pub struct S3Bucket {
    /// The moto server.
    pub moto: MotoServer,
    /// The bucket's name.
    pub bucket: String,
    /// `--s3-object-prefix` of every node, e.g. `tusk-1234-0-0badcafe/`.
    pub prefix: String,
    /// A client on the bucket.
    pub inspector: S3Inspector,
}

impl S3Bucket {
    /// Starts moto with its log in `dir` and creates a fresh bucket; picks a fresh prefix.
    pub async fn start(dir: &Path) -> Result<Self> {
        let moto = MotoServer::start(dir).await?;
        let bucket = unique_name("tusk-test-");
        let inspector = moto.create_bucket(&bucket).await?;
        Ok(S3Bucket {
            moto,
            bucket,
            prefix: unique_name("uploads-") + "/",
            inspector,
        })
    }

    /// The key of upload `id`'s object.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// What the bucket holds of upload `id`.
    pub async fn upload_objects(&self, id: &str) -> Result<UploadObjects> {
        self.inspector.upload_objects(&self.prefix, id).await
    }

    /// See [`S3Inspector::wait_nothing_left`].
    pub async fn wait_nothing_left(&self, id: &str, within: Duration) -> Result<()> {
        self.inspector
            .wait_nothing_left(&self.prefix, id, within)
            .await
    }

    /// See [`S3Inspector::wait_finished_clean`]; `data` is what the client sent.
    pub async fn wait_finished_clean(&self, id: &str, data: &[u8], within: Duration) -> Result<()> {
        let sha = hex::encode(sha2::Sha256::digest(data));
        self.inspector
            .wait_finished_clean(&self.prefix, id, data.len() as u64, &sha, within)
            .await
    }
}

/// Bytes in one S3 bucket on moto (a fresh bucket and object prefix per deployment), every
/// node using it.
///
/// A GET of an unfinished upload answers 409 on this storage (an unfinished multipart upload
/// cannot be read), so [`StorageHalf::reads_unfinished`] is false.
#[derive(Clone, Copy, Debug)]
pub struct S3Storage {
    /// `--s3-part-size` in bytes; None keeps the node's default (16 MiB).
    pub part_size: Option<u64>,
    /// `TUSK_STORAGE__S3__LEFTOVER_GRACE` (e.g. `3s`): how old a tail object or multipart
    /// upload no record refers to must be for the sweeper to remove it; None keeps the
    /// default. The node requires it to be longer than `--lease-ttl`.
    pub leftover_grace: Option<&'static str>,
}

impl S3Storage {
    /// The node's defaults: 16 MiB parts, the default leftover grace.
    pub const DEFAULT: S3Storage = S3Storage {
        part_size: None,
        leftover_grace: None,
    };
}

impl StorageHalf for S3Storage {
    fn name(&self) -> &'static str {
        "s3"
    }
    fn reads_unfinished(&self) -> bool {
        false
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let s3 = S3Bucket::start(&dir.join("moto")).await?;
            let mut node_args: Vec<String> = vec![
                "--storage".into(),
                "s3".into(),
                "--s3-bucket".into(),
                s3.bucket.clone(),
                "--s3-endpoint".into(),
                s3.moto.endpoint(),
                "--s3-object-prefix".into(),
                s3.prefix.clone(),
                "--s3-path-style".into(),
            ];
            if let Some(size) = self.part_size {
                node_args.extend(["--s3-part-size".into(), size.to_string()]);
            }
            let mut env = aws_env();
            if let Some(grace) = self.leftover_grace {
                env.push(("TUSK_STORAGE__S3__LEFTOVER_GRACE".into(), grace.to_string()));
            }
            Ok(Shared {
                node_args,
                env,
                s3: Some(s3),
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for S3Storage {}

/// [`S3Storage`] with [`Redis`] under the name and fields the S3 cluster tests use:
/// `S3Redis { part_size, leftover_grace }` is `Pair { storage: S3Storage { .. }, coordinator:
/// Redis }`.
#[derive(Clone, Copy, Debug)]
pub struct S3Redis {
    /// See [`S3Storage::part_size`].
    pub part_size: Option<u64>,
    /// See [`S3Storage::leftover_grace`].
    pub leftover_grace: Option<&'static str>,
}

impl S3Redis {
    /// The node's defaults: 16 MiB parts, the default leftover grace.
    pub const DEFAULT: S3Redis = S3Redis {
        part_size: None,
        leftover_grace: None,
    };

    /// The pair this names.
    pub const fn pair(self) -> Pair<S3Storage, Redis> {
        Pair {
            storage: S3Storage {
                part_size: self.part_size,
                leftover_grace: self.leftover_grace,
            },
            coordinator: Redis,
        }
    }
}

impl ClusterBackend for S3Redis {
    fn name(&self) -> String {
        self.pair().name()
    }
    fn reads_unfinished(&self) -> bool {
        self.pair().storage.reads_unfinished()
    }
    fn start_shared<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move { self.pair().start_shared(dir).await })
    }
}
