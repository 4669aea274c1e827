//! Tusk's HTTP hooks, as tusd's `-hooks-http`: every enabled event is POSTed as JSON to one
//! endpoint.
//!
//! - Blocking hooks (pre-create, pre-access, pre-finish) wait for the answer: a 2xx with an
//!   empty body allows, `{"reject": true, "status": 403, "body": "..."}` rejects, and on
//!   pre-create `{"change": {"id": "...", "metadata": {"k": "v"}}}` changes the upload. They
//!   fail closed: an endpoint that cannot be reached or answers badly gives 503
//!   "hook unavailable".
//! - Notify hooks (post-*) are queued and delivered by a background task, with retries
//!   and an idempotency key (`<upload id>:<event>:<offset>`), at least once while the
//!   process lives. [`Hooks::notify`] never waits, so a hook server that is down or slow
//!   never holds up an upload.
//!
//! Every HTTP attempt is reported with [`Observer::hook_call`]: outcome "ok", "rejected"
//! (a blocking hook said no) or "failed"; a notification dropped from a full queue is
//! reported as "dropped".

mod access_cache;
mod payload;
mod progress;
mod pruned;
mod settings;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Notify, Semaphore};
use tusk_core::{
    CreateChanges, HookEvent, HookRejection, Hooks, Observer, RequestInfo, UploadRecord,
};

use access_cache::AccessCache;
use payload::Decision;
use progress::ProgressLimiter;

pub use settings::HookSettings;

/// Why [`HttpHooks::new`] refused its settings.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook endpoint {endpoint:?} is not a usable URL: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("unknown hook event {0:?} (known: pre-create, post-create, post-receive, pre-finish, post-finish, post-terminate, pre-access)")]
    UnknownEvent(String),
    #[error("hooks are enabled but no tokio runtime is running to deliver them")]
    NoRuntime,
}

/// Hooks POSTed as JSON to one HTTP endpoint. See the crate documentation.
pub struct HttpHooks {
    events: HashSet<HookEvent>,
    sender: Arc<Sender>,
    queue: Arc<Queue>,
    progress: ProgressLimiter,
    access_cache: AccessCache,
}

impl HttpHooks {
    /// Checks `settings` and, unless hooks are disabled (empty endpoint or no events),
    /// spawns the task that delivers notifications: it must then be called inside a tokio
    /// runtime, which the task lives on ([`HookError::NoRuntime`] otherwise).
    pub fn new(
        settings: HookSettings,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Self>, HookError> {
        let endpoint = settings.endpoint.trim();
        let mut events = HashSet::new();
        for name in &settings.events {
            let event = settings::event_by_name(name)
                .ok_or_else(|| HookError::UnknownEvent(name.clone()))?;
            events.insert(event);
        }
        let uri = if endpoint.is_empty() {
            events.clear();
            Uri::default()
        } else {
            parse_endpoint(endpoint)?
        };

        let sender = Arc::new(Sender::new(uri, &settings, observer.clone()));
        let queue = Arc::new(Queue::new(settings.queue, observer));
        if events.iter().any(|e| !is_blocking(*e)) {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| HookError::NoRuntime)?;
            runtime.spawn(dispatch(queue.clone(), sender.clone()));
        }
        Ok(Arc::new(Self {
            events,
            sender,
            queue,
            progress: ProgressLimiter::new(settings.post_receive_interval),
            access_cache: AccessCache::new(settings.access_cache_ttl),
        }))
    }

    async fn blocking(
        &self,
        event: HookEvent,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<CreateChanges, HookRejection> {
        if !self.events.contains(&event) {
            return Ok(CreateChanges::default());
        }
        let key = payload::idempotency_key(event, upload);
        let body = Bytes::from(payload::body(event, &key, upload, Some(request)));
        self.sender.call(event, &key, body).await
    }
}

impl Drop for HttpHooks {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[async_trait]
impl Hooks for HttpHooks {
    fn enabled(&self, event: HookEvent) -> bool {
        self.events.contains(&event)
    }

