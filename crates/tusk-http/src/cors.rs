//! CORS for browser clients. The allowed origins are `*`, exact origins, or subdomain
//! patterns (`https://*.example.com`); a request's `Origin` that one of them matches is
//! echoed back, with `Vary: Origin` so that caches keep one answer per origin. Credentials
//! (cookies, `withCredentials`) are allowed only for listed origins: a browser refuses them
//! with `*`, so that combination is refused when the policy is built.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{header, HeaderValue, Method};
use tusk_protocol::headers as h;

/// The CORS settings as configured, before they are checked.
#[derive(Debug, Clone)]
pub struct CorsSettings {
    /// `*`, exact origins (`https://app.example.com`, `http://localhost:3000`), or patterns
    /// whose host starts with `*.` (`https://*.example.com`: any subdomain, not the domain).
    pub allow_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` to the origins allowed.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer.
    pub max_age: Duration,
    /// Request headers allowed beyond the tus and IETF-draft ones (an app's own headers).
    pub extra_allow_headers: Vec<String>,
    /// Response headers exposed beyond the tus and IETF-draft ones.
    pub extra_expose_headers: Vec<String>,
}

/// Why CORS settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum CorsSettingError {
    #[error("no allowed origin is configured; use \"*\" or list origins")]
    NoOrigin,
    #[error("\"*\" allows every origin and cannot be listed with others ({0:?})")]
    WildcardAmongOthers(String),
    #[error(
        "credentials cannot be allowed for \"*\" (browsers refuse them); list the origins \
         that may send cookies instead"
    )]
    CredentialsWithWildcard,
    #[error(
        "{0:?} is not an origin: write scheme://host or scheme://host:port (with `*.` at the \
         start of the host for subdomains), no path, no trailing slash"
    )]
    NotAnOrigin(String),
    #[error("{0:?} is not a header name")]
    NotAHeaderName(String),
}

/// The checked CORS policy the middleware applies.
#[derive(Debug)]
pub struct CorsPolicy {
    origins: AllowedOrigins,
    allow_credentials: bool,
    max_age: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
}

#[derive(Debug)]
enum AllowedOrigins {
    Any,
    Listed(Vec<OriginPattern>),
}

#[derive(Debug, PartialEq)]
enum OriginPattern {
    /// `scheme://host[:port]`, lower case.
    Exact(String),
    /// `scheme://*.domain[:port]`: `prefix` is `scheme://`, `suffix` is `.domain[:port]`.
    Subdomains { prefix: String, suffix: String },
}

impl CorsPolicy {
    pub fn new(settings: &CorsSettings) -> Result<Self, CorsSettingError> {
        let entries: Vec<&str> = settings
            .allow_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        let origins = match entries.as_slice() {
            [] => return Err(CorsSettingError::NoOrigin),
            ["*"] => AllowedOrigins::Any,
            _ => AllowedOrigins::Listed(
                entries
                    .iter()
                    .map(|entry| OriginPattern::parse(entry, &entries))
                    .collect::<Result<_, _>>()?,
            ),
        };
        if settings.allow_credentials && matches!(origins, AllowedOrigins::Any) {
            return Err(CorsSettingError::CredentialsWithWildcard);
        }
        Ok(Self {
            origins,
            allow_credentials: settings.allow_credentials,
            max_age: HeaderValue::from(settings.max_age.as_secs()),
            allow_headers: header_list(h::CORS_ALLOW_HEADERS, &settings.extra_allow_headers)?,
            expose_headers: header_list(h::CORS_EXPOSE_HEADERS, &settings.extra_expose_headers)?,
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::Listed(patterns) => {
                let origin = origin?;
                let text = origin.to_str().ok()?.to_ascii_lowercase();
                patterns
                    .iter()
                    .any(|p| p.matches(&text))
                    .then(|| origin.clone())
            }
        }
    }
}

fn header_list(base: &str, extra: &[String]) -> Result<HeaderValue, CorsSettingError> {
    let mut list = base.to_owned();
    for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(CorsSettingError::NotAHeaderName(name.to_owned()));
        }
        list.push_str(", ");
        list.push_str(name);
    }
    HeaderValue::from_str(&list).map_err(|_| CorsSettingError::NotAHeaderName(list))
}

impl OriginPattern {
    fn parse(entry: &str, all: &[&str]) -> Result<Self, CorsSettingError> {
        if entry == "*" {
            return Err(CorsSettingError::WildcardAmongOthers(all.join(",")));
        }
        let not_an_origin = || CorsSettingError::NotAnOrigin(entry.to_owned());
        let lower = entry.to_ascii_lowercase();
        let (scheme, authority) = lower.split_once("://").ok_or_else(not_an_origin)?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let (subdomains, domain) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, host),
        };
        let domain_ok = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !scheme_ok || !port_ok || !domain_ok {
            return Err(not_an_origin());
        }
        Ok(if subdomains {
            OriginPattern::Subdomains {
                prefix: format!("{scheme}://"),
                suffix: authority[1..].to_owned(),
            }
        } else {
            OriginPattern::Exact(lower)
        })
    }

    /// `origin` is lower case.
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(exact) => origin == exact,
            OriginPattern::Subdomains { prefix, suffix } => origin
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(|sub| {
                    !sub.is_empty()
                        && sub.split('.').all(|label| {
                            !label.is_empty()
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                }),
        }
    }
}

