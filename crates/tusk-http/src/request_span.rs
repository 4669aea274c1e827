//! One span per request, around everything the request does: storage and coordinator calls
//! nest under it, and an incoming W3C `traceparent` makes it part of the caller's trace.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::url::{self, Target};

/// `base_path` is `HttpConfig::base_path`: it tells which requests name an upload.
pub(crate) async fn instrument(
    State(base_path): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        method = %request.method(),
        path,
        upload_id = tracing::field::Empty,
        status = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Target::Upload(id) = url::target(path, &base_path) {
        span.record("upload_id", id);
    }
    tusk_telemetry::set_remote_parent(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}
