//! Fuzzes every header parser of `tusk-protocol` and checks what each promises, not only that
//! it does not panic.
//!
//! Input layout: the first byte is a separator; the rest is split on it into segments, and
//! segment `i` goes to parser `i` (see `Segment`). Every parser is also fed the whole rest of
//! the input, so each one sees arbitrary bytes whatever the fuzzer chose as separator.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tusk_protocol::headers as h;
use tusk_protocol::{
    check_tus_resumable, is_valid_upload_id, parse_checksum, parse_concat, parse_content_length,
    parse_creation, parse_defer_length, parse_metadata, parse_offset, parse_patch, parse_range,
    parse_upload_length, render_concat, ChecksumAlgorithm, ChecksumHeader, ConcatRequest,
    Concatenation, Headers, Metadata, ProtocolError, MAX_ID_LEN, MIN_ID_LEN, OFFSET_OCTET_STREAM,
    TUS_VERSION,
};

/// Longest decimal the number parsers accept (the crate's `MAX_DIGITS`, the width of u64::MAX).
const MAX_DIGITS: usize = 20;
/// The metadata size limit the server uses by default; the fuzzer also picks its own.
const DEFAULT_METADATA_MAX: usize = 4096;

/// Which parser a segment of the input goes to.
#[derive(Clone, Copy)]
enum Segment {
    Number = 0,
    DeferLength,
    TusResumable,
    UploadId,
    Metadata,
    MetadataMax,
    Checksum,
    Concat,
    Range,
    RangeTotal,
    /// A whole request's headers, one `name:value` per line.
    Request,
}

fuzz_target!(|data: &[u8]| {
    let Some((&separator, body)) = data.split_first() else {
        return;
    };
    let segments: Vec<&[u8]> = body.split(|&b| b == separator).collect();
    let segment = |s: Segment| segments.get(s as usize).copied().unwrap_or(&[]);

    // Each parser on its own segment.
    check_numbers(segment(Segment::Number));
    check_defer_length(segment(Segment::DeferLength));
    check_tus_resumable_header(segment(Segment::TusResumable));
    check_upload_id(&text(segment(Segment::UploadId)));
    let metadata_max = usize::try_from(le_u64(segment(Segment::MetadataMax))).unwrap_or(usize::MAX);
    check_metadata(&text(segment(Segment::Metadata)), metadata_max);
    check_checksum(&text(segment(Segment::Checksum)));
    check_concat(&text(segment(Segment::Concat)));
    let total = le_u64(segment(Segment::RangeTotal));
    check_range(&text(segment(Segment::Range)), total);
    check_request(segment(Segment::Request));

    // And every parser on the whole input.
    let whole = text(body);
    check_numbers(body);
    check_defer_length(body);
    check_tus_resumable_header(body);
    check_upload_id(&whole);
    check_metadata(&whole, DEFAULT_METADATA_MAX);
    check_metadata(&whole, usize::MAX);
    check_checksum(&whole);
    check_concat(&whole);
    for total in [0, 1, 100, total, u64::MAX] {
        check_range(&whole, total);
    }
    check_request(body);

    // The grammar's literal prefixes are hard to guess without a dictionary (no sanitizer,
    // so no memcmp hooks): put them in front of arbitrary input too.
    check_concat(&format!("final;{whole}"));
    check_concat(&format!(" final; {whole}"));
    for total in [0, 1, 100, total, u64::MAX] {
        check_range(&format!("bytes={whole}"), total);
        check_range(&format!("bytes=-{whole}"), total);
    }
    for algorithm in ChecksumAlgorithm::ALL {
        check_checksum(&format!("{} {whole}", algorithm.name()));
    }

    // Positive oracles: build well-formed headers from the input and demand the exact value.
    oracle_numbers(segment(Segment::Number));
    oracle_checksum(segment(Segment::Checksum));
    oracle_range(segment(Segment::Range), total);
    oracle_concat(segment(Segment::Concat));
    oracle_creation(segment(Segment::Request));
});

/// Header values arrive as bytes; the string parsers get them the way a lossy HTTP layer would.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Up to 8 bytes, little-endian; an empty segment is 0.
fn le_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(buf)
}

