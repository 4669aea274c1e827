//! S3 storage under the engine, against a real S3-compatible server: moto's, started here
//! on a loopback port (`pip install 'moto[server]==5.1.22'`). What is checked is what the
//! bucket holds afterwards, not only what the engine answers.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tusk_core::contract::{storage_contract, StorageFixture};
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::{
    BodyError, CreateUpload, Engine, EngineConfig, IncomingBody, PatchRequest, Presentation,
    Storage,
};
use tusk_protocol::ConcatRequest;
use tusk_store_s3::{S3Settings, S3Storage};

const MIB: usize = 1 << 20;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}): install it with pip install 'moto[server]==5.1.22'")
        });
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return moto;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("moto_server did not listen on port {port}");
}

fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        // As Tusk's own client: composite checksums cannot be checked on GET.
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

struct Setup {
    _moto: Moto,
    _dir: tempfile::TempDir,
    s3: aws_sdk_s3::Client,
    engine: Arc<Engine>,
    bucket: String,
}

async fn setup(settings: S3Settings) -> Setup {
    let moto = start_moto();
    let s3 = client(&moto.endpoint);
    let bucket = "tusk".to_string();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let settings = S3Settings {
        bucket: bucket.clone(),
        ..settings
    };
    let storage = S3Storage::new(s3.clone(), &settings, None).expect("storage");
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = EmbeddedCoordinator::open(dir.path()).await.expect("coord");
    let engine = Arc::new(Engine::new(
        Arc::new(storage),
        coord,
        EngineConfig::default(),
    ));
    Setup {
        _moto: moto,
        _dir: dir,
        s3,
        engine,
        bucket,
    }
}

fn small_parts() -> S3Settings {
    S3Settings {
        part_size: 5 * MIB as u64,
        ..S3Settings::default()
    }
}

/// Deterministic bytes that differ everywhere.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn body(bytes: &[u8]) -> IncomingBody {
    let chunks: Vec<Result<Bytes, BodyError>> = bytes
        .chunks(256 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

fn at(offset: u64) -> PatchRequest {
    PatchRequest {
        offset,
        declare_length: None,
        ends_upload: false,
        checksum: None,
        content_length: None,
        request: Default::default(),
    }
}

async fn create(
    engine: &Engine,
    length: u64,
    concat: Option<(ConcatRequest, Vec<String>)>,
) -> String {
    engine
        .create(CreateUpload {
            length: (!matches!(concat, Some((ConcatRequest::Final(_), _)))).then_some(length),
            concat,
            ..Default::default()
        })
        .await
        .expect("create")
        .id
}

async fn upload_in(engine: &Engine, id: &str, bytes: &[u8], pieces: &[usize]) {
    let mut offset = 0usize;
    for &len in pieces.iter().cycle() {
        if offset == bytes.len() {
            break;
        }
        let end = (offset + len).min(bytes.len());
        let record = engine
            .patch(id, at(offset as u64), body(&bytes[offset..end]))
            .await
            .expect("patch");
        assert_eq!(record.offset, end as u64);
        offset = end;
    }
}

async fn read(engine: &Engine, id: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = engine.read(id, range).await.expect("read");
    while let Some(bytes) = stream.next().await {
        out.extend_from_slice(&bytes.expect("bytes"));
    }
    out
}

async fn object(setup: &Setup, key: &str) -> Vec<u8> {
    setup
        .s3
        .get_object()
        .bucket(&setup.bucket)
        .key(key)
        .send()
        .await
        .expect("get object")
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
        .to_vec()
}

/// Everything in the bucket: object keys and multipart uploads in progress.
async fn bucket_listing(setup: &Setup) -> (Vec<String>, Vec<String>) {
    let objects = setup
        .s3
        .list_objects_v2()
        .bucket(&setup.bucket)
        .send()
        .await
        .expect("list objects");
    let multiparts = setup
        .s3
        .list_multipart_uploads()
        .bucket(&setup.bucket)
        .send()
        .await
        .expect("list multipart uploads");
    (
        objects
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect(),
        multiparts
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect(),
    )
}

/// Tail objects are removed in the background after the commit that folds them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_odd_patches_give_exact_bytes_and_leave_only_the_object() {
    let setup = setup(small_parts()).await;
    let bytes = data(17 * MIB + 12_345, 1);
    let id = create(&setup.engine, bytes.len() as u64, None).await;
    // 1 KiB, 100 KiB, 4.9 MiB and an odd size, over and over: tails are folded into parts
    // at every 5 MiB boundary.
    upload_in(
        &setup.engine,
        &id,
        &bytes,
        &[1024, 100 << 10, 4_900_000, 777_777],
    )
    .await;
    settle().await;
    assert_eq!(read(&setup.engine, &id, 0..bytes.len() as u64).await, bytes);
    assert_eq!(
        read(&setup.engine, &id, 5_000_000..9_000_001).await,
        &bytes[5_000_000..9_000_001]
    );
    assert_eq!(
        object(&setup, &id).await,
        bytes,
        "the object holds the upload"
    );
    let (objects, multiparts) = bucket_listing(&setup).await;
    assert_eq!(objects, vec![id.clone()], "no tail left behind");
    assert!(
        multiparts.is_empty(),
        "no multipart upload left: {multiparts:?}"
    );
}

