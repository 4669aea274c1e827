//! How a download presents itself: content type and disposition from metadata, made safe.
//!
//! Uploaded bytes are the client's, served from the upload origin: whatever a browser would
//! render there with script or forms (HTML, SVG, XML, PDF) would run as that origin. So only
//! passive media is shown inline, everything else is an attachment of an opaque type, and
//! every download forbids sniffing and is sandboxed in case a browser renders it anyway.

use http::{header, HeaderMap, HeaderValue};
use tusk_protocol::Metadata;

/// Types a browser may render inline from our origin without risk of script execution.
/// Everything else (HTML, SVG, XML, JavaScript, PDF: its viewers run scripts and forms,
/// unknown) is served as an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/plain",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "video/mp4",
    "video/ogg",
    "video/webm",
];

/// `(Content-Type, Content-Disposition)` for a download.
pub(crate) fn presentation(metadata: &Metadata) -> (String, String) {
    let declared = metadata
        .text("filetype")
        .or_else(|| metadata.text("type"))
        // The essence only: parameters (`; charset=...`) are not passed on.
        .map(|t| {
            let essence = t.split(';').next().unwrap_or_default();
            essence.trim().to_ascii_lowercase()
        });
    let inline = declared.as_deref().filter(|t| INLINE_TYPES.contains(t));
    let content_type = inline.unwrap_or("application/octet-stream").to_string();
    let kind = if inline.is_some() {
        "inline"
    } else {
        "attachment"
    };
    let disposition = match metadata.text("filename").or_else(|| metadata.text("name")) {
        Some(name) => format!("{kind}; {}", filename_params(name)),
        None => kind.to_string(),
    };
    (content_type, disposition)
}

/// Headers every download carries, inline or not: no type sniffing (a browser must not
/// decide that `text/plain` is HTML), and a sandbox (an opaque origin, no script, forms or
/// plugins) should a browser render an attachment or an inline type after all. `sandbox`
/// alone rather than `default-src 'none'`, which would also block a video's own playback.
pub(crate) fn guard(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
}

/// `filename="ascii fallback"; filename*=UTF-8''percent-encoded` (RFC 6266 / RFC 8187).
/// The fallback has no `/`: RFC 6266 leaves path separators to the client, and a client that
/// reads only the plain parameter must not be handed a path.
fn filename_params(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_protocol::parse_metadata;

    fn meta(raw: &str) -> Metadata {
        parse_metadata(raw, 4096).expect("metadata")
    }

    #[test]
    fn only_allowlisted_types_are_inline() {
        // filetype image/png, filename a.png
        let (t, d) = presentation(&meta("filetype aW1hZ2UvcG5n,filename YS5wbmc="));
        assert_eq!(t, "image/png");
        assert_eq!(d, "inline; filename=\"a.png\"; filename*=UTF-8''a.png");
        // text/html, image/svg+xml, application/pdf, text/xml
        for active in [
            "dGV4dC9odG1s",
            "aW1hZ2Uvc3ZnK3htbA==",
            "YXBwbGljYXRpb24vcGRm",
            "dGV4dC94bWw=",
        ] {
            let (t, d) = presentation(&meta(&format!("filetype {active}")));
            assert_eq!(
                (t.as_str(), d.as_str()),
                ("application/octet-stream", "attachment")
            );
        }
        // Parameters are dropped, case and spaces do not matter.
        // filetype " Text/Plain ; charset=utf-7"
        let (t, d) = presentation(&meta("filetype IFRleHQvUGxhaW4gOyBjaGFyc2V0PXV0Zi03"));
        assert_eq!((t.as_str(), d.as_str()), ("text/plain", "inline"));
    }

    #[test]
    fn hostile_filenames_cannot_break_the_header() {
        // filename: a"b\r\nX: y
        let (_, d) = presentation(&meta("filename YSJiDQpYOiB5"));
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(d.starts_with("attachment; filename=\"a_b__X: y\""));
    }

    #[test]
    fn the_plain_fallback_has_no_path_separators() {
        // filename: ../a/b\c.txt
        let (_, d) = presentation(&meta("filename Li4vYS9iXGMudHh0"));
        assert!(
            d.starts_with(
                "attachment; filename=\".._a_b_c.txt\"; filename*=UTF-8''..%2Fa%2Fb%5Cc.txt"
            ),
            "{d}"
        );
    }
}
