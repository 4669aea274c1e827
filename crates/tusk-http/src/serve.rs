//! The accept loop: hyper with limits that axum::serve does not expose.
//!
//! hyper's read buffer is what one read of a body takes, held by every connection whose body
//! is being read (a chunk in hand and the next read) and counted by no budget: at hyper's
//! default (about 400 KiB) 50 clients sending at full speed held 30 MiB in it. Each read is a
//! `recv` and a wake-up of the task that writes, so a smaller buffer costs CPU per byte: a
//! 1 GiB upload took 34,000-38,000 system calls at 128 KiB, 24,500-31,600 at 256 KiB and
//! 17,000-21,000 at 512 KiB; 16 uploads at once on a slow disk peaked at up to 50, 55 and
//! 89 MiB of RSS (2026-12-03, README's benchmark section). The buffer is
//! 256 KiB, or the header limit and 16 KiB if larger (hyper answers 431 to a head past its
//! buffer). The configured header limit is enforced per request by a layer
//! (`header_limit.rs`).
//!
//! Every connection is bounded in time while nothing is in flight on it (`connections.rs`):
//! hyper's own HTTP/1 header read timeout starts only once the protocol is known, so a
//! connection that sends nothing, or fewer bytes than tell HTTP/1 from the HTTP/2 preface
//! (a lone `P`), would otherwise stay open forever, and so would an idle HTTP/2 connection.
//! A body that pauses is in flight: the engine's network timeout bounds it, so a long
//! upload is never cut here.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use futures_util::future::Either;
use http::{header, HeaderValue, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::runtime::Handle;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt;
use tusk_core::Observer;
use tusk_protocol::{headers::TUS_RESUMABLE, TUS_VERSION};

use crate::connection_threads::ConnectionThreads;
use crate::connections::{Admission, Connections, Cut, Tracked};
use crate::error::{ApiError, Refusal};
use crate::handlers::{OverTls, PeerAddr};
use crate::interim::{InterimSender, Socket};
use crate::listener::{handshake, Listener};

/// How long a connection being closed (graceful shutdown: HTTP/1 after its response,
/// HTTP/2 after GOAWAY) may linger with nothing in flight before it is dropped: a peer that
/// never lets an HTTP/2 connection end must not keep it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The least read buffer of an HTTP/1 connection (see the module's documentation).
const READ_BUFFER: usize = 256 << 10;

/// Room in the read buffer past the longest allowed head: the request line and the start of
/// the body.
const READ_BUFFER_PAST_HEAD: usize = 16 << 10;

/// How long an HTTP/2 keep-alive ping may go unanswered.
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Connection-level limits, and the threads connections are served on.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Time a client has to send a complete request head (slow-loris guard): from the
    /// connection's opening until its first request, and on HTTP/1 from each response to
    /// the next head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight this long after its first request is closed.
    pub idle_timeout: Duration,
    /// Connections open at most (see [`serve`] for what happens past it).
    pub max_connections: usize,
    /// HTTP/2 keep-alive pings after this long without a frame from the client; `None`: off.
    pub http2_keep_alive_interval: Option<Duration>,
    /// Largest request head the router accepts (it sizes the read buffer).
    pub max_header_bytes: usize,
    /// After shutdown is signalled, how long in-flight requests get to finish.
    pub drain: Duration,
    /// Let handlers send interim (1xx) responses on HTTP/1.1 (`interim.rs`): the draft's
    /// `104 Upload Resumption Supported`.
    pub interim_responses: bool,
    /// Threads connections are spread over, each served wholly on one
    /// (`connection_threads.rs`); 0: served on the runtime that calls [`serve`].
    pub connection_threads: usize,
}

