//! Counts every answer by method and status, whichever layer or handler gave it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tusk_core::Observer;

pub(crate) async fn count(
    State(observer): State<Arc<dyn Observer>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    observer.request(method.as_str(), response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::Router;
    use http::{Method, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[derive(Default)]
    struct Requests(Mutex<Vec<(String, u16)>>);

    impl Observer for Requests {
        fn request(&self, method: &str, status: u16) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((method.to_string(), status));
            }
        }
    }

    #[tokio::test]
    async fn counts_each_answer_once_by_method_and_status() {
        let requests = Arc::new(Requests::default());
        let router = Router::new()
            .fallback(|| async { StatusCode::IM_A_TEAPOT })
            .layer(axum::middleware::from_fn_with_state(
                requests.clone() as Arc<dyn Observer>,
                count,
            ));
        let request = Request::builder()
            .method(Method::PATCH)
            .uri("/files/x")
            .body(Body::empty())
            .expect("valid request");
        router.oneshot(request).await.expect("infallible");
        let seen = requests
            .0
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default();
        assert_eq!(seen, [("PATCH".to_string(), 418)]);
    }
}
