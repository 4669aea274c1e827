//! An HTTP proxy in front of an S3 server that can hold one request back, so a test can make
//! one S3 call of a node slow (a throttled or distant S3) while everything else runs at
//! loopback speed.
//!
//! [`S3Proxy`] listens on `127.0.0.1:0` and forwards every request to the upstream unchanged
//! (Host header included, so signatures still match what the node signed), streaming bodies
//! both ways. [`S3Proxy::hold_next`] arms a one-shot hold: the next request the predicate
//! matches waits for the given time before it is forwarded, so the server answers with the
//! state at the *end* of the delay, as a slow S3 would. Every request is logged
//! ([`S3Proxy::seen`]) so a test can wait for a call it expects instead of sleeping.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One request as the proxy saw it: what a predicate looks at.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Its number, from 0, in arrival order.
    pub n: usize,
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, percent-decoded (path-style: `/<bucket>/<key>`).
    pub path: String,
    /// The query parameters, percent-decoded, in order (`?uploads` is `("uploads", "")`).
    pub query: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
}

impl SeenRequest {
    /// The value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a ListObjectsV2 of exactly `prefix`.
    pub fn is_list_objects(&self, prefix: &str) -> bool {
        self.method == "GET"
            && self.param("list-type") == Some("2")
            && self.param("prefix") == Some(prefix)
    }

    /// Whether this is a ListMultipartUploads of exactly `prefix`.
    pub fn is_list_multipart_uploads(&self, prefix: &str) -> bool {
        self.method == "GET"
            && self.param("uploads").is_some()
            && self.param("prefix") == Some(prefix)
    }
}

impl std::fmt::Display for SeenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {} {}", self.n, self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{k}={v}")?;
        }
        Ok(())
    }
}

type Predicate = Box<dyn Fn(&SeenRequest) -> bool + Send + Sync>;

/// A hold that is armed and has not caught its request yet.
struct Armed {
    matches: Predicate,
    delay: Duration,
}

/// What happened to the request a hold caught.
#[derive(Clone, Debug)]
pub struct Held {
    /// The request.
    pub request: SeenRequest,
    /// When it was forwarded upstream (the delay ended); None while it waits.
    pub forwarded: Option<Instant>,
    /// When its answer's head came back and was passed on; None until then.
    pub answered: Option<Instant>,
    /// The upstream's status, once answered.
    pub status: Option<u16>,
}

