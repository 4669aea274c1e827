//! HttpHooks against a real HTTP receiver started by each test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::Value;
use tusk_core::{
    Access, CreateChanges, HookEvent, HookRefusal, HookRejection, Hooks, Observer, RequestInfo,
    UploadRecord, UploadState,
};
use tusk_hooks::{HookSettings, HttpHooks};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    idempotency_key: Option<String>,
    json: Value,
}

/// How the receiver answers.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(body: &str) -> Self {
        Self {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

type Responder = Box<dyn Fn(usize, &Value) -> Reply + Send + Sync>;

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    respond: Responder,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts a receiver; `respond` gets the index of the request (0-based) and its body.
    async fn start(respond: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            respond: Box::new(respond),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/tus-hooks"),
            state,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let json: Value = serde_json::from_slice(&body).expect("hook body is JSON");
    let index = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            idempotency_key: headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_string()),
            json: json.clone(),
        });
        received.len() - 1
    };
    let reply = (state.respond)(index, &json);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (StatusCode::from_u16(reply.status).unwrap(), reply.body)
}

/// Records every hook_call.
#[derive(Default)]
struct Calls(Mutex<Vec<(&'static str, &'static str)>>);

impl Observer for Calls {
    fn hook_call(&self, event: &'static str, outcome: &'static str) {
        self.0.lock().unwrap().push((event, outcome));
    }
}

impl Calls {
    fn all(&self) -> Vec<(&'static str, &'static str)> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, outcome: &str) -> usize {
        self.all().iter().filter(|(_, o)| *o == outcome).count()
    }
}

fn settings(endpoint: &str) -> HookSettings {
    HookSettings {
        endpoint: endpoint.to_string(),
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(10),
        ..HookSettings::default()
    }
}

fn upload(id: &str, offset: u64) -> UploadRecord {
    UploadRecord {
        id: id.to_string(),
        offset,
        length: Some(100),
        metadata: Some("filename YS50eHQ=".to_string()),
        concat: None,
        created_at: 1_700_000_000,
        expires_at: Some(1_700_086_400),
        state: UploadState::Active,
        segments: vec![],
        session: None,
        notice: None,
        expected_digest: None,
        last_commit: None,
    }
}

fn request(authorization: &str) -> RequestInfo {
    RequestInfo {
        method: "POST".into(),
        uri: "/files".into(),
        remote_addr: Some("127.0.0.1:4000".into()),
        headers: vec![
            ("authorization".into(), authorization.into()),
            ("tus-resumable".into(), "1.0.0".into()),
        ],
    }
}

