//! CORS for browser clients, on when `HttpConfig::cors_allow_origin` is set: every answer
//! allows the configured origin and exposes the tus headers; an answered preflight also
//! allows the tus methods and request headers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{header, HeaderValue, Method};
use tusk_protocol::headers as h;

pub(crate) struct Cors {
    /// `None` when the configured origin cannot be a header value: nothing is allowed then,
    /// but the other headers still go out.
    allow_origin: Option<HeaderValue>,
    /// Answers differ by origin unless every origin is allowed, so caches must key on it.
    vary_on_origin: bool,
}

impl Cors {
    pub(crate) fn new(allow_origin: &str) -> Self {
        Self {
            allow_origin: HeaderValue::from_str(allow_origin).ok(),
            vary_on_origin: allow_origin != "*",
        }
    }
}

pub(crate) async fn apply(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ORIGIN);
    let mut response = next.run(request).await;
    // A refused preflight (431) grants nothing.
    let answered = response.status().is_success();
    let headers = response.headers_mut();
    if preflight && answered {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, HEAD, PATCH, OPTIONS, GET, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(h::CORS_ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    if let Some(origin) = &cors.allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(h::CORS_EXPOSE_HEADERS),
    );
    if cors.vary_on_origin {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::Router;
    use http::{HeaderMap, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn answer(
        allow_origin: &str,
        method: Method,
        origin: bool,
        status: StatusCode,
    ) -> HeaderMap {
        let router = Router::new().fallback(move || async move { status }).layer(
            axum::middleware::from_fn_with_state(Arc::new(Cors::new(allow_origin)), apply),
        );
        let mut request = Request::builder().method(method).uri("/files/");
        if origin {
            request = request.header(header::ORIGIN, "https://app.example");
        }
        let request = request.body(Body::empty()).expect("valid request");
        router
            .oneshot(request)
            .await
            .expect("infallible")
            .headers()
            .clone()
    }

    #[tokio::test]
    async fn an_answered_preflight_allows_methods_and_headers() {
        let headers = answer(
            "https://app.example",
            Method::OPTIONS,
            true,
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_METHODS],
            "POST, HEAD, PATCH, OPTIONS, GET, DELETE"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
            h::CORS_ALLOW_HEADERS
        );
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            h::CORS_EXPOSE_HEADERS
        );
        assert_eq!(headers[header::VARY], "Origin");
    }

    #[tokio::test]
    async fn other_answers_only_allow_the_origin() {
        for (method, origin, status) in [
            (Method::OPTIONS, false, StatusCode::NO_CONTENT),
            (
                Method::OPTIONS,
                true,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (Method::PATCH, true, StatusCode::NO_CONTENT),
        ] {
            let headers = answer("*", method, origin, status).await;
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            assert_eq!(
                headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
                h::CORS_EXPOSE_HEADERS
            );
            assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
            assert!(!headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));
            assert!(!headers.contains_key(header::VARY), "every origin: no Vary");
        }
    }
}
