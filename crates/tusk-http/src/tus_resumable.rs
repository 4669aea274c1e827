//! Every answer names the protocol version it speaks, refusals and errors included.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tusk_protocol::{headers as h, TUS_VERSION};

pub(crate) async fn stamp(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(h::TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}
