//! Typed configuration: defaults < TOML file (`--config`) < `TUSK_<SECTION>__<KEY>`
//! environment variables (e.g. `TUSK_SERVER__PORT=9000`; see `environment.rs`) < flags.
//!
//! Every field is documented here with its unit and default; `tusk --help` and the README's
//! reference table are generated from the flag table in `cli.rs`, which names these keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tusk_telemetry::LogFormat;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub uploads: UploadsConfig,
    pub storage: StorageConfig,
    pub coordinator: CoordinatorConfig,
    pub log: LogConfig,
    /// HTTP hooks (tusd's -hooks-http): see tusk-hooks' `HookSettings`.
    pub hooks: tusk_hooks::HookSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1`.
    pub host: String,
    /// Port to listen on; 0 picks a free one. Default 8080.
    pub port: u16,
    /// Path under which uploads live. Default `/files/`.
    pub base_path: String,
    /// Listen on this unix socket instead of `host`:`port` (tusd's -unix-sock): for a proxy
    /// on the same machine. A stale socket file left by a crash is replaced; one a live
    /// process listens on stops the start. Default empty (TCP).
    pub unix_socket: String,
    /// PEM file of the certificate chain (leaf first) to serve HTTPS with; needs `tls_key`.
    /// Reloaded on SIGHUP and when the file changes. Default empty (plain HTTP).
    pub tls_certificate: String,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1). Default empty.
    pub tls_key: String,
    /// tusd's TLS modes: `tls12` (TLS 1.2 and 1.3), `tls12-strong` (TLS 1.2 with
    /// ECDHE-AES-256-GCM only), `tls13` (TLS 1.3 only). Default `tls12`.
    pub tls_mode: String,
    /// Build the URLs Tusk hands out from what the proxy in front of it says (the family
    /// `proxy_headers` names), not from Host alone. Default false.
    pub behind_proxy: bool,
    /// With `behind_proxy`, the one header family the proxy sets: `x-forwarded`
    /// (X-Forwarded-Host / X-Forwarded-Proto: nginx, ingress-nginx, HAProxy) or `forwarded`
    /// (RFC 7239). The other family is ignored: a client can send either. Default
    /// `x-forwarded`.
    pub proxy_headers: ProxyHeaders,
    /// With `behind_proxy`, how many proxies in a row set or append to that family: of a
    /// list, the value this many from the right is the client-facing proxy's; anything left
    /// of it came from the client and is ignored. Default 1.
    pub proxy_hops: usize,
    /// Send CORS headers. Default true.
    pub cors: bool,
    /// Origins allowed to upload from a browser: `*`, or a list (a TOML array, or
    /// comma-separated) of origins (`https://app.example.com`, `http://localhost:3000`) and
    /// subdomain patterns (`https://*.example.com`). A listed request `Origin` is echoed
    /// back with `Vary: Origin`. Default `*`.
    #[serde(deserialize_with = "one_or_many")]
    pub cors_allow_origin: Vec<String>,
    /// Allow credentials (cookies, `withCredentials`) from the listed origins
    /// (`Access-Control-Allow-Credentials: true`); refused with `*`. Default false.
    pub cors_allow_credentials: bool,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    /// Default 24h.
    #[serde(with = "humantime_serde")]
    pub cors_max_age: Duration,
    /// Request headers allowed beyond the tus ones (an app's own headers). Default none.
    #[serde(deserialize_with = "one_or_many")]
    pub cors_allow_headers: Vec<String>,
    /// Response headers exposed beyond the tus ones. Default none.
    #[serde(deserialize_with = "one_or_many")]
    pub cors_expose_headers: Vec<String>,
    /// A request body that sends nothing for this long is cut (and its bytes committed).
    /// Default 60s.
    #[serde(with = "humantime_serde")]
    pub network_timeout: Duration,
    /// Time a client has to send a complete request head (slow-loris guard): counted from
    /// the connection's opening until its first request, whatever the protocol (a
    /// connection that sends nothing is closed after it), and on HTTP/1 from the end of each
    /// response until the next request's head is complete. Default 30s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection that has had no request in flight for this long, after its first
    /// request, is closed (HTTP/2: GOAWAY). A request whose body pauses is in flight: it is
    /// bounded by `network_timeout` instead. On HTTP/1 `header_read_timeout` also bounds
    /// the wait for the next request, so the shorter of the two applies. Default 60s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client connections open at most. A connection past it closes the one idle longest
    /// (no request in flight) to make room; when every connection has a request in flight,
    /// the new connection is closed at once without an answer. Default 4096.
    pub max_connections: usize,
    /// HTTP/2: ping the client after this long without a frame from it, and close the
    /// connection if the ping is not answered within 20s (a vanished peer); 0 turns pings
    /// off. Default 30s.
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    /// Largest request head (request line and headers), bytes. Each connection's read buffer
    /// is 128 KiB, or this and 16 KiB if larger. Default 65536.
    pub max_header_bytes: usize,
    /// Send the IETF draft's `104 Upload Resumption Supported` on HTTP/1.1 before reading a
    /// creation's body, so a client cut off mid-body knows where to resume. Off by default:
    /// nginx relays a 104 as if it were the final response; HAProxy relays it correctly.
    /// Default false.
    pub interim_responses: bool,
    /// Address of the admin listener (/healthz, /readyz). Default `127.0.0.1`.
    pub admin_host: String,
    /// Port of the admin listener; 0 picks a free one. Default 8081.
    pub admin_port: u16,
    /// Path of the Prometheus metrics on the admin listener (tusd's -metrics-path).
    /// Default `/metrics`.
    pub metrics_path: String,
    /// On SIGTERM, how long in-flight requests get to commit and finish. Default 30s.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            base_path: "/files/".into(),
            behind_proxy: false,
            proxy_headers: ProxyHeaders::XForwarded,
            proxy_hops: 1,
            cors: true,
            cors_allow_origin: vec!["*".into()],
            cors_allow_credentials: false,
            cors_max_age: Duration::from_secs(24 * 3600),
            cors_allow_headers: Vec::new(),
            cors_expose_headers: Vec::new(),
            network_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            http2_keep_alive_interval: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            interim_responses: false,
            admin_host: "127.0.0.1".into(),
            admin_port: 8081,
            unix_socket: String::new(),
            tls_certificate: String::new(),
            tls_key: String::new(),
            tls_mode: "tls12".into(),
            metrics_path: "/metrics".into(),
            shutdown_drain: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// The TLS configuration of the upload listener, read from its files; `None` for plain
    /// HTTP.
    pub fn tls(&self) -> Result<Option<tusk_tls::ServerTls>, String> {
        if self.tls_certificate.is_empty() {
            return Ok(None);
        }
        let mode = self
            .tls_mode
            .parse()
            .map_err(|e| format!("server.tls_mode: {e}"))?;
        tusk_tls::ServerTls::load(
            std::path::Path::new(&self.tls_certificate),
            std::path::Path::new(&self.tls_key),
            mode,
        )
        .map(Some)
        .map_err(|e| format!("server.tls_certificate / server.tls_key: {e}"))
    }

    /// The checked CORS policy; `None` when CORS is off.
    pub fn cors_policy(&self) -> Result<Option<tusk_http::CorsPolicy>, String> {
        if !self.cors {
            return Ok(None);
        }
        tusk_http::CorsPolicy::new(&tusk_http::CorsSettings {
            allow_origins: self.cors_allow_origin.clone(),
            allow_credentials: self.cors_allow_credentials,
            max_age: self.cors_max_age,
            extra_allow_headers: self.cors_allow_headers.clone(),
            extra_expose_headers: self.cors_expose_headers.clone(),
        })
        .map(Some)
        .map_err(|e| {
            use tusk_http::CorsSettingError as E;
            let setting = match e {
                E::CredentialsWithWildcard => {
                    "server.cors_allow_credentials (--cors-allow-credentials)"
                }
                E::NotAHeaderName(_) => "server.cors_allow_headers / server.cors_expose_headers",
                _ => "server.cors_allow_origin (--cors-allow-origin)",
            };
            format!("{setting}: {e}")
        })
    }
}

