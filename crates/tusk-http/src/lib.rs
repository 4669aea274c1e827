//! Tusk's HTTP front: one axum handler that speaks tus over [`tusk_core::Engine`], the
//! layers around it (method override, request metric, request span, CORS, `Tus-Resumable`,
//! header size limit; one file each), what a trusted proxy says (`proxy.rs`), and the hyper
//! server loop with its connection bounds (header read and idle timeouts, the connection
//! limit: `serve.rs`, `connections.rs`).
//! The tus header rules live in `tusk-protocol`; every error status comes from `error.rs`.

mod admin;
mod connection_threads;
mod connections;
mod cors;
mod download;
mod drain;
mod error;
mod handlers;
mod header_limit;
mod inspect;
mod interim;
mod listener;
mod method_override;
mod metrics;
mod proxy;
mod request_span;
mod rufh;
mod serve;
mod tus_resumable;
mod url;

use std::sync::Arc;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use tusk_core::Engine;

pub use admin::{admin_router, AdminRoutes, MetricsEndpoint, RenderMetrics};
pub use cors::{CorsPolicy, CorsSettingError, CorsSettings};
pub use error::{ApiError, Refusal};
pub use listener::Listener;
pub use proxy::{ProxyHeaders, TrustedProxy};
pub use serve::{serve, ServeLimits};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Path under which uploads live, with leading and trailing slash, e.g. `/files/`.
    pub base_path: String,
    /// The proxies in front of Tusk whose headers build Location URLs; `None` builds them
    /// from `Host` alone.
    pub proxy: Option<TrustedProxy>,
    /// The CORS policy; `None` turns CORS headers off.
    pub cors: Option<Arc<CorsPolicy>>,
    /// Largest `Upload-Metadata` header accepted, in bytes.
    pub max_metadata_bytes: usize,
    /// Largest request head (all header names and values) accepted, in bytes; beyond: 431.
    pub max_header_bytes: usize,
    /// Answer GET of a finished upload with a redirect to a storage URL valid this long,
    /// when the storage can presign one; `None` streams the bytes through Tusk.
    pub presigned_get: Option<std::time::Duration>,
    /// Serve GET of an upload's bytes (tusd's download endpoint); off, GET answers 405.
    pub download: bool,
}

pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub config: HttpConfig,
}

/// The tus router for `engine`: every method on the base path and the upload URLs, inside
/// its layers.
pub fn router(engine: Arc<Engine>, config: HttpConfig) -> Router {
    let base_path: Arc<str> = Arc::from(config.base_path.as_str());
    let max_header_bytes = config.max_header_bytes;
    let cors = config.cors.clone();
    let observer = engine.observer().clone();
    let state = Arc::new(AppState { engine, config });
    // The last layer added is the outermost.
    let mut router = Router::new()
        .fallback(handlers::dispatch)
        .with_state(state)
        .layer(from_fn_with_state(max_header_bytes, header_limit::enforce))
        .layer(from_fn(tus_resumable::stamp));
    if let Some(cors) = cors {
        router = router.layer(from_fn_with_state(cors, cors::apply));
    }
    router
        .layer(from_fn_with_state(base_path, request_span::instrument))
        .layer(from_fn_with_state(observer, metrics::count))
        .layer(from_fn(method_override::apply))
}
