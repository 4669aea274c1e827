//! Counts every answer by method and status, whichever layer or handler gave it.
//!
//! Any token is a valid HTTP method, so the method label comes from a fixed list: every
//! other method counts as `other`, and a client cannot add series (memory, scrape size).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use tusk_core::Observer;

/// The methods of RFC 9110 and PATCH: the only method label values besides `other`.
const KNOWN: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

fn label(method: &Method) -> &'static str {
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

pub(crate) async fn count(
    State(observer): State<Arc<dyn Observer>>,
    request: Request,
    next: Next,
) -> Response {
    let method = label(request.method());
    let response = next.run(request).await;
    observer.request(method, response.status().as_u16());
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
        fn request(&self, method: &'static str, status: u16) {
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
        for method in ["PATCH", "BREW", "patch", "GET"] {
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("a token"))
                .uri("/files/x")
                .body(Body::empty())
                .expect("valid request");
            router.clone().oneshot(request).await.expect("infallible");
        }
        let seen = requests
            .0
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default();
        let want = ["PATCH", "other", "other", "GET"].map(|m| (m.to_string(), 418));
        assert_eq!(seen, want);
    }
}
