//! Whole-request header rules: which headers a creation and a PATCH must, may and must not
//! carry, and how they combine.
//!
//! Each parser checks its rules in one fixed order, and the first broken rule is the error
//! the client sees; that order is part of the behaviour clients observe, so it is kept
//! stable and covered by tests.

use crate::headers as h;
use crate::numbers::parse_content_length;
use crate::{
    parse_checksum, parse_concat, parse_defer_length, parse_metadata, parse_offset,
    parse_upload_length, ChecksumHeader, ConcatRequest, ProtocolError, OFFSET_OCTET_STREAM,
};

/// A request's headers as the parsers read them.
///
/// `get` returns the first value of the header named `name` (asked for in lower case),
/// raw, as the client sent it: the parsers decide what is valid.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&[u8]>;
}

/// A list of `(name, value)` pairs; names compare case-insensitively and the first one wins,
/// as with an HTTP header map.
impl<N: AsRef<str>, V: AsRef<[u8]>> Headers for [(N, V)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>, const LEN: usize> Headers for [(N, V); LEN] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        Headers::get(self.as_slice(), name)
    }
}

/// What the headers say about a body of upload bytes (a PATCH, or a creation with upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyHeaders {
    /// `Upload-Checksum`: the digest the whole body must have.
    pub checksum: Option<ChecksumHeader>,
    /// `Content-Length`; a chunked body has none.
    pub content_length: Option<u64>,
}

/// A valid PATCH request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHeaders {
    /// `Upload-Offset`: where the body starts.
    pub offset: u64,
    /// `Upload-Length` of an upload created with a deferred length, declared now.
    pub declare_length: Option<u64>,
    pub body: BodyHeaders,
}

/// What a creation asks of the concatenation extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concatenation {
    Partial,
    /// A final upload of `upload_ids`, in order; `urls` are the references as the client
    /// sent them, which HEAD echoes.
    Final {
        urls: Vec<String>,
        upload_ids: Vec<String>,
    },
}

impl Concatenation {
    /// The `Upload-Concat` request this came from.
    pub fn request(&self) -> ConcatRequest {
        match self {
            Self::Partial => ConcatRequest::Partial,
            Self::Final { urls, .. } => ConcatRequest::Final(urls.clone()),
        }
    }
}

/// A valid creation request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationHeaders {
    /// `Upload-Length`. `None` for a deferred length (`Upload-Defer-Length: 1`) and for a
    /// final upload, whose length is the sum of its partials'.
    pub length: Option<u64>,
    /// `Upload-Metadata` exactly as sent (it is valid), so HEAD can echo it byte for byte.
    pub metadata: Option<String>,
    pub concat: Option<Concatenation>,
    /// The upload's first bytes come with the creation (creation-with-upload).
    pub upload: Option<BodyHeaders>,
}

impl CreationHeaders {
    pub fn is_final(&self) -> bool {
        matches!(self.concat, Some(Concatenation::Final { .. }))
    }
}

