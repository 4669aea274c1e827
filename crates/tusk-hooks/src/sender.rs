use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tusk_core::{CreateChanges, HookEvent, HookRefusal, Observer};

use crate::hooks::HookError;
use crate::payload::{self, Decision};
use crate::queue::Job;
use crate::settings::HookSettings;

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
    client: Client<tusk_tls::Connector, Full<Bytes>>,
    endpoint: Uri,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    observer: Arc<dyn Observer>,
}

impl Sender {
    /// A sender POSTing to `endpoint` with the timeout, retries and TLS roots of `settings`
    /// (an `https://` endpoint must present a certificate those roots vouch for).
    pub(crate) fn new(
        endpoint: Uri,
        settings: &HookSettings,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, HookError> {
        let connector = tusk_tls::connector(
            settings.ca_file.as_deref(),
            "hooks.ca_file",
            Some(settings.timeout),
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            endpoint,
            timeout: settings.timeout,
            retries: settings.retries,
            backoff: settings.backoff,
            observer,
        })
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
                .map_err(|e| format!("request failed: {}", with_causes(&e)))?;
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
                Err(HookRefusal::Rejected(rejection))
            }
            Err(Undelivered { problem, attempts }) => {
                tracing::warn!(event = name, key, %problem, attempts, "hook unavailable, refusing the request");
                Err(HookRefusal::Unavailable)
            }
        }
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
