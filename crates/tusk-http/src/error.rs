//! The one table that maps errors to HTTP statuses: the engine's, and the HTTP layer's own
//! refusals. Handlers choose success statuses only; every error status is chosen here.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use tusk_core::{CoordError, Error};
use tusk_protocol::rufh::{InteropVersion, Problem};
use tusk_protocol::ProtocolError;

/// Status 460 of the checksum extension.
const CHECKSUM_MISMATCH: u16 = 460;

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// What the engine (or a protocol rule) refused or failed to do.
    Engine(Error),
    /// What the HTTP layer refuses before any upload is involved.
    Refused(Refusal),
}

/// Requests the HTTP layer refuses on its own, whatever the engine would say.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The request head exceeds `HttpConfig::max_header_bytes`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The path is neither the upload collection nor under it.
    #[error("not found")]
    NoSuchPath,
    /// The method means nothing on this path (e.g. PATCH on the collection).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A download's Range starts at or past the end of the `total` bytes it has.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { total: u64 },
    /// The request arrived on a connection closed to make room past the connection limit.
    #[error("connection closed to make room, retry on a new connection")]
    ConnectionEvicted,
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::Engine(e.into())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// A short, bounded name for an error, the `kind` label of the error metric.
pub(crate) fn kind_of(error: &Error) -> &'static str {
    match error {
        Error::Protocol(ProtocolError::MissingTusResumable | ProtocolError::UnsupportedVersion) => {
            "precondition_failed"
        }
        Error::Protocol(ProtocolError::WrongContentType | ProtocolError::NotPartialUpload) => {
            "unsupported_media_type"
        }
        Error::Protocol(ProtocolError::BodyOnFinal) => "forbidden",
        Error::Protocol(_) => "bad_request",
        Error::NotFound => "not_found",
        Error::Gone => "gone",
        Error::Locked { .. } => "locked",
        Error::OffsetMismatch { .. } => "offset_mismatch",
        Error::LeaseLost => "lease_lost",
        Error::TooLarge(_) | Error::AlreadyComplete => "too_large",
        Error::ChecksumMismatch | Error::DigestMismatch => "checksum_mismatch",
        Error::PatchOnFinal => "forbidden",
        Error::InvalidConcat(_)
        | Error::LengthAlreadySet(_)
        | Error::LengthMismatch { .. }
        | Error::LengthRequired
        | Error::IncompleteChecksummedBody => "bad_request",
        Error::ShuttingDown | Error::Coordinator(CoordError::Unavailable(_)) => "unavailable",
        Error::Busy(_) => "busy",
        Error::Storage(_) => "storage",
        Error::HookRejected(_) => "hook_rejected",
        Error::HookAnswer(_) => "hook_failed",
        Error::HookUnavailable => "hook_unavailable",
        Error::IdTaken => "conflict",
        Error::NotFinished => "not_finished",
        Error::Coordinator(_) | Error::TaskFailed(_) => "internal",
    }
}