/// A list given as a TOML array or as one comma-separated string (the form flags, Helm values
/// and older files use).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(items) => items,
    })
}

/// The proxy header family `server.proxy_headers` trusts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeaders {
    /// X-Forwarded-Host and X-Forwarded-Proto.
    #[default]
    XForwarded,
    /// Forwarded (RFC 7239).
    Forwarded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Largest upload in bytes, advertised as Tus-Max-Size; 0 means no limit. Default 0.
    pub max_size: u64,
    /// Largest Upload-Metadata header, bytes. Default 4096.
    pub max_metadata_size: usize,
    /// An unfinished upload without a PATCH for this long expires; 0 turns expiry off.
    /// Default 7d (the tus project's recommendation for general use).
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// How long a terminated or expired upload answers 410 before it is forgotten. Default 1d.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// How often the expiry sweeper runs, and how often an fs node looks for the journals of
    /// nodes that died sharing its upload directory (and recovers them). Default 60s.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a request waits for another request writing the same upload to let go,
    /// before it answers 423. Default 3s.
    #[serde(with = "humantime_serde")]
    pub lease_wait: Duration,
    /// While a PATCH streams, what it received is made durable and committed every this
    /// many bytes, or every `commit_interval`, whichever comes first (S3: at the next part
    /// boundary), so a crash loses at most that much. Default 67108864 (64 MiB).
    pub commit_interval_bytes: u64,
    /// See `commit_interval_bytes`. Default 2s.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Most partial uploads one final upload may name; a creation naming more gets 400.
    /// Creating a final (and a HEAD while its partials are unfinished) loads every partial,
    /// so this bounds one request's coordinator work. Default 100 (tus clients split an
    /// upload into a handful of parallel partials); at most 10000 (S3's part count).
    pub max_parts_per_final: usize,
    /// Serve an upload's bytes on GET; false answers 405 (tusd's -disable-download).
    /// Default true.
    pub download: bool,
    /// Serve DELETE (the termination extension, and the draft's cancellation); false answers
    /// 405 and drops `termination` from Tus-Extension. Default true.
    pub termination: bool,
    /// Serve the concatenation extension (where the storage can); false refuses
    /// `Upload-Concat` with 400 and drops it from Tus-Extension. Default true.
    pub concatenation: bool,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            max_size: 0,
            max_metadata_size: 4096,
            expire_after: Duration::from_secs(7 * 24 * 3600),
            tombstone_ttl: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(60),
            lease_wait: Duration::from_secs(3),
            commit_interval_bytes: 64 << 20,
            commit_interval: Duration::from_secs(2),
            max_parts_per_final: 100,
            download: true,
            termination: true,
            concatenation: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Which storage backend holds the bytes. Default `fs`.
    pub backend: StorageBackend,
    pub fs: FsConfig,
    /// S3 (or S3-compatible) storage: see tusk-store-s3's `S3Settings`.
    pub s3: tusk_store_s3::S3Settings,
    /// Google Cloud Storage: see tusk-store-gcs's `GcsSettings`.
    pub gcs: tusk_store_gcs::GcsSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A local or shared directory.
    #[default]
    Fs,
    /// An S3 bucket: AWS, MinIO, R2 or any S3-compatible server.
    S3,
    /// A Google Cloud Storage bucket.
    Gcs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsConfig {
    /// Directory for upload bytes. Default `./data`.
    pub dir: PathBuf,
    /// The most bytes a PATCH body gathers for one disk write: what an upload streaming
    /// alone writes in. Default 1 MiB.
    pub write_window: usize,
    /// Memory the PATCH bodies streaming to disk hold together: with N of them, each
    /// writes in windows of write_buffer / 3N (at most write_window, at least 64 KiB) and
    /// holds three. Default 16 MiB.
    pub write_buffer: usize,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./data"),
            write_window: 1 << 20,
            write_buffer: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Which coordinator holds records and leases. Default `embedded`.
    pub backend: CoordinatorBackend,
    /// A lease not renewed for this long expires (a crashed or paused node's uploads are
    /// free again after it). Default 10s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    pub embedded: EmbeddedConfig,
    pub redis: RedisConfig,
    pub etcd: EtcdConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            backend: CoordinatorBackend::default(),
            lease_ttl: Duration::from_secs(10),
            embedded: EmbeddedConfig::default(),
            redis: RedisConfig::default(),
            etcd: EtcdConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordinatorBackend {
    /// Records on local disk, leases in the process: a single node.
    #[default]
    Embedded,
    /// Redis: records and leases shared by every node of a cluster.
    Redis,
    /// etcd: records and leases shared by every node of a cluster.
    Etcd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key and channel. Default `tusk:`.
    pub prefix: String,
    /// Time allowed for one Redis call before the request answers 503. Default 2s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Redis Sentinel addresses; when set, the master is found (and followed across
    /// failovers) through them, and `url` only gives credentials, database and TLS.
    pub sentinels: Vec<String>,
    /// The master's name in the Sentinel configuration. Default `mymaster`.
    pub sentinel_master: String,
    /// After each change, wait for this many replicas to have it (Redis WAIT), so that a
    /// failover cannot forget an acknowledged commit. Default 0.
    pub wait_replicas: u32,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs, credentials in
    /// each); when set, uploads spread over the cluster's shards and `url` and `sentinels`
    /// are not used.
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            prefix: "tusk:".into(),
            timeout: Duration::from_secs(2),
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
            wait_replicas: 0,
            cluster_nodes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members. Default `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of every key. Default `tusk/`.
    pub prefix: String,
    /// Time allowed for one etcd call (and for connecting) before the request answers 503.
    /// Default 2s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// User name, when etcd has authentication on. Default none.
    pub user: Option<String>,
    /// That user's password (better from the environment than from a file). Default none.
    pub password: Option<String>,
    /// PEM file of the CA certificates that alone are trusted for etcd's certificate; needed
    /// for `https://` endpoints. Default none.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this node's client certificate, for etcd's `--client-cert-auth`.
    /// Default none.
    pub cert_file: Option<PathBuf>,
    /// PEM file of that certificate's private key. Default none.
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "tusk/".into(),
            timeout: Duration::from_secs(2),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory for the record log. Default `<storage.fs.dir>/.tusk`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// tracing filter, e.g. `info` or `tusk=debug`; RUST_LOG overrides it. Default `info`.
    pub level: String,
    /// OpenTelemetry collector's OTLP/HTTP base URL, e.g. `https://collector:4318` or
    /// `http://127.0.0.1:4318`; spans go to `<url>/v1/traces`. Unset or empty: no trace
    /// export.
    pub otlp_endpoint: Option<String>,
    /// PEM file of CA certificates that alone are trusted for an `https://` collector (a
    /// private CA). Unset or empty: the Mozilla roots. Certificates are always verified.
    pub otlp_ca_file: Option<PathBuf>,
    /// `service.name` of the exported traces. Default `tusk`.
    pub service_name: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            otlp_endpoint: None,
            otlp_ca_file: None,
            service_name: "tusk".into(),
        }
    }
}

