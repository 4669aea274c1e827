//! Pure helpers: URL handling, sizes, percentiles.

use anyhow::{anyhow, bail, Context, Result};

/// An absolute `http://` URL split into what a client needs to send a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (used in messages and for resolving relative references).
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Value for the Host header.
    pub authority: String,
    /// Origin-form request target (path and query).
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => bail!("{url}: https is not supported by tusk bench; use http://"),
            _ => bail!("{url}: not an absolute http:// URL"),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("{url}: URL has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            bail!("{url}: URL has no host");
        }
        let path_and_query = match uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => pq.as_str().to_string(),
            _ => "/".to_string(),
        };
        Ok(Target {
            url: url.to_string(),
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path_and_query,
        })
    }
}

fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

/// RFC 3986 section 5.2.4.
pub fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate().skip(usize::from(absolute)) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Resolves a (possibly relative) reference such as a `Location` header against an absolute
/// base URL (RFC 3986 section 5.2.2). The fragment is dropped.
pub fn resolve(base: &str, reference: &str) -> Result<String> {
    let reference = reference.trim();
    let reference = reference.split('#').next().unwrap_or("");
    if has_scheme(reference) {
        return Ok(reference.to_string());
    }
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| anyhow!("base URL {base:?} is not absolute"))?;
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, base_path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
    };
    let (base_path, base_query) = match base_path_query.find('?') {
        Some(i) => (&base_path_query[..i], &base_path_query[i..]),
        None => (base_path_query, ""),
    };
    if let Some(net) = reference.strip_prefix("//") {
        return Ok(format!("{scheme}://{net}"));
    }
    let (ref_path, ref_query) = match reference.find('?') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let path = if ref_path.is_empty() {
        let query = if ref_query.is_empty() {
            base_query
        } else {
            ref_query
        };
        return Ok(format!("{scheme}://{authority}{base_path}{query}"));
    } else if ref_path.starts_with('/') {
        remove_dot_segments(ref_path)
    } else {
        let merged = if base_path.is_empty() {
            format!("/{ref_path}")
        } else {
            let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{ref_path}")
        };
        remove_dot_segments(&merged)
    };
    Ok(format!("{scheme}://{authority}{path}{ref_query}"))
}

/// Parses `4096`, `4KiB`, `64MiB`, `1GiB` (also `K`/`M`/`G`, binary) and `KB`/`MB`/`GB`
/// (decimal). Case-insensitive.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("invalid size {s:?} (e.g. 4096, 4KiB, 64MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("invalid size unit in {s:?}")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// MiB/s, rounded to two decimals.
pub fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    round(bytes as f64 / MIB / seconds, 2)
}

pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A JSON object that keeps insertion order (serde_json's `Map` sorts its keys unless the
/// workspace-wide `preserve_order` feature is on), so that `scenario` comes first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obj(Vec<(String, serde_json::Value)>);

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    /// Sets `key` (replacing an earlier value in place).
    pub fn insert(&mut self, key: impl Into<String>, value: serde_json::Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl std::fmt::Display for Obj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", serde_json::Value::String(k.clone()), v)?;
        }
        f.write_str("}")
    }
}
