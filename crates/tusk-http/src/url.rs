//! Where a request points, and the absolute URLs Tusk hands out.

use http::{header, HeaderMap, Uri};

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// The creation endpoint itself.
    Collection,
    /// An upload URL whose ID passed validation.
    Upload(&'a str),
    /// Under the base path but not a valid upload ID (hostile or malformed): 404.
    Invalid,
    /// Outside the base path.
    Elsewhere,
}

/// Classifies the raw (still percent-encoded) request path. IDs are checked on the encoded
/// form, so `%2F` or `%00` never decode into a path separator or NUL.
pub(crate) fn target<'a>(path: &'a str, base_path: &str) -> Target<'a> {
    let trimmed_base = base_path.trim_end_matches('/');
    if path == base_path || path == trimmed_base {
        return Target::Collection;
    }
    match path.strip_prefix(base_path) {
        Some(rest) if tusk_protocol::is_valid_upload_id(rest) => Target::Upload(rest),
        Some(_) => Target::Invalid,
        None => Target::Elsewhere,
    }
}

/// The scheme and authority clients reached us at, for absolute Location URLs.
pub(crate) fn origin(headers: &HeaderMap, uri: &Uri, behind_proxy: bool) -> String {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut proto: Option<String> = None;
    let mut host: Option<String> = None;
    if behind_proxy {
        if let Some(forwarded) = text("forwarded") {
            // The first element is the client-facing hop.
            let first = forwarded.split(',').next().unwrap_or_default();
            for pair in first.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    let v = v.trim_matches('"');
                    match k.trim().to_ascii_lowercase().as_str() {
                        "proto" => proto = Some(v.to_string()),
                        "host" => host = Some(v.to_string()),
                        _ => {}
                    }
                }
            }
        }
        let first = |v: &str| v.split(',').next().unwrap_or_default().trim().to_string();
        proto = proto.or_else(|| text("x-forwarded-proto").map(first));
        host = host.or_else(|| text("x-forwarded-host").map(first));
    }
    let proto = proto
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_string());
    let host = host
        .or_else(|| text(header::HOST.as_str()).map(str::to_string))
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .filter(|h| is_plausible_host(h))
        .unwrap_or_else(|| "localhost".to_string());
    format!("{proto}://{host}")
}

/// Rejects hosts that could turn a Location header into something else.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// The upload ID an `Upload-Concat: final;` entry names: an absolute URL or a path.
pub(crate) fn upload_id_of(reference: &str, base_path: &str) -> Option<String> {
    let path = match reference.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => reference,
    };
    match target(path, base_path) {
        Target::Upload(id) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let id = "AAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(target("/files/", "/files/"), Target::Collection);
        assert_eq!(target("/files", "/files/"), Target::Collection);
        assert_eq!(
            target(&format!("/files/{id}"), "/files/"),
            Target::Upload(id)
        );
        assert_eq!(target("/files/..", "/files/"), Target::Invalid);
        assert_eq!(target("/files/a%2F..%2Fetc", "/files/"), Target::Invalid);
        assert_eq!(target("/other", "/files/"), Target::Elsewhere);
        assert_eq!(
            upload_id_of(&format!("http://h:1/files/{id}"), "/files/"),
            Some(id.into())
        );
        assert_eq!(
            upload_id_of(&format!("/files/{id}"), "/files/"),
            Some(id.into())
        );
        assert_eq!(upload_id_of("http://h/elsewhere/x", "/files/"), None);
    }

    #[test]
    fn proxy_headers_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("host", "internal:8080".parse().expect("header"));
        h.insert(
            "x-forwarded-host",
            "uploads.example.com".parse().expect("header"),
        );
        h.insert("x-forwarded-proto", "https".parse().expect("header"));
        let uri = Uri::from_static("/files/");
        assert_eq!(origin(&h, &uri, false), "http://internal:8080");
        assert_eq!(origin(&h, &uri, true), "https://uploads.example.com");
        h.insert(
            "forwarded",
            "for=1.2.3.4;proto=http;host=a.example"
                .parse()
                .expect("header"),
        );
        assert_eq!(origin(&h, &uri, true), "http://a.example");
        h.insert("host", "evil\"host".parse().expect("header"));
        assert_eq!(origin(&h, &uri, false), "http://localhost");
    }
}
