//! Command line: the server flags (named after tusd's where the meaning is the same) and the
//! `bench` and `check-data` subcommands. Each flag overrides one configuration key; [`FLAGS`]
//! is the single table that ties them together, and feeds `--help` and `tusk
//! config-reference`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "tusk",
    version,
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("TUSK_GIT_COMMIT"), ")"),
    about = "Tusk: a horizontally scalable tus resumable-upload server."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeFlags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve uploads (the default when no subcommand is given).
    Serve(Box<ServeFlags>),
    /// Run a load benchmark against any tus server and print one JSON line per scenario.
    Bench(tusk_bench::BenchArgs),
    /// Print the configuration reference as a Markdown table (the README's table); with
    /// --tusd, the table of tusd's flags (docs/tusd-migration.md).
    ConfigReference(ConfigReferenceArgs),
    /// Check the embedded coordinator's directory for damage; --salvage rebuilds it from
    /// every intact frame. Run it with the server stopped.
    CheckData(crate::check_data::CheckDataArgs),
    /// Ask a running node whether it is alive (or, with --ready, ready): exit status 0 when
    /// it is. For the container's HEALTHCHECK and Kubernetes exec probes.
    Healthcheck(crate::healthcheck::HealthcheckArgs),
    /// Show one upload as a running node sees it: progress, segments, expiry, the last
    /// commit's node, lease token and time.
    Inspect(crate::inspect::InspectArgs),
    /// List the uploads a running node is writing now, with their progress.
    Uploads(crate::inspect::UploadsArgs),
}

#[derive(Debug, Args)]
pub struct ConfigReferenceArgs {
    /// Print how each tusd flag maps to Tusk instead.
    #[arg(long)]
    pub tusd: bool,
}

