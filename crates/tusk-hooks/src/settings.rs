use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tusk_core::HookEvent;

/// Every hook event, in the order tusd lists them.
pub(crate) const ALL_EVENTS: [HookEvent; 7] = [
    HookEvent::PreCreate,
    HookEvent::PostCreate,
    HookEvent::PostReceive,
    HookEvent::PreFinish,
    HookEvent::PostFinish,
    HookEvent::PostTerminate,
    HookEvent::PreAccess,
];

/// The event named `name` (tusd's names: `pre-create`, `post-finish`, ...).
pub(crate) fn event_by_name(name: &str) -> Option<HookEvent> {
    ALL_EVENTS.into_iter().find(|e| e.name() == name.trim())
}

/// Headers forwarded to hooks by default: the tus headers and what says where a request
/// came from and with what client; nothing that authenticates.
pub const DEFAULT_FORWARD_HEADERS: [&str; 18] = [
    "content-length",
    "content-type",
    "forwarded",
    "host",
    "origin",
    "tus-resumable",
    "upload-checksum",
    "upload-concat",
    "upload-defer-length",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
];

/// HTTP hook settings, meant to be embedded in the server's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// Where every hook is POSTed, e.g. `https://app:9443/tus-hooks` or
    /// `http://app:9000/tus-hooks`. An `https://` endpoint must present a certificate valid
    /// for its host (see `ca_file`); there is no way to skip that check. Empty disables hooks
    /// altogether.
    pub endpoint: String,
    /// A directory of executables named after the events (`pre-create`, `post-finish`,
    /// ...), as tusd's `-hooks-dir`: each event runs its file with tusd's HookRequest JSON
    /// on stdin, `TUS_ID`, `TUS_SIZE` and `TUS_OFFSET` in the environment and the directory
    /// as working directory; stdout is read as tusd's HookResponse (empty: allow). An event
    /// without a file is skipped; a non-zero exit fails the call (blocking hooks: 503).
    /// Exclusive with `endpoint` and `grpc`.
    pub dir: Option<PathBuf>,
    /// A gRPC server (`host:port`, plaintext) speaking tusd's hook service
    /// (`proto.HookHandler/InvokeHook`, tusd's `-hooks-grpc`): each event is tusd's
    /// HookRequest, the answer tusd's HookResponse. Exclusive with `endpoint` and `dir`.
    pub grpc: String,
    /// A PEM file of CA certificates: when set, an `https://` endpoint is trusted only if
    /// one of them vouches for it (a private CA); unset or empty, the Mozilla roots are
    /// used. A file that cannot be read or holds no certificate stops startup.
    pub ca_file: Option<PathBuf>,
    /// The events sent to the endpoint, by name: pre-create, post-create, post-receive,
    /// pre-finish, post-finish, post-terminate, pre-access. Default: all but pre-access.
    pub events: Vec<String>,
    /// Time limit of one hook request, from connecting to reading the whole answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed one: notify hooks retry on connection errors,
    /// timeouts, 408, 429 and 5xx; blocking hooks on connection errors, 429 and 5xx only
    /// (not on a timeout, since a client is waiting).
    pub retries: u32,
    /// Wait before the first retry; doubled before each further one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// At most one post-receive per upload per interval; the others are skipped (an
    /// upload's last progress is reported by post-finish anyway). Zero: no limit.
    #[serde(with = "humantime_serde")]
    pub post_receive_interval: Duration,
    /// How long a pre-access "ok" is reused for the same upload, the same operation (read,
    /// write, terminate, concatenate) and the same values of the `credential_headers`.
    /// Rejections are never cached. Zero: no cache.
    #[serde(with = "humantime_serde")]
    pub access_cache_ttl: Duration,
    /// The request headers (any case) whose values say who the client is, e.g.
    /// `Authorization`, `Cookie` or `X-Api-Key`: they are forwarded to the hooks, which
    /// decide on them, and a cached pre-access "ok" serves only a request that carries the
    /// same values. Empty (the default): no credentials are forwarded and no "ok" is
    /// reused, since nothing would tell one client from another. A request that carries none
    /// of them is never served from the cache either.
    pub credential_headers: Vec<String>,
    /// The request headers (any case) forwarded in hook payloads besides the credential
    /// headers. `Authorization`, `Cookie` and `Proxy-Authorization` are forwarded only when
    /// listed here or in `credential_headers`.
    pub forward_headers: Vec<String>,
    /// post-create and post-receive notifications waiting for delivery at most; beyond it
    /// the oldest is dropped (counted with outcome "dropped"). post-finish and post-terminate
    /// are owed in the coordinator instead, and never dropped.
    pub queue: usize,
    /// Bytes those queued notifications may hold at most (each body carries the request's
    /// headers and metadata, up to the header limit); beyond it the oldest are dropped, as
    /// with `queue`.
    pub queue_bytes: usize,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            dir: None,
            grpc: String::new(),
            ca_file: None,
            events: ALL_EVENTS
                .into_iter()
                .filter(|e| *e != HookEvent::PreAccess)
                .map(|e| e.name().to_string())
                .collect(),
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(200),
            post_receive_interval: Duration::from_secs(1),
            access_cache_ttl: Duration::from_secs(10),
            credential_headers: Vec::new(),
            forward_headers: DEFAULT_FORWARD_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            queue: 10_000,
            queue_bytes: 16 << 20,
        }
    }
}
