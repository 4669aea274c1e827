//! The etcd coordinator over TLS with client certificates, against a real etcd that asks for
//! them: certificates made here (a CA, a server and a client certificate, by rcgen).

use std::process::Stdio;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tusk_coord_etcd::{EtcdCoordinator, EtcdSettings, EtcdTls};
use tusk_core::contract::record;
use tusk_core::{CoordError, Coordinator};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(vec!["tusk".into()], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A single-member etcd that serves clients over TLS only and requires a client
/// certificate signed by the CA.
struct TlsEtcd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsEtcd {
    fn start(pki: &Pki) -> TlsEtcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        let ca = file("ca.pem", &pki.ca);
        let cert = file("server.pem", &pki.server.0);
        let key = file("server-key.pem", &pki.server.1);
        let (port, peer_port) = (free_port(), free_port());
        let client = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "tls"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tls={peer}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--trusted-ca-file")
            .arg(&ca)
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("etcd is needed ({e}): apt-get install -y etcd-server"));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsEtcd {
            child,
            port,
            _dir: dir,
        }
    }

    async fn node(&self, tls: EtcdTls) -> Result<std::sync::Arc<EtcdCoordinator>, CoordError> {
        EtcdCoordinator::connect(EtcdSettings {
            endpoints: vec![format!("https://127.0.0.1:{}", self.port)],
            prefix: "tls/".into(),
            lease_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            credentials: None,
            tls: Some(tls),
        })
        .await
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With the CA and a client certificate the node works; without the certificate etcd
/// refuses it (unavailable, never a record); trusting another CA it refuses etcd.
#[tokio::test]
async fn tls_with_a_client_certificate_and_nothing_less() {
    let pki = make_pki();
    let etcd = TlsEtcd::start(&pki);
    let trusted = EtcdTls {
        ca_pem: pki.ca.clone().into_bytes(),
        identity: Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        )),
    };
    let node = etcd.node(trusted).await.expect("connect");
    let mut served = false;
    for _ in 0..100 {
        if node.ping().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "etcd over TLS never answered");
    node.create(&record("TlsTlsTlsTlsTlsTlsTls001", Some(5), None))
        .await
        .expect("create over TLS");
    let loaded = node.load("TlsTlsTlsTlsTlsTlsTls001").await.expect("load");
    assert_eq!(loaded.map(|r| r.length), Some(Some(5)));

    let anonymous = EtcdTls {
        ca_pem: pki.ca.clone().into_bytes(),
        identity: None,
    };
    if let Ok(node) = etcd.node(anonymous).await {
        let refused = node.load("TlsTlsTlsTlsTlsTlsTls001").await;
        assert!(
            matches!(refused, Err(CoordError::Unavailable(_))),
            "a client without a certificate got {refused:?}"
        );
    }
    let other = make_pki();
    let distrusting = EtcdTls {
        ca_pem: other.ca.into_bytes(),
        identity: Some((other.client.0.into_bytes(), other.client.1.into_bytes())),
    };
    if let Ok(node) = etcd.node(distrusting).await {
        let refused = node.load("TlsTlsTlsTlsTlsTlsTls001").await;
        assert!(
            matches!(refused, Err(CoordError::Unavailable(_))),
            "a client trusting another CA got {refused:?}"
        );
    }
}
