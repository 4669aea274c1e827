//! Where connections come from: a TCP port or a unix socket (tusd's -unix-sock), in clear or
//! through TLS. The TLS handshake runs in the connection's own task (a slow client holds up
//! no one else), bounded by the header read timeout like the request head that follows.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The next connection, and its peer's address (none on a unix socket).
    pub(crate) async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

/// An accepted connection, before TLS.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection taken off the runtime that accepted it, to be served on another.
pub(crate) enum Detached {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    pub(crate) fn detach(self) -> io::Result<Detached> {
        Ok(match self {
            Self::Tcp(s) => Detached::Tcp(s.into_std()?),
            Self::Unix(s) => Detached::Unix(s.into_std()?),
        })
    }
}

impl Detached {
    /// Registers the connection with the runtime this runs on.
    pub(crate) fn attach(self) -> io::Result<Stream> {
        Ok(match self {
            Self::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            Self::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }
}

/// What one read from a TLS connection's socket takes at most. rustls asks for 4 KiB at a
/// time: straight from the socket that is a syscall per 4 KiB. Measured with one 1 GiB
/// PATCH over loopback (curl), the server's CPU was 2.5x plain HTTP's unbuffered, 1.9x with
/// 64 KiB and 1.9x with 32 KiB (medians of 3 each). Every TLS connection holds this buffer
/// for its life, so the smaller.
const TLS_READ_BUFFER: usize = 32 << 10;

/// A connection as hyper reads it: in clear, or after the TLS handshake.
pub(crate) enum Io {
    Clear(Stream),
    Tls(Box<TlsStream<BufReader<Stream>>>),
}

/// Runs the TLS handshake when `tls` is given; fails when it takes longer than `limit`.
pub(crate) async fn handshake(
    stream: Stream,
    tls: Option<&Arc<tokio_rustls::rustls::ServerConfig>>,
    limit: Duration,
) -> io::Result<Io> {
    let Some(config) = tls else {
        return Ok(Io::Clear(stream));
    };
    let buffered = BufReader::with_capacity(TLS_READ_BUFFER, stream);
    let accept = TlsAcceptor::from(config.clone()).accept(buffered);
    match tokio::time::timeout(limit, accept).await {
        Ok(stream) => Ok(Io::Tls(Box::new(stream?))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Calls the same poll method on whichever stream `self` holds.
macro_rules! delegate {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Self::Tcp(s) => Pin::new(s).$method($($arg),*),
            Self::Unix(s) => Pin::new(s).$method($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
    }
}

macro_rules! delegate_io {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Self::Clear(s) => Pin::new(s).$method($($arg),*),
            Self::Tls(s) => Pin::new(s.as_mut()).$method($($arg),*),
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate_io!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate_io!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate_io!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Clear(_) => true,
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_io!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_io!(self, poll_shutdown(cx))
    }
}