/// Many small PATCHes inside one part leave a bounded number of tails: past 16, a PATCH
/// merges the trailing ones into its own (each byte is copied again only when the tail it
/// lands in at least doubles). The bytes stay exact, and the folded tails are removed.
/// Before, each PATCH left one more tail, and the PATCH that filled the part read them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_patches_inside_a_part_leave_few_tails() {
    let setup = setup(small_parts()).await;
    let bytes = data(200 * 1000 + 7, 9);
    let id = create(&setup.engine, 6 * MIB as u64, None).await;
    upload_in(&setup.engine, &id, &bytes, &[1000]).await;
    let record = setup.engine.view(&id).await.expect("view").record;
    assert!(
        record.segments.len() <= 17,
        "201 PATCHes inside one part left {} segments",
        record.segments.len()
    );
    // The folded tails go once the PATCHes stop taking the lease first.
    let mut objects = Vec::new();
    for _ in 0..50 {
        objects = bucket_listing(&setup).await.0;
        if objects.len() <= 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        objects.len() <= 17,
        "201 PATCHes inside one part left {} tail objects 10 s later",
        objects.len()
    );
    let mut rest = data(6 * MIB - bytes.len(), 10);
    let finished = setup
        .engine
        .patch(&id, at(bytes.len() as u64), body(&rest))
        .await
        .expect("the PATCH that fills the part and finishes");
    assert_eq!(finished.offset, 6 * MIB as u64);
    let mut whole = bytes;
    whole.append(&mut rest);
    assert_eq!(read(&setup.engine, &id, 0..whole.len() as u64).await, whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_are_not_readable_and_termination_leaves_nothing() {
    let setup = setup(small_parts()).await;
    let bytes = data(7 * MIB, 2);
    let id = create(&setup.engine, 10 * MIB as u64, None).await;
    upload_in(&setup.engine, &id, &bytes, &[bytes.len()]).await;
    let (objects, multiparts) = bucket_listing(&setup).await;
    assert_eq!(multiparts, vec![id.clone()], "one part sent");
    assert_eq!(objects.len(), 1, "one tail: {objects:?}");
    let refused = setup.engine.read(&id, 0..10).await;
    assert!(matches!(refused, Err(tusk_core::Error::NotFinished)));
    setup
        .engine
        .terminate(&id, &Default::default())
        .await
        .expect("terminate");
    let (objects, multiparts) = bucket_listing(&setup).await;
    assert!(
        objects.is_empty() && multiparts.is_empty(),
        "{objects:?} {multiparts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concatenation_copies_big_partials_inside_s3() {
    let setup = setup(small_parts()).await;
    let parts = [
        data(6 * MIB, 3),
        data(MIB, 4),
        data(11, 5),
        data(8 * MIB + 3, 6),
    ];
    let mut ids = Vec::new();
    for part in &parts {
        let id = create(
            &setup.engine,
            part.len() as u64,
            Some((ConcatRequest::Partial, vec![])),
        )
        .await;
        upload_in(&setup.engine, &id, part, &[part.len()]).await;
        ids.push(id);
    }
    let urls = ids.iter().map(|id| format!("/files/{id}")).collect();
    let id = create(
        &setup.engine,
        0,
        Some((ConcatRequest::Final(urls), ids.clone())),
    )
    .await;
    let expected: Vec<u8> = parts.concat();
    let view = setup.engine.view(&id).await.expect("view");
    assert_eq!(view.record.offset, expected.len() as u64);
    assert_eq!(
        read(&setup.engine, &id, 0..expected.len() as u64).await,
        expected
    );
    assert_eq!(object(&setup, &id).await, expected);
    // Removing the partials does not touch the final object.
    for partial in &ids {
        setup
            .engine
            .terminate(partial, &Default::default())
            .await
            .expect("terminate partial");
    }
    assert_eq!(object(&setup, &id).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_leftovers_no_record_names() {
    let setup = setup(S3Settings {
        leftover_grace: Duration::from_millis(10),
        ..small_parts()
    })
    .await;
    let bytes = data(6 * MIB, 7);
    let live = create(&setup.engine, 20 * MIB as u64, None).await;
    upload_in(&setup.engine, &live, &bytes, &[bytes.len()]).await;
    // What a crashed writer leaves: a multipart upload and a tail nobody committed, on an
    // upload that exists and on one that never did. The crashed writer's token is older than
    // any the sweeper's lease can have.
    let ghost = "ghostghostghostghostghost";
    for id in [live.as_str(), ghost] {
        setup
            .s3
            .create_multipart_upload()
            .bucket(&setup.bucket)
            .key(id)
            .send()
            .await
            .expect("stray multipart upload");
        setup
            .s3
            .put_object()
            .bucket(&setup.bucket)
            .key(format!(".tails/{id}/0000000000000000"))
            .body(Bytes::from_static(b"zombie").into())
            .send()
            .await
            .expect("stray tail");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let removed = setup.engine.sweep_leftovers().await.expect("sweep");
    assert_eq!(removed, 4, "two multipart uploads and two tails");
    let (objects, multiparts) = bucket_listing(&setup).await;
    assert_eq!(
        multiparts,
        vec![live.clone()],
        "the committed multipart upload stays"
    );
    assert_eq!(objects.len(), 1, "the committed tail stays: {objects:?}");
    // And the upload still finishes with exact bytes.
    let rest = data(14 * MIB, 8);
    setup
        .engine
        .patch(&live, at(bytes.len() as u64), body(&rest))
        .await
        .expect("finish");
    let expected = [bytes, rest].concat();
    assert_eq!(object(&setup, &live).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_point_at_the_finished_object() {
    let setup = setup(small_parts()).await;
    let id = create(&setup.engine, 5, None).await;
    upload_in(&setup.engine, &id, b"hello", &[5]).await;
    let record = setup.engine.view(&id).await.expect("view").record;
    let url = setup
        .engine
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
        .expect("S3 can presign");
    assert!(
        url.contains(&id) && url.contains("X-Amz-Signature"),
        "{url}"
    );
    // The URL works on its own, without credentials. It asks S3 to answer with the
    // presented headers (moto ignores that request; S3 honours it).
    assert!(url.contains("response-content-type=text%2Fplain"), "{url}");
    assert!(url.contains("response-content-disposition=inline"), "{url}");
    let answer = http_get(&url);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
    // Zero-length uploads still get their (empty) object.
    let empty = create(&setup.engine, 0, None).await;
    assert!(object(&setup, &empty).await.is_empty());
}

/// A plain HTTP/1.0 GET of an `http://host:port/path?query` URL: the whole answer as text.
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

/// Stores on one moto server, each under a fresh prefix of one bucket.
struct S3Stores {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

#[async_trait::async_trait]
impl StorageFixture for S3Stores {
    async fn storage(&self) -> Arc<dyn Storage> {
        let settings = S3Settings {
            bucket: self.bucket.clone(),
            prefix: format!("{}/", tusk_core::contract::new_id()),
            leftover_grace: Duration::ZERO,
            ..small_parts()
        };
        let _ = &self.moto;
        Arc::new(S3Storage::new(self.s3.clone(), &settings, None).expect("storage"))
    }

    fn reads_unfinished(&self) -> bool {
        false
    }

    /// Objects (the finished object and tails) and multipart uploads naming the upload.
    async fn stored(&self, _storage: &dyn Storage, upload: &str) -> Vec<String> {
        let objects = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list objects");
        let multiparts = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list multipart uploads");
        let mut found: Vec<String> = objects
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .chain(
                multiparts
                    .uploads()
                    .iter()
                    .filter_map(|u| u.upload_id().zip(u.key()).map(|(_, key)| key)),
            )
            .filter(|key| key.contains(upload))
            .map(str::to_string)
            .collect();
        found.sort();
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_storage_contract() {
    let moto = start_moto();
    let s3 = client(&moto.endpoint);
    let bucket = "contract".to_string();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    storage_contract(&S3Stores { moto, s3, bucket }).await;
}
