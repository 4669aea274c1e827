//! The draft's requests: what a creation and an append carry, checked in one fixed order
//! (the first broken rule is the answer, as for tus's parsers).

use super::digest::{parse_digest, parse_want_digest};
use super::headers as draft;
use super::{fields, InteropVersion, PARTIAL_UPLOAD};
use crate::headers as h;
use crate::request::{checksum, content_length, has_media_type, text, NotText};
use crate::{parse_metadata, ChecksumAlgorithm, ChecksumHeader, Headers, ProtocolError};

/// A valid upload creation (any request on the upload collection that carries the
/// completeness header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftCreation {
    /// The request carries the whole upload.
    pub complete: bool,
    /// The upload's length when the request tells it (`Upload-Length`, or a complete
    /// request's `Content-Length`); `None` leaves it to the request that completes it.
    pub length: Option<u64>,
    /// `Content-Length` of the request's body; a chunked body has none.
    pub content_length: Option<u64>,
    /// `Upload-Metadata` as tus spells it (tus-js-client sends it in the draft's mode too).
    pub metadata: Option<String>,
    /// The digest of this request's body: `Content-Digest`, or tus's `Upload-Checksum`.
    pub checksum: Option<ChecksumHeader>,
    /// `Repr-Digest`: the digest the whole upload must have once complete.
    pub repr_digest: Option<ChecksumHeader>,
    /// `Want-Repr-Digest`: the upload's digest the client wants in the completing answer.
    pub want_digest: Option<ChecksumAlgorithm>,
}

/// A valid append (a PATCH to an upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftAppend {
    pub offset: u64,
    /// The request carries the rest of the upload.
    pub complete: bool,
    /// The upload's length, when the request tells it.
    pub length: Option<u64>,
    pub content_length: Option<u64>,
    /// The digest of this request's body: `Content-Digest`, or tus's `Upload-Checksum`.
    pub checksum: Option<ChecksumHeader>,
    /// `Want-Repr-Digest`: the upload's digest the client wants in the completing answer.
    pub want_digest: Option<ChecksumAlgorithm>,
}

/// Parses an upload creation's headers.
pub fn parse_draft_creation<H: Headers + ?Sized>(
    headers: &H,
    version: InteropVersion,
    max_metadata_bytes: usize,
) -> Result<DraftCreation, ProtocolError> {
    let complete = completeness(headers, version)?;
    let content_length = content_length(headers)?;
    let length = length(headers, complete.then_some(content_length).flatten())?;
    let metadata = text(headers, h::UPLOAD_METADATA)
        .map_err(|NotText| ProtocolError::InvalidMetadata("not visible ASCII"))?;
    if let Some(raw) = metadata {
        parse_metadata(raw, max_metadata_bytes)?;
    }
    let repr_digest = headers
        .get(draft::REPR_DIGEST)
        .map(|raw| parse_digest(raw, "Repr-Digest"))
        .transpose()?
        .flatten();
    Ok(DraftCreation {
        complete,
        length,
        content_length,
        metadata: metadata.map(str::to_string),
        checksum: body_digest(headers)?,
        repr_digest,
        want_digest: want_digest(headers)?,
    })
}

/// Parses an append's headers.
pub fn parse_draft_append<H: Headers + ?Sized>(
    headers: &H,
    version: InteropVersion,
) -> Result<DraftAppend, ProtocolError> {
    if version.requires_partial_upload_type() && !has_media_type(headers, PARTIAL_UPLOAD) {
        return Err(ProtocolError::NotPartialUpload);
    }
    let offset = headers
        .get(h::UPLOAD_OFFSET)
        .ok_or(ProtocolError::MissingHeader("Upload-Offset"))
        .and_then(|raw| {
            fields::non_negative_integer(raw).ok_or(ProtocolError::InvalidField("Upload-Offset"))
        })?;
    let complete = completeness(headers, version)?;
    let content_length = content_length(headers)?;
    let ends_at = complete
        .then_some(content_length)
        .flatten()
        .and_then(|n| offset.checked_add(n));
    let length = length(headers, ends_at)?;
    Ok(DraftAppend {
        offset,
        complete,
        length,
        content_length,
        checksum: body_digest(headers)?,
        want_digest: want_digest(headers)?,
    })
}

/// The digest this request's body must have: `Content-Digest` or tus's `Upload-Checksum`,
/// not both.
fn body_digest<H: Headers + ?Sized>(headers: &H) -> Result<Option<ChecksumHeader>, ProtocolError> {
    let tus = checksum(headers)?;
    let Some(raw) = headers.get(draft::CONTENT_DIGEST) else {
        return Ok(tus);
    };
    if tus.is_some() {
        return Err(ProtocolError::ChecksumAndDigest);
    }
    parse_digest(raw, "Content-Digest")
}

fn want_digest<H: Headers + ?Sized>(
    headers: &H,
) -> Result<Option<ChecksumAlgorithm>, ProtocolError> {
    headers
        .get(draft::WANT_REPR_DIGEST)
        .map(parse_want_digest)
        .transpose()
        .map(Option::flatten)
}

/// Whether a request carries the draft's completeness header (either spelling), which HEAD
/// and DELETE must not carry in the early versions.
pub fn carries_append_headers<H: Headers + ?Sized>(headers: &H) -> bool {
    [
        h::UPLOAD_OFFSET,
        draft::UPLOAD_COMPLETE,
        draft::UPLOAD_INCOMPLETE,
    ]
    .iter()
    .any(|name| headers.get(name).is_some())
}