pub(crate) async fn apply(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let preflight = request.method() == Method::OPTIONS && origin.is_some();
    let mut response = next.run(request).await;
    // A refused preflight (431) grants nothing.
    let answered = response.status().is_success();
    let headers = response.headers_mut();
    if matches!(policy.origins, AllowedOrigins::Listed(_)) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(allowed) = policy.allowed(origin.as_ref()) else {
        return response;
    };
    if preflight && answered {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, HEAD, PATCH, OPTIONS, GET, DELETE, PUT"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            policy.allow_headers.clone(),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if policy.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        policy.expose_headers.clone(),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::Router;
    use http::{HeaderMap, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn settings(origins: &[&str]) -> CorsSettings {
        CorsSettings {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: false,
            max_age: Duration::from_secs(86400),
            extra_allow_headers: Vec::new(),
            extra_expose_headers: Vec::new(),
        }
    }

    async fn answer(
        policy: CorsPolicy,
        method: Method,
        origin: Option<&str>,
        status: StatusCode,
    ) -> HeaderMap {
        let router = Router::new().fallback(move || async move { status }).layer(
            axum::middleware::from_fn_with_state(Arc::new(policy), apply),
        );
        let mut request = Request::builder().method(method).uri("/files/");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        let request = request.body(Body::empty()).expect("valid request");
        router
            .oneshot(request)
            .await
            .expect("infallible")
            .headers()
            .clone()
    }

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(&settings(origins)).expect("valid settings")
    }

    #[tokio::test]
    async fn an_answered_preflight_allows_methods_and_headers() {
        let headers = answer(
            policy(&["https://app.example"]),
            Method::OPTIONS,
            Some("https://app.example"),
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_METHODS],
            "POST, HEAD, PATCH, OPTIONS, GET, DELETE, PUT"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
            h::CORS_ALLOW_HEADERS
        );
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            h::CORS_EXPOSE_HEADERS
        );
        assert_eq!(headers[header::VARY], "Origin");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[tokio::test]
    async fn other_answers_only_allow_the_origin() {
        for (method, origin, status) in [
            (Method::OPTIONS, None, StatusCode::NO_CONTENT),
            (
                Method::OPTIONS,
                Some("https://x.example"),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (
                Method::PATCH,
                Some("https://x.example"),
                StatusCode::NO_CONTENT,
            ),
        ] {
            let headers = answer(policy(&["*"]), method, origin, status).await;
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            assert_eq!(
                headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
                h::CORS_EXPOSE_HEADERS
            );
            assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
            assert!(!headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));
            assert!(!headers.contains_key(header::VARY), "every origin: no Vary");
        }
    }

    #[tokio::test]
    async fn a_listed_origin_is_echoed_and_others_get_nothing() {
        let origins = [
            "https://a.example",
            "http://localhost:3000",
            "https://*.b.example",
        ];
        for (origin, allowed) in [
            ("https://a.example", true),
            ("HTTPS://A.EXAMPLE", true),
            ("http://localhost:3000", true),
            ("https://x.b.example", true),
            ("https://x.y.b.example", true),
            ("https://b.example", false),
            ("https://evilb.example", false),
            ("https://x.b.example.evil", false),
            ("http://x.b.example", false),
            ("https://a.example:8443", false),
            ("http://localhost:30000", false),
            ("https://a.example.evil", false),
            ("null", false),
            ("https://a.example, https://evil.example", false),
        ] {
            let headers = answer(
                policy(&origins),
                Method::OPTIONS,
                Some(origin),
                StatusCode::NO_CONTENT,
            )
            .await;
            assert_eq!(headers[header::VARY], "Origin", "{origin}");
            if allowed {
                assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
                assert!(headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
            } else {
                assert!(
                    !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                    "{origin} must not be allowed"
                );
                assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
                assert!(!headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS));
            }
        }
        let headers = answer(policy(&origins), Method::POST, None, StatusCode::CREATED).await;
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(headers[header::VARY], "Origin");
    }

    #[tokio::test]
    async fn credentials_max_age_and_extra_headers() {
        let policy = CorsPolicy::new(&CorsSettings {
            allow_credentials: true,
            max_age: Duration::from_secs(600),
            extra_allow_headers: vec!["X-App-Token".into()],
            extra_expose_headers: vec!["X-Trace".into()],
            ..settings(&["https://app.example"])
        })
        .expect("valid");
        let headers = answer(
            policy,
            Method::OPTIONS,
            Some("https://app.example"),
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .expect("ascii")
            .ends_with(", X-App-Token"));
        assert!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .expect("ascii")
            .ends_with(", X-Trace"));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let refused = |origins: &[&str], credentials: bool| {
            CorsPolicy::new(&CorsSettings {
                allow_credentials: credentials,
                ..settings(origins)
            })
            .expect_err("refused")
            .to_string()
        };
        assert!(refused(&["*"], true).contains("credentials"));
        assert!(refused(&[], false).contains("no allowed origin"));
        assert!(refused(&["https://a.example", "*"], false).contains("cannot be listed"));
        for bad in [
            "https://app.example/",
            "app.example",
            "https://app.example/path",
            "https://",
            "https://a..example",
            "https://app.example:",
            "https://app.example:80x",
            "https://*",
            "https://a.*.example",
            "null",
            "1http://a.example",
        ] {
            assert!(
                refused(&[bad], false).contains("is not an origin"),
                "{bad} must be refused"
            );
        }
        let bad_header = CorsPolicy::new(&CorsSettings {
            extra_allow_headers: vec!["bad header".into()],
            ..settings(&["*"])
        });
        assert!(bad_header.is_err());
    }
}
