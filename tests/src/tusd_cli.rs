//! A `tusk` started with exactly the command line a tusd user would give (no harness flags
//! added), and an HTTP client that reaches it where reqwest does not: through TLS with a
//! test CA and a chosen protocol version, and over a unix socket.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, Command};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio_rustls::TlsConnector;

use crate::harness::{await_listening, tusk_binary};

/// tusd's hook service, server side, for a hook server written in a test.
pub mod hook_service {
    tonic::include_proto!("proto");
}

/// A running `tusk` and what it printed on start.
pub struct TusdStyleNode {
    pub child: Child,
    /// The `listening on` line's URL: `http://...`, `https://...` or `unix:PATH/BASE/`.
    pub endpoint: String,
    pub admin: Option<String>,
}

/// Starts `tusk` with the command line `line` (split on spaces) as it is; fails if it exits
/// before it listens.
pub async fn start(line: &str) -> Result<TusdStyleNode> {
    let args: Vec<&str> = line.split_whitespace().collect();
    let mut child = Command::new(tusk_binary()?)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (endpoint, admin) = await_listening(stdout)
        .await
        .with_context(|| format!("tusk {line}"))?;
    Ok(TusdStyleNode {
        child,
        endpoint,
        admin,
    })
}

/// Runs `tusk` with the command line `line` to its end: exit code, stdout and stderr.
pub async fn run_to_end(line: &str) -> Result<(i32, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(tusk_binary()?)
            .args(line.split_whitespace())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("tusk did not exit within 30s")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

/// One answer, with the protocol it came over.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// A client configuration trusting only `ca_pem`, speaking `versions`, offering h2 and
/// HTTP/1.1.
pub fn client_tls(
    ca_pem: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile(ca_pem)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn rustls_pemfile(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// A TLS connection to `addr` (`127.0.0.1:PORT`) for `localhost`.
pub async fn connect_tls(
    addr: &str,
    config: ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// Sends one request on `io`: HTTP/2 when `h2`, else HTTP/1.1.
pub async fn request<I>(io: I, h2: bool, request: http::Request<Full<Bytes>>) -> Result<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
        version: parts.version,
    })
}

/// One request over the unix socket at `path`.
pub async fn unix_request(path: &Path, request: http::Request<Full<Bytes>>) -> Result<Answer> {
    let stream = UnixStream::connect(path).await?;
    self::request(stream, false, request).await
}

/// A tus request with `Tus-Resumable` and the given headers.
pub fn tus(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("tus-resumable", "1.0.0");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a valid request")
}
