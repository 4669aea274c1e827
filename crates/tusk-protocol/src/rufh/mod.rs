//! The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload), beside
//! tus 1.0: its interop versions 3 to 9, what differs between them, and the parsing and
//! rendering of its headers. docs/rufh.md has the table of differences this module encodes.

mod digest;
mod fields;
mod request;
mod response;

pub use digest::render_digest;
pub use request::{
    carries_append_headers, parse_draft_append, parse_draft_creation, DraftAppend, DraftCreation,
};
pub use response::{render_limits, Problem, UploadLimits};

use crate::ProtocolError;

/// Header names of the draft, lower-case. `Upload-Offset` and `Upload-Length` are spelled as
/// tus spells them ([`crate::headers`]).
pub mod headers {
    pub const UPLOAD_DRAFT_INTEROP_VERSION: &str = "upload-draft-interop-version";
    pub const UPLOAD_COMPLETE: &str = "upload-complete";
    /// Interop version 3's completeness header, the inverse of `Upload-Complete`.
    pub const UPLOAD_INCOMPLETE: &str = "upload-incomplete";
    pub const UPLOAD_LIMIT: &str = "upload-limit";
    pub const CONTENT_DIGEST: &str = "content-digest";
    pub const REPR_DIGEST: &str = "repr-digest";
    pub const WANT_REPR_DIGEST: &str = "want-repr-digest";
}

/// The media type of an append's body from interop version 6 on.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The media type of the problem documents (RFC 9457) of interop version 6 on.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One interop version of the draft, as a request names it in `Upload-Draft-Interop-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InteropVersion(u8);

impl InteropVersion {
    /// Every version Tusk serves, oldest first.
    pub const ALL: [InteropVersion; 7] = [
        Self(3),
        Self(4),
        Self(5),
        Self(6),
        Self(7),
        Self(8),
        Self(9),
    ];

    /// Reads `Upload-Draft-Interop-Version`; a version Tusk does not serve is an error.
    pub fn parse(raw: &[u8]) -> Result<Self, ProtocolError> {
        fields::non_negative_integer(raw)
            .and_then(|n| Self::ALL.into_iter().find(|v| u64::from(v.0) == n))
            .ok_or(ProtocolError::UnsupportedInteropVersion)
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// The header that says whether an upload is complete: `Upload-Incomplete` in version 3,
    /// `Upload-Complete` after it.
    pub fn completeness_header(self) -> &'static str {
        if self.0 == 3 {
            headers::UPLOAD_INCOMPLETE
        } else {
            headers::UPLOAD_COMPLETE
        }
    }

    /// The value of [`Self::completeness_header`] for an upload that is (or a request that
    /// makes it) complete or not.
    pub fn render_completeness(self, complete: bool) -> &'static str {
        if complete != (self.0 == 3) {
            "?1"
        } else {
            "?0"
        }
    }

    /// Whether an append's body must be declared `application/partial-upload` (6 on).
    pub fn requires_partial_upload_type(self) -> bool {
        self.0 >= 6
    }

    /// Whether `Upload-Limit` exists (6 on).
    pub fn has_limits(self) -> bool {
        self.0 >= 6
    }

    /// Whether errors name a problem type (RFC 9457 documents; 6 on).
    pub fn has_problem_types(self) -> bool {
        self.0 >= 6
    }

    /// Whether HEAD and DELETE must refuse the headers of an append (3 to 6; the later
    /// drafts dropped the rule).
    pub fn refuses_append_headers_on_head(self) -> bool {
        self.0 <= 6
    }

    /// Whether an append that leaves the upload incomplete answers 201 (3 to 6) rather than
    /// 204 (7 on).
    pub fn incomplete_append_is_created(self) -> bool {
        self.0 <= 6
    }

    /// Whether an upload no longer available answers 404 (3 to 6) rather than 410.
    pub fn gone_is_not_found(self) -> bool {
        self.0 <= 6
    }

    /// Whether appending to a completed upload is the `completed-upload` problem (6 to 8);
    /// version 9 dropped that type and calls it an inconsistent length.
    pub fn has_completed_upload_problem(self) -> bool {
        (6..=8).contains(&self.0)
    }

    /// Whether the `inconsistent-upload-length` problem type exists (7 on).
    pub fn has_inconsistent_length_problem(self) -> bool {
        self.0 >= 7
    }

    /// Whether a refused append says the upload is still incomplete (9).
    pub fn refusal_carries_completeness(self) -> bool {
        self.0 >= 9
    }
}

impl std::fmt::Display for InteropVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_three_to_nine_are_served() {
        for n in 3..=9u8 {
            let version = InteropVersion::parse(n.to_string().as_bytes()).expect("served");
            assert_eq!(version.number(), n);
        }
        for bad in [&b"2"[..], b"10", b"", b"six", b"-6", b"6.0"] {
            assert_eq!(
                InteropVersion::parse(bad),
                Err(ProtocolError::UnsupportedInteropVersion),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_three_says_incomplete_where_later_ones_say_complete() {
        let three = InteropVersion(3);
        assert_eq!(three.completeness_header(), "upload-incomplete");
        assert_eq!(three.render_completeness(true), "?0");
        assert_eq!(three.render_completeness(false), "?1");
        let six = InteropVersion(6);
        assert_eq!(six.completeness_header(), "upload-complete");
        assert_eq!(six.render_completeness(true), "?1");
        assert_eq!(six.render_completeness(false), "?0");
    }
}