    async fn pre_create(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<CreateChanges, HookRejection> {
        self.blocking(HookEvent::PreCreate, upload, request).await
    }

    async fn pre_access(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<(), HookRejection> {
        if !self.events.contains(&HookEvent::PreAccess) {
            return Ok(());
        }
        let credentials = AccessCache::credentials(request);
        if self.access_cache.allows(&upload.id, &credentials) {
            return Ok(());
        }
        self.blocking(HookEvent::PreAccess, upload, request).await?;
        self.access_cache.remember(&upload.id, credentials);
        Ok(())
    }

    async fn pre_finish(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<(), HookRejection> {
        self.blocking(HookEvent::PreFinish, upload, request)
            .await
            .map(|_| ())
    }

    fn notify(&self, event: HookEvent, upload: &UploadRecord, request: Option<&RequestInfo>) {
        if matches!(event, HookEvent::PostFinish | HookEvent::PostTerminate) {
            self.progress.forget(&upload.id);
            self.access_cache.forget(&upload.id);
        }
        if is_blocking(event) || !self.events.contains(&event) {
            return;
        }
        if event == HookEvent::PostReceive && !self.progress.allow(&upload.id) {
            return;
        }
        let key = payload::idempotency_key(event, upload);
        let body = Bytes::from(payload::body(event, &key, upload, request));
        self.queue.push(Job { event, key, body });
    }
}

fn is_blocking(event: HookEvent) -> bool {
    matches!(
        event,
        HookEvent::PreCreate | HookEvent::PreAccess | HookEvent::PreFinish
    )
}

fn parse_endpoint(endpoint: &str) -> Result<Uri, HookError> {
    let invalid = |reason: String| HookError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(invalid(format!(
                "scheme {other:?} is not supported, use http"
            )))
        }
        None => {
            return Err(invalid(
                "no scheme, expected http://host[:port]/path".into(),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok(uri)
}

/// Notifications delivered concurrently at most.
const MAX_IN_FLIGHT: usize = 8;

/// One queued notification, its body built when it was queued.
pub(crate) struct Job {
    pub(crate) event: HookEvent,
    pub(crate) key: String,
    pub(crate) body: Bytes,
}

/// The bounded notification queue: full, it drops its oldest entry (reported to the
/// observer as "dropped") so that queueing never waits.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    wake: Notify,
    closed: AtomicBool,
    observer: Arc<dyn Observer>,
}

impl Queue {
    /// A queue of at most `capacity` jobs (at least one).
    pub(crate) fn new(capacity: usize, observer: Arc<dyn Observer>) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            observer,
        }
    }

    pub(crate) fn push(&self, job: Job) {
        let dropped = {
            let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = if jobs.len() >= self.capacity {
                jobs.pop_front()
            } else {
                None
            };
            jobs.push_back(job);
            dropped
        };
        if let Some(old) = dropped {
            tracing::warn!(key = %old.key, "hook queue full, dropping the oldest notification");
            self.observer.hook_call(old.event.name(), "dropped");
        }
        self.wake.notify_one();
    }

    /// Ends [`dispatch`] once what is queued has been sent.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// Delivers queued notifications, up to [`MAX_IN_FLIGHT`] at once, until the queue is
/// closed and empty.
pub(crate) async fn dispatch(queue: Arc<Queue>, sender: Arc<Sender>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let job = loop {
            if let Some(job) = queue.pop() {
                break job;
            }
            if queue.closed.load(Ordering::Acquire) {
                return;
            }
            queue.wake.notified().await;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            sender.deliver(job).await;
            drop(permit);
        });
    }
}

/// Largest hook answer read; a longer one is a failed call.
const MAX_ANSWER: usize = 64 * 1024;

/// How one HTTP attempt ended.
enum Attempt {
    Answered(StatusCode, Bytes),
    TimedOut,
    Failed(String),
}

/// The HTTP side: one attempt, and the retry loop both kinds of hooks go through.
pub(crate) struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    endpoint: Uri,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    observer: Arc<dyn Observer>,
}

impl Sender {
    /// A sender POSTing to `endpoint` with the timeout and retries of `settings`.
    pub(crate) fn new(endpoint: Uri, settings: &HookSettings, observer: Arc<dyn Observer>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            endpoint,
            timeout: settings.timeout,
            retries: settings.retries,
            backoff: settings.backoff,
            observer,
        }
    }