/// `parse_offset` / `parse_upload_length` against a reference model.
fn check_numbers(bytes: &[u8]) {
    let offset = parse_offset(bytes);
    let length = parse_upload_length(bytes);

    // Both headers follow the same grammar: they accept exactly the same inputs.
    assert_eq!(
        offset.is_ok(),
        length.is_ok(),
        "offset/length disagree on {bytes:?}"
    );
    if let (Ok(a), Ok(b)) = (&offset, &length) {
        assert_eq!(a, b, "offset/length parse {bytes:?} differently");
    }

    // Reference: 1..=20 ASCII digits whose value fits in a u64 (20 digits fit in a u128).
    let expected =
        if !bytes.is_empty() && bytes.len() <= MAX_DIGITS && bytes.iter().all(u8::is_ascii_digit) {
            let wide = bytes
                .iter()
                .fold(0u128, |acc, &d| acc * 10 + u128::from(d - b'0'));
            u64::try_from(wide).ok()
        } else {
            None
        };
    assert_eq!(
        offset.as_ref().ok().copied(),
        expected,
        "parse_offset({bytes:?})"
    );

    match offset {
        Ok(n) => {
            assert!(
                bytes.iter().all(u8::is_ascii_digit),
                "parse_offset accepted a non-digit: {bytes:?}"
            );
            // Re-rendering gives back the digits sent, modulo leading zeros.
            let digits = std::str::from_utf8(bytes).expect("ASCII digits are UTF-8");
            let significant = digits.trim_start_matches('0');
            let significant = if significant.is_empty() {
                "0"
            } else {
                significant
            };
            assert_eq!(n.to_string(), significant, "parse_offset({digits:?}) = {n}");
        }
        Err(e) => assert_eq!(e, ProtocolError::InvalidNumber("Upload-Offset")),
    }
    if let Err(e) = length {
        assert_eq!(e, ProtocolError::InvalidNumber("Upload-Length"));
    }
}

fn check_defer_length(bytes: &[u8]) {
    match parse_defer_length(bytes) {
        Ok(()) => assert_eq!(bytes, b"1", "Upload-Defer-Length accepted {bytes:?}"),
        Err(e) => {
            assert_ne!(bytes, b"1");
            assert_eq!(e, ProtocolError::InvalidDeferLength);
        }
    }
}

fn check_tus_resumable_header(bytes: &[u8]) {
    match check_tus_resumable(Some(bytes)) {
        Ok(()) => assert_eq!(bytes, TUS_VERSION.as_bytes()),
        Err(e) => {
            assert_ne!(bytes, TUS_VERSION.as_bytes());
            assert_eq!(e, ProtocolError::UnsupportedVersion);
        }
    }
    assert_eq!(
        check_tus_resumable(None),
        Err(ProtocolError::MissingTusResumable)
    );
}

fn check_upload_id(id: &str) {
    let valid = is_valid_upload_id(id);
    if valid {
        // Safe as a single path component or object-key segment.
        for forbidden in ['/', '.', '%', '\0', '\\'] {
            assert!(
                !id.contains(forbidden),
                "valid id {id:?} contains {forbidden:?}"
            );
        }
        assert!(
            (MIN_ID_LEN..=MAX_ID_LEN).contains(&id.len()),
            "valid id {id:?} has a bad length"
        );
        assert!(id.is_ascii(), "valid id {id:?} is not ASCII");
    }
    // Reference: the documented alphabet (URL-safe base64) and bounds.
    let expected = (MIN_ID_LEN..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    assert_eq!(valid, expected, "is_valid_upload_id({id:?})");
}

fn check_metadata(raw: &str, max_len: usize) {
    let parsed = parse_metadata(raw, max_len);
    if raw.len() > max_len {
        assert_eq!(parsed, Err(ProtocolError::MetadataTooLarge(max_len)));
        return;
    }
    let Ok(metadata) = parsed else {
        return;
    };
    for (i, (key, _)) in metadata.pairs.iter().enumerate() {
        assert!(!key.is_empty(), "empty metadata key from {raw:?}");
        assert!(
            key.bytes().all(|b| b.is_ascii_graphic() && b != b','),
            "metadata key {key:?} has a forbidden character (from {raw:?})"
        );
        assert!(
            metadata.pairs[..i].iter().all(|(k, _)| k != key),
            "duplicate metadata key {key:?} from {raw:?}"
        );
        assert_eq!(
            metadata
                .pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(k, _)| k),
            Some(key)
        );
    }
    if raw.trim().is_empty() {
        assert!(metadata.pairs.is_empty());
    }
    // Rendering the parsed pairs canonically parses back to the same pairs.
    let rendered = render_metadata(&metadata);
    assert_eq!(
        parse_metadata(&rendered, usize::MAX).as_ref(),
        Ok(&metadata),
        "metadata from {raw:?} does not round-trip through {rendered:?}"
    );
}

