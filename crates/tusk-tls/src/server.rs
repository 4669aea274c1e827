//! Incoming TLS for the upload listener (tusd's -tls-certificate, -tls-key, -tls-mode).
//!
//! The certificate is served through a resolver whose key pair can be swapped while the
//! server runs: [`ServerTls::watch`] reloads it on SIGHUP and when either file changes (a
//! renewal by certbot, or a Kubernetes secret update), so new connections get the new
//! certificate and connections already open, with their uploads, go on untouched. A pair
//! that cannot be read, or whose key does not match the certificate (a renewer that has
//! written one file of the two so far), keeps the old pair and is tried again.
//!
//! The modes are tusd's: `tls12` (TLS 1.2 and 1.3, ECDHE with AES-GCM or ChaCha20-Poly1305:
//! rustls offers no other TLS 1.2 suite), `tls12-strong` (TLS 1.2 only, ECDHE with
//! AES-256-GCM only), `tls13` (TLS 1.3 only). Both HTTP/2 and HTTP/1.1 are offered by ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};

use crate::TlsError;

/// How often the certificate and key files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

/// tusd's `-tls-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Tls12,
    Tls12Strong,
    Tls13,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tls12" => Ok(Self::Tls12),
            "tls12-strong" => Ok(Self::Tls12Strong),
            "tls13" => Ok(Self::Tls13),
            other => Err(format!(
                "unknown TLS mode {other:?}: tls12, tls12-strong or tls13"
            )),
        }
    }
}

/// The certificate files and the configuration that serves them.
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
}

/// The key pair handed to each new handshake.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl ServerTls {
    /// Reads the certificate chain (PEM, leaf first) and its key (PEM: PKCS#8, PKCS#1 or
    /// SEC1), and builds the configuration of `mode`.
    pub fn load(cert_file: &Path, key_file: &Path, mode: TlsMode) -> Result<Self, TlsError> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if mode == TlsMode::Tls12Strong {
            provider.cipher_suites.retain(is_strong_tls12);
        }
        let provider = Arc::new(provider);
        let pair = read_pair(cert_file, key_file, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let versions: &[&rustls::SupportedProtocolVersion] = match mode {
            TlsMode::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsMode::Tls12Strong => &[&rustls::version::TLS12],
            TlsMode::Tls13 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// The configuration to accept connections with; it follows every reload.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Reads the files again and serves the new pair from the next handshake on; on error
    /// the pair served so far stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_file, &self.key_file, &self.provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file's modification time or size changes,
    /// for as long as the runtime runs.
    pub fn watch(self: Arc<Self>) -> std::io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            let mut seen = self.stamps();
            let mut failed_at = None;
            let mut poll = tokio::time::interval(POLL);
            loop {
                let asked = tokio::select! {
                    _ = hangups.recv() => true,
                    _ = poll.tick() => false,
                };
                let now = self.stamps();
                if !asked && now == seen {
                    continue;
                }
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(
                            certificate = %self.cert_file.display(),
                            reason = if asked { "SIGHUP" } else { "file changed" },
                            "TLS certificate reloaded"
                        );
                        seen = now;
                        failed_at = None;
                    }
                    // Said once per state of the files; tried again at every poll, since a
                    // renewer may not have written both files yet.
                    Err(error) if asked || failed_at != Some(now) => {
                        tracing::error!(%error, "TLS certificate not reloaded; the previous one is still served");
                        failed_at = Some(now);
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(())
    }

    fn stamps(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        [stamp(&self.cert_file), stamp(&self.key_file)]
    }
}

fn is_strong_tls12(suite: &SupportedCipherSuite) -> bool {
    matches!(
        suite.suite(),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    )
}

fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let bad = |path: &Path, reason: String| TlsError::BadServerFile {
        path: path.display().to_string(),
        reason,
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::ReadServerFile {
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            cert_file,
            "no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|e| bad(key_file, format!("no PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        bad(
            key_file,
            format!("not the key of {}: {e}", cert_file.display()),
        )
    })
}