    async fn attempt(&self, key: &str, body: Bytes) -> Attempt {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tusk/", env!("CARGO_PKG_VERSION")),
            )
            .header("idempotency-key", key)
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            // Only an upload ID with characters a header cannot carry gets here.
            Err(e) => return Attempt::Failed(format!("cannot build the request: {e}")),
        };
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, answer))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((status, answer))) => Attempt::Answered(status, answer),
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::TimedOut,
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        self.backoff.saturating_mul(1 << retry.min(16))
    }

    /// POSTs `body` until an attempt is answered with a 2xx that `accept` takes, retrying
    /// what `retry` allows with doubling pauses. Every failed attempt is reported as
    /// "failed"; reporting the accepted one is the caller's, who knows what it meant.
    async fn send<T>(
        &self,
        event: HookEvent,
        key: &str,
        body: Bytes,
        retry: Retry,
        accept: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Undelivered> {
        let name = event.name();
        let mut retries = 0;
        loop {
            let (problem, retryable) = match self.attempt(key, body.clone()).await {
                Attempt::Answered(status, answer) if status.is_success() => match accept(&answer) {
                    Ok(accepted) => return Ok(accepted),
                    Err(problem) => (problem, false),
                },
                Attempt::Answered(status, _) => {
                    (format!("answered {status}"), retry.on_status(status))
                }
                Attempt::TimedOut => (
                    format!("no answer within {:?}", self.timeout),
                    retry.on_timeout(),
                ),
                Attempt::Failed(e) => (e, true),
            };
            self.observer.hook_call(name, "failed");
            if !retryable || retries >= self.retries {
                return Err(Undelivered {
                    problem,
                    attempts: retries + 1,
                });
            }
            tracing::debug!(event = name, key, %problem, "hook call failed, retrying");
            tokio::time::sleep(self.backoff(retries)).await;
            retries += 1;
        }
    }

    /// Delivers a notification, retried as [`Retry::Notification`] says.
    pub(crate) async fn deliver(&self, job: Job) {
        let event = job.event.name();
        match self
            .send(job.event, &job.key, job.body, Retry::Notification, |_| {
                Ok(())
            })
            .await
        {
            Ok(()) => self.observer.hook_call(event, "ok"),
            Err(Undelivered { problem, attempts }) => {
                tracing::warn!(event, key = %job.key, %problem, attempts, "hook notification not delivered");
            }
        }
    }

    /// Calls a blocking hook, retried as [`Retry::Blocking`] says; fails closed.
    pub(crate) async fn call(
        &self,
        event: HookEvent,
        key: &str,
        body: Bytes,
    ) -> Result<CreateChanges, HookRejection> {
        let name = event.name();
        match self
            .send(event, key, body, Retry::Blocking, payload::parse_answer)
            .await
        {
            Ok(Decision::Allow(changes)) => {
                self.observer.hook_call(name, "ok");
                Ok(changes)
            }
            Ok(Decision::Reject(rejection)) => {
                self.observer.hook_call(name, "rejected");
                tracing::debug!(
                    event = name,
                    key,
                    status = rejection.status,
                    "hook rejected the request"
                );
                Err(rejection)
            }
            Err(Undelivered { problem, attempts }) => {
                tracing::warn!(event = name, key, %problem, attempts, "hook unavailable, refusing the request");
                Err(HookRejection {
                    status: 503,
                    body: "hook unavailable".to_string(),
                })
            }
        }
    }
}

/// Which failed attempts are worth another one.
#[derive(Clone, Copy)]
enum Retry {
    /// Notifications: connection errors, timeouts, 408, 429 and 5xx.
    Notification,
    /// Blocking hooks: connection errors, 429 and 5xx; not a timeout, since a client is
    /// waiting.
    Blocking,
}

impl Retry {
    fn on_status(self, status: StatusCode) -> bool {
        status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || (matches!(self, Self::Notification) && status == StatusCode::REQUEST_TIMEOUT)
    }

    fn on_timeout(self) -> bool {
        matches!(self, Self::Notification)
    }
}

/// Why a hook call gave up: the last attempt's problem.
struct Undelivered {
    problem: String,
    attempts: u32,
}