/// Parses the headers of a creation (POST on the upload collection).
///
/// `max_metadata_bytes` bounds the raw `Upload-Metadata`. `partial_upload_id` turns a
/// reference of an `Upload-Concat: final;` list into the upload ID it names on this server,
/// or `None` when it names none; it is the caller's because only the server knows its URLs.
pub fn parse_creation<H: Headers + ?Sized>(
    headers: &H,
    max_metadata_bytes: usize,
    partial_upload_id: impl Fn(&str) -> Option<String>,
) -> Result<CreationHeaders, ProtocolError> {
    let length = headers
        .get(h::UPLOAD_LENGTH)
        .map(parse_upload_length)
        .transpose()?;
    let deferred = headers
        .get(h::UPLOAD_DEFER_LENGTH)
        .map(parse_defer_length)
        .transpose()?
        .is_some();
    let concat = text(headers, h::UPLOAD_CONCAT)
        .map_err(|NotText| ProtocolError::InvalidConcat("not visible ASCII"))?
        .map(parse_concat)
        .transpose()?;
    let concat = match concat {
        None => None,
        Some(ConcatRequest::Partial) => Some(Concatenation::Partial),
        Some(ConcatRequest::Final(urls)) => {
            if length.is_some() || deferred {
                return Err(ProtocolError::ConcatenationRefused(
                    "a final upload must not carry Upload-Length",
                ));
            }
            let upload_ids = urls
                .iter()
                .map(|url| partial_upload_id(url))
                .collect::<Option<Vec<_>>>()
                .ok_or(ProtocolError::ConcatenationRefused(
                    "a partial upload URL is not an upload of this server",
                ))?;
            Some(Concatenation::Final { urls, upload_ids })
        }
    };
    let is_final = matches!(concat, Some(Concatenation::Final { .. }));
    if !is_final && length.is_some() == deferred {
        return Err(ProtocolError::LengthAndDeferLength);
    }
    let metadata = text(headers, h::UPLOAD_METADATA)
        .map_err(|NotText| ProtocolError::InvalidMetadata("not visible ASCII"))?;
    if let Some(raw) = metadata {
        parse_metadata(raw, max_metadata_bytes)?;
    }
    let content_length = content_length(headers)?;
    let carries_body =
        content_length.is_some_and(|n| n > 0) || headers.get(h::TRANSFER_ENCODING).is_some();
    if carries_body && !is_offset_stream(headers) {
        return Err(ProtocolError::WrongContentType);
    }
    if carries_body && is_final {
        return Err(ProtocolError::BodyOnFinal);
    }
    let upload = if carries_body {
        Some(BodyHeaders {
            checksum: checksum(headers)?,
            content_length,
        })
    } else {
        None
    };
    Ok(CreationHeaders {
        length,
        metadata: metadata.map(str::to_string),
        concat,
        upload,
    })
}

/// Parses the headers of a PATCH.
pub fn parse_patch<H: Headers + ?Sized>(headers: &H) -> Result<PatchHeaders, ProtocolError> {
    if !is_offset_stream(headers) {
        return Err(ProtocolError::WrongContentType);
    }
    let offset = headers
        .get(h::UPLOAD_OFFSET)
        .ok_or(ProtocolError::MissingHeader("Upload-Offset"))
        .and_then(parse_offset)?;
    let declare_length = headers
        .get(h::UPLOAD_LENGTH)
        .map(parse_upload_length)
        .transpose()?;
    let body = BodyHeaders {
        checksum: checksum(headers)?,
        content_length: content_length(headers)?,
    };
    Ok(PatchHeaders {
        offset,
        declare_length,
        body,
    })
}

/// A header value that is not text by HTTP's rule.
pub(crate) struct NotText;

/// The header's value as text, under the rule HTTP libraries apply (hyper's
/// `HeaderValue::to_str`): visible ASCII, space and tab only.
pub(crate) fn text<'a, H: Headers + ?Sized>(
    headers: &'a H,
    name: &str,
) -> Result<Option<&'a str>, NotText> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    if !value
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
    {
        return Err(NotText);
    }
    std::str::from_utf8(value).map(Some).map_err(|_| NotText)
}

/// Whether the body is declared `application/offset+octet-stream` (parameters ignored).
fn is_offset_stream<H: Headers + ?Sized>(headers: &H) -> bool {
    has_media_type(headers, OFFSET_OCTET_STREAM)
}

/// Whether the body is declared of `media_type` (parameters ignored).
pub(crate) fn has_media_type<H: Headers + ?Sized>(headers: &H, media_type: &str) -> bool {
    text(headers, h::CONTENT_TYPE)
        .ok()
        .flatten()
        .is_some_and(|value| {
            let declared = value.split_once(';').map_or(value, |(media, _)| media);
            declared.trim().eq_ignore_ascii_case(media_type)
        })
}

pub(crate) fn content_length<H: Headers + ?Sized>(
    headers: &H,
) -> Result<Option<u64>, ProtocolError> {
    headers
        .get(h::CONTENT_LENGTH)
        .map(parse_content_length)
        .transpose()
}

