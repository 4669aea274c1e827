use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_core::{CreateChanges, HookEvent, HookRefusal, Observer};

use crate::grpc::{Called, GrpcTarget};
use crate::hooks::HookError;
use crate::payload::{self, Decision};
use crate::queue::Job;
use crate::settings::HookSettings;
use crate::tusd_payload;

/// Largest hook answer read; a longer one is a failed call.
const MAX_ANSWER: usize = 64 * 1024;

/// How one attempt ended.
enum Attempt {
    Answered(StatusCode, Bytes),
    TimedOut,
    /// Worth another attempt (the connection failed).
    Failed(String),
    /// Not worth another: a hook executable that exited with an error, a gRPC call the
    /// server refused as such.
    Refused(String),
}

/// Where the hooks go.
pub(crate) enum Target {
    /// POSTed to an HTTP endpoint, as Tusk's JSON.
    Http {
        client: Box<Client<tusk_tls::Connector, Full<Bytes>>>,
        endpoint: Uri,
    },
    /// Run as the executables of a directory, as tusd's file hooks (tusd's JSON).
    Dir(PathBuf),
    /// Called on tusd's gRPC hook service.
    Grpc(GrpcTarget),
}

/// One attempt at whichever target, and the retry loop both kinds of hooks go through.
pub(crate) struct Sender {
    target: Target,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    observer: Arc<dyn Observer>,
}

impl Sender {
    /// A sender POSTing to `endpoint` with the timeout, retries and TLS roots of `settings`
    /// (an `https://` endpoint must present a certificate those roots vouch for).
    pub(crate) fn http(
        endpoint: Uri,
        settings: &HookSettings,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, HookError> {
        let connector = tusk_tls::connector(
            settings.ca_file.as_deref(),
            "hooks.ca_file",
            Some(settings.timeout),
        )?;
        let client = Box::new(
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .build(connector),
        );
        Ok(Self::new(
            Target::Http { client, endpoint },
            settings,
            observer,
        ))
    }

    /// A sender for `target` (a directory or a gRPC server), with the timeout and retries
    /// of `settings`.
    pub(crate) fn new(
        target: Target,
        settings: &HookSettings,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            target,
            timeout: settings.timeout,
            retries: settings.retries,
            backoff: settings.backoff,
            observer,
        }
    }

    /// Whether the hooks get tusd's messages (file and gRPC hooks) rather than Tusk's.
    pub(crate) fn speaks_tusd(&self) -> bool {
        matches!(self.target, Target::Dir(_) | Target::Grpc(_))
    }

