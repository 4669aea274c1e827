//! A TLS listener for the stand-in servers of the tests (hook receiver, OTLP collector): a
//! certificate made on the spot for 127.0.0.1, and a record of how every connection began,
//! so a test can tell a verified TLS session from a refused one and from bytes sent in clear.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS handshake record (a ClientHello starts with it); plain HTTP
/// starts with a method's letter instead.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A self-signed certificate for `127.0.0.1` and `localhost`, with its PEM written to a file
/// (what `hooks.ca_file` or `log.otlp_ca_file` point at).
pub struct SelfSigned {
    pem_file: PathBuf,
    server: Arc<ServerConfig>,
    _dir: tempfile::TempDir,
}

impl SelfSigned {
    pub fn new() -> Result<Self> {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])?;
        let dir = tempfile::Builder::new().prefix("tusk-tls-").tempdir()?;
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, made.cert.pem())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(made.cert.der().to_vec())], key)
            .context("the made certificate does not fit its key")?;
        Ok(Self {
            pem_file,
            server: Arc::new(server),
            _dir: dir,
        })
    }

    pub fn pem_path(&self) -> &Path {
        &self.pem_file
    }

    /// A listener on 127.0.0.1:0 presenting this certificate.
    pub async fn listen(&self) -> Result<TlsListener> {
        Ok(TlsListener {
            tcp: TcpListener::bind("127.0.0.1:0").await?,
            acceptor: TlsAcceptor::from(self.server.clone()),
            log: ConnectionLog::default(),
        })
    }
}

/// How one connection to a [`TlsListener`] began.
#[derive(Debug, Clone)]
pub enum Opened {
    /// The handshake completed: the client trusted the certificate.
    Tls,
    /// The client sent a ClientHello but the handshake failed (e.g. the client refused the
    /// certificate).
    HandshakeFailed(String),
    /// The first byte was not a TLS handshake record: the client spoke in clear.
    Clear(u8),
    /// The client closed before sending anything.
    Nothing,
}

/// What a [`TlsListener`] saw, shared with the test.
#[derive(Clone, Default)]
pub struct ConnectionLog(Arc<Mutex<Vec<Opened>>>);

impl ConnectionLog {
    pub fn all(&self) -> Vec<Opened> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, opened: Opened) {
        if let Ok(mut log) = self.0.lock() {
            log.push(opened);
        }
    }
}

/// A TCP listener that completes the TLS handshake before handing a connection on; failed
/// handshakes are logged and skipped. It serves axum (`axum::serve`) and can be accepted
/// from directly.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    log: ConnectionLog,
}

impl TlsListener {
    pub fn log(&self) -> ConnectionLog {
        self.log.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection whose handshake completed.
    pub async fn next(&mut self) -> io::Result<(TlsStream<TcpStream>, SocketAddr)> {
        loop {
            let (stream, peer) = self.tcp.accept().await?;
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) | Err(_) => {
                    self.log.push(Opened::Nothing);
                    continue;
                }
                Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                    self.log.push(Opened::Clear(first[0]));
                    continue;
                }
                Ok(_) => {}
            }
            match self.acceptor.accept(stream).await {
                Ok(tls) => {
                    self.log.push(Opened::Tls);
                    return Ok((tls, peer));
                }
                Err(e) => self.log.push(Opened::HandshakeFailed(e.to_string())),
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.next().await {
                Ok(accepted) => return accepted,
                // An accept error (e.g. too many open files) passes; keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
