//! The request-head size limit, `HttpConfig::max_header_bytes`: beyond it, 431.
//!
//! hyper's own bound is its read buffer, kept large for upload throughput (see `serve.rs`),
//! so the configured limit is checked here, per request, before anything reads the headers.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::error::{ApiError, Refusal};

pub(crate) async fn enforce(
    State(max_header_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    if head_bytes(request.headers()) > max_header_bytes {
        return ApiError::from(Refusal::HeadersTooLarge).into_response();
    }
    next.run(request).await
}

/// Each header as an HTTP/1.1 line would carry it: name, `: `, value, CRLF.
fn head_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::Router;
    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;

    async fn status_with_limit(max_header_bytes: usize) -> StatusCode {
        let router = Router::new()
            .fallback(|| async { StatusCode::NO_CONTENT })
            .layer(axum::middleware::from_fn_with_state(
                max_header_bytes,
                enforce,
            ));
        // "upload-length: 10\r\n" is 19 bytes.
        let request = Request::builder()
            .uri("/files/")
            .header("upload-length", "10")
            .body(Body::empty())
            .expect("valid request");
        router.oneshot(request).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn refuses_a_head_past_the_limit_only() {
        assert_eq!(status_with_limit(19).await, StatusCode::NO_CONTENT);
        assert_eq!(
            status_with_limit(18).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