fn render_metadata(metadata: &Metadata) -> String {
    metadata
        .pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} {}", STANDARD.encode(v)),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn check_checksum(raw: &str) {
    let Ok(header) = parse_checksum(raw) else {
        return;
    };
    let algorithm = header.algorithm;
    assert_eq!(
        header.digest.len(),
        algorithm.digest_len(),
        "{raw:?}: digest length does not match {}",
        algorithm.name()
    );
    assert_eq!(
        ChecksumAlgorithm::from_name(algorithm.name()),
        Some(algorithm)
    );
    let rendered = format!("{} {}", algorithm.name(), STANDARD.encode(&header.digest));
    assert_eq!(
        parse_checksum(&rendered),
        Ok(ChecksumHeader {
            algorithm,
            digest: header.digest.clone()
        }),
        "checksum from {raw:?} does not round-trip"
    );
}

fn check_concat(raw: &str) {
    let Ok(request) = parse_concat(raw) else {
        return;
    };
    if let ConcatRequest::Final(urls) = &request {
        assert!(!urls.is_empty(), "final concat with no parts from {raw:?}");
        assert!(urls.len() <= 1000, "final concat with {} parts", urls.len());
        for url in urls {
            assert!(!url.is_empty(), "empty part URL from {raw:?}");
            assert!(
                !url.chars().any(char::is_whitespace),
                "part URL {url:?} has whitespace"
            );
        }
    }
    let rendered = render_concat(&request);
    assert_eq!(
        parse_concat(&rendered).as_ref(),
        Ok(&request),
        "concat from {raw:?} does not round-trip through {rendered:?}"
    );
}

fn check_range(raw: &str, total: u64) {
    let Ok(Some(range)) = parse_range(raw, total) else {
        return;
    };
    assert!(
        total > 0,
        "satisfiable range {range:?} of an empty resource from {raw:?}"
    );
    assert!(
        range.first <= range.last,
        "range {range:?} from {raw:?} is inverted"
    );
    assert!(
        range.last < total,
        "range {range:?} from {raw:?} ends past total {total}"
    );
    assert_eq!(range.len(), range.last - range.first + 1);
    assert!(
        range.len() <= total,
        "range {range:?} is longer than {total}"
    );
}

/// Any u64, rendered in decimal with some leading zeros, parses back to itself while it fits
/// in MAX_DIGITS characters and is refused past that.
fn oracle_numbers(bytes: &[u8]) {
    let n = le_u64(bytes);
    let zeros = bytes.get(8).map_or(0, |&z| usize::from(z % 24));
    let rendered = format!("{}{n}", "0".repeat(zeros));
    let expected = (rendered.len() <= MAX_DIGITS).then_some(n);
    assert_eq!(
        parse_offset(rendered.as_bytes()).ok(),
        expected,
        "parse_offset({rendered:?})"
    );
    assert_eq!(parse_upload_length(rendered.as_bytes()).ok(), expected);
}