    async fn attempt(&self, event: HookEvent, key: &str, body: Bytes) -> Attempt {
        let attempt = async {
            match &self.target {
                Target::Http { client, endpoint } => post(client, endpoint, key, body).await,
                Target::Dir(dir) => run(dir, event, body).await,
                Target::Grpc(grpc) => match grpc.call(&body).await {
                    Called::Answered(answer) => Attempt::Answered(StatusCode::OK, answer),
                    Called::Failed(problem) => Attempt::Failed(problem),
                    Called::Refused(problem) => Attempt::Refused(problem),
                },
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(attempt) => attempt,
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
            let (problem, retryable) = match self.attempt(event, key, body.clone()).await {
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
                Attempt::Refused(e) => (e, false),
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

    /// Delivers a notification, retried as [`Retry::Notification`] says; true once the
    /// receiver acknowledged it.
    pub(crate) async fn deliver(&self, job: Job) -> bool {
        let event = job.event.name();
        match self
            .send(job.event, &job.key, job.body, Retry::Notification, |_| {
                Ok(())
            })
            .await
        {
            Ok(()) => {
                self.observer.hook_call(event, "ok");
                true
            }
            Err(Undelivered { problem, attempts }) => {
                tracing::warn!(event, key = %job.key, %problem, attempts, "hook notification not delivered");
                false
            }
        }
    }

    /// The longest [`Sender::deliver`] takes: every attempt timing out, with the pauses
    /// between them.
    pub(crate) fn longest_delivery(&self) -> Duration {
        (0..=self.retries).fold(Duration::ZERO, |total, attempt| {
            let pause = if attempt < self.retries {
                self.backoff(attempt)
            } else {
                Duration::ZERO
            };
            total.saturating_add(self.timeout).saturating_add(pause)
        })
    }

    /// Calls a blocking hook, retried as [`Retry::Blocking`] says; fails closed.
    pub(crate) async fn call(
        &self,
        event: HookEvent,
        key: &str,
        body: Bytes,
    ) -> Result<CreateChanges, HookRefusal> {
        let name = event.name();
        match self
            .send(event, key, body, Retry::Blocking, |answer| {
                if self.speaks_tusd() {
                    tusd_payload::parse_answer(answer)
                } else {
                    payload::parse_answer(answer)
                }
            })
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
                Err(HookRefusal::Rejected(rejection))
            }
            Err(Undelivered { problem, attempts }) => {
                tracing::warn!(event = name, key, %problem, attempts, "hook unavailable, refusing the request");
                Err(HookRefusal::Unavailable)
            }
        }
    }
}

/// POSTs `body` to `endpoint` (Tusk's JSON).
async fn post(
    client: &Client<tusk_tls::Connector, Full<Bytes>>,
    endpoint: &Uri,
    key: &str,
    body: Bytes,
) -> Attempt {
    let request = Request::builder()
        .method(Method::POST)
        .uri(endpoint.clone())
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
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", with_causes(&e)))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, answer))
    };
    match call.await {
        Ok((status, answer)) => Attempt::Answered(status, answer),
        Err(e) => Attempt::Failed(e),
    }
}

/// Runs `dir/<event>` with `body` (tusd's HookRequest) on stdin, as tusd runs a file hook;
/// its stdout is the answer. An event without a file is allowed, as in tusd. The process is
/// killed if the attempt is dropped (its timeout).
async fn run(dir: &Path, event: HookEvent, body: Bytes) -> Attempt {
    let path = dir.join(event.name());
    if !path.exists() {
        return Attempt::Answered(StatusCode::OK, Bytes::new());
    }
    let upload: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| upload["Event"]["Upload"][name].to_string();
    let child = tokio::process::Command::new(&path)
        .current_dir(dir)
        .env(
            "TUS_ID",
            upload["Event"]["Upload"]["ID"].as_str().unwrap_or(""),
        )
        .env("TUS_SIZE", field("Size"))
        .env("TUS_OFFSET", field("Offset"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Attempt::Refused(format!("cannot run {}: {e}", path.display())),
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Attempt::Refused("the hook's stdin or stdout was not piped".into());
    };
    // A hook that never reads its stdin must not block the write: write alongside reading.
    let write = async move {
        let _ = stdin.write_all(&body).await;
    };
    let mut answer = Vec::new();
    let mut limited = stdout.take(MAX_ANSWER as u64 + 1);
    let read = limited.read_to_end(&mut answer);
    let (_, read) = tokio::join!(write, read);
    if let Err(e) = read {
        return Attempt::Refused(format!("reading {}'s output failed: {e}", path.display()));
    }
    if answer.len() > MAX_ANSWER {
        return Attempt::Refused(format!(
            "{} wrote more than {MAX_ANSWER} bytes",
            path.display()
        ));
    }
    match child.wait().await {
        Ok(status) if status.success() => Attempt::Answered(StatusCode::OK, answer.into()),
        Ok(status) => Attempt::Refused(format!(
            "{} exited with {status}: {}",
            path.display(),
            String::from_utf8_lossy(&answer).trim()
        )),
        Err(e) => Attempt::Refused(format!("waiting for {} failed: {e}", path.display())),
    }
}

/// An error with its causes: hyper's own message ("client error (Connect)") hides whether
/// the connection was refused or the server's certificate was not trusted.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
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