impl Config {
    /// Rejects combinations that cannot work, with a message that names the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.server.cors_policy()?;
        let base = &self.server.base_path;
        if !base.starts_with('/') || !base.ends_with('/') {
            return Err(format!(
                "server.base_path must start and end with '/', got {base:?}"
            ));
        }
        let server = &self.server;
        if server.tls_certificate.is_empty() != server.tls_key.is_empty() {
            return Err(
                "server.tls_certificate and server.tls_key go together: give both or neither"
                    .into(),
            );
        }
        server
            .tls_mode
            .parse::<tusk_tls::TlsMode>()
            .map_err(|e| format!("server.tls_mode: {e}"))?;
        let metrics = &self.server.metrics_path;
        let taken = ["/healthz", "/readyz", "/uploads"];
        let clashes = taken
            .iter()
            .any(|t| metrics == t || metrics.starts_with(&format!("{t}/")));
        if !metrics.starts_with('/')
            || metrics.len() < 2
            || clashes
            || metrics.contains(['{', '}', '*'])
        {
            return Err(format!(
                "server.metrics_path must be a path of its own on the admin listener (not /, /healthz, /readyz or /uploads), got {metrics:?}"
            ));
        }
        if !(1..=16).contains(&self.server.proxy_hops) {
            return Err("server.proxy_hops must be between 1 and 16".into());
        }
        if self.server.max_header_bytes < 8192 {
            return Err("server.max_header_bytes must be at least 8192".into());
        }
        if self.uploads.sweep_interval.is_zero() {
            return Err("uploads.sweep_interval must be positive".into());
        }
        if self.uploads.commit_interval_bytes < 64 << 10 {
            return Err("uploads.commit_interval_bytes must be at least 65536".into());
        }
        if self.uploads.commit_interval < Duration::from_millis(10) {
            return Err("uploads.commit_interval must be at least 10ms".into());
        }
        // A notification carries the request's headers (and its upload's metadata): the
        // budget must hold several of the largest, or every one would be dropped.
        let floor = (1usize << 20).max(self.server.max_header_bytes.saturating_mul(4));
        if self.hooks.queue_bytes < floor {
            return Err(format!(
                "hooks.queue_bytes must be at least {floor} (1 MiB, and 4 x server.max_header_bytes)"
            ));
        }
        let parts = self.uploads.max_parts_per_final;
        if parts == 0 || parts > tusk_protocol::MAX_CONCAT_PARTS {
            return Err(format!(
                "uploads.max_parts_per_final must be between 1 and {}",
                tusk_protocol::MAX_CONCAT_PARTS
            ));
        }
        if self.coordinator.lease_ttl < Duration::from_millis(300) {
            return Err("coordinator.lease_ttl must be at least 300ms".into());
        }
        if self.server.header_read_timeout.is_zero() {
            return Err("server.header_read_timeout must be positive".into());
        }
        if self.server.idle_timeout.is_zero() {
            return Err("server.idle_timeout must be positive".into());
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        if self.server.network_timeout.is_zero() {
            return Err("server.network_timeout must be positive".into());
        }
        if self.storage.backend == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            if s3.bucket.is_empty() {
                return Err("storage.s3.bucket is required with storage.backend = \"s3\"".into());
            }
            if s3.part_size < s3.min_part_size {
                return Err(
                    "storage.s3.part_size must be at least storage.s3.min_part_size".into(),
                );
            }
            if s3.leftover_grace <= self.coordinator.lease_ttl {
                // A leftover younger than a lease might still be committed by its writer.
                return Err(
                    "storage.s3.leftover_grace must be longer than coordinator.lease_ttl".into(),
                );
            }
        }
        if self.storage.backend == StorageBackend::Gcs {
            let gcs = &self.storage.gcs;
            if gcs.bucket.is_empty() {
                return Err("storage.gcs.bucket is required with storage.backend = \"gcs\"".into());
            }
            if gcs.leftover_grace <= self.coordinator.lease_ttl {
                // A leftover younger than a lease might still be committed by its writer.
                return Err(
                    "storage.gcs.leftover_grace must be longer than coordinator.lease_ttl".into(),
                );
            }
            if gcs.presigned_get && gcs.anonymous {
                return Err(
                    "storage.gcs.presigned_get needs credentials that can sign (a key \
                            file, or the metadata server's account); storage.gcs.anonymous \
                            sends none"
                        .into(),
                );
            }
            if gcs.presign_ttl > Duration::from_secs(7 * 24 * 3600) {
                return Err("storage.gcs.presign_ttl is 7 days at most (V4 signed URLs)".into());
            }
        }
        Ok(())
    }
}