pub(crate) fn checksum<H: Headers + ?Sized>(
    headers: &H,
) -> Result<Option<ChecksumHeader>, ProtocolError> {
    text(headers, h::UPLOAD_CHECKSUM)
        .map_err(|NotText| ProtocolError::InvalidChecksum)?
        .map(parse_checksum)
        .transpose()
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;

    use super::*;
    use crate::{render_concat, ChecksumAlgorithm};

    const MAX_METADATA: usize = 4096;
    const OFFSET_STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

    /// The server in these tests keeps its uploads under `/files/`.
    fn id_under_files(url: &str) -> Option<String> {
        url.strip_prefix("/files/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_string)
    }

    fn creation<H: Headers + ?Sized>(headers: &H) -> Result<CreationHeaders, ProtocolError> {
        parse_creation(headers, MAX_METADATA, id_under_files)
    }

    #[test]
    fn creation_length_rules() {
        let length = |pairs: &[(&str, &str)]| creation(pairs).map(|c| c.length);
        assert_eq!(length(&[("Upload-Length", "10")]), Ok(Some(10)));
        assert_eq!(length(&[("upload-defer-length", "1")]), Ok(None));
        assert_eq!(length(&[]), Err(ProtocolError::LengthAndDeferLength));
        assert_eq!(
            length(&[("Upload-Length", "1"), ("Upload-Defer-Length", "1")]),
            Err(ProtocolError::LengthAndDeferLength)
        );
        assert_eq!(
            length(&[("Upload-Defer-Length", "2")]),
            Err(ProtocolError::InvalidDeferLength)
        );
        assert_eq!(
            length(&[("Upload-Length", "-1")]),
            Err(ProtocolError::InvalidNumber("Upload-Length"))
        );
    }

    #[test]
    fn creation_concatenation_rules() {
        let concat = |pairs: &[(&str, &str)]| creation(pairs).map(|c| c.concat);
        assert_eq!(
            concat(&[("Upload-Concat", "final;/files/a /files/b")]),
            Ok(Some(Concatenation::Final {
                urls: vec!["/files/a".into(), "/files/b".into()],
                upload_ids: vec!["a".into(), "b".into()],
            }))
        );
        assert_eq!(
            concat(&[("Upload-Concat", "partial"), ("Upload-Length", "3")]),
            Ok(Some(Concatenation::Partial))
        );
        assert_eq!(
            concat(&[("Upload-Concat", "partial")]),
            Err(ProtocolError::LengthAndDeferLength)
        );
        for length in [("Upload-Length", "3"), ("Upload-Defer-Length", "1")] {
            assert_eq!(
                concat(&[("Upload-Concat", "final;/files/a"), length]),
                Err(ProtocolError::ConcatenationRefused(
                    "a final upload must not carry Upload-Length"
                ))
            );
        }
        assert_eq!(
            concat(&[("Upload-Concat", "final;/files/a /elsewhere/b")]),
            Err(ProtocolError::ConcatenationRefused(
                "a partial upload URL is not an upload of this server"
            ))
        );
        assert_eq!(
            concat(&[("Upload-Concat", "final;/files/\u{e9}")]),
            Err(ProtocolError::InvalidConcat("not visible ASCII"))
        );
    }

    #[test]
    fn creation_with_upload_rules() {
        let upload = |pairs: &[(&str, &str)]| creation(pairs).map(|c| c.upload);
        let length = ("Upload-Length", "5");
        assert_eq!(
            upload(&[length, ("Content-Length", "5")]),
            Err(ProtocolError::WrongContentType)
        );
        assert_eq!(upload(&[length, ("Content-Length", "0")]), Ok(None));
        assert_eq!(
            upload(&[length, ("Transfer-Encoding", "chunked"), OFFSET_STREAM]),
            Ok(Some(BodyHeaders {
                checksum: None,
                content_length: None
            }))
        );
        assert_eq!(
            upload(&[length, ("Content-Length", "five")]),
            Err(ProtocolError::InvalidNumber("Content-Length"))
        );
        assert_eq!(
            upload(&[
                ("Upload-Concat", "final;/files/a"),
                ("Content-Length", "5"),
                OFFSET_STREAM,
                ("Upload-Checksum", "not a checksum"),
            ]),
            Err(ProtocolError::BodyOnFinal)
        );
        assert_eq!(
            upload(&[
                length,
                ("Content-Length", "5"),
                OFFSET_STREAM,
                ("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            ])
            .map(|u| u.and_then(|u| u.checksum).map(|c| c.algorithm)),
            Ok(Some(ChecksumAlgorithm::Sha1))
        );
    }

    /// With several rules broken, the first one in the documented order is reported.
    #[test]
    fn creation_reports_the_first_broken_rule() {
        assert_eq!(
            creation(&[
                ("Upload-Concat", "final;/elsewhere/a"),
                ("Upload-Metadata", "bad key !!!"),
                ("Content-Length", "5"),
            ]),
            Err(ProtocolError::ConcatenationRefused(
                "a partial upload URL is not an upload of this server"
            ))
        );
        assert_eq!(
            creation(&[
                ("Upload-Length", "5"),
                ("Upload-Metadata", "k\u{7f}"),
                ("Content-Length", "x"),
            ]),
            Err(ProtocolError::InvalidMetadata("not visible ASCII"))
        );
        assert_eq!(
            creation(&[
                ("Upload-Length", "x"),
                ("Upload-Defer-Length", "x"),
                ("Upload-Concat", "x"),
            ]),
            Err(ProtocolError::InvalidNumber("Upload-Length"))
        );
    }

    #[test]
    fn patch_rules() {
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![OFFSET_STREAM, ("Upload-Offset", "7")];
            pairs.extend_from_slice(extra);
            parse_patch(&pairs[..])
        };
        assert_eq!(
            with(&[("Content-Length", "3")]),
            Ok(PatchHeaders {
                offset: 7,
                declare_length: None,
                body: BodyHeaders {
                    checksum: None,
                    content_length: Some(3)
                }
            })
        );
        assert_eq!(
            with(&[("Upload-Length", "9")]).map(|p| p.declare_length),
            Ok(Some(9))
        );
        assert_eq!(
            with(&[("Upload-Checksum", "sha1 \u{e9}")]),
            Err(ProtocolError::InvalidChecksum)
        );
        assert_eq!(
            parse_patch(&[("Upload-Offset", "x")][..]),
            Err(ProtocolError::WrongContentType)
        );
        assert_eq!(
            parse_patch(&[("content-type", "Application/Offset+Octet-Stream; v=1")][..]),
            Err(ProtocolError::MissingHeader("Upload-Offset"))
        );
        assert_eq!(
            parse_patch(
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Upload-Offset", "0")
                ][..]
            ),
            Err(ProtocolError::WrongContentType)
        );
    }

    /// The messages clients got when these rules were checked by the engine's errors.
    #[test]
    fn messages_clients_rely_on() {
        assert_eq!(
            ProtocolError::ConcatenationRefused("a final upload must not carry Upload-Length")
                .to_string(),
            "invalid concatenation: a final upload must not carry Upload-Length"
        );
        assert_eq!(
            ProtocolError::BodyOnFinal.to_string(),
            "a final concatenated upload cannot be patched"
        );
    }

    fn render_body(body: &BodyHeaders, out: &mut Vec<(String, Vec<u8>)>) {
        out.push((OFFSET_STREAM.0.into(), OFFSET_STREAM.1.into()));
        match body.content_length {
            Some(n) => out.push(("Content-Length".into(), n.to_string().into())),
            None => out.push(("Transfer-Encoding".into(), "chunked".into())),
        }
        if let Some(checksum) = &body.checksum {
            let value = format!(
                "{} {}",
                checksum.algorithm.name(),
                STANDARD.encode(&checksum.digest)
            );
            out.push(("Upload-Checksum".into(), value.into()));
        }
    }

    fn render_creation(creation: &CreationHeaders) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        match creation.length {
            _ if creation.is_final() => {}
            Some(n) => out.push(("Upload-Length".into(), n.to_string().into())),
            None => out.push(("Upload-Defer-Length".into(), "1".into())),
        }
        if let Some(metadata) = &creation.metadata {
            out.push(("Upload-Metadata".into(), metadata.clone().into()));
        }
        if let Some(concat) = &creation.concat {
            out.push((
                "Upload-Concat".into(),
                render_concat(&concat.request()).into(),
            ));
        }
        if let Some(body) = &creation.upload {
            render_body(body, &mut out);
        }
        out
    }

    fn checksum_strategy() -> impl Strategy<Value = ChecksumHeader> {
        prop::sample::select(ChecksumAlgorithm::ALL.to_vec()).prop_flat_map(|algorithm| {
            vec(any::<u8>(), algorithm.digest_len())
                .prop_map(move |digest| ChecksumHeader { algorithm, digest })
        })
    }

    /// A body a creation can carry: a chunked one, or one of at least one byte.
    fn body_strategy(
        content_length: impl Strategy<Value = u64>,
    ) -> impl Strategy<Value = BodyHeaders> {
        (option::of(checksum_strategy()), option::of(content_length)).prop_map(
            |(checksum, content_length)| BodyHeaders {
                checksum,
                content_length,
            },
        )
    }

    fn metadata_strategy() -> impl Strategy<Value = String> {
        btree_map("[a-zA-Z0-9_.-]{1,16}", vec(any::<u8>(), 0..32), 0..6).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(key, value)| {
                    if value.is_empty() {
                        key.clone()
                    } else {
                        format!("{key} {}", STANDARD.encode(value))
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    fn creation_strategy() -> impl Strategy<Value = CreationHeaders> {
        let concat = prop_oneof![
            Just(None),
            Just(Some(Concatenation::Partial)),
            vec("[a-zA-Z0-9_-]{1,30}", 1..5).prop_map(|upload_ids| Some(Concatenation::Final {
                urls: upload_ids.iter().map(|id| format!("/files/{id}")).collect(),
                upload_ids,
            })),
        ];
        (
            concat,
            any::<Option<u64>>(),
            option::of(metadata_strategy()),
            option::of(body_strategy(1..=u64::MAX)),
        )
            .prop_map(|(concat, length, metadata, upload)| {
                let is_final = matches!(concat, Some(Concatenation::Final { .. }));
                CreationHeaders {
                    length: length.filter(|_| !is_final),
                    metadata,
                    concat,
                    upload: upload.filter(|_| !is_final),
                }
            })
    }

    /// Header names the parsers read, and a few they do not, in any case.
    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                h::UPLOAD_LENGTH,
                h::UPLOAD_DEFER_LENGTH,
                h::UPLOAD_CONCAT,
                h::UPLOAD_METADATA,
                h::UPLOAD_OFFSET,
                h::UPLOAD_CHECKSUM,
                h::CONTENT_TYPE,
                h::CONTENT_LENGTH,
                h::TRANSFER_ENCODING,
            ])
            .prop_map(str::to_string),
            "[a-zA-Z-]{1,20}",
        ]
    }

    /// Values of every kind: arbitrary bytes, and near-valid ones the parsers go deeper on.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            vec(any::<u8>(), 0..64),
            "[0-9]{1,22}".prop_map(String::into_bytes),
            "(partial|final;.{0,40})".prop_map(String::into_bytes),
            "(sha1|md5|crc32|sha256) .{0,50}".prop_map(String::into_bytes),
            ".{0,10}application/offset\\+octet-stream.{0,10}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn creation_round_trips(expected in creation_strategy()) {
            let headers = render_creation(&expected);
            prop_assert_eq!(creation(&headers[..]), Ok(expected));
        }

        #[test]
        fn patch_round_trips(
            offset: u64,
            declare_length: Option<u64>,
            body in body_strategy(any::<u64>()),
        ) {
            let expected = PatchHeaders { offset, declare_length, body };
            let mut headers = vec![("Upload-Offset".to_string(), offset.to_string().into_bytes())];
            if let Some(length) = declare_length {
                headers.push(("Upload-Length".into(), length.to_string().into()));
            }
            render_body(&expected.body, &mut headers);
            prop_assert_eq!(parse_patch(&headers[..]), Ok(expected));
        }

        #[test]
        fn parsers_never_panic(headers in vec((header_name(), header_value()), 0..12)) {
            if let Ok(parsed) = creation(&headers[..]) {
                // A final upload never has a length of its own nor a body.
                if parsed.is_final() {
                    prop_assert_eq!(parsed.length, None);
                    prop_assert_eq!(parsed.upload, None);
                }
            }
            let _ = parse_patch(&headers[..]);
        }
    }
}
