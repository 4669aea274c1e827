//! Interim (1xx) responses on HTTP/1.1, which hyper 1.x cannot send: it answers any 1xx
//! status a service returns with a 500 (its informational-response support is unmerged,
//! hyperium/hyper#3815).
//!
//! The draft "Resumable Uploads for HTTP" sends `104 Upload Resumption Supported` before
//! reading a creation's body, so a client cut off mid-body already knows the upload's URL.
//! Carrying a patched hyper would mean rebasing it on every hyper release; instead, the
//! connection's socket is shared between hyper and the request's handler, and the handler
//! writes the interim head itself, before hyper writes anything of the final response:
//!
//! - hyper writes nothing for a request until its handler returns, except `100 Continue`,
//!   which it sends when the body is first read; interim heads are sent before that, so
//!   the order on the wire is `104`, `100` (when asked for), then the final head.
//! - Between a response and the next request hyper may still hold bytes of the previous
//!   response (a socket that took only part of them). hyper flushes its own buffer into
//!   the socket before it flushes the socket, so an interim head waits until hyper's last
//!   write was followed by a completed flush.
//! - Interim bytes the socket does not take at once stay in this module's buffer, and are
//!   written before anything hyper writes next.
//!
//! HTTP/2 streams and HTTP/1.0 clients get no interim responses (the handler is given no
//! [`InterimSender`] for them); RFC 9110 forbids 1xx to HTTP/1.0 clients.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};

use crate::listener::Io;

/// An accepted connection, as hyper reads and writes it: the plain socket, or one that
/// also lets handlers write interim responses.
pub(crate) enum Socket {
    Plain(Io),
    Shared(SharedSocket),
}

impl Socket {
    /// `stream` as hyper's I/O, and the sender of interim responses when `interim` is on.
    pub(crate) fn new(stream: Io, interim: bool) -> (Self, Option<InterimSender>) {
        if !interim {
            return (Self::Plain(stream), None);
        }
        let (read, write) = tokio::io::split(stream);
        let writer = Arc::new(Mutex::new(Writer {
            socket: write,
            pending: BytesMut::new(),
            hyper_flushed: true,
            waiting: None,
        }));
        let sender = InterimSender(writer.clone());
        (Self::Shared(SharedSocket { read, writer }), Some(sender))
    }
}

/// The socket split: hyper alone reads; hyper and [`InterimSender`]s write, in turn.
pub(crate) struct SharedSocket {
    read: ReadHalf<Io>,
    writer: Arc<Mutex<Writer>>,
}

struct Writer {
    socket: WriteHalf<Io>,
    /// Interim bytes the socket has not taken yet; they go before anything hyper writes.
    pending: BytesMut,
    /// Whether hyper's own buffer is empty: its last write was followed by a completed
    /// flush (true before its first write).
    hyper_flushed: bool,
    /// An interim sender waiting for hyper's buffer to empty.
    waiting: Option<Waker>,
}

impl Writer {
    /// Writes the pending interim bytes until none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.has_remaining() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes interim responses on one HTTP/1.1 connection; given to each of its requests.
#[derive(Clone)]
pub(crate) struct InterimSender(Arc<Mutex<Writer>>);

impl InterimSender {
    /// Writes `head` (a complete 1xx status line and header block) on the connection once
    /// hyper has nothing of its own left to write. Must be called before the request's
    /// body is read and before its response is returned.
    pub(crate) async fn send(&self, head: &[u8]) -> io::Result<()> {
        let mut queued = false;
        poll_fn(|cx| {
            let mut writer = lock(&self.0);
            if !queued {
                if !writer.hyper_flushed {
                    writer.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                writer.pending.extend_from_slice(head);
                queued = true;
            }
            ready!(writer.poll_drain(cx))?;
            Pin::new(&mut writer.socket).poll_flush(cx)
        })
        .await
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Shared(shared) => Pin::new(&mut shared.read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Shared(shared) => {
                let mut writer = lock(&shared.writer);
                writer.hyper_flushed = false;
                ready!(writer.poll_drain(cx))?;
                Pin::new(&mut writer.socket).poll_write(cx, buf)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Shared(shared) => {
                let mut writer = lock(&shared.writer);
                writer.hyper_flushed = false;
                ready!(writer.poll_drain(cx))?;
                Pin::new(&mut writer.socket).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Shared(shared) => {
                let mut writer = lock(&shared.writer);
                ready!(writer.poll_drain(cx))?;
                ready!(Pin::new(&mut writer.socket).poll_flush(cx))?;
                writer.hyper_flushed = true;
                if let Some(waiting) = writer.waiting.take() {
                    waiting.wake();
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Shared(shared) => {
                let mut writer = lock(&shared.writer);
                ready!(writer.poll_drain(cx))?;
                Pin::new(&mut writer.socket).poll_shutdown(cx)
            }
        }
    }
}