impl CoordinatorConfig {
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            CoordinatorBackend::Embedded => "embedded",
            CoordinatorBackend::Redis => "redis",
            CoordinatorBackend::Etcd => "etcd",
        }
    }
}

impl StorageConfig {
    /// How long a signed GET URL lives, when GET of a finished upload redirects to one.
    pub fn presigned_get(&self) -> Option<Duration> {
        match self.backend {
            StorageBackend::Fs => None,
            StorageBackend::S3 => self.s3.presigned_get.then_some(self.s3.presign_ttl),
            StorageBackend::Gcs => self.gcs.presigned_get.then_some(self.gcs.presign_ttl),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            StorageBackend::Fs => "fs",
            StorageBackend::S3 => "s3",
            StorageBackend::Gcs => "gcs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcs_signed_downloads_need_credentials_that_can_sign() {
        let mut config = Config::default();
        config.storage.backend = StorageBackend::Gcs;
        config.storage.gcs.bucket = "uploads".into();
        config.storage.gcs.presigned_get = true;
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(
            config.storage.presigned_get(),
            Some(Duration::from_secs(15 * 60))
        );
        config.storage.gcs.anonymous = true;
        let refused = config.validate().expect_err("anonymous cannot sign");
        assert!(refused.contains("storage.gcs.presigned_get"), "{refused}");
        config.storage.gcs.anonymous = false;
        config.storage.gcs.presign_ttl = Duration::from_secs(8 * 24 * 3600);
        let refused = config.validate().expect_err("longer than V4 allows");
        assert!(refused.contains("7 days"), "{refused}");
    }

    fn server_from_toml(text: &str) -> ServerConfig {
        ::config::Config::builder()
            .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Config>())
            .expect("valid TOML")
            .server
    }

