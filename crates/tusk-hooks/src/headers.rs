//! Which request headers the hooks see, and which of them say who the client is.

use std::collections::HashSet;

use http::HeaderName;
use tusk_core::RequestInfo;

use crate::hooks::HookError;
use crate::settings::HookSettings;

/// The operator's header lists, checked and lower-cased.
pub(crate) struct HeaderPolicy {
    /// The credential headers, in the configured order.
    credentials: Vec<String>,
    /// What payloads carry: the allowlist and the credential headers (the hook decides on
    /// those, so it must see them).
    forwarded: HashSet<String>,
}

/// Lower-cases `name`, refusing what cannot be a header name (a typo would otherwise
/// silently forward nothing, or key the cache on nothing).
fn header_name(name: &str) -> Result<String, HookError> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| HookError::InvalidHeaderName(name.to_string()))
}

impl HeaderPolicy {
    pub(crate) fn new(settings: &HookSettings) -> Result<Self, HookError> {
        let mut credentials = Vec::new();
        for name in &settings.credential_headers {
            let name = header_name(name)?;
            if !credentials.contains(&name) {
                credentials.push(name);
            }
        }
        let mut forwarded = credentials.iter().cloned().collect::<HashSet<_>>();
        for name in &settings.forward_headers {
            forwarded.insert(header_name(name)?);
        }
        Ok(Self {
            credentials,
            forwarded,
        })
    }

    /// The cache key of `request`'s credentials: the values of every credential header.
    /// `None` when it carries none of them (or none are configured): such a request cannot
    /// be told from any other, so no "ok" may serve it or be kept for it.
    pub(crate) fn credentials(&self, request: &RequestInfo) -> Option<String> {
        let mut any = false;
        let values = self.credentials.iter().map(|name| {
            let values: Vec<&str> = request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            any |= !values.is_empty();
            // Values cannot hold '\n' or '\0' (HTTP forbids them), so the key is unambiguous;
            // an absent header and an empty one differ.
            if values.is_empty() {
                "\0absent".to_string()
            } else {
                values.join("\n")
            }
        });
        let key = values.collect::<Vec<_>>().join("\0");
        any.then_some(key)
    }

    /// `request` with only the headers payloads may carry.
    pub(crate) fn forwarded(&self, request: &RequestInfo) -> RequestInfo {
        RequestInfo {
            headers: request
                .headers
                .iter()
                .filter(|(name, _)| self.forwarded.contains(&name.to_ascii_lowercase()))
                .cloned()
                .collect(),
            ..request.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(credentials: &[&str], forward: &[&str]) -> HeaderPolicy {
        HeaderPolicy::new(&HookSettings {
            credential_headers: credentials.iter().map(|s| s.to_string()).collect(),
            forward_headers: forward.iter().map(|s| s.to_string()).collect(),
            ..HookSettings::default()
        })
        .expect("valid names")
    }

    fn request(headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..RequestInfo::default()
        }
    }

    #[test]
    fn no_credential_headers_means_no_credentials() {
        let none = policy(&[], &[]);
        assert_eq!(none.credentials(&request(&[("authorization", "a")])), None);
        let api_key = policy(&["X-Api-Key"], &[]);
        assert_eq!(api_key.credentials(&request(&[("cookie", "a")])), None);
        assert!(api_key
            .credentials(&request(&[("x-api-key", "k")]))
            .is_some());
    }

    #[test]
    fn credentials_tell_headers_and_values_apart() {
        let p = policy(&["authorization", "x-api-key"], &[]);
        let key = |h: &[(&str, &str)]| p.credentials(&request(h));
        assert_ne!(key(&[("authorization", "k")]), key(&[("x-api-key", "k")]));
        assert_ne!(key(&[("authorization", "")]), key(&[("x-api-key", "")]));
        assert_ne!(
            key(&[("authorization", "a"), ("x-api-key", "b")]),
            key(&[("authorization", "a"), ("x-api-key", "c")])
        );
        assert_eq!(
            key(&[("Authorization", "a")]),
            key(&[("authorization", "a")])
        );
    }

    #[test]
    fn only_listed_and_credential_headers_are_forwarded() {
        let p = policy(&["X-Api-Key"], &["Upload-Length"]);
        let forwarded = p.forwarded(&request(&[
            ("authorization", "secret"),
            ("cookie", "secret"),
            ("proxy-authorization", "secret"),
            ("upload-length", "5"),
            ("x-api-key", "k"),
        ]));
        assert_eq!(
            forwarded.headers,
            request(&[("upload-length", "5"), ("x-api-key", "k")]).headers
        );
        let defaults = HeaderPolicy::new(&HookSettings::default()).expect("defaults");
        for secret in ["authorization", "cookie", "proxy-authorization"] {
            assert!(defaults
                .forwarded(&request(&[(secret, "s")]))
                .headers
                .is_empty());
        }
    }

    #[test]
    fn an_invalid_name_is_refused() {
        let settings = HookSettings {
            forward_headers: vec!["bad name".into()],
            ..HookSettings::default()
        };
        assert!(matches!(
            HeaderPolicy::new(&settings),
            Err(HookError::InvalidHeaderName(_))
        ));
    }
}
