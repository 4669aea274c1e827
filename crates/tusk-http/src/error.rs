//! The one table that maps engine errors to HTTP statuses.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use tusk_core::{CoordError, Error};
use tusk_protocol::ProtocolError;

/// Status 460 of the checksum extension.
const CHECKSUM_MISMATCH: u16 = 460;

/// An engine error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// A short, bounded name for an error, the `kind` label of the error metric.
pub(crate) fn kind_of(error: &Error) -> &'static str {
    match error {
        Error::Protocol(ProtocolError::MissingTusResumable | ProtocolError::UnsupportedVersion) => {
            "precondition_failed"
        }
        Error::Protocol(ProtocolError::WrongContentType) => "unsupported_media_type",
        Error::Protocol(ProtocolError::BodyOnFinal) => "forbidden",
        Error::Protocol(_) => "bad_request",
        Error::NotFound => "not_found",
        Error::Gone => "gone",
        Error::Locked { .. } => "locked",
        Error::OffsetMismatch { .. } => "offset_mismatch",
        Error::LeaseLost => "lease_lost",
        Error::TooLarge(_) => "too_large",
        Error::ChecksumMismatch => "checksum_mismatch",
        Error::PatchOnFinal => "forbidden",
        Error::InvalidConcat(_)
        | Error::LengthAlreadySet(_)
        | Error::LengthRequired
        | Error::IncompleteChecksummedBody => "bad_request",
        Error::ShuttingDown | Error::Coordinator(CoordError::Unavailable(_)) => "unavailable",
        Error::Storage(_) => "storage",
        Error::HookRejected(_) => "hook_rejected",
        Error::HookAnswer(_) => "hook_failed",
        Error::IdTaken => "conflict",
        Error::NotFinished => "not_finished",
        Error::Coordinator(_) | Error::TaskFailed(_) => "internal",
    }
}

fn status_of(error: &Error) -> StatusCode {
    use StatusCode as S;
    match error {
        Error::Protocol(p) => match p {
            ProtocolError::MissingTusResumable | ProtocolError::UnsupportedVersion => {
                S::PRECONDITION_FAILED
            }
            ProtocolError::WrongContentType => S::UNSUPPORTED_MEDIA_TYPE,
            ProtocolError::BodyOnFinal => S::FORBIDDEN,
            ProtocolError::InvalidRange => S::RANGE_NOT_SATISFIABLE,
            _ => S::BAD_REQUEST,
        },
        Error::NotFound => S::NOT_FOUND,
        Error::Gone => S::GONE,
        Error::Locked { .. } => S::LOCKED,
        Error::OffsetMismatch { .. } | Error::LeaseLost => S::CONFLICT,
        Error::TooLarge(_) => S::PAYLOAD_TOO_LARGE,
        Error::ChecksumMismatch => S::from_u16(CHECKSUM_MISMATCH).unwrap_or(S::BAD_REQUEST),
        Error::PatchOnFinal => S::FORBIDDEN,
        Error::HookRejected(rejection) => S::from_u16(rejection.status).unwrap_or(S::FORBIDDEN),
        Error::IdTaken | Error::NotFinished => S::CONFLICT,
        Error::HookAnswer(_) => S::BAD_GATEWAY,
        Error::InvalidConcat(_)
        | Error::LengthAlreadySet(_)
        | Error::LengthRequired
        | Error::IncompleteChecksummedBody => S::BAD_REQUEST,
        Error::ShuttingDown | Error::Coordinator(CoordError::Unavailable(_)) => {
            S::SERVICE_UNAVAILABLE
        }
        // Clients retry 5xx: a backend failure leaves the upload resumable.
        Error::Storage(_) | Error::Coordinator(_) | Error::TaskFailed(_) => {
            S::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        // Internals never reach the client: 5xx get a generic reason, logged with the cause.
        let reason = if let Error::HookRejected(rejection) = &self.0 {
            // The application's own words, as its hook gave them.
            tracing::debug!(status = rejection.status, "request rejected by a hook");
            rejection.body.clone()
        } else if status.is_server_error() {
            tracing::warn!(error = %self.0, %status, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "service unavailable, retry later".to_string(),
                _ => "internal error, the upload is resumable: retry later".to_string(),
            }
        } else {
            tracing::debug!(error = %self.0, %status, "request refused");
            self.0.to_string()
        };
        let mut response = (status, format!("{reason}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self.0 {
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
            Error::ShuttingDown | Error::Coordinator(CoordError::Unavailable(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