/// The flags of the server besides the settings: those are built from [`FLAGS`] by
/// [`command`] and read back by [`setting_overrides`].
#[derive(Debug, Args, Default, Clone)]
pub struct ServeFlags {
    /// TOML configuration file; environment variables and flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// One setting: its flag (if any), configuration key, default and meaning.
pub struct Flag {
    pub flag: &'static str,
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting: the table behind the flags, their `--help`, the environment variables
/// accepted and the README reference. A setting without a flag name is set in the file or
/// the environment only.
pub const FLAGS: &[Flag] = &[
    Flag {
        flag: "storage",
        help: "Storage backend for the bytes: fs (a local or shared directory), s3 or gcs.",
        key: "storage.backend",
        default: "fs",
    },
    Flag {
        flag: "s3-bucket",
        help: "S3 bucket holding the uploads (required with s3 storage).",
        key: "storage.s3.bucket",
        default: "",
    },
    Flag {
        flag: "s3-object-prefix",
        help: "Prefix of every S3 key Tusk writes, e.g. uploads/.",
        key: "storage.s3.prefix",
        default: "",
    },
    Flag {
        flag: "s3-endpoint",
        help: "Endpoint of an S3-compatible server (MinIO, R2, moto); empty for AWS. Credentials come from the AWS default chain (env, profile, web identity/IRSA, instance metadata).",
        key: "storage.s3.endpoint",
        default: "",
    },
    Flag {
        flag: "s3-path-style",
        help: "Address buckets as endpoint/bucket (MinIO, moto) instead of bucket.endpoint.",
        key: "storage.s3.path_style",
        default: "false",
    },
    Flag {
        flag: "s3-part-size",
        help: "Preferred S3 part size in bytes; grown per upload so that it fits in the part count.",
        key: "storage.s3.part_size",
        default: "16777216",
    },
    Flag {
        flag: "gcs-bucket",
        help: "Google Cloud Storage bucket holding the uploads (required with gcs storage). Credentials come from Google's default chain (GOOGLE_APPLICATION_CREDENTIALS, workload identity on GKE, the metadata server).",
        key: "storage.gcs.bucket",
        default: "",
    },
    Flag {
        flag: "gcs-object-prefix",
        help: "Prefix of every GCS object name Tusk writes, e.g. uploads/.",
        key: "storage.gcs.prefix",
        default: "",
    },
    Flag {
        flag: "gcs-endpoint",
        help: "Endpoint of a GCS-compatible server (an emulator such as fake-gcs-server); empty for Google Cloud Storage.",
        key: "storage.gcs.endpoint",
        default: "",
    },
    Flag {
        flag: "host",
        help: "Address to listen on.",
        key: "server.host",
        default: "127.0.0.1",
    },
    Flag {
        flag: "port",
        help: "Port to listen on; 0 picks a free one.",
        key: "server.port",
        default: "8080",
    },
    Flag {
        flag: "base-path",
        help: "Path under which uploads are served; starts and ends with '/'.",
        key: "server.base_path",
        default: "/files/",
    },
    Flag {
        flag: "unix-socket",
        help: "Listen on this unix socket instead of host and port (a proxy on the same machine); a stale socket file is replaced.",
        key: "server.unix_socket",
        default: "(none: TCP)",
    },
    Flag {
        flag: "tls-certificate",
        help: "PEM certificate chain (leaf first) to serve HTTPS with, HTTP/2 offered by ALPN; reloaded on SIGHUP and when the file changes, without dropping open connections.",
        key: "server.tls_certificate",
        default: "(none: plain HTTP)",
    },
    Flag {
        flag: "tls-key",
        help: "PEM private key of the TLS certificate (PKCS#8, PKCS#1 or SEC1).",
        key: "server.tls_key",
        default: "(none)",
    },
    Flag {
        flag: "tls-mode",
        help: "tls12 (TLS 1.2 and 1.3), tls12-strong (TLS 1.2 with ECDHE AES-256-GCM only) or tls13 (TLS 1.3 only), as in tusd.",
        key: "server.tls_mode",
        default: "tls12",
    },
    Flag {
        flag: "behind-proxy",
        help: "Build the URLs handed out from the proxy's headers (the family server.proxy_headers names) instead of Host alone.",
        key: "server.behind_proxy",
        default: "false",
    },
    Flag {
        flag: "interim-responses",
        help: "Send the IETF draft's 104 (Upload Resumption Supported) on HTTP/1.1 before reading a creation's body. Off by default: nginx relays a 104 as if it were the final response; HAProxy relays it correctly (docs/rufh.md).",
        key: "server.interim_responses",
        default: "false",
    },
    Flag {
        flag: "disable-cors",
        help: "CORS headers on every response (the flag turns them off).",
        key: "server.cors",
        default: "true",
    },
    Flag {
        flag: "cors-allow-origin",
        help: "Origins allowed to upload from a browser: `*`, or comma-separated origins (`https://app.example.com`) and subdomain patterns (`https://*.example.com`); a listed origin is echoed with `Vary: Origin`.",
        key: "server.cors_allow_origin",
        default: "*",
    },
    Flag {
        flag: "cors-allow-credentials",
        help: "Allow cookies and other credentials from the listed origins; refused at start-up with `*`.",
        key: "server.cors_allow_credentials",
        default: "false",
    },
    Flag {
        flag: "cors-max-age",
        help: "How long a browser may cache a preflight's answer (Access-Control-Max-Age).",
        key: "server.cors_max_age",
        default: "24h",
    },
    Flag {
        flag: "cors-allow-headers",
        help: "Request headers allowed beyond the tus ones (comma-separated).",
        key: "server.cors_allow_headers",
        default: "[]",
    },
    Flag {
        flag: "cors-expose-headers",
        help: "Response headers exposed beyond the tus ones (comma-separated).",
        key: "server.cors_expose_headers",
        default: "[]",
    },
    Flag {
        flag: "network-timeout",
        help: "A request body that sends nothing for this long is cut; its bytes are committed.",
        key: "server.network_timeout",
        default: "60s",
    },
    Flag {
        flag: "upload-dir",
        help: "Directory for upload bytes (fs storage).",
        key: "storage.fs.dir",
        default: "./data",
    },
    Flag {
        flag: "max-size",
        help: "Largest upload in bytes, advertised as Tus-Max-Size; 0 means no limit.",
        key: "uploads.max_size",
        default: "0",
    },
    Flag {
        flag: "disable-download",
        help: "Serve an upload's bytes on GET (the flag turns it off: 405).",
        key: "uploads.download",
        default: "true",
    },
    Flag {
        flag: "disable-termination",
        help: "Serve DELETE, the termination extension (the flag turns it off: 405, and Tus-Extension no longer announces it).",
        key: "uploads.termination",
        default: "true",
    },
    Flag {
        flag: "disable-concatenation",
        help: "Serve the concatenation extension where the storage can (the flag turns it off: Upload-Concat answers 400, and Tus-Extension no longer announces it).",
        key: "uploads.concatenation",
        default: "true",
    },
    Flag {
        flag: "max-metadata-size",
        help: "Largest Upload-Metadata header in bytes.",
        key: "uploads.max_metadata_size",
        default: "4096",
    },
    Flag {
        flag: "expire-after",
        help: "An unfinished upload idle this long expires; 0 turns expiry off.",
        key: "uploads.expire_after",
        default: "7d",
    },
    Flag {
        flag: "tombstone-ttl",
        help: "How long a terminated or expired upload answers 410 before 404.",
        key: "uploads.tombstone_ttl",
        default: "1d",
    },
    Flag {
        flag: "sweep-interval",
        help: "How often the expiry sweeper runs, and an fs node looks for the journals of dead nodes sharing its directory.",
        key: "uploads.sweep_interval",
        default: "60s",
    },
    Flag {
        flag: "lease-wait",
        help: "How long a request waits for another writer of the same upload before 423.",
        key: "uploads.lease_wait",
        default: "3s",
    },
    Flag {
        flag: "admin-port",
        help: "Port of the admin listener (/healthz, /readyz); 0 picks a free one.",
        key: "server.admin_port",
        default: "8081",
    },
    Flag {
        flag: "metrics-path",
        help: "Path of the Prometheus metrics on the admin listener.",
        key: "server.metrics_path",
        default: "/metrics",
    },
    Flag {
        flag: "coordinator",
        help: "Where records and leases live: embedded (one node), redis or etcd (a cluster).",
        key: "coordinator.backend",
        default: "embedded",
    },
    Flag {
        flag: "lease-ttl",
        help: "A lease not renewed for this long expires, freeing a dead node's uploads.",
        key: "coordinator.lease_ttl",
        default: "10s",
    },
    Flag {
        flag: "redis-url",
        help: "Redis URL: redis://[:password@]host:port/db, rediss:// for TLS.",
        key: "coordinator.redis.url",
        default: "redis://127.0.0.1:6379/",
    },
    Flag {
        flag: "redis-prefix",
        help: "Prefix of every Redis key and channel.",
        key: "coordinator.redis.prefix",
        default: "tusk:",
    },
    Flag {
        flag: "redis-cluster-nodes",
        help: "Seed nodes of a Redis Cluster, comma-separated redis:// URLs; set, uploads spread over its shards and redis-url is not used.",
        key: "coordinator.redis.cluster_nodes",
        default: "[]",
    },
    Flag {
        flag: "etcd-endpoints",
        help: "Client URLs of the etcd members, comma-separated, e.g. http://etcd-0:2379,http://etcd-1:2379.",
        key: "coordinator.etcd.endpoints",
        default: "[\"http://127.0.0.1:2379\"]",
    },
    Flag {
        flag: "hooks-http",
        help: "URL (http:// or https://) that receives hook events as JSON POSTs; empty: no hooks.",
        key: "hooks.endpoint",
        default: "(none)",
    },
    Flag {
        flag: "hooks-dir",
        help: "Directory of hook executables named after the events (pre-create, post-finish, ...), run as tusd runs them: tusd's HookRequest JSON on stdin, TUS_ID/TUS_SIZE/TUS_OFFSET in the environment, tusd's HookResponse on stdout. An event without a file is skipped. Exclusive with --hooks-http.",
        key: "hooks.dir",
        default: "(none)",
    },
    Flag {
        flag: "hooks-grpc",
        help: "gRPC server (host:port, plaintext) speaking tusd's hook service (proto.HookHandler/InvokeHook): tusd's HookRequest in, HookResponse out, so tusd's gRPC hook servers answer as they are. Exclusive with --hooks-http and --hooks-dir.",
        key: "hooks.grpc",
        default: "(none)",
    },
    Flag {
        flag: "hooks-enabled-events",
        help: "Comma-separated hook events to send: pre-create, post-create, post-receive, pre-finish, post-finish, post-terminate, pre-access.",
        key: "hooks.events",
        default: "all but pre-access",
    },
    Flag {
        flag: "log-format",
        help: "Log format: text or json.",
        key: "log.format",
        default: "text",
    },
    Flag {
        flag: "",
        help: "With --behind-proxy, the one header family the proxy sets: x-forwarded (X-Forwarded-Host/Proto: nginx, ingress-nginx, HAProxy) or forwarded (RFC 7239). The other family is ignored.",
        key: "server.proxy_headers",
        default: "x-forwarded",
    },
    Flag {
        flag: "",
        help: "With --behind-proxy, how many proxies in a row set or append to that family: the value this many from the right is used, anything left of it (the client's) ignored.",
        key: "server.proxy_hops",
        default: "1",
    },
    Flag {
        flag: "",
        help: "While a PATCH streams, its bytes are made durable and committed every this many bytes (S3: at the next part boundary); a crash loses at most one interval.",
        key: "uploads.commit_interval_bytes",
        default: "67108864",
    },
    Flag {
        flag: "",
        help: "... or every this long, whichever comes first; HEAD shows the progress.",
        key: "uploads.commit_interval",
        default: "2s",
    },
    Flag {
        flag: "",
        help: "Most partial uploads one final upload may name (at most 10000); more, or one partial named twice, is refused with 400.",
        key: "uploads.max_parts_per_final",
        default: "100",
    },
    Flag {
        flag: "",
        help: "S3 region; empty takes it from the AWS chain (AWS_REGION, profile), else us-east-1.",
        key: "storage.s3.region",
        default: "",
    },
    Flag {
        flag: "s3-min-part-size",
        help: "The S3 provider's smallest part but the last, bytes.",
        key: "storage.s3.min_part_size",
        default: "5242880",
    },
    Flag {
        flag: "",
        help: "The S3 provider's largest part number (10,000 on AWS; fewer on some providers).",
        key: "storage.s3.max_parts",
        default: "10000",
    },
    Flag {
        flag: "",
        help: "Every S3 part but the last has the same size (Cloudflare R2); concatenation then copies fewer parts inside S3.",
        key: "storage.s3.equal_parts",
        default: "false",
    },
    Flag {
        flag: "s3-parts-in-flight",
        help: "S3 parts one PATCH holds at most (the one being gathered and those being sent): spool per PATCH is at most part size x this.",
        key: "storage.s3.parts_in_flight",
        default: "4",
    },
    Flag {
        flag: "",
        help: "Directory of the spool files S3 parts are gathered in on local disk, not in memory (unnamed files, gone once sent or when the process dies); use real disk, not tmpfs. Empty: $TMPDIR, else /tmp.",
        key: "storage.s3.spool_dir",
        default: "",
    },
    Flag {
        flag: "",
        help: "Bytes all PATCHes of a node may hold in S3 spool files together (the disk the spool may use); a PATCH that needs more waits (not reading its body), then gets 503 with Retry-After.",
        key: "storage.s3.buffer_budget",
        default: "268435456",
    },
    Flag {
        flag: "",
        help: "How long a PATCH waits for S3 spool budget before it is answered 503.",
        key: "storage.s3.buffer_wait",
        default: "10s",
    },
    Flag {
        flag: "",
        help: "Server-side encryption of the S3 objects: empty, AES256 or aws:kms.",
        key: "storage.s3.server_side_encryption",
        default: "",
    },
    Flag {
        flag: "",
        help: "KMS key for aws:kms encryption; empty uses the bucket's default key.",
        key: "storage.s3.sse_kms_key_id",
        default: "",
    },
    Flag {
        flag: "",
        help: "Storage class of the S3 objects, e.g. STANDARD_IA; empty uses the bucket's default.",
        key: "storage.s3.storage_class",
        default: "",
    },
    Flag {
        flag: "",
        help: "Answer GET of a finished upload with a 302 to a presigned S3 URL (bytes bypass Tusk).",
        key: "storage.s3.presigned_get",
        default: "false",
    },
    Flag {
        flag: "",
        help: "How long a presigned GET URL is valid.",
        key: "storage.s3.presign_ttl",
        default: "15m",
    },
    Flag {
        flag: "",
        help: "An S3 multipart upload or tail object no record names, older than this, is removed by the sweeper.",
        key: "storage.s3.leftover_grace",
        default: "1h",
    },
    Flag {
        flag: "",
        help: "Send no credentials to GCS (emulators); otherwise Google's default chain must find some.",
        key: "storage.gcs.anonymous",
        default: "false",
    },
    Flag {
        flag: "",
        help: "Bytes of a PATCH gathered in memory before they are sent as one GCS chunk object.",
        key: "storage.gcs.chunk_size",
        default: "8388608",
    },
    Flag {
        flag: "",
        help: "GCS chunks one PATCH holds at most (the one being gathered and those being sent), at least 2: memory per PATCH is at most chunk size x this.",
        key: "storage.gcs.chunks_in_flight",
        default: "3",
    },
    Flag {
        flag: "",
        help: "Answer GET of a finished upload with a 302 to a V4-signed GCS URL (bytes bypass Tusk); needs credentials that can sign (a key file, or the metadata server's account with iam.serviceAccounts.signBlob).",
        key: "storage.gcs.presigned_get",
        default: "false",
    },
    Flag {
        flag: "",
        help: "How long a signed GCS URL is valid (7 days at most).",
        key: "storage.gcs.presign_ttl",
        default: "15m",
    },
    Flag {
        flag: "",
        help: "A GCS chunk object no record names, older than this, is removed by the sweeper.",
        key: "storage.gcs.leftover_grace",
        default: "1h",
    },
    Flag {
        flag: "",
        help: "Time a client has to send a complete request head (slow-loris guard): from the connection's opening until its first request (a connection that sends nothing is closed), and on HTTP/1 from each response to the next head.",
        key: "server.header_read_timeout",
        default: "30s",
    },
    Flag {
        flag: "",
        help: "A connection with no request in flight for this long after its first request is closed (HTTP/2: GOAWAY); a paused body is in flight (network_timeout bounds it).",
        key: "server.idle_timeout",
        default: "60s",
    },
    Flag {
        flag: "",
        help: "Client connections open at most; a new one past it closes the connection idle longest, or, when every connection has a request in flight, is itself closed at once.",
        key: "server.max_connections",
        default: "4096",
    },
    Flag {
        flag: "",
        help: "HTTP/2: ping a client silent this long and close its connection if the ping is unanswered within 20s; 0 turns pings off.",
        key: "server.http2_keep_alive_interval",
        default: "30s",
    },
    Flag {
        flag: "",
        help: "Largest request head (request line and headers) in bytes; beyond it 431. Each connection's read buffer is 256 KiB, or this and 16 KiB if larger.",
        key: "server.max_header_bytes",
        default: "65536",
    },
    Flag {
        flag: "shutdown-drain",
        help: "On SIGTERM, how long in-flight requests get to commit and finish.",
        key: "server.shutdown_drain",
        default: "30s",
    },
    Flag {
        flag: "",
        help: "Address of the admin listener.",
        key: "server.admin_host",
        default: "127.0.0.1",
    },
    Flag {
        flag: "",
        help: "Time allowed for one Redis call before the request answers 503.",
        key: "coordinator.redis.timeout",
        default: "2s",
    },
    Flag {
        flag: "",
        help: "Redis Sentinel addresses (comma-separated in the environment); when set, the master is found and followed through them.",
        key: "coordinator.redis.sentinels",
        default: "[]",
    },
    Flag {
        flag: "",
        help: "The master's name in the Sentinel configuration.",
        key: "coordinator.redis.sentinel_master",
        default: "mymaster",
    },
    Flag {
        flag: "",
        help: "Replicas that must have each change before it is acknowledged (Redis WAIT).",
        key: "coordinator.redis.wait_replicas",
        default: "0",
    },
    Flag {
        flag: "",
        help: "Prefix of every etcd key.",
        key: "coordinator.etcd.prefix",
        default: "tusk/",
    },
    Flag {
        flag: "",
        help: "Time allowed for one etcd call (and for connecting) before the request answers 503.",
        key: "coordinator.etcd.timeout",
        default: "2s",
    },
    Flag {
        flag: "",
        help: "etcd user name, when etcd has authentication on.",
        key: "coordinator.etcd.user",
        default: "(none)",
    },
    Flag {
        flag: "",
        help: "That etcd user's password; set it in the environment rather than a file.",
        key: "coordinator.etcd.password",
        default: "(none)",
    },
    Flag {
        flag: "",
        help: "PEM file of the CA certificates that alone are trusted for etcd's certificate; needed for https:// endpoints.",
        key: "coordinator.etcd.ca_file",
        default: "(none)",
    },
    Flag {
        flag: "",
        help: "PEM file of this node's client certificate, for etcd's --client-cert-auth.",
        key: "coordinator.etcd.cert_file",
        default: "(none)",
    },
    Flag {
        flag: "",
        help: "PEM file of that client certificate's private key.",
        key: "coordinator.etcd.key_file",
        default: "(none)",
    },
    Flag {
        flag: "hooks-ca-file",
        help: "PEM file of CA certificates that alone are trusted for an https:// hook endpoint (a private CA); empty: the Mozilla roots. Certificates are always verified; an unreadable file stops startup.",
        key: "hooks.ca_file",
        default: "(none)",
    },
    Flag {
        flag: "hooks-timeout",
        help: "Time a hook call may take (connect and answer).",
        key: "hooks.timeout",
        default: "5s",
    },
    Flag {
        flag: "hooks-retries",
        help: "Retries of a failed hook call (notify hooks, and blocking ones on connection errors and 5xx).",
        key: "hooks.retries",
        default: "3",
    },
    Flag {
        flag: "hooks-backoff",
        help: "First pause between hook retries; doubles each time.",
        key: "hooks.backoff",
        default: "200ms",
    },
    Flag {
        flag: "hooks-post-receive-interval",
        help: "At most one post-receive per upload per this interval.",
        key: "hooks.post_receive_interval",
        default: "1s",
    },
    Flag {
        flag: "",
        help: "How long a pre-access hook's yes is reused for the same upload, operation and credentials (see hooks.credential_headers).",
        key: "hooks.access_cache_ttl",
        default: "10s",
    },
    Flag {
        flag: "hooks-credential-headers",
        help: "Comma-separated request headers that say who the client is (e.g. authorization,x-api-key): forwarded to hooks, and a cached pre-access yes serves only the same values. Empty: none forwarded, no yes reused.",
        key: "hooks.credential_headers",
        default: "(none)",
    },
    Flag {
        flag: "hooks-forward-headers",
        help: "Comma-separated request headers forwarded in hook payloads besides the credential headers; authorization, cookie and proxy-authorization only if listed.",
        key: "hooks.forward_headers",
        default: "tus headers, content-*, host, origin, user-agent, forwarded, x-forwarded-*, x-real-ip, x-request-id",
    },
    Flag {
        flag: "",
        help: "post-create and post-receive notifications waiting for delivery at most; beyond, the oldest is dropped (and counted).",
        key: "hooks.queue",
        default: "10000",
    },
    Flag {
        flag: "",
        help: "Bytes those queued notifications may hold at most (each carries the request's headers); beyond, the oldest are dropped (and counted). At least 1 MiB and 4 x server.max_header_bytes.",
        key: "hooks.queue_bytes",
        default: "16777216",
    },
    Flag {
        flag: "",
        help: "The most bytes a PATCH body gathers for one disk write (an upload streaming alone).",
        key: "storage.fs.write_window",
        default: "1048576",
    },
    Flag {
        flag: "",
        help: "Memory the PATCH bodies streaming to disk hold together: with N of them, each writes in windows of write_buffer / 3N (at most write_window, at least 64 KiB).",
        key: "storage.fs.write_buffer",
        default: "16777216",
    },
    Flag {
        flag: "",
        help: "Coordinator for records and leases.",
        key: "coordinator.backend",
        default: "embedded",
    },
    Flag {
        flag: "",
        help: "Directory of the embedded coordinator's record log.",
        key: "coordinator.embedded.dir",
        default: "<storage.fs.dir>/.tusk",
    },
    Flag {
        flag: "log-level",
        help: "tracing filter, e.g. info or tusk_core=debug; RUST_LOG overrides it.",
        key: "log.level",
        default: "info",
    },
    Flag {
        flag: "",
        help: "OpenTelemetry collector's OTLP/HTTP base URL (http://HOST:4318 or https://HOST:4318); spans go to its /v1/traces. Empty: no trace export. OTEL_BSP_* tune batching.",
        key: "log.otlp_endpoint",
        default: "(unset)",
    },
    Flag {
        flag: "",
        help: "PEM file of CA certificates that alone are trusted for an https:// collector (a private CA); empty: the Mozilla roots. Certificates are always verified; an unreadable file stops startup.",
        key: "log.otlp_ca_file",
        default: "(none)",
    },
    Flag {
        flag: "",
        help: "service.name of the exported traces.",
        key: "log.service_name",
        default: "tusk",
    },
];

/// Every configuration key, as the environment may set it.
pub fn setting_keys() -> BTreeSet<String> {
    FLAGS.iter().map(|f| f.key.to_string()).collect()
}

/// The environment variable of a configuration key.
pub fn env_name(key: &str) -> String {
    format!("TUSK_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// What a setting's flag takes, read from the type of the key's default: a switch for a
/// bool (a `disable-` flag sets the key to false, any other flag to true), comma-separated
/// values for a list, one value otherwise (checked when the configuration is read).
enum Takes {
    Switch { sets: bool },
    List,
    Value,
}

/// The defaults as JSON: unlike the `config` crate's tree, it keeps empty lists, whose type
/// decides how their flag is read.
fn default_settings() -> serde_json::Value {
    serde_json::to_value(Config::default()).expect("the defaults serialize")
}

fn takes(defaults: &serde_json::Value, f: &Flag) -> Takes {
    let pointer = format!("/{}", f.key.replace('.', "/"));
    match defaults.pointer(&pointer) {
        Some(serde_json::Value::Bool(_)) => Takes::Switch {
            sets: !f.flag.starts_with("disable-"),
        },
        Some(serde_json::Value::Array(_)) => Takes::List,
        _ => Takes::Value,
    }
}

fn setting_arg(f: &Flag, takes: &Takes) -> Arg {
    let arg = Arg::new(f.flag).long(f.flag).help(format!(
        "{} [{} / {}; default {}]",
        f.help,
        f.key,
        env_name(f.key),
        f.default
    ));
    let value_name = f
        .key
        .rsplit('.')
        .next()
        .unwrap_or(f.key)
        .to_ascii_uppercase();
    match takes {
        Takes::Switch { .. } => arg.action(ArgAction::SetTrue),
        Takes::List => arg
            .value_name(value_name)
            .value_delimiter(',')
            .action(ArgAction::Append),
        Takes::Value => arg.value_name(value_name).action(ArgAction::Set),
    }
}

/// The command: the derived subcommands, and a flag for every setting in [`FLAGS`], both on
/// the bare command and on `serve`.
pub fn command() -> clap::Command {
    let defaults = default_settings();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    for f in FLAGS.iter().filter(|f| !f.flag.is_empty()) {
        let arg = setting_arg(f, &takes(&defaults, f));
        cmd = cmd
            .arg(arg.clone())
            .mut_subcommand("serve", |serve| serve.arg(arg));
    }
    cmd
}

/// The settings the command line sets, as configuration overrides.
pub fn setting_overrides(matches: &ArgMatches) -> Vec<(&'static str, ::config::Value)> {
    let defaults = default_settings();
    let mut out = Vec::new();
    for f in FLAGS.iter().filter(|f| !f.flag.is_empty()) {
        let value = match takes(&defaults, f) {
            Takes::Switch { sets } => matches.get_flag(f.flag).then(|| sets.into()),
            Takes::List => matches.get_many::<String>(f.flag).map(|items| {
                ::config::Value::from(
                    items
                        .map(|item| ::config::Value::from(item.trim()))
                        .collect::<Vec<_>>(),
                )
            }),
            Takes::Value => matches
                .get_one::<String>(f.flag)
                .map(|v| ::config::Value::from(v.as_str())),
        };
        if let Some(value) = value {
            out.push((f.key, value));
        }
    }
    out
}

/// The README's configuration table.
pub fn reference_markdown() -> String {
    let mut out =
        String::from("| key | flag | environment | default | meaning |\n|---|---|---|---|---|\n");
    for f in FLAGS.iter() {
        let flag = if f.flag.is_empty() {
            String::new()
        } else {
            format!("`--{}`", f.flag)
        };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | `{}` | {} |\n",
            f.key,
            flag,
            env_name(f.key),
            f.default,
            f.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_in_the_table_exists() {
        let cmd = command();
        for f in FLAGS.iter().filter(|f| !f.flag.is_empty()) {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == f.flag),
                "{} missing",
                f.flag
            );
        }
        cmd.debug_assert();
    }

    #[test]
    fn readme_has_the_current_reference() {
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&reference_markdown()),
            "README.md's configuration table is stale: paste `tusk config-reference`"
        );
    }
}
