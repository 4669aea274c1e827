//! Where a request points, and the absolute URLs Tusk hands out.

use http::{header, HeaderMap, Uri};

use crate::proxy::TrustedProxy;

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

/// The scheme and authority clients reached us at, for absolute Location URLs: what the
/// trusted proxy says (when Tusk runs behind one), else the Host header and `https` when the
/// connection came over Tusk's own TLS (`over_tls`), `http` otherwise. A value that is not
/// a plausible scheme or host is ignored, so a Location never points anywhere a header
/// could smuggle in.
pub(crate) fn origin(
    headers: &HeaderMap,
    uri: &Uri,
    proxy: Option<TrustedProxy>,
    over_tls: bool,
) -> String {
    let forwarded = proxy.map(|p| p.read(headers)).unwrap_or_default();
    let proto = forwarded
        .proto
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| if over_tls { "https" } else { "http" }.to_string());
    let host = forwarded
        .host
        .filter(|h| is_plausible_host(h))
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| is_plausible_host(h))
                .map(str::to_string)
        })
        .or_else(|| {
            uri.authority()
                .map(|a| a.to_string())
                .filter(|h| is_plausible_host(h))
        })
        .unwrap_or_else(|| "localhost".to_string());
    format!("{proto}://{host}")
}

/// A DNS name or IP literal with an optional port: nothing that could turn a Location
/// header into a different URL (no user info, path, query, or stray characters).
fn is_plausible_host(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, after)) => (is_ip_literal(literal), after),
            None => return false,
        },
        None => match host.find(':') {
            Some(colon) => (is_dns_name(&host[..colon]), &host[colon..]),
            None => (is_dns_name(host), ""),
        },
    };
    name_ok && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
}

fn is_ip_literal(literal: &str) -> bool {
    !literal.is_empty()
        && literal
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
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
    use crate::proxy::ProxyHeaders;

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
        h.insert("x-forwarded-proto", "HTTPS".parse().expect("header"));
        h.insert(
            "forwarded",
            "proto=http;host=a.example".parse().expect("header"),
        );
        let uri = Uri::from_static("/files/");
        let x = TrustedProxy {
            headers: ProxyHeaders::XForwarded,
            hops: 1,
        };
        let f = TrustedProxy {
            headers: ProxyHeaders::Forwarded,
            hops: 1,
        };
        assert_eq!(origin(&h, &uri, None, false), "http://internal:8080");
        assert_eq!(
            origin(&h, &uri, Some(x), false),
            "https://uploads.example.com"
        );
        assert_eq!(origin(&h, &uri, Some(f), false), "http://a.example");
        // An implausible forwarded host falls back to Host; an implausible Host to localhost.
        h.insert(
            "x-forwarded-host",
            "a.example@evil".parse().expect("header"),
        );
        assert_eq!(origin(&h, &uri, Some(x), false), "https://internal:8080");
        h.insert("host", "evil\"host".parse().expect("header"));
        assert_eq!(origin(&h, &uri, None, false), "http://localhost");
        assert_eq!(origin(&h, &uri, None, true), "https://localhost");
        // Behind a proxy, the proxy's word on the scheme wins over the connection's.
        assert_eq!(origin(&h, &uri, Some(f), true), "http://a.example");
    }

    #[test]
    fn plausible_hosts() {
        for good in [
            "example.com",
            "example.com.",
            "a-b_c.example:8080",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
            "localhost",
        ] {
            assert!(is_plausible_host(good), "{good}");
        }
        for bad in [
            "",
            "a..b",
            "evil.com/x",
            "user@evil.com",
            "a.com:99999",
            "a.com:",
            "a.com:80:80",
            "[::1",
            "[::1]x",
            "[zz]",
            "a b",
            "a.com?x",
            "a.com#x",
            "a\\b",
        ] {
            assert!(!is_plausible_host(bad), "{bad}");
        }
    }
}
