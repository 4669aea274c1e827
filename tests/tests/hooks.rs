//! HTTP hooks against a real receiver: rejections and changes reach the client, post-finish
//! arrives once per finished upload (also across a cluster), post-finish and post-terminate
//! survive a node killed before the receiver acknowledged them, and a hook server that is
//! down or slow costs no bytes and no time, and an https receiver is reached over verified
//! TLS only.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use reqwest::Method;
use serde_json::Value;
use tusk_tests::cluster::{Balancer, Cluster, FsRedis};
use tusk_tests::conformance::util::{random_bytes, sha256_hex, Ctx};
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::tls::{ConnectionLog, Opened, SelfSigned};

type Behaviour = Arc<dyn Fn(&Value) -> (u16, String) + Send + Sync>;

/// A hook receiver on a free port that records every call and answers as told.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct ReceiverState {
    calls: Arc<Mutex<Vec<Value>>>,
    behaviour: Behaviour,
    delay: Duration,
    /// Events whose next call is never answered (each once): the sender waits until it
    /// gives up or dies.
    hold: Arc<Mutex<HashSet<String>>>,
}

async fn receive(
    State(state): State<ReceiverState>,
    raw: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    state.calls.lock().expect("calls").push(body.clone());
    let event = body["event"].as_str().unwrap_or_default();
    if state.hold.lock().expect("hold").remove(event) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(state.delay).await;
    let (status, answer) = (state.behaviour)(&body);
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK),
        answer,
    )
}

impl Receiver {
    async fn start(delay: Duration, behaviour: Behaviour) -> Result<Self> {
        Self::start_holding(delay, behaviour, &[]).await
    }

    /// A receiver that never answers the first call of each event in `hold`.
    async fn start_holding(delay: Duration, behaviour: Behaviour, hold: &[&str]) -> Result<Self> {
        let (app, calls) = Self::app(delay, behaviour, hold);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, calls })
    }

    /// A receiver at an https URL presenting `cert`'s certificate; the log says how each
    /// connection to it began.
    async fn start_tls(cert: &SelfSigned, behaviour: Behaviour) -> Result<(Self, ConnectionLog)> {
        let (app, calls) = Self::app(Duration::ZERO, behaviour, &[]);
        let listener = cert.listen().await?;
        let url = format!("https://{}/hooks", listener.local_addr()?);
        let log = listener.log();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((Self { url, calls }, log))
    }

    fn app(
        delay: Duration,
        behaviour: Behaviour,
        hold: &[&str],
    ) -> (Router, Arc<Mutex<Vec<Value>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            calls: calls.clone(),
            behaviour,
            delay,
            hold: Arc::new(Mutex::new(hold.iter().map(|e| e.to_string()).collect())),
        };
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(state);
        (app, calls)
    }

    fn calls(&self, event: &str) -> Vec<Value> {
        let calls = self.calls.lock().expect("calls");
        calls
            .iter()
            .filter(|c| c["event"] == event)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `done` holds for the calls received.
    async fn wait_for(&self, within: Duration, done: impl Fn(&Receiver) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done(self)
    }
}

/// One node sending the `events` hooks to `endpoint`.
async fn hooked_node(endpoint: &str, events: &str) -> Result<TestServer> {
    let args = ["--hooks-http", endpoint, "--hooks-enabled-events", events];
    TestServer::start(&FsEmbedded, &args).await
}

fn allow_all() -> Behaviour {
    Arc::new(|_| (200, String::new()))
}

fn filename(call: &Value) -> Option<&str> {
    call["upload"]["metadata"]["filename"].as_str()
}

