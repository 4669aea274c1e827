//! What a trusted reverse proxy says about the client-facing scheme and host.
//!
//! A proxy either sets a header (nginx `proxy_set_header`, HAProxy `set-header`) or appends
//! its value to what it received; either way the values it wrote are the last ones. A client
//! can put anything before them, and can send the family of headers the proxy does not
//! touch, so only the configured family is read, and only the values the trusted hops wrote:
//! of a list, the `hops`-th from the right (the client-facing proxy's), or the leftmost when
//! the list is shorter (every value in it then came from a trusted proxy).

use http::HeaderMap;

/// The header family the proxies in front of Tusk set; the other family is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeaders {
    /// `X-Forwarded-Host` and `X-Forwarded-Proto` (nginx, ingress-nginx, HAProxy, most
    /// cloud load balancers).
    #[default]
    XForwarded,
    /// `Forwarded` (RFC 7239): its `host` and `proto` parameters.
    Forwarded,
}

/// The proxies Tusk runs behind, whose headers build the URLs it hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    /// Which header family they set.
    pub headers: ProxyHeaders,
    /// How many proxies in a row each set or append to that family (at least 1).
    pub hops: usize,
}

/// Scheme and host as the trusted proxy saw them, not yet checked for plausibility.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    pub proto: Option<String>,
    pub host: Option<String>,
}

impl TrustedProxy {
    pub(crate) fn read(&self, headers: &HeaderMap) -> Forwarded {
        match self.headers {
            ProxyHeaders::XForwarded => Forwarded {
                proto: self.trusted(list(headers, "x-forwarded-proto")),
                host: self.trusted(list(headers, "x-forwarded-host")),
            },
            ProxyHeaders::Forwarded => {
                let element = self.trusted(list(headers, "forwarded"));
                element
                    .as_deref()
                    .and_then(parse_element)
                    .unwrap_or_default()
            }
        }
    }

    fn trusted(&self, values: Option<Vec<String>>) -> Option<String> {
        let mut values = values?;
        let at = values.len().saturating_sub(self.hops.max(1));
        (at < values.len()).then(|| values.swap_remove(at))
    }
}

/// Every comma-separated value of every line of `name`, in order; `None` when a line is not
/// text or a quoted string is left open (a header we cannot read is not trusted in part).
fn list(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    let mut values = Vec::new();
    for line in headers.get_all(name) {
        let line = line.to_str().ok()?;
        values.extend(split_outside_quotes(line, ',')?);
    }
    Some(values)
}

/// Splits on `separator` outside quoted strings, trimming each part.
fn split_outside_quotes(text: &str, separator: char) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(current.trim().to_string());
            current.clear();
            continue;
        }
        current.push(c);
    }
    if quoted || escaped {
        return None;
    }
    parts.push(current.trim().to_string());
    Some(parts)
}

/// `proto` and `host` of one Forwarded element (`for=..;proto=https;host=example.com`).
fn parse_element(element: &str) -> Option<Forwarded> {
    let mut forwarded = Forwarded::default();
    for pair in split_outside_quotes(element, ';')? {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim().to_ascii_lowercase().as_str() {
            "proto" => forwarded.proto = Some(value),
            "host" => forwarded.host = Some(value),
            _ => {}
        }
    }
    Some(forwarded)
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::new();
    let mut escaped = false;
    for c in inner.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().expect("header value"));
        }
        h
    }

    fn seen(trust: TrustedProxy, pairs: &[(&'static str, &'static str)]) -> (String, String) {
        let f = trust.read(&headers(pairs));
        (f.proto.unwrap_or_default(), f.host.unwrap_or_default())
    }

    const X: TrustedProxy = TrustedProxy {
        headers: ProxyHeaders::XForwarded,
        hops: 1,
    };
    const F: TrustedProxy = TrustedProxy {
        headers: ProxyHeaders::Forwarded,
        hops: 1,
    };

    #[test]
    fn only_the_configured_family_is_read() {
        let both = [
            ("forwarded", "proto=http;host=evil.example"),
            ("x-forwarded-host", "up.example"),
            ("x-forwarded-proto", "https"),
        ];
        assert_eq!(seen(X, &both), ("https".into(), "up.example".into()));
        assert_eq!(seen(F, &both), ("http".into(), "evil.example".into()));
    }

    #[test]
    fn the_values_of_the_trusted_hops_win_over_the_clients() {
        let appended = [
            ("x-forwarded-host", "evil.example, a.example"),
            ("x-forwarded-host", "b.example"),
        ];
        assert_eq!(seen(X, &appended).1, "b.example");
        let two = TrustedProxy { hops: 2, ..X };
        assert_eq!(seen(two, &appended).1, "a.example");
        // Fewer values than hops: all came from trusted proxies; the client-facing one is first.
        let five = TrustedProxy { hops: 5, ..X };
        assert_eq!(seen(five, &appended).1, "evil.example");
        let elements = [(
            "forwarded",
            r#"host=evil.example, for="[::1]:80";host="up.example";proto=https"#,
        )];
        assert_eq!(seen(F, &elements), ("https".into(), "up.example".into()));
    }

    #[test]
    fn quoted_separators_do_not_split_and_open_quotes_are_not_trusted() {
        let quoted = [("forwarded", r#"host="a,b;c";proto=https"#)];
        assert_eq!(seen(F, &quoted), ("https".into(), "a,b;c".into()));
        let open = [("forwarded", r#"host="up.example, host=evil.example"#)];
        assert_eq!(seen(F, &open), (String::new(), String::new()));
        assert_eq!(seen(X, &[]), (String::new(), String::new()));
    }
}
