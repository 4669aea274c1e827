//! The admin listener: liveness and readiness, on a port apart from uploads.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower::ServiceExt;
use tusk_core::Engine;

use crate::inspect;

/// Renders the metrics in the Prometheus text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Where the admin listener serves the metrics, and how they are rendered.
#[derive(Clone)]
pub struct MetricsEndpoint {
    /// Path of the Prometheus endpoint (tusd's -metrics-path), `/metrics` by default.
    pub path: String,
    pub render: RenderMetrics,
}

/// `/healthz`: the process serves requests. `/readyz`: it should get traffic: not draining,
/// and its coordinator answers. `/metrics` (or the configured path): Prometheus. `/uploads/{id}` and `/uploads`: an
/// upload's record and who writes it, and the uploads this node writes now (JSON).
pub fn admin_router(engine: Arc<Engine>, metrics: MetricsEndpoint) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/uploads", get(inspect::writing_here))
        .route("/uploads/{id}", get(inspect::one))
        .with_state(engine)
        .route(&metrics.path, metrics_route(metrics.render))
}

/// The Prometheus text format.
fn metrics_route(metrics: RenderMetrics) -> MethodRouter {
    get(move || {
        let metrics = metrics.clone();
        async move {
            (
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                metrics(),
            )
        }
    })
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

/// The admin listener's routes, replaceable while it serves. A node listens on its admin
/// port before its backends are up: until [`AdminRoutes::serve_engine`], `/healthz` answers
/// (the process is alive, so an orchestrator does not restart it), `/readyz` fails saying
/// what the node waits for, and `/metrics` answers; then the engine's routes take over.
#[derive(Clone)]
pub struct AdminRoutes {
    current: Arc<RwLock<Router>>,
    waiting_for: Arc<Mutex<String>>,
}

impl AdminRoutes {
    pub fn starting(metrics: MetricsEndpoint) -> Self {
        let waiting_for = Arc::new(Mutex::new(
            "starting: opening storage and coordinator".to_owned(),
        ));
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get({
                    let waiting_for = waiting_for.clone();
                    move || {
                        let what = waiting_for
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone();
                        async move {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("not ready: {what}\n"),
                            )
                        }
                    }
                }),
            )
            .route(&metrics.path, metrics_route(metrics.render))
            .fallback(|| async { (StatusCode::SERVICE_UNAVAILABLE, "starting\n") });
        Self {
            current: Arc::new(RwLock::new(router)),
            waiting_for,
        }
    }

    /// What `/readyz` says the node waits for while it starts.
    pub fn waiting_for(&self, what: String) {
        *self
            .waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = what;
    }

    /// From now on, the engine's routes ([`admin_router`]).
    pub fn serve_engine(&self, router: Router) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = router;
    }

    /// The router to serve: each request goes to the routes current when it arrives.
    pub fn router(&self) -> Router {
        let current = self.current.clone();
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let router = current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            router.oneshot(request)
        }))
    }
}