/// A digest of the right length for its algorithm, base64-encoded, always parses exactly; one
/// of any other length never does.
fn oracle_checksum(bytes: &[u8]) {
    let Some((&pick, rest)) = bytes.split_first() else {
        return;
    };
    let algorithm = ChecksumAlgorithm::ALL[usize::from(pick) % ChecksumAlgorithm::ALL.len()];
    let padding = if pick & 0x80 != 0 { "  " } else { "" };
    let mut digest: Vec<u8> = rest.iter().copied().take(algorithm.digest_len()).collect();
    let exact = digest.len() == algorithm.digest_len();
    let header = format!(
        "{padding}{} {}{padding}",
        algorithm.name(),
        STANDARD.encode(&digest)
    );
    let parsed = parse_checksum(&header);
    if exact {
        assert_eq!(
            parsed,
            Ok(ChecksumHeader {
                algorithm,
                digest: std::mem::take(&mut digest)
            }),
            "{header:?}"
        );
    } else {
        assert_eq!(parsed, Err(ProtocolError::InvalidChecksum), "{header:?}");
    }
}

/// `bytes=a-b`, `bytes=a-` and `bytes=-n` for any numbers, against the RFC 9110 model.
fn oracle_range(bytes: &[u8], total: u64) {
    let first = le_u64(bytes);
    let last = le_u64(bytes.get(8..).unwrap_or_default());
    let satisfiable = |first: u64, last: u64| {
        if last < first {
            Err(ProtocolError::InvalidRange)
        } else if first >= total {
            Ok(None)
        } else {
            Ok(Some((first, last.min(total - 1))))
        }
    };
    let as_pair = |r: Result<Option<tusk_protocol::ByteRange>, ProtocolError>| {
        r.map(|o| o.map(|r| (r.first, r.last)))
    };

    let header = format!("bytes={first}-{last}");
    assert_eq!(
        as_pair(parse_range(&header, total)),
        satisfiable(first, last),
        "{header:?} of {total}"
    );

    let header = format!("bytes={first}-");
    assert_eq!(
        as_pair(parse_range(&header, total)),
        satisfiable(first, u64::MAX),
        "{header:?} of {total}"
    );

    let header = format!("bytes=-{first}");
    let expected = if first == 0 || total == 0 {
        None
    } else {
        Some((total.saturating_sub(first), total - 1))
    };
    assert_eq!(
        as_pair(parse_range(&header, total)),
        Ok(expected),
        "{header:?} of {total}"
    );
}

/// A final concatenation of whitespace-free parts round-trips to exactly those parts.
fn oracle_concat(bytes: &[u8]) {
    let raw = text(bytes);
    let parts: Vec<String> = raw.split_whitespace().map(str::to_string).collect();
    let header = format!("final;{}", parts.join(" "));
    let expected = if parts.is_empty() || parts.len() > 1000 {
        None
    } else {
        Some(ConcatRequest::Final(parts))
    };
    assert_eq!(parse_concat(&header).ok(), expected, "{header:?}");
    assert_eq!(parse_concat("partial"), Ok(ConcatRequest::Partial));
}

/// The server in this target keeps its uploads under `/files/`.
fn partial_upload_id(url: &str) -> Option<String> {
    url.strip_prefix("/files/")
        .filter(|id| is_valid_upload_id(id))
        .map(str::to_string)
}

/// A header list from `name:value` lines; a line without a colon is a name with an empty value.
fn header_lines(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    bytes
        .split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b':') {
            Some(colon) => (text(&line[..colon]), line[colon + 1..].to_vec()),
            None => (text(line), Vec::new()),
        })
        .collect()
}