#[derive(Default)]
struct State {
    seen: Vec<SeenRequest>,
    armed: Option<Armed>,
    held: Vec<Held>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken whenever a request arrives or a held one moves on.
    changed: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; dropping it stops accepting and ends every connection.
pub struct S3Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl S3Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream` (`http://HOST:PORT`).
    pub async fn start(upstream: &str) -> Result<Self> {
        let upstream: hyper::Uri = upstream
            .parse()
            .with_context(|| format!("S3 proxy: bad upstream {upstream:?}"))?;
        let authority = upstream
            .authority()
            .context("S3 proxy: upstream without host:port")?
            .clone();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the S3 proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = accept_shared.clone();
                        let client = client.clone();
                        let authority = authority.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |request| {
                                forward(request, shared.clone(), client.clone(), authority.clone())
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(S3Proxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// `http://127.0.0.1:PORT`, what a node's `--s3-endpoint` points at.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms a one-shot hold: the next request `matches` accepts waits `delay` before it is
    /// forwarded. Replaces a hold that has not caught anything yet.
    pub fn hold_next(
        &self,
        delay: Duration,
        matches: impl Fn(&SeenRequest) -> bool + Send + Sync + 'static,
    ) {
        self.shared.state().armed = Some(Armed {
            matches: Box::new(matches),
            delay,
        });
    }

    /// Drops a hold that has not caught anything yet.
    pub fn disarm(&self) {
        self.shared.state().armed = None;
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.state().seen.clone()
    }

    /// Every request a hold caught so far.
    pub fn held(&self) -> Vec<Held> {
        self.shared.state().held.clone()
    }

    /// Waits until `done` holds for the requests seen and held, or fails after `within`
    /// naming `what` and listing the last requests seen.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[SeenRequest], &[Held]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.shared.changed.notified();
            {
                let state = self.shared.state();
                if let Some(found) = done(&state.seen, &state.held) {
                    return Ok(found);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.shared.state();
                let last: Vec<String> = state
                    .seen
                    .iter()
                    .rev()
                    .take(15)
                    .rev()
                    .map(|r| r.to_string())
                    .collect();
                anyhow::bail!(
                    "S3 proxy: no {what} within {within:?}; held {:?}; last requests:\n{}",
                    state.held,
                    last.join("\n")
                );
            }
        }
    }

    /// Waits until the armed hold has caught a request (it is waiting now); returns it.
    pub async fn wait_caught(&self, within: Duration) -> Result<SeenRequest> {
        self.wait_for("request caught by the hold", within, |_, held| {
            held.last().map(|h| h.request.clone())
        })
        .await
    }

    /// Waits until the request the hold caught has been answered; returns what happened.
    pub async fn wait_answered(&self, within: Duration) -> Result<Held> {
        self.wait_for("answer to the held request", within, |_, held| {
            held.last().filter(|h| h.answered.is_some()).cloned()
        })
        .await
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept_task.abort();
    }
}

/// Logs `request`, holds it if the armed hold matches, forwards it, passes the answer on.
async fn forward(
    mut request: Request<Incoming>,
    shared: Arc<Shared>,
    client: Client<HttpConnector, Incoming>,
    authority: hyper::http::uri::Authority,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut seen = describe(&request);
    let hold = {
        let mut state = shared.state();
        seen.n = state.seen.len();
        let caught = state.armed.as_ref().is_some_and(|a| (a.matches)(&seen));
        let delay = if caught {
            let delay = state.armed.take().map(|a| a.delay);
            state.held.push(Held {
                request: seen.clone(),
                forwarded: None,
                answered: None,
                status: None,
            });
            delay.map(|d| (state.held.len() - 1, d))
        } else {
            None
        };
        state.seen.push(seen);
        delay
    };
    shared.changed.notify_waiters();
    if let Some((index, delay)) = hold {
        tokio::time::sleep(delay).await;
        shared.state().held[index].forwarded = Some(Instant::now());
        shared.changed.notify_waiters();
    }
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    // A URI with a scheme and an authority always has a path, and these parts came from one.
    *request.uri_mut() = hyper::Uri::from_parts(parts).expect("an absolute upstream URI");
    let answer = client.request(request).await;
    if let Some((index, _)) = hold {
        let mut state = shared.state();
        state.held[index].answered = Some(Instant::now());
        state.held[index].status = answer.as_ref().ok().map(|r| r.status().as_u16());
        drop(state);
        shared.changed.notify_waiters();
    }
    answer
}

/// The request as a predicate sees it (numbered by the caller, under the lock).
fn describe(request: &Request<Incoming>) -> SeenRequest {
    let uri = request.uri();
    // Parsing against a dummy base decodes the path and the query the way S3 reads them.
    let parsed = reqwest::Url::parse(&format!(
        "http://proxy{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    ))
    .ok();
    let path = parsed
        .as_ref()
        .map(|u| percent_decode(u.path()))
        .unwrap_or_else(|| uri.path().to_string());
    let query = parsed
        .as_ref()
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    SeenRequest {
        n: 0,
        method: request.method().to_string(),
        path,
        query,
        at: Instant::now(),
    }
}

/// Decodes `%XX` escapes (the path of a key with special characters).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream answering every request with 200 and its query string.
    async fn echo_upstream() -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
            uri.query().unwrap_or_default().to_string()
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(format!("http://{addr}"))
    }

    #[tokio::test]
    async fn holds_only_the_next_matching_request() -> Result<()> {
        let proxy = S3Proxy::start(&echo_upstream().await?).await?;
        let http = reqwest::Client::new();
        let delay = Duration::from_millis(600);
        proxy.hold_next(delay, |r| r.is_list_objects("p/.tails/x/"));
        let url = format!(
            "{}/bucket?list-type=2&prefix=p%2F.tails%2Fx%2F",
            proxy.endpoint()
        );

        let other = Instant::now();
        http.get(format!("{}/bucket?uploads&prefix=p%2F", proxy.endpoint()))
            .send()
            .await?;
        assert!(
            other.elapsed() < delay,
            "a request the hold does not match waited"
        );

        let held = Instant::now();
        let body = http.get(&url).send().await?.text().await?;
        assert!(held.elapsed() >= delay, "the matching request was not held");
        assert_eq!(body, "list-type=2&prefix=p%2F.tails%2Fx%2F");
        let caught = proxy.wait_answered(Duration::from_secs(5)).await?;
        assert_eq!(caught.request.param("prefix"), Some("p/.tails/x/"));
        assert_eq!(caught.status, Some(200));

        // One-shot: the same request again passes at once.
        let again = Instant::now();
        http.get(&url).send().await?;
        assert!(again.elapsed() < delay, "the hold caught a second request");
        assert_eq!(proxy.held().len(), 1);
        assert_eq!(proxy.seen().len(), 3);
        assert!(proxy.seen()[0].is_list_multipart_uploads("p/"));
        Ok(())
    }
}