fn status_of(error: &ApiError) -> StatusCode {
    use StatusCode as S;
    let error = match error {
        ApiError::Refused(refusal) => {
            return match refusal {
                Refusal::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Refusal::NoSuchPath => S::NOT_FOUND,
                Refusal::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
                Refusal::RangeNotSatisfiable { .. } => S::RANGE_NOT_SATISFIABLE,
                Refusal::ConnectionEvicted => S::SERVICE_UNAVAILABLE,
            }
        }
        ApiError::Engine(error) => error,
    };
    match error {
        Error::Protocol(p) => match p {
            ProtocolError::MissingTusResumable | ProtocolError::UnsupportedVersion => {
                S::PRECONDITION_FAILED
            }
            ProtocolError::WrongContentType | ProtocolError::NotPartialUpload => {
                S::UNSUPPORTED_MEDIA_TYPE
            }
            ProtocolError::BodyOnFinal => S::FORBIDDEN,
            ProtocolError::InvalidRange => S::RANGE_NOT_SATISFIABLE,
            _ => S::BAD_REQUEST,
        },
        Error::NotFound => S::NOT_FOUND,
        Error::Gone => S::GONE,
        Error::Locked { .. } => S::LOCKED,
        Error::OffsetMismatch { .. } | Error::LeaseLost => S::CONFLICT,
        Error::TooLarge(_) | Error::AlreadyComplete => S::PAYLOAD_TOO_LARGE,
        Error::ChecksumMismatch => S::from_u16(CHECKSUM_MISMATCH).unwrap_or(S::BAD_REQUEST),
        Error::PatchOnFinal => S::FORBIDDEN,
        Error::DigestMismatch => S::BAD_REQUEST,
        Error::HookRejected(rejection) => S::from_u16(rejection.status).unwrap_or(S::FORBIDDEN),
        Error::IdTaken | Error::NotFinished => S::CONFLICT,
        Error::HookAnswer(_) => S::BAD_GATEWAY,
        Error::InvalidConcat(_)
        | Error::LengthAlreadySet(_)
        | Error::LengthMismatch { .. }
        | Error::LengthRequired
        | Error::IncompleteChecksummedBody => S::BAD_REQUEST,
        Error::ShuttingDown
        | Error::Busy(_)
        | Error::HookUnavailable
        | Error::Coordinator(CoordError::Unavailable(_)) => S::SERVICE_UNAVAILABLE,
        // Clients retry 5xx: a backend failure leaves the upload resumable.
        Error::Storage(_) | Error::Coordinator(_) | Error::TaskFailed(_) => {
            S::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let error = match self {
            Self::Refused(refusal) => return refused(status, &refusal),
            Self::Engine(error) => error,
        };
        // Internals never reach the client: 5xx get a generic reason, logged with the cause.
        let reason = if let Error::HookRejected(rejection) = &error {
            // The application's own words, as its hook gave them.
            tracing::debug!(status = rejection.status, "request rejected by a hook");
            rejection.body.clone()
        } else if status.is_server_error() {
            tracing::warn!(%error, %status, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "service unavailable, retry later".to_string(),
                _ => "internal error, the upload is resumable: retry later".to_string(),
            }
        } else {
            tracing::debug!(%error, %status, "request refused");
            error.to_string()
        };
        let mut response = text_response(status, &reason);
        let headers = response.headers_mut();
        match &error {
            Error::Protocol(
                ProtocolError::MissingTusResumable | ProtocolError::UnsupportedVersion,
            ) => {
                headers.insert(
                    tusk_protocol::headers::TUS_VERSION,
                    HeaderValue::from_static(tusk_protocol::TUS_VERSION),
                );
            }
            Error::Locked { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Error::ShuttingDown
            | Error::Busy(_)
            | Error::HookUnavailable
            | Error::Coordinator(CoordError::Unavailable(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// How a client of the draft is answered where the draft differs from tus.
pub(crate) struct DraftAnswer {
    pub status: StatusCode,
    /// The problem document (RFC 9457), from the version that defines the error's type.
    pub problem: Option<String>,
    /// The upload's offset, which a refused append's answer tells.
    pub upload_offset: Option<u64>,
}

/// The draft's answer to `error` for `version`, `None` where it is tus's; `provided` is the
/// offset an append named.
pub(crate) fn draft_answer(
    error: &ApiError,
    version: InteropVersion,
    provided: Option<u64>,
) -> Option<DraftAnswer> {
    let ApiError::Engine(error) = error else {
        return None;
    };
    let detail = error.to_string();
    let (status, problem, upload_offset) = match error {
        Error::OffsetMismatch { expected, got } => (
            StatusCode::CONFLICT,
            Some(Problem::MismatchingOffset {
                expected: *expected,
                provided: provided.unwrap_or(*got),
            }),
            Some(*expected),
        ),
        Error::AlreadyComplete => {
            let problem = [Problem::CompletedUpload, Problem::InconsistentLength]
                .into_iter()
                .find(|p| p.exists_in(version));
            (StatusCode::BAD_REQUEST, problem, None)
        }
        Error::LengthAlreadySet(_)
        | Error::LengthMismatch { .. }
        | Error::Protocol(ProtocolError::InconsistentLength) => (
            StatusCode::BAD_REQUEST,
            Some(Problem::InconsistentLength),
            None,
        ),
        Error::Gone if version.gone_is_not_found() => (StatusCode::NOT_FOUND, None, None),
        // The draft has no status of its own for a digest that does not match.
        Error::ChecksumMismatch => (StatusCode::BAD_REQUEST, None, None),
        _ => return None,
    };
    Some(DraftAnswer {
        status,
        problem: problem
            .filter(|p| p.exists_in(version))
            .map(|p| p.render(&detail)),
        upload_offset,
    })
}

fn refused(status: StatusCode, refusal: &Refusal) -> Response {
    tracing::debug!(%refusal, %status, "request refused");
    let mut response = text_response(status, &refusal.to_string());
    match refusal {
        Refusal::RangeNotSatisfiable { total } => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
        }
        Refusal::ConnectionEvicted => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// Every error body is one line of plain text.
fn text_response(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn answer(error: impl Into<ApiError>) -> (StatusCode, http::HeaderMap, String) {
        let response = error.into().into_response();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("in-memory body").to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("UTF-8 body");
        (parts.status, parts.headers, text)
    }

    #[tokio::test]
    async fn refusals_answer_one_line_of_text() {
        for (refusal, status, text) in [
            (Refusal::HeadersTooLarge, 431, "request headers too large\n"),
            (Refusal::NoSuchPath, 404, "not found\n"),
            (Refusal::MethodNotAllowed, 405, "method not allowed\n"),
        ] {
            let (got_status, headers, got_text) = answer(refusal).await;
            assert_eq!((got_status.as_u16(), got_text.as_str()), (status, text));
            assert_eq!(
                headers.get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static("text/plain; charset=utf-8"))
            );
        }
        let (status, headers, text) = answer(Refusal::RangeNotSatisfiable { total: 42 }).await;
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (416, "range not satisfiable\n")
        );
        assert_eq!(
            headers.get(header::CONTENT_RANGE),
            Some(&HeaderValue::from_static("bytes */42"))
        );
    }

    #[tokio::test]
    async fn protocol_rules_keep_their_statuses() {
        let (status, _, text) = answer(ProtocolError::BodyOnFinal).await;
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (403, "a final concatenated upload cannot be patched\n")
        );
        assert_eq!(kind_of(&ProtocolError::BodyOnFinal.into()), "forbidden");
        let (status, _, text) = answer(ProtocolError::ConcatenationRefused(
            "a final upload must not carry Upload-Length",
        ))
        .await;
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (
                400,
                "invalid concatenation: a final upload must not carry Upload-Length\n"
            )
        );
        let (status, headers, _) = answer(ProtocolError::MissingTusResumable).await;
        assert_eq!(status.as_u16(), 412);
        assert_eq!(
            headers.get("tus-version"),
            Some(&HeaderValue::from_static("1.0.0"))
        );
    }

    #[tokio::test]
    async fn an_unreachable_hook_is_the_tables_503_with_retry_after() {
        let (status, headers, text) = answer(Error::HookUnavailable).await;
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (503, "service unavailable, retry later\n")
        );
        assert_eq!(
            headers.get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        assert_eq!(kind_of(&Error::HookUnavailable), "hook_unavailable");
        // A hook's own answer keeps its status and words.
        let rejection = tusk_core::HookRejection {
            status: 401,
            body: "who are you".into(),
        };
        let (status, _, text) = answer(Error::HookRejected(rejection)).await;
        assert_eq!((status.as_u16(), text.as_str()), (401, "who are you\n"));
    }
}
