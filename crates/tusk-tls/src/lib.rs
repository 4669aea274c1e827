//! TLS: incoming for the upload listener ([`server`]), and outgoing for the HTTP clients
//! Tusk starts itself (hooks, OTLP trace export): one rustls client configuration, built the
//! same way for both.
//!
//! - The crypto provider is aws-lc-rs, named explicitly: it is the one the AWS SDK and the
//!   Redis client already link, so the binary carries a single TLS stack, and naming it keeps
//!   rustls from panicking should another dependency ever enable a second provider.
//! - Servers are trusted by the Mozilla roots (webpki-roots, as the Redis client does), or,
//!   when a CA file is configured, by the certificates of that file only: a private CA then
//!   cannot be bypassed by a public one.
//! - Certificate and host name verification cannot be turned off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod server;

pub use server::{ServerTls, TlsMode};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A connector for hyper-util's legacy client: `https://` URLs over TLS, `http://` ones in
/// clear (the scheme is the operator's choice; an https URL never falls back to clear).
pub type Connector = HttpsConnector<HttpConnector>;

/// Why a TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {path:?}: {source}")]
    ReadCaFile {
        setting: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{setting}: {path:?} is not a PEM certificate bundle: {reason}")]
    BadCaFile {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{setting}: {path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    EmptyCaFile { setting: String, path: String },
    #[error("cannot read {path:?}: {source}")]
    ReadServerFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path:?}: {reason}")]
    BadServerFile { path: String, reason: String },
    #[error("the TLS library refused its configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The roots servers are checked against: the certificates of `ca_file` (a PEM bundle) when
/// given, else the Mozilla roots. `setting` names the configuration key in errors.
pub fn roots(ca_file: Option<&Path>, setting: &str) -> Result<RootCertStore, TlsError> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCaFile {
        setting: setting.to_string(),
        path: shown.clone(),
        source,
    })?;
    let bad = |reason: String| TlsError::BadCaFile {
        setting: setting.to_string(),
        path: shown.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyCaFile {
            setting: setting.to_string(),
            path: shown,
        });
    }
    Ok(roots)
}

/// The rustls client configuration: TLS 1.2 and 1.3, servers verified against [`roots`].
pub fn client_config(ca_file: Option<&Path>, setting: &str) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_file, setting)?)
        .with_no_client_auth())
}

/// A [`Connector`] for HTTP/1.1 with TCP_NODELAY and an optional connect timeout, whose TLS
/// is [`client_config`]. An empty `ca_file` path counts as none.
pub fn connector(
    ca_file: Option<&Path>,
    setting: &str,
    connect_timeout: Option<Duration>,
) -> Result<Connector, TlsError> {
    let ca_file = ca_file.filter(|p| !p.as_os_str().is_empty());
    let tls = client_config(ca_file, setting)?;
    let mut http = HttpConnector::new();
    // The TLS layer takes the https URLs; the TCP connector must let them through.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ca_file_trusts_the_public_roots() {
        let roots = roots(None, "x.ca_file").expect("webpki roots");
        assert!(roots.len() > 50);
    }

    #[test]
    fn an_unreadable_ca_file_names_the_setting_and_path() {
        let error = connector(
            Some(Path::new("/nonexistent/ca.pem")),
            "hooks.ca_file",
            None,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            error.starts_with("hooks.ca_file: cannot read \"/nonexistent/ca.pem\""),
            "{error}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let error = roots(Some(&path), "hooks.ca_file").err();
        assert!(
            matches!(error, Some(TlsError::EmptyCaFile { .. })),
            "{error:?}"
        );
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = roots(Some(&path), "hooks.ca_file").err();
        assert!(
            matches!(error, Some(TlsError::BadCaFile { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_path_counts_as_none() {
        assert!(connector(Some(Path::new("")), "hooks.ca_file", None).is_ok());
    }
}
