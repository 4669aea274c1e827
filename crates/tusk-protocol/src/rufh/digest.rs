//! Digest fields (RFC 9530) on the draft's requests: `Content-Digest` (this request's
//! content), `Repr-Digest` (the whole upload), `Want-Repr-Digest` (which digest the client
//! wants back). Tusk computes sha-256 and sha-512, the two algorithms RFC 9530 calls
//! standard; members of other algorithms are ignored, as the RFC allows.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::{ChecksumAlgorithm, ChecksumHeader, ProtocolError};

/// The RFC 9530 name of an algorithm Tusk computes.
fn rfc_name(algorithm: ChecksumAlgorithm) -> Option<&'static str> {
    match algorithm {
        ChecksumAlgorithm::Sha256 => Some("sha-256"),
        ChecksumAlgorithm::Sha512 => Some("sha-512"),
        _ => None,
    }
}

fn algorithm_named(name: &str) -> Option<ChecksumAlgorithm> {
    [ChecksumAlgorithm::Sha512, ChecksumAlgorithm::Sha256]
        .into_iter()
        .find(|a| rfc_name(*a) == Some(name))
}

/// The members of a structured dictionary, `key=value` (parameters dropped); `None` when it
/// is not one. Values here are byte sequences or integers, which hold no comma.
fn members(raw: &str) -> Option<Vec<(&str, &str)>> {
    raw.split(',')
        .map(|member| {
            let member = member.trim();
            let member = member.split_once(';').map_or(member, |(m, _)| m);
            let (key, value) = member.split_once('=')?;
            let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase() || c == '*')
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c));
            key_ok.then_some((key, value))
        })
        .collect()
}

/// Reads `Content-Digest` or `Repr-Digest` (`header` names it in errors): the first member
/// of an algorithm Tusk computes, or `None` when no member is.
pub fn parse_digest(
    raw: &[u8],
    header: &'static str,
) -> Result<Option<ChecksumHeader>, ProtocolError> {
    let invalid = ProtocolError::InvalidField(header);
    let text = std::str::from_utf8(raw).map_err(|_| invalid.clone())?;
    for (key, value) in members(text).ok_or(invalid.clone())? {
        let encoded = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(invalid.clone())?;
        let Some(algorithm) = algorithm_named(key) else {
            continue;
        };
        let digest = STANDARD.decode(encoded).map_err(|_| invalid.clone())?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid);
        }
        return Ok(Some(ChecksumHeader { algorithm, digest }));
    }
    Ok(None)
}

/// Reads `Want-Repr-Digest`: the algorithm Tusk computes that the client prefers most
/// (preferences 1 to 10; 0 means "not this one"), or `None`.
pub fn parse_want_digest(raw: &[u8]) -> Result<Option<ChecksumAlgorithm>, ProtocolError> {
    let invalid = ProtocolError::InvalidField("Want-Repr-Digest");
    let text = std::str::from_utf8(raw).map_err(|_| invalid.clone())?;
    let mut best: Option<(u8, ChecksumAlgorithm)> = None;
    for (key, value) in members(text).ok_or(invalid.clone())? {
        let preference: u8 = value.trim().parse().map_err(|_| invalid.clone())?;
        if preference > 10 {
            return Err(invalid);
        }
        if let Some(algorithm) = algorithm_named(key).filter(|_| preference > 0) {
            if best.is_none_or(|(p, _)| preference > p) {
                best = Some((preference, algorithm));
            }
        }
    }
    Ok(best.map(|(_, algorithm)| algorithm))
}

/// A `Repr-Digest` value: `sha-256=:<base64>:`.
pub fn render_digest(algorithm: ChecksumAlgorithm, digest: &[u8]) -> Option<String> {
    rfc_name(algorithm).map(|name| format!("{name}=:{}:", STANDARD.encode(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HELLO_SHA256: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    #[test]
    fn digests() {
        let raw = format!("md5=:AAAAAAAAAAAAAAAAAAAAAA==:, sha-256=:{HELLO_SHA256}:");
        let digest = parse_digest(raw.as_bytes(), "Content-Digest")
            .expect("valid")
            .expect("sha-256 member");
        assert_eq!(digest.algorithm, ChecksumAlgorithm::Sha256);
        assert_eq!(
            render_digest(digest.algorithm, &digest.digest).as_deref(),
            Some(format!("sha-256=:{HELLO_SHA256}:").as_str())
        );
        assert_eq!(parse_digest(b"unixsum=:AAAA:", "Repr-Digest"), Ok(None));
        for bad in [
            &b"sha-256=abc"[..],
            b"sha-256=:AAAA:",
            b"Sha-256=:AAAA:",
            b"garbage",
        ] {
            assert_eq!(
                parse_digest(bad, "Repr-Digest"),
                Err(ProtocolError::InvalidField("Repr-Digest")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wanted_digests() {
        assert_eq!(
            parse_want_digest(b"sha-256=3, sha-512=5"),
            Ok(Some(ChecksumAlgorithm::Sha512))
        );
        assert_eq!(
            parse_want_digest(b"sha-512=0, sha-256=1"),
            Ok(Some(ChecksumAlgorithm::Sha256))
        );
        assert_eq!(parse_want_digest(b"md5=9"), Ok(None));
        assert!(parse_want_digest(b"sha-256=11").is_err());
        assert!(parse_want_digest(b"sha-256").is_err());
    }

    proptest! {
        #[test]
        fn never_panic(raw in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_digest(&raw, "Content-Digest");
            let _ = parse_want_digest(&raw);
        }
    }
}
