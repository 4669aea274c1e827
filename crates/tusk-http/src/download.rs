//! How a download presents itself: content type and disposition from metadata, made safe.

use tusk_protocol::Metadata;

/// Types a browser may render inline from our origin without risk of script execution.
/// Everything else (HTML, SVG, XML, JavaScript, unknown) is served as an attachment.
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
    "application/pdf",
];

/// `(Content-Type, Content-Disposition)` for a download.
pub(crate) fn presentation(metadata: &Metadata) -> (String, String) {
    let declared = metadata
        .text("filetype")
        .or_else(|| metadata.text("type"))
        .map(|t| t.trim().to_ascii_lowercase());
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

/// `filename="ascii fallback"; filename*=UTF-8''percent-encoded` (RFC 6266 / RFC 8187).
fn filename_params(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
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
        // filetype text/html
        let (t, d) = presentation(&meta("filetype dGV4dC9odG1s"));
        assert_eq!(t, "application/octet-stream");
        assert_eq!(d, "attachment");
    }

    #[test]
    fn hostile_filenames_cannot_break_the_header() {
        // filename: a"b\r\nX: y
        let (_, d) = presentation(&meta("filename YSJiDQpYOiB5"));
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(d.starts_with("attachment; filename=\"a_b__X: y\""));
    }
}
