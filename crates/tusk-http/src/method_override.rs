//! `X-HTTP-Method-Override`: clients behind proxies that pass only GET and POST send PATCH,
//! DELETE and HEAD as a POST naming the method they mean.
//!
//! The layer sits outside everything else, so spans, metrics, hooks and the handler all see
//! the method the client meant. Axum's router has seen the method on the wire before this
//! layer runs, so its HEAD handling (dropping the body) still applies to real HEADs only.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use tusk_protocol::headers as h;

/// Methods a POST may stand for; anything else in the header is ignored.
const OVERRIDABLE: [Method; 5] = [
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::GET,
    Method::OPTIONS,
];

pub(crate) async fn apply(mut request: Request, next: Next) -> Response {
    if let Some(method) = meant_method(&request) {
        *request.method_mut() = method;
    }
    next.run(request).await
}

fn meant_method(request: &Request) -> Option<Method> {
    if request.method() != Method::POST {
        return None;
    }
    let value = request.headers().get(h::X_HTTP_METHOD_OVERRIDE)?;
    let method = Method::from_bytes(value.as_bytes()).ok()?;
    OVERRIDABLE.contains(&method).then_some(method)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn method_seen(method: Method, header: Option<&str>) -> String {
        let router = Router::new()
            .fallback(|request: Request| async move { request.method().to_string() })
            .layer(axum::middleware::from_fn(apply));
        let mut request = Request::builder().method(method).uri("/files/");
        if let Some(value) = header {
            request = request.header(h::X_HTTP_METHOD_OVERRIDE, value);
        }
        let request = request.body(Body::empty()).expect("valid request");
        let response = router.oneshot(request).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("in-memory body");
        String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn a_post_stands_for_the_tus_methods_only() {
        for meant in ["PATCH", "DELETE", "HEAD", "GET", "OPTIONS"] {
            assert_eq!(method_seen(Method::POST, Some(meant)).await, meant);
        }
        for ignored in ["PUT", "patch", "BR\u{e9}W", ""] {
            assert_eq!(method_seen(Method::POST, Some(ignored)).await, "POST");
        }
        assert_eq!(method_seen(Method::POST, None).await, "POST");
        assert_eq!(method_seen(Method::GET, Some("DELETE")).await, "GET");
    }
}