/// Serves `router` on `listener` (through TLS when `tls` is given) until `shutdown`
/// resolves, then drains connections.
///
/// Past `max_connections`, a new connection closes the open connection idle longest (no
/// request in flight; counted as `evicted`); when every connection has a request in flight,
/// the new one is closed at once, before reading a byte (`connection_refused`), and the
/// connections already open are served as before.
pub async fn serve(
    listener: Listener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(READ_BUFFER.max(limits.max_header_bytes + READ_BUFFER_PAST_HEAD))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let connections = Connections::new(limits.max_connections);
    let threads = match limits.connection_threads {
        0 => None,
        count => Some(ConnectionThreads::start(count)?),
    };
    // Every connection task holds a receiver: `closed()` resolves once the last one ended.
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match connections.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                tracing::debug!(
                    ?peer,
                    "connection refused: at the limit, every connection busy"
                );
                observer.connection_refused();
                drop(stream);
                continue;
            }
        };
        let activity = slot.activity().clone();
        let over_tls = tls.is_some();
        let service = {
            let router = router.clone();
            let activity = activity.clone();
            move |interim: Option<InterimSender>| {
                hyper::service::service_fn(
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        if let Some(peer) = peer {
                            request.extensions_mut().insert(PeerAddr(peer));
                        }
                        if over_tls {
                            request.extensions_mut().insert(OverTls);
                        }
                        if let Some(interim) = interim
                            .clone()
                            .filter(|_| request.version() == Version::HTTP_11)
                        {
                            request.extensions_mut().insert(interim);
                        }
                        let in_flight = activity.begin();
                        let response = match in_flight {
                            Some(_) => Either::Left(router.clone().oneshot(request)),
                            None => Either::Right(std::future::ready(Ok(evicted_refusal()))),
                        };
                        async move {
                            let response = response.await?;
                            Ok::<_, Infallible>(response.map(|body| Tracked {
                                body,
                                _in_flight: in_flight,
                            }))
                        }
                    },
                )
            }
        };
        let builder = builder.clone();
        let tls = tls.clone();
        let interim_responses = limits.interim_responses;
        let observer = observer.clone();
        let mut stop = stop.subscribe();
        let (header_read_timeout, idle_timeout) = (limits.header_read_timeout, limits.idle_timeout);
        observer.connection_opened();
        // A connection for a connection thread leaves this runtime's reactor here and joins
        // its thread's in its task.
        let (runtime, placed, stream) = match &threads {
            Some(threads) => match stream.detach() {
                Ok(detached) => {
                    let (runtime, placed) = threads.place();
                    (runtime, Some(placed), Either::Left(detached))
                }
                Err(error) => {
                    tracing::debug!(?peer, %error, "accepted connection unusable");
                    observer.connection_closed();
                    continue;
                }
            },
            None => (Handle::current(), None, Either::Right(stream)),
        };
        runtime.spawn(async move {
            let _placed = placed;
            let stream = match stream {
                Either::Left(detached) => match detached.attach() {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(?peer, %error, "accepted connection unusable");
                        observer.connection_closed();
                        return;
                    }
                },
                Either::Right(stream) => stream,
            };
            let io = match handshake(stream, tls.as_ref(), header_read_timeout).await {
                Ok(io) => io,
                Err(error) => {
                    tracing::debug!(?peer, %error, "TLS handshake failed");
                    if error.kind() == std::io::ErrorKind::TimedOut {
                        observer.connection_cut(Cut::HeaderTimeout.label());
                    }
                    observer.connection_closed();
                    drop(slot);
                    return;
                }
            };
            let (socket, interim) = Socket::new(io, interim_responses);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(socket), service(interim))
                .into_owned();
            let mut connection = std::pin::pin!(connection);
            let cut = tokio::select! {
                result = connection.as_mut() => {
                    ended(result, peer, observer.as_ref());
                    None
                }
                cut = activity.until_cut(header_read_timeout, idle_timeout) => Some(Some(cut)),
                _ = stop.wait_for(|stopping| *stopping) => Some(None),
            };
            if let Some(cut) = cut {
                if let Some(cut) = cut {
                    tracing::debug!(?peer, reason = cut.label(), "closing connection");
                    observer.connection_cut(cut.label());
                }
                // HTTP/1 closes after the response in flight, if any; HTTP/2 sends GOAWAY
                // and closes once its streams end; still reading the protocol: at once.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection.as_mut() => ended(result, peer, observer.as_ref()),
                    () = activity.idle_for(CLOSE_GRACE) => {}
                }
            }
            observer.connection_closed();
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(limits.drain, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!("drain time ran out with connections still open");
    }
    Ok(())
}

/// The answer to a request whose head arrived on a connection just evicted (it was idle a
/// moment before, and its place is taken): retry, on a new connection.
fn evicted_refusal() -> axum::response::Response {
    let mut response = ApiError::from(Refusal::ConnectionEvicted).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// Reports how a connection ended; hyper's own timeouts count as cuts.
fn ended(
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    peer: Option<std::net::SocketAddr>,
    observer: &dyn Observer,
) {
    let Err(error) = result else { return };
    if let Some(hyper_error) = error.downcast_ref::<hyper::Error>() {
        if hyper_error.is_timeout() {
            // A server meets two timeouts in hyper: HTTP/1's header read timeout, which has
            // no cause, and an unanswered HTTP/2 keep-alive ping, which has one.
            let reason = if std::error::Error::source(hyper_error).is_none() {
                Cut::HeaderTimeout.label()
            } else {
                Cut::PingTimeout.label()
            };
            tracing::debug!(?peer, reason, "connection closed: timeout");
            observer.connection_cut(reason);
            return;
        }
    }
    tracing::debug!(?peer, %error, "connection ended with an error");
}