/// Whether the request completes the upload, by its version's completeness header.
fn completeness<H: Headers + ?Sized>(
    headers: &H,
    version: InteropVersion,
) -> Result<bool, ProtocolError> {
    let name = version.completeness_header();
    let label = if version.number() == 3 {
        "Upload-Incomplete"
    } else {
        "Upload-Complete"
    };
    let value = headers
        .get(name)
        .ok_or(ProtocolError::MissingHeader(label))?;
    let flag = fields::boolean(value).ok_or(ProtocolError::InvalidField(label))?;
    Ok(flag != (version.number() == 3))
}

/// The upload's length: `Upload-Length`, or where the request ends when it completes the
/// upload; both must agree.
fn length<H: Headers + ?Sized>(
    headers: &H,
    ends_at: Option<u64>,
) -> Result<Option<u64>, ProtocolError> {
    let declared = headers
        .get(h::UPLOAD_LENGTH)
        .map(|raw| {
            fields::non_negative_integer(raw).ok_or(ProtocolError::InvalidField("Upload-Length"))
        })
        .transpose()?;
    match (declared, ends_at) {
        (Some(declared), Some(ends_at)) if declared != ends_at => {
            Err(ProtocolError::InconsistentLength)
        }
        (declared, ends_at) => Ok(declared.or(ends_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(n: u8) -> InteropVersion {
        InteropVersion::parse(n.to_string().as_bytes()).expect("served")
    }

    #[test]
    fn creation_reads_completeness_and_length() {
        let c = parse_draft_creation(
            &[("Upload-Complete", "?1"), ("Content-Length", "5")],
            v(6),
            1024,
        )
        .expect("valid");
        assert_eq!(
            (c.complete, c.length, c.content_length),
            (true, Some(5), Some(5))
        );
        let c = parse_draft_creation(
            &[("Upload-Complete", "?0"), ("Content-Length", "5")],
            v(6),
            1024,
        )
        .expect("valid");
        assert_eq!((c.complete, c.length), (false, None));
        // Version 3 says the opposite with the other header.
        let c = parse_draft_creation(&[("Upload-Incomplete", "?0")], v(3), 1024).expect("valid");
        assert!(c.complete);
        assert_eq!(
            parse_draft_creation(&[("Upload-Complete", "?1")], v(3), 1024),
            Err(ProtocolError::MissingHeader("Upload-Incomplete"))
        );
        assert_eq!(
            parse_draft_creation(
                &[
                    ("Upload-Complete", "?1"),
                    ("Content-Length", "5"),
                    ("Upload-Length", "6")
                ],
                v(7),
                1024
            ),
            Err(ProtocolError::InconsistentLength)
        );
        assert_eq!(
            parse_draft_creation(&[("Upload-Complete", "yes")], v(7), 1024),
            Err(ProtocolError::InvalidField("Upload-Complete"))
        );
    }

    #[test]
    fn append_needs_offset_completeness_and_from_six_the_media_type() {
        let headers = [
            ("Upload-Offset", "10"),
            ("Upload-Complete", "?1"),
            ("Content-Length", "5"),
        ];
        let a = parse_draft_append(&headers, v(5)).expect("no media type before 6");
        assert_eq!((a.offset, a.complete, a.length), (10, true, Some(15)));
        assert_eq!(
            parse_draft_append(&headers, v(6)),
            Err(ProtocolError::NotPartialUpload)
        );
        let typed = [
            ("Content-Type", "application/partial-upload"),
            ("Upload-Offset", "10"),
            ("Upload-Complete", "?0"),
        ];
        let a = parse_draft_append(&typed, v(8)).expect("valid");
        assert_eq!((a.complete, a.length), (false, None));
        assert_eq!(
            parse_draft_append(&[("Content-Type", "application/partial-upload")], v(8)),
            Err(ProtocolError::MissingHeader("Upload-Offset"))
        );
        assert_eq!(
            parse_draft_append(
                &[
                    ("Content-Type", "application/partial-upload"),
                    ("Upload-Offset", "1")
                ],
                v(8)
            ),
            Err(ProtocolError::MissingHeader("Upload-Complete"))
        );
        // An offset near u64::MAX plus a length cannot overflow into a wrong length.
        let huge = [
            ("Upload-Offset", "999999999999999"),
            ("Upload-Complete", "?1"),
            ("Content-Length", "18446744073709551615"),
        ];
        assert!(parse_draft_append(&huge, v(4)).is_ok());
    }

    #[test]
    fn head_and_delete_see_append_headers() {
        assert!(carries_append_headers(&[("Upload-Offset", "0")]));
        assert!(carries_append_headers(&[("upload-incomplete", "?1")]));
        assert!(!carries_append_headers(&[("Upload-Length", "1")]));
    }

    proptest! {
        #[test]
        fn never_panic(
            offset in ".{0,20}",
            complete in ".{0,6}",
            length in ".{0,20}",
            content_length in ".{0,20}",
            n in 3u8..=9,
        ) {
            let headers = [
                ("Content-Type", "application/partial-upload"),
                ("Upload-Offset", offset.as_str()),
                ("Upload-Complete", complete.as_str()),
                ("Upload-Incomplete", complete.as_str()),
                ("Upload-Length", length.as_str()),
                ("Content-Length", content_length.as_str()),
            ];
            let _ = parse_draft_append(&headers, v(n));
            let _ = parse_draft_creation(&headers, v(n), 1024);
        }
    }
}
