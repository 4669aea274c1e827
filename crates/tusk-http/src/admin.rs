//! The admin listener: liveness and readiness, on a port apart from uploads.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tusk_core::Engine;

use crate::inspect;

/// Renders the metrics in the Prometheus text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// `/healthz`: the process serves requests. `/readyz`: it should get traffic: not draining,
/// and its coordinator answers. `/metrics`: Prometheus. `/uploads/{id}` and `/uploads`: an
/// upload's record and who writes it, and the uploads this node writes now (JSON).
pub fn admin_router(engine: Arc<Engine>, metrics: RenderMetrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/uploads", get(inspect::writing_here))
        .route("/uploads/{id}", get(inspect::one))
        .with_state(engine)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics(),
                    )
                }
            }),
        )
}

async fn readyz(State(engine): State<Arc<Engine>>) -> (StatusCode, String) {
    match engine.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
