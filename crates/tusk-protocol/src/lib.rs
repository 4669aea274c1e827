//! The tus 1.0.0 protocol and its extensions, and the IETF draft "Resumable Uploads for
//! HTTP" beside it ([`rufh`]), as pure functions: header names, parsing and
//! validation of every request header, rendering of response headers.
//!
//! Nothing here does I/O or knows about a server; every parser takes the raw header value and
//! returns a typed value or a [`ProtocolError`] that names what was wrong. The request parsers
//! ([`parse_creation`], [`parse_patch`]) read a whole request's headers through the small
//! [`Headers`] trait and hold every rule of which headers go together. The HTTP layer maps
//! those errors to the statuses the spec names.

mod checksum;
mod concat;
mod error;
pub mod headers;
mod id;
mod metadata;
mod numbers;
mod range;
mod request;
pub mod rufh;

pub use checksum::{parse_checksum, ChecksumAlgorithm, ChecksumHeader};
pub use concat::{parse_concat, render_concat, ConcatRequest, MAX_CONCAT_PARTS};
pub use error::ProtocolError;
pub use id::{is_valid_upload_id, MAX_ID_LEN, MIN_ID_LEN};
pub use metadata::{parse_metadata, Metadata};
pub use numbers::{parse_content_length, parse_defer_length, parse_offset, parse_upload_length};
pub use range::{parse_range, ByteRange};
pub use request::{
    parse_creation, parse_patch, BodyHeaders, Concatenation, CreationHeaders, Headers, PatchHeaders,
};

/// The only protocol version Tusk speaks.
pub const TUS_VERSION: &str = "1.0.0";

/// Content type every PATCH body (and a creation-with-upload body) must declare.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Checks the `Tus-Resumable` header a client sent.
pub fn check_tus_resumable(value: Option<&[u8]>) -> Result<(), ProtocolError> {
    match value {
        Some(v) if v == TUS_VERSION.as_bytes() => Ok(()),
        Some(_) => Err(ProtocolError::UnsupportedVersion),
        None => Err(ProtocolError::MissingTusResumable),
    }
}

/// Renders a point in time as an RFC 7231 HTTP date, the format of `Upload-Expires`.
pub fn render_http_date(at: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(at)
}