#[tokio::test]
async fn a_pre_create_rejection_reaches_the_client() -> Result<()> {
    let receiver = Receiver::start(
        Duration::ZERO,
        Arc::new(|call: &Value| match filename(call) {
            Some(name) if name.ends_with(".exe") => (
                200,
                r#"{"reject":true,"status":403,"body":"no executables here"}"#.into(),
            ),
            _ => (200, String::new()),
        }),
    )
    .await?;
    let server = hooked_node(&receiver.url, "pre-create").await?;
    let t = Ctx::new(&server)?;
    // filename: setup.exe
    let refused = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "5")
                .header("Upload-Metadata", "filename c2V0dXAuZXhl"),
            "POST",
        )
        .await?;
    ensure!(
        refused.status() == 403,
        "a rejected creation answered {}",
        refused.status()
    );
    let body = refused.text().await?;
    ensure!(
        body.trim() == "no executables here",
        "the hook's body did not reach the client: {body:?}"
    );
    // filename: notes.txt
    let allowed = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "5")
                .header("Upload-Metadata", "filename bm90ZXMudHh0"),
            "POST",
        )
        .await?;
    ensure!(
        allowed.status() == 201,
        "an allowed creation answered {}",
        allowed.status()
    );
    ensure!(
        receiver.calls("pre-create").len() == 2,
        "pre-create calls: {:?}",
        receiver.calls("pre-create")
    );
    let admin = server.admin.clone().context("no admin address")?;
    let scrape = reqwest::get(format!("{admin}metrics"))
        .await?
        .text()
        .await?;
    for (series, want) in [
        (
            r#"tusk_hook_calls_total{event="pre-create",outcome="rejected"} "#,
            "1",
        ),
        (
            r#"tusk_hook_calls_total{event="pre-create",outcome="ok"} "#,
            "1",
        ),
    ] {
        let got = scrape.lines().find_map(|l| l.strip_prefix(series));
        ensure!(
            got == Some(want),
            "{series}: scraped {got:?}, expected {want}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_pre_create_change_of_metadata_shows_in_head() -> Result<()> {
    let receiver = Receiver::start(
        Duration::ZERO,
        Arc::new(|_| {
            (
                200,
                r#"{"change":{"metadata":{"owner":"alice","filename":"renamed.txt"}}}"#.into(),
            )
        }),
    )
    .await?;
    let server = hooked_node(&receiver.url, "pre-create").await?;
    let t = Ctx::new(&server)?;
    let url = t
        .create_with(&[
            ("Upload-Length", "3"),
            ("Upload-Metadata", "filename YS50eHQ="),
        ])
        .await?;
    let head = t.head_ok(&url).await?;
    let metadata = head
        .headers()
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .context("no Upload-Metadata on HEAD")?;
    // filename renamed.txt, owner alice
    ensure!(
        metadata == "filename cmVuYW1lZC50eHQ=,owner YWxpY2U=",
        "HEAD shows Upload-Metadata {metadata:?}, not the hook's change"
    );
    Ok(())
}

/// Uploads `count` files in three PATCHes each through `t`; returns (url, size) pairs.
async fn upload_in_three_patches(t: &Ctx, count: usize) -> Result<Vec<(String, usize)>> {
    let mut uploads = Vec::new();
    for i in 0..count {
        let data = random_bytes(30_000 + i);
        let url = t.create(data.len() as u64).await?;
        let mut offset = 0;
        for chunk in data.chunks(data.len() / 3 + 1) {
            offset = t.patch_ok(&url, offset, chunk.to_vec()).await?;
        }
        ensure!(
            t.download(&url).await? == data,
            "upload {i} came back different"
        );
        uploads.push((url, data.len()));
    }
    Ok(uploads)
}

fn id_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// Every finished upload gets exactly one post-finish, with the idempotency key of its
/// final offset.
async fn post_finish_once(receiver: &Receiver, uploads: &[(String, usize)]) -> Result<()> {
    let all_arrived = receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.calls("post-finish").len() >= uploads.len()
        })
        .await;
    ensure!(
        all_arrived,
        "only {} post-finish of {}",
        receiver.calls("post-finish").len(),
        uploads.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // let any duplicate arrive
    let finishes = receiver.calls("post-finish");
    for (url, size) in uploads {
        let id = id_of(url);
        let mine: Vec<_> = finishes
            .iter()
            .filter(|c| c["upload"]["id"] == id)
            .collect();
        ensure!(
            mine.len() == 1,
            "upload {id} got {} post-finish hooks",
            mine.len()
        );
        let key = mine[0]["idempotency_key"].as_str().unwrap_or_default();
        ensure!(
            key == format!("{id}:post-finish:{size}"),
            "idempotency key {key:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn post_finish_arrives_once_per_finished_upload() -> Result<()> {
    let receiver = Receiver::start(Duration::ZERO, allow_all()).await?;
    let server = TestServer::start(&FsEmbedded, &["--hooks-http", &receiver.url]).await?;
    let t = Ctx::new(&server)?;
    let uploads = upload_in_three_patches(&t, 5).await?;
    post_finish_once(&receiver, &uploads).await?;
    ensure!(
        receiver.calls("post-create").len() == 5,
        "post-create calls"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_finish_arrives_once_across_a_cluster() -> Result<()> {
    let receiver = Receiver::start(Duration::ZERO, allow_all()).await?;
    let cluster = Cluster::start(
        &FsRedis,
        Balancer::Nginx,
        3,
        &["--hooks-http", &receiver.url],
    )
    .await?;
    let t = Ctx::for_endpoint(&cluster.endpoint)?;
    // Round-robin spreads each upload's PATCHes over the nodes.
    let uploads = upload_in_three_patches(&t, 6).await?;
    post_finish_once(&receiver, &uploads).await
}

/// One attempt of at most 2 s per delivery and a sweep every second: a notice a dead node
/// owed falls due 2-3 s after the change that owed it (records count whole seconds), and is
/// delivered again within seconds.
fn quick_redelivery_config(dir: &Path) -> Result<String> {
    let path = dir.join("redelivery.toml");
    std::fs::write(
        &path,
        "[hooks]\ntimeout = \"2s\"\nretries = 0\n[uploads]\nsweep_interval = \"1s\"\n",
    )?;
    Ok(path.display().to_string())
}

/// Waits until `receiver` got `event` for `id` `times` times, then checks that every one
/// carried the idempotency key of that event at `offset`.
async fn delivered(
    receiver: &Receiver,
    event: &str,
    id: &str,
    offset: usize,
    times: usize,
) -> Result<()> {
    let mine = |r: &Receiver| -> Vec<Value> {
        r.calls(event)
            .into_iter()
            .filter(|c| c["upload"]["id"] == id)
            .collect()
    };
    let arrived = receiver
        .wait_for(Duration::from_secs(20), |r| mine(r).len() >= times)
        .await;
    ensure!(
        arrived,
        "{event} of upload {id} arrived {} times, expected {times}: a notice owed by a killed node was lost",
        mine(receiver).len()
    );
    let expected_key = format!("{id}:{event}:{offset}");
    for call in mine(receiver) {
        ensure!(
            call["idempotency_key"] == expected_key.as_str(),
            "{event} carried idempotency key {}, expected {expected_key}",
            call["idempotency_key"]
        );
    }
    Ok(())
}

/// The node is killed after its finishing commit (and after its termination), while its
/// post-finish (post-terminate) is on the way but not acknowledged: after a restart, the
/// receiver gets it again, with the same idempotency key. Before notices were owed in the
/// coordinator, the crash lost them and the receiver never heard of either.
#[tokio::test]
async fn post_finish_and_post_terminate_survive_a_kill_before_the_receiver_answered() -> Result<()>
{
    let receiver = Receiver::start_holding(
        Duration::ZERO,
        allow_all(),
        &["post-finish", "post-terminate"],
    )
    .await?;
    let scratch = tempfile::tempdir()?;
    let config = quick_redelivery_config(scratch.path())?;
    let args = [
        "--hooks-http",
        receiver.url.as_str(),
        "--hooks-enabled-events",
        "post-finish,post-terminate",
        "--config",
        config.as_str(),
    ];
    let mut server = TestServer::start(&FsEmbedded, &args).await?;
    let t = Ctx::new(&server)?;
    let data = random_bytes(100_000);
    let url = t.create(data.len() as u64).await?;
    t.patch_ok(&url, 0, data.clone()).await?;
    let id = id_of(&url).to_string();
    // The first delivery reached the receiver, which holds it unanswered.
    delivered(&receiver, "post-finish", &id, data.len(), 1).await?;
    server.kill9().await?;
    server.restart().await?;
    delivered(&receiver, "post-finish", &id, data.len(), 2).await?;

    let t = Ctx::new(&server)?;
    let deleted = t.send(t.tus(Method::DELETE, &url), "DELETE").await?;
    ensure!(
        deleted.status() == 204,
        "DELETE answered {}",
        deleted.status()
    );
    delivered(&receiver, "post-terminate", &id, data.len(), 1).await?;
    server.kill9().await?;
    server.restart().await?;
    delivered(&receiver, "post-terminate", &id, data.len(), 2).await?;
    // Acknowledged, the notices are not delivered a third time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    delivered(&receiver, "post-finish", &id, data.len(), 2).await?;
    let finishes = receiver.calls("post-finish").len();
    let terminations = receiver.calls("post-terminate").len();
    ensure!(
        (finishes, terminations) == (2, 2),
        "after acknowledgement: {finishes} post-finish and {terminations} post-terminate calls, expected 2 each"
    );
    Ok(())
}

/// In a cluster, the node that made the finishing commit dies before the receiver answered;
/// the other nodes' sweeper delivers post-finish again, without that node coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_finish_owed_by_a_killed_node_is_delivered_by_the_others() -> Result<()> {
    let receiver = Receiver::start_holding(Duration::ZERO, allow_all(), &["post-finish"]).await?;
    let scratch = tempfile::tempdir()?;
    let config = quick_redelivery_config(scratch.path())?;
    let mut cluster = Cluster::start(
        &FsRedis,
        Balancer::Nginx,
        3,
        &[
            "--hooks-http",
            &receiver.url,
            "--hooks-enabled-events",
            "post-finish",
            "--config",
            &config,
        ],
    )
    .await?;
    // Straight to node 0, so that it is the one that commits and owes the notice.
    let t = Ctx::for_endpoint(&cluster.nodes[0].endpoint)?;
    let data = random_bytes(150_000);
    let url = t.create(data.len() as u64).await?;
    t.patch_ok(&url, 0, data.clone()).await?;
    let id = id_of(&url).to_string();
    delivered(&receiver, "post-finish", &id, data.len(), 1).await?;
    cluster.nodes[0].kill9().await?;
    delivered(&receiver, "post-finish", &id, data.len(), 2).await?;
    let through_the_balancer = Ctx::for_endpoint(&cluster.endpoint)?;
    let upload = cluster.at_node(1, &url)?;
    ensure!(
        through_the_balancer.download(&upload).await? == data,
        "the finished upload reads back different on node 1"
    );
    Ok(())
}

#[tokio::test]
async fn a_hook_server_down_or_slow_costs_no_bytes_and_no_time() -> Result<()> {
    let slow = Receiver::start(Duration::from_secs(3), allow_all()).await?;
    let dead = format!(
        "http://127.0.0.1:{}/hooks",
        tusk_tests::cluster::free_port()?
    );
    for endpoint in [dead.as_str(), slow.url.as_str()] {
        let server = hooked_node(endpoint, "post-create,post-receive,post-finish").await?;
        let t = Ctx::new(&server)?;
        let data = random_bytes(3 * 1024 * 1024 + 11);
        let started = Instant::now();
        let url = t.create(data.len() as u64).await?;
        let mut offset = 0;
        for chunk in data.chunks(256 * 1024) {
            offset = t.patch_ok(&url, offset, chunk.to_vec()).await?;
        }
        let elapsed = started.elapsed();
        ensure!(
            elapsed < Duration::from_secs(3),
            "with hooks at {endpoint} the upload took {elapsed:?}: notify hooks held it up"
        );
        let back = t.download(&url).await?;
        ensure!(
            sha256_hex(&back) == sha256_hex(&data),
            "bytes differ with hooks at {endpoint}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn pre_access_guards_every_method_and_is_cached_per_credentials() -> Result<()> {
    let receiver = Receiver::start(
        Duration::ZERO,
        Arc::new(|call: &Value| {
            if call["event"] == "pre-access"
                && call["request"]["headers"]["authorization"] != "Bearer good"
            {
                (
                    200,
                    r#"{"reject":true,"status":401,"body":"who are you?"}"#.into(),
                )
            } else {
                (200, String::new())
            }
        }),
    )
    .await?;
    let scratch = tempfile::tempdir()?;
    let server = pre_access_node(&receiver, scratch.path(), &["authorization"]).await?;
    let t = Ctx::new(&server)?;
    let url = t.create(6).await?;
    let stranger = t
        .send(
            t.tus(Method::HEAD, &url)
                .header("Authorization", "Bearer bad"),
            "HEAD",
        )
        .await?;
    ensure!(
        stranger.status() == 401,
        "HEAD with bad credentials answered {}",
        stranger.status()
    );
    let get = t
        .send(
            t.plain(Method::GET, &url)
                .header("Authorization", "Bearer bad"),
            "GET",
        )
        .await?;
    ensure!(
        get.status() == 401,
        "GET with bad credentials answered {}",
        get.status()
    );
    for (offset, chunk) in [(0u64, b"abc"), (3, b"def")] {
        let patched = t
            .send(
                t.patch_req(&url, offset, chunk.to_vec())
                    .header("Authorization", "Bearer good"),
                "PATCH",
            )
            .await?;
        ensure!(
            patched.status() == 204,
            "PATCH with good credentials answered {}",
            patched.status()
        );
    }
    let good_calls = receiver
        .calls("pre-access")
        .iter()
        .filter(|c| c["request"]["headers"]["authorization"] == "Bearer good")
        .count();
    ensure!(
        good_calls == 1,
        "two PATCHes with the same credentials made {good_calls} hook calls"
    );
    let delete = t
        .send(
            t.tus(Method::DELETE, &url)
                .header("Authorization", "Bearer bad"),
            "DELETE",
        )
        .await?;
    ensure!(
        delete.status() == 401,
        "DELETE with bad credentials answered {}",
        delete.status()
    );
    Ok(())
}

/// Writes `toml` as a configuration file in `dir` and returns its path.
fn config_file(dir: &Path, toml: &str) -> Result<String> {
    let path = dir.join("tusk.toml");
    std::fs::write(&path, toml)?;
    Ok(path.display().to_string())
}

/// One node sending pre-access to `receiver`, with `credentials` as
/// `hooks.credential_headers` (they are forwarded only when listed); the config file lives in
/// `scratch`.
async fn pre_access_node(
    receiver: &Receiver,
    scratch: &Path,
    credentials: &[&str],
) -> Result<TestServer> {
    let list: Vec<String> = credentials.iter().map(|c| format!("{c:?}")).collect();
    let config = config_file(
        scratch,
        &format!("[hooks]\ncredential_headers = [{}]\n", list.join(", ")),
    )?;
    let args = [
        "--hooks-http",
        receiver.url.as_str(),
        "--hooks-enabled-events",
        "pre-access",
        "--config",
        config.as_str(),
    ];
    TestServer::start(&FsEmbedded, &args).await
}

/// The pre-access calls for upload `id`.
fn access_calls(receiver: &Receiver, id: &str) -> Vec<Value> {
    receiver
        .calls("pre-access")
        .into_iter()
        .filter(|c| c["upload"]["id"] == id)
        .collect()
}

/// A pre-access hook that lets only "the owner" (Bearer owner, or X-Api-Key owner-key)
/// read and write, and nobody terminate.
fn owner_reads_and_writes() -> Behaviour {
    Arc::new(|call: &Value| {
        let headers = &call["request"]["headers"];
        let owner =
            headers["authorization"] == "Bearer owner" || headers["x-api-key"] == "owner-key";
        let method = call["request"]["method"].as_str().unwrap_or_default();
        let allowed = call["event"] != "pre-access"
            || (owner && matches!(method, "HEAD" | "GET" | "PATCH" | "POST"));
        if allowed {
            (200, String::new())
        } else {
            (
                200,
                r#"{"reject":true,"status":403,"body":"not yours"}"#.into(),
            )
        }
    })
}

/// Finding: a cached pre-access "yes" for a HEAD let the same credentials DELETE although the
/// hook refuses every DELETE, and a yes for a request authenticated by `X-Api-Key` (neither
/// Authorization nor Cookie) served anonymous requests for the cache's TTL. A yes may serve
/// only the same upload, the same kind of operation and the same configured credentials.
#[tokio::test]
async fn a_cached_pre_access_yes_serves_only_the_same_operation_and_credentials() -> Result<()> {
    let receiver = Receiver::start(Duration::ZERO, owner_reads_and_writes()).await?;
    let scratch = tempfile::tempdir()?;
    let server =
        pre_access_node(&receiver, scratch.path(), &["authorization", "x-api-key"]).await?;
    let t = Ctx::new(&server)?;
    let url = t.create(6).await?;
    let as_owner = |method: Method| t.tus(method, &url).header("Authorization", "Bearer owner");
    let head = t.send(as_owner(Method::HEAD), "HEAD").await?;
    ensure!(
        head.status() == 200,
        "the owner's HEAD answered {}",
        head.status()
    );
    let delete = t.send(as_owner(Method::DELETE), "DELETE").await?;
    ensure!(
        delete.status() == 403,
        "the owner's DELETE answered {}: a cached yes for HEAD authorized a DELETE the hook refuses",
        delete.status()
    );

    let keyed = t
        .send(
            t.tus(Method::HEAD, &url).header("X-Api-Key", "owner-key"),
            "HEAD",
        )
        .await?;
    ensure!(
        keyed.status() == 200,
        "the keyed HEAD answered {}",
        keyed.status()
    );
    let anonymous = t.send(t.tus(Method::HEAD, &url), "HEAD").await?;
    ensure!(
        anonymous.status() == 403,
        "an anonymous HEAD answered {} right after the owner's keyed one: its cached yes served a stranger",
        anonymous.status()
    );
    let operations: Vec<_> = access_calls(&receiver, id_of(&url))
        .iter()
        .map(|c| c["operation"].as_str().unwrap_or("(none)").to_string())
        .collect();
    ensure!(
        operations == ["read", "terminate", "read", "read"],
        "pre-access calls carried operations {operations:?}"
    );

    // With X-Api-Key as the only credential header, the owner's yes is reused for the same
    // operation only, and never for a request without the key.
    let scratch = tempfile::tempdir()?;
    let server = pre_access_node(&receiver, scratch.path(), &["X-Api-Key"]).await?;
    let t = Ctx::new(&server)?;
    let url = t.create(6).await?;
    let keyed = |method: Method| t.tus(method, &url).header("X-Api-Key", "owner-key");
    for _ in 0..2 {
        let head = t.send(keyed(Method::HEAD), "HEAD").await?;
        ensure!(
            head.status() == 200,
            "the keyed HEAD answered {}",
            head.status()
        );
    }
    let calls = access_calls(&receiver, id_of(&url)).len();
    ensure!(
        calls == 1,
        "two keyed HEADs made {calls} pre-access calls, expected one (cached)"
    );
    let delete = t.send(keyed(Method::DELETE), "DELETE").await?;
    ensure!(
        delete.status() == 403,
        "the keyed DELETE answered {}",
        delete.status()
    );
    let anonymous = t.send(t.tus(Method::HEAD, &url), "HEAD").await?;
    ensure!(
        anonymous.status() == 403,
        "an anonymous HEAD answered {}",
        anonymous.status()
    );
    let other_key = t
        .send(
            t.tus(Method::HEAD, &url).header("X-Api-Key", "guess"),
            "HEAD",
        )
        .await?;
    ensure!(
        other_key.status() == 403,
        "a HEAD with another key answered {}",
        other_key.status()
    );
    Ok(())
}

/// Finding: a client that pre-access refuses for upload U read U's bytes by creating a final
/// upload over it. Concatenation asks pre-access ("concatenate") for every partial with the
/// creating request's credentials, and a refusal answers with the hook's status and body.
#[tokio::test]
async fn concatenation_asks_pre_access_for_every_partial() -> Result<()> {
    let receiver = Receiver::start(Duration::ZERO, owner_reads_and_writes()).await?;
    let scratch = tempfile::tempdir()?;
    let server = pre_access_node(&receiver, scratch.path(), &["authorization"]).await?;
    let t = Ctx::new(&server)?;
    let secret = b"the owner's secret".to_vec();
    let partial = t
        .create_with(&[
            ("Upload-Length", &secret.len().to_string()),
            ("Upload-Concat", "partial"),
        ])
        .await?;
    let patched = t
        .send(
            t.patch_req(&partial, 0, secret.clone())
                .header("Authorization", "Bearer owner"),
            "PATCH",
        )
        .await?;
    ensure!(
        patched.status() == 204,
        "the owner's PATCH answered {}",
        patched.status()
    );
    let concat = format!("final;{partial}");
    let stranger = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Authorization", "Bearer stranger")
                .header("Upload-Concat", &concat),
            "POST final",
        )
        .await?;
    let status = stranger.status();
    let body = stranger.text().await?;
    ensure!(
        status == 403 && body.trim() == "not yours",
        "a stranger's final upload over the owner's partial answered {status} {body:?}, not the hook's refusal"
    );
    let asked = access_calls(&receiver, id_of(&partial));
    ensure!(
        asked.iter().any(|c| c["operation"] == "concatenate"
            && c["request"]["method"] == "POST"
            && c["request"]["headers"]["authorization"] == "Bearer stranger"),
        "pre-access was not asked to let the stranger concatenate: {asked:?}"
    );

    let owner = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Authorization", "Bearer owner")
                .header("Upload-Concat", &concat),
            "POST final",
        )
        .await?;
    ensure!(
        owner.status() == 201,
        "the owner's final upload answered {}",
        owner.status()
    );
    let fin = tusk_tests::conformance::util::location(&owner)?;
    let back = t
        .send(
            t.plain(Method::GET, &fin)
                .header("Authorization", "Bearer owner"),
            "GET",
        )
        .await?;
    ensure!(
        back.status() == 200,
        "the owner's GET answered {}",
        back.status()
    );
    ensure!(
        back.bytes().await?.to_vec() == secret,
        "the final upload reads back different"
    );
    Ok(())
}

/// Concurrent creations of the ID a pre-create hook chooses through `endpoints` (spread over
/// them): exactly one is created, the others answer 409 and the record is the winner's.
async fn one_creation_of_a_chosen_id_wins(endpoints: &[String], id: &str) -> Result<()> {
    const CREATIONS: usize = 8;
    let mut tasks = Vec::new();
    for i in 0..CREATIONS {
        let t = Ctx::for_endpoint(&endpoints[i % endpoints.len()])?;
        tasks.push(tokio::spawn(async move {
            let metadata = format!("n {}", tusk_tests::conformance::util::b64(&i.to_string()));
            let response = t
                .send(
                    t.tus(Method::POST, &t.endpoint)
                        .header("Upload-Length", "10")
                        .header("Upload-Metadata", metadata),
                    "POST",
                )
                .await?;
            Ok::<_, anyhow::Error>((i, response.status().as_u16()))
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await??);
    }
    let winners: Vec<usize> = statuses
        .iter()
        .filter(|(_, s)| *s == 201)
        .map(|(i, _)| *i)
        .collect();
    ensure!(
        winners.len() == 1 && statuses.iter().all(|(_, s)| matches!(s, 201 | 409)),
        "concurrent creations of ID {id} answered {statuses:?}: expected one 201 and 409 for the rest"
    );
    let t = Ctx::for_endpoint(&endpoints[0])?;
    let head = t.head_ok(&format!("{}{id}", t.endpoint)).await?;
    let metadata = head
        .headers()
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let want = format!(
        "n {}",
        tusk_tests::conformance::util::b64(&winners[0].to_string())
    );
    ensure!(
        metadata == want,
        "the record is {metadata:?}, not the winner's {want:?}"
    );
    Ok(())
}

/// Finding: with a pre-create hook choosing the ID, concurrent creations all got 201 and the
/// last record won. Every coordinator refuses an existing ID, also under concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_of_one_hook_chosen_id_create_it_once() -> Result<()> {
    let id = format!("chosen{}", tusk_tests::conformance::util::random_id());
    let chosen = id.clone();
    let receiver = Receiver::start(
        // Every creation is asked before any is stored.
        Duration::from_millis(300),
        Arc::new(move |_| (200, format!(r#"{{"change":{{"id":"{chosen}"}}}}"#))),
    )
    .await?;
    let server = hooked_node(&receiver.url, "pre-create").await?;
    one_creation_of_a_chosen_id_wins(std::slice::from_ref(&server.endpoint), &id).await?;

    let cluster = Cluster::start(
        &FsRedis,
        Balancer::Nginx,
        2,
        &[
            "--hooks-http",
            &receiver.url,
            "--hooks-enabled-events",
            "pre-create",
        ],
    )
    .await?;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint.clone()).collect();
    one_creation_of_a_chosen_id_wins(&endpoints, &id).await
}

/// Finding: hook payloads carried every request header, credentials included. Only the
/// allowlist (`hooks.forward_headers`) and the credential headers are forwarded.
#[tokio::test]
async fn hook_payloads_forward_only_allowed_headers() -> Result<()> {
    let receiver = Receiver::start(Duration::ZERO, allow_all()).await?;
    let create = |t: &Ctx| {
        t.tus(Method::POST, &t.endpoint)
            .header("Upload-Length", "4")
            .header("Authorization", "Bearer secret")
            .header("Cookie", "session=secret")
            .header("Proxy-Authorization", "Basic secret")
            .header("X-Team", "blue")
    };
    let server = hooked_node(&receiver.url, "pre-create,post-create").await?;
    let t = Ctx::new(&server)?;
    let created = t.send(create(&t), "POST").await?;
    ensure!(
        created.status() == 201,
        "POST answered {}",
        created.status()
    );
    receiver
        .wait_for(Duration::from_secs(5), |r| {
            !r.calls("post-create").is_empty()
        })
        .await;
    let calls: Vec<Value> = ["pre-create", "post-create"]
        .iter()
        .flat_map(|e| receiver.calls(e))
        .collect();
    ensure!(calls.len() == 2, "hook calls: {calls:?}");
    for call in &calls {
        let headers = &call["request"]["headers"];
        for secret in ["authorization", "cookie", "proxy-authorization", "x-team"] {
            ensure!(
                headers.get(secret).is_none(),
                "{} forwarded {secret} by default: {headers}",
                call["event"]
            );
        }
        ensure!(
            headers["upload-length"] == "4",
            "{} lacks Upload-Length: {headers}",
            call["event"]
        );
    }

    // What the operator lists is forwarded: its allowlist and its credential headers.
    let scratch = tempfile::tempdir()?;
    let config = config_file(
        scratch.path(),
        "[hooks]\nforward_headers = [\"X-Team\"]\ncredential_headers = [\"Authorization\"]\n",
    )?;
    let args = [
        "--hooks-http",
        receiver.url.as_str(),
        "--hooks-enabled-events",
        "pre-create",
        "--config",
        config.as_str(),
    ];
    let server = TestServer::start(&FsEmbedded, &args).await?;
    let t = Ctx::new(&server)?;
    let created = t.send(create(&t), "POST").await?;
    ensure!(
        created.status() == 201,
        "POST answered {}",
        created.status()
    );
    let calls = receiver.calls("pre-create");
    let headers = &calls.last().context("no pre-create call")?["request"]["headers"];
    let forwarded: Vec<&String> = headers.as_object().context("headers")?.keys().collect();
    ensure!(
        forwarded == ["authorization", "x-team"],
        "with forward_headers = [X-Team] and credential_headers = [Authorization] the hook got {forwarded:?}"
    );
    Ok(())
}

/// One node sending pre-create and post-create to `endpoint`, with `[hooks]` settings `toml`
/// written to a config file in `scratch`.
async fn configured_hooked_node(endpoint: &str, scratch: &Path, toml: &str) -> Result<TestServer> {
    let config = config_file(scratch, &format!("[hooks]\n{toml}"))?;
    let args = [
        "--hooks-http",
        endpoint,
        "--hooks-enabled-events",
        "pre-create,post-create",
        "--config",
        config.as_str(),
    ];
    TestServer::start(&FsEmbedded, &args).await
}

#[tokio::test]
async fn hooks_reach_an_https_receiver_trusted_through_ca_file() -> Result<()> {
    let cert = SelfSigned::new()?;
    let (receiver, connections) = Receiver::start_tls(&cert, allow_all()).await?;
    let scratch = tempfile::tempdir()?;
    let ca_file = format!("ca_file = {:?}\n", cert.pem_path().display().to_string());
    let server = configured_hooked_node(&receiver.url, scratch.path(), &ca_file).await?;
    let t = Ctx::new(&server)?;
    let url = t
        .create_with(&[
            ("Upload-Length", "5"),
            ("Upload-Metadata", "filename dGxzLnR4dA=="),
        ])
        .await?;
    let id = id_of(&url).to_string();
    let arrived = receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.calls("post-create")
                .iter()
                .any(|c| c["upload"]["id"] == id.as_str())
        })
        .await;
    ensure!(
        arrived,
        "post-create of {id} never reached the https receiver; connections: {:?}",
        connections.all()
    );
    ensure!(
        receiver
            .calls("pre-create")
            .iter()
            .any(|c| filename(c) == Some("tls.txt")),
        "pre-create did not reach the https receiver"
    );
    let opened = connections.all();
    ensure!(
        !opened.is_empty() && opened.iter().all(|o| matches!(o, Opened::Tls)),
        "every connection to the receiver must be a completed TLS session: {opened:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_https_receiver_whose_certificate_is_not_trusted_gets_nothing() -> Result<()> {
    let cert = SelfSigned::new()?;
    let (receiver, connections) = Receiver::start_tls(&cert, allow_all()).await?;
    let scratch = tempfile::tempdir()?;
    // No ca_file: the public roots, which do not vouch for a certificate made here.
    let server = configured_hooked_node(
        &receiver.url,
        scratch.path(),
        "retries = 1\nbackoff = \"50ms\"\n",
    )
    .await?;
    let t = Ctx::new(&server)?;
    let refused = t
        .send(
            t.tus(Method::POST, &t.endpoint)
                .header("Upload-Length", "5"),
            "POST",
        )
        .await?;
    // As with any unreachable blocking hook: the request is refused, to be retried.
    ensure!(
        refused.status() == 503 && refused.headers().contains_key("retry-after"),
        "an untrusted pre-create receiver answered {} {:?}, not 503 with Retry-After",
        refused.status(),
        refused.headers()
    );
    let opened = connections.all();
    ensure!(
        receiver.calls.lock().map(|c| c.is_empty()).unwrap_or(false),
        "the receiver got hook calls despite its untrusted certificate"
    );
    ensure!(
        !opened.is_empty()
            && opened
                .iter()
                .all(|o| matches!(o, Opened::HandshakeFailed(_))),
        "every connection must be a TLS handshake the node broke off (none in clear): {opened:?}"
    );
    Ok(())
}