/// `parse_creation` / `parse_patch` on any header list: what they accept agrees with the
/// single-header parsers and with the rules of which headers go together.
fn check_request(bytes: &[u8]) {
    let headers = header_lines(bytes);
    let headers = &headers[..];
    let get = |name: &str| Headers::get(headers, name);
    let content_length = get(h::CONTENT_LENGTH).map(|v| parse_content_length(v).ok());

    if let Ok(creation) = parse_creation(headers, DEFAULT_METADATA_MAX, partial_upload_id) {
        match &creation.concat {
            Some(Concatenation::Final { urls, upload_ids }) => {
                assert_eq!(
                    creation.length, None,
                    "final upload with a length: {headers:?}"
                );
                assert_eq!(
                    creation.upload, None,
                    "final upload with a body: {headers:?}"
                );
                assert!(get(h::UPLOAD_LENGTH).is_none() && get(h::UPLOAD_DEFER_LENGTH).is_none());
                let expected: Vec<_> = urls.iter().filter_map(|u| partial_upload_id(u)).collect();
                assert_eq!(upload_ids, &expected, "{headers:?}");
            }
            _ => {
                let length = get(h::UPLOAD_LENGTH).map(parse_upload_length);
                let deferred = get(h::UPLOAD_DEFER_LENGTH).map(parse_defer_length);
                assert!(
                    length.is_some() != deferred.is_some(),
                    "exactly one of length and deferred length: {headers:?}"
                );
                assert_eq!(creation.length, length.and_then(Result::ok), "{headers:?}");
            }
        }
        let raw_metadata = get(h::UPLOAD_METADATA).map(text);
        assert_eq!(creation.metadata, raw_metadata, "metadata not kept as sent");
        if let Some(raw) = &creation.metadata {
            assert!(parse_metadata(raw, DEFAULT_METADATA_MAX).is_ok());
        }
        if let Some(body) = &creation.upload {
            assert!(is_offset_stream(get(h::CONTENT_TYPE)), "{headers:?}");
            assert_eq!(body.content_length, content_length.flatten());
            assert!(
                body.content_length.is_some_and(|n| n > 0) || get(h::TRANSFER_ENCODING).is_some(),
                "a body without Content-Length or Transfer-Encoding: {headers:?}"
            );
        }
    }

    if let Ok(patch) = parse_patch(headers) {
        assert!(is_offset_stream(get(h::CONTENT_TYPE)), "{headers:?}");
        let offset = get(h::UPLOAD_OFFSET).map(parse_offset);
        assert_eq!(offset, Some(Ok(patch.offset)), "{headers:?}");
        let declared = get(h::UPLOAD_LENGTH).map(parse_upload_length);
        assert_eq!(declared.transpose(), Ok(patch.declare_length));
        assert_eq!(patch.body.content_length, content_length.flatten());
        let checksum = get(h::UPLOAD_CHECKSUM).map(|v| parse_checksum(&text(v)));
        assert_eq!(checksum.transpose(), Ok(patch.body.checksum));
    }
}

/// A looser model of the Content-Type rule (any UTF-8, not only visible ASCII): the media
/// type, in any case, parameters ignored.
fn is_offset_stream(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// Well-formed creation and PATCH headers built from the input parse to exactly their values.
fn oracle_creation(bytes: &[u8]) {
    let length = le_u64(bytes);
    let content_length = le_u64(bytes.get(8..).unwrap_or_default());
    let offset = le_u64(bytes.get(16..).unwrap_or_default());
    let stream = (h::CONTENT_TYPE, OFFSET_OCTET_STREAM.to_string());
    let headers = [
        (h::UPLOAD_LENGTH, length.to_string()),
        (h::CONTENT_LENGTH, content_length.to_string()),
        stream.clone(),
    ];
    let creation = parse_creation(&headers, DEFAULT_METADATA_MAX, partial_upload_id)
        .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
    assert_eq!(creation.length, Some(length));
    assert_eq!(
        creation.upload.map(|body| body.content_length),
        (content_length > 0).then_some(Some(content_length))
    );

    let headers = [
        (h::UPLOAD_OFFSET, offset.to_string()),
        (h::CONTENT_LENGTH, content_length.to_string()),
        stream,
    ];
    let patch = parse_patch(&headers).unwrap_or_else(|e| panic!("{headers:?}: {e}"));
    assert_eq!(
        (patch.offset, patch.body.content_length),
        (offset, Some(content_length))
    );

    let partials = [format!("/files/{}", "a".repeat(MIN_ID_LEN))];
    let headers = [(h::UPLOAD_CONCAT, format!("final;{}", partials.join(" ")))];
    assert_eq!(
        parse_creation(&headers, DEFAULT_METADATA_MAX, partial_upload_id).map(|c| c.concat),
        Ok(Some(Concatenation::Final {
            urls: partials.to_vec(),
            upload_ids: vec!["a".repeat(MIN_ID_LEN)],
        }))
    );
}