/// Waits up to 5 s for `done`.
async fn until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pre_create_rejection_reaches_the_caller() {
    let receiver = Receiver::start(|_, _| {
        Reply::ok(r#"{"reject": true, "status": 418, "body": "no teapots"}"#)
    })
    .await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();

    let result = hooks
        .pre_create(&upload("up1", 0), &request("Bearer a"))
        .await;
    assert_eq!(
        result,
        Err(HookRefusal::Rejected(HookRejection {
            status: 418,
            body: "no teapots".into()
        }))
    );
    assert_eq!(calls.all(), vec![("pre-create", "rejected")]);

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key.as_deref(), Some("up1:pre-create:0"));
    let json = &got[0].json;
    assert_eq!(json["event"], "pre-create");
    assert_eq!(json["idempotency_key"], "up1:pre-create:0");
    assert_eq!(json["upload"]["id"], "up1");
    assert_eq!(json["upload"]["length"], 100);
    assert_eq!(json["upload"]["metadata"]["filename"], "a.txt");
    assert_eq!(json["upload"]["metadata_raw"], "filename YS50eHQ=");
    assert_eq!(json["upload"]["concat"], Value::Null);
    assert_eq!(json["request"]["method"], "POST");
    // Credentials are forwarded only when the operator lists them.
    assert_eq!(json["request"]["headers"]["authorization"], Value::Null);
    assert_eq!(json["request"]["headers"]["tus-resumable"], "1.0.0");

    // A rejection without a status is a 403.
    let receiver = Receiver::start(|_, _| Reply::ok(r#"{"reject": true}"#)).await;
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();
    let result = hooks
        .pre_create(&upload("up1", 0), &request("Bearer a"))
        .await;
    assert!(
        matches!(
            result,
            Err(HookRefusal::Rejected(HookRejection { status: 403, .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn pre_create_change_comes_back_encoded() {
    let receiver = Receiver::start(|_, _| {
        Reply::ok(r#"{"change": {"id": "chosen-id-1", "metadata": {"b": "two", "a": "one", "flag": null}}}"#)
    })
    .await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();

    let changes = hooks
        .pre_create(&upload("up1", 0), &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(
        changes,
        CreateChanges {
            id: Some("chosen-id-1".into()),
            metadata: Some("a b25l,b dHdv,flag".into()),
        }
    );
    assert_eq!(calls.all(), vec![("pre-create", "ok")]);

    // An empty 2xx answer allows without changes.
    let receiver = Receiver::start(|_, _| Reply::ok("")).await;
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();
    let changes = hooks
        .pre_create(&upload("up1", 0), &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(changes, CreateChanges::default());
}

#[tokio::test]
async fn notify_is_retried_with_the_same_idempotency_key() {
    let receiver = Receiver::start(|index, _| {
        if index < 2 {
            Reply::status(500)
        } else {
            Reply::ok("")
        }
    })
    .await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();

    hooks.notify(HookEvent::PostFinish, &upload("up1", 100), None);
    until(|| calls.count("ok") == 1).await;
    // Nothing more comes once delivered.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let got = receiver.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.idempotency_key.as_deref(), Some("up1:post-finish:100"));
        assert_eq!(r.json["idempotency_key"], "up1:post-finish:100");
        assert_eq!(r.json["event"], "post-finish");
        assert_eq!(r.json["request"], Value::Null);
    }
    assert_eq!(
        calls.all(),
        vec![
            ("post-finish", "failed"),
            ("post-finish", "failed"),
            ("post-finish", "ok")
        ]
    );
}

#[tokio::test]
async fn a_down_receiver_never_blocks_notify() {
    // A port that was just free: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(
        HookSettings {
            retries: 2,
            ..settings(&format!("http://{addr}/hooks"))
        },
        calls.clone(),
    )
    .unwrap();

    let start = Instant::now();
    hooks.notify(
        HookEvent::PostCreate,
        &upload("up1", 0),
        Some(&request("x")),
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(10),
        "notify took {elapsed:?}"
    );

    until(|| calls.count("failed") == 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.all(), vec![("post-create", "failed"); 3]);

    // A blocking hook fails closed.
    let result = hooks.pre_create(&upload("up2", 0), &request("x")).await;
    assert_eq!(result, Err(HookRefusal::Unavailable));
}

#[tokio::test]
async fn post_receive_is_rate_limited_per_upload() {
    let receiver = Receiver::start(|_, _| Reply::ok("")).await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(settings(&receiver.url), calls.clone()).unwrap();

    let start = Instant::now();
    for i in 0..20 {
        hooks.notify(HookEvent::PostReceive, &upload("up1", i * 5), None);
    }
    // Another upload has its own clock.
    hooks.notify(HookEvent::PostReceive, &upload("up2", 7), None);
    until(|| receiver.count() >= 2).await;
    let remaining = Duration::from_secs(1).saturating_sub(start.elapsed());
    tokio::time::sleep(remaining).await;

    let got = receiver.received();
    let up1: Vec<_> = got
        .iter()
        .filter(|r| r.json["upload"]["id"] == "up1")
        .collect();
    assert!(up1.len() <= 2, "{} post-receives within 1 s", up1.len());
    assert_eq!(up1[0].json["upload"]["offset"], 0);
    assert_eq!(got.len() - up1.len(), 1);
}

#[tokio::test]
async fn pre_access_ok_is_cached_per_credentials() {
    let receiver = Receiver::start(|_, json| {
        if json["request"]["headers"]["authorization"] == "Bearer bad" {
            Reply::ok(r#"{"reject": true, "status": 401, "body": "who are you"}"#)
        } else {
            Reply::ok("")
        }
    })
    .await;
    let calls = Arc::new(Calls::default());
    let mut s = settings(&receiver.url);
    s.events.push("pre-access".into());
    s.credential_headers = vec!["Authorization".into()];
    let hooks = HttpHooks::new(s, calls.clone()).unwrap();
    assert!(hooks.enabled(HookEvent::PreAccess));
    let up = upload("up1", 10);

    hooks
        .pre_access(&up, Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    hooks
        .pre_access(&up, Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 1);

    hooks
        .pre_access(&up, Access::Read, &request("Bearer b"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 2);
    hooks
        .pre_access(&up, Access::Read, &request("Bearer b"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 2);

    // Another operation with the same credentials asks again.
    hooks
        .pre_access(&up, Access::Terminate, &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 3);
    assert_eq!(receiver.received()[2].json["operation"], "terminate");
    // Another upload with the same credentials asks again.
    hooks
        .pre_access(&upload("up2", 0), Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 4);

    for _ in 0..2 {
        let rejected = hooks
            .pre_access(&up, Access::Read, &request("Bearer bad"))
            .await;
        assert_eq!(
            rejected,
            Err(HookRefusal::Rejected(HookRejection {
                status: 401,
                body: "who are you".into()
            }))
        );
    }
    assert_eq!(receiver.count(), 6);
    assert_eq!(calls.count("ok"), 4);
    assert_eq!(calls.count("rejected"), 2);
    assert_eq!(receiver.received()[0].json["event"], "pre-access");
}

#[tokio::test]
async fn pre_access_cache_expires() {
    let receiver = Receiver::start(|_, _| Reply::ok("")).await;
    let mut s = settings(&receiver.url);
    s.events = vec!["pre-access".into()];
    s.access_cache_ttl = Duration::from_millis(100);
    s.credential_headers = vec!["authorization".into()];
    let hooks = HttpHooks::new(s, Arc::new(Calls::default())).unwrap();
    let up = upload("up1", 10);
    hooks
        .pre_access(&up, Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    hooks
        .pre_access(&up, Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    hooks
        .pre_access(&up, Access::Read, &request("Bearer a"))
        .await
        .unwrap();
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn a_slow_receiver_fails_blocking_hooks_closed() {
    let receiver = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok("")
    })
    .await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(
        HookSettings {
            timeout: Duration::from_millis(200),
            ..settings(&receiver.url)
        },
        calls.clone(),
    )
    .unwrap();

    let start = Instant::now();
    let result = hooks.pre_finish(&upload("up1", 100), &request("x")).await;
    let elapsed = start.elapsed();
    assert_eq!(result, Err(HookRefusal::Unavailable));
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(calls.all(), vec![("pre-finish", "failed")]);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest() {
    let receiver = Receiver::start(|_, _| Reply::ok("")).await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(
        HookSettings {
            queue: 2,
            ..settings(&receiver.url)
        },
        calls.clone(),
    )
    .unwrap();
    // On this single-threaded runtime the delivery task cannot run before the test
    // yields, so all five are queued at once.
    for i in 0..5 {
        hooks.notify(HookEvent::PostCreate, &upload(&format!("up{i}"), 0), None);
    }
    assert_eq!(calls.count("dropped"), 3);
    until(|| calls.count("ok") == 2).await;
    let mut ids: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.json["upload"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["up3", "up4"]);
}

#[tokio::test]
async fn disabled_events_and_endpoint() {
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    let calls = Arc::new(Calls::default());
    let hooks = HttpHooks::new(
        HookSettings {
            events: vec!["post-finish".into()],
            ..settings(&receiver.url)
        },
        calls.clone(),
    )
    .unwrap();
    assert!(!hooks.enabled(HookEvent::PreCreate));
    assert!(hooks.enabled(HookEvent::PostFinish));
    // Not configured: no call, allowed.
    hooks
        .pre_create(&upload("up1", 0), &request("x"))
        .await
        .unwrap();
    hooks.notify(HookEvent::PostCreate, &upload("up1", 0), None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.count(), 0);

    let off = HttpHooks::new(HookSettings::default(), calls.clone()).unwrap();
    assert!(!off.enabled(HookEvent::PostFinish));

    assert!(HttpHooks::new(
        HookSettings {
            events: vec!["post-nothing".into()],
            ..settings(&receiver.url)
        },
        calls.clone()
    )
    .is_err());
    assert!(HttpHooks::new(settings("ftp://example.com/hooks"), calls.clone()).is_err());
    assert!(HttpHooks::new(settings("https://example.com/hooks"), calls.clone()).is_ok());
    let unreadable_ca = HttpHooks::new(
        HookSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..settings("https://example.com/hooks")
        },
        calls.clone(),
    );
    let message = unreadable_ca
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("hooks.ca_file"), "{message}");
    assert!(HttpHooks::new(settings("not a url"), calls).is_err());
}

#[test]
fn settings_deserialize_with_defaults() {
    let s: HookSettings = serde_json::from_str(
        r#"{"endpoint": "http://app:9000/tus-hooks", "timeout": "2s", "backoff": "50ms"}"#,
    )
    .unwrap();
    assert_eq!(s.timeout, Duration::from_secs(2));
    assert_eq!(s.backoff, Duration::from_millis(50));
    assert_eq!(s.retries, 3);
    assert_eq!(s.queue, 10_000);
    assert_eq!(s.post_receive_interval, Duration::from_secs(1));
    assert_eq!(s.access_cache_ttl, Duration::from_secs(10));
    assert!(!s.events.contains(&"pre-access".to_string()));
    assert_eq!(s.events.len(), 6);
}