    #[test]
    fn cors_origins_are_a_list_or_one_comma_separated_string() {
        let list = ["https://a.example", "https://*.b.example"];
        assert_eq!(
            server_from_toml(
                "[server]\ncors_allow_origin = \"https://a.example, https://*.b.example\""
            )
            .cors_allow_origin,
            list
        );
        assert_eq!(
            server_from_toml(
                "[server]\ncors_allow_origin = [\"https://a.example\", \"https://*.b.example\"]"
            )
            .cors_allow_origin,
            list
        );
        assert_eq!(server_from_toml("").cors_allow_origin, ["*"]);
    }

    #[test]
    fn a_cors_setting_browsers_would_refuse_stops_the_start() {
        let mut config = Config::default();
        config.server.cors_allow_credentials = true;
        let refused = config.validate().expect_err("credentials with *");
        assert!(
            refused.contains("server.cors_allow_credentials"),
            "{refused}"
        );
        config.server.cors_allow_origin = vec!["https://app.example/".into()];
        let refused = config.validate().expect_err("a trailing slash");
        assert!(refused.contains("server.cors_allow_origin"), "{refused}");
        config.server.cors_allow_origin = vec!["https://app.example".into()];
        assert_eq!(config.validate(), Ok(()));
        config.server.cors = false;
        config.server.cors_allow_origin = vec!["nonsense".into()];
        assert_eq!(
            config.validate(),
            Ok(()),
            "CORS off: its settings are unused"
        );
    }
}
