use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::ProtocolError;

/// Parsed `Upload-Metadata`: keys in the order sent, values decoded (None for a bare key).
///
/// The raw header is kept alongside so HEAD can echo exactly what the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub pairs: Vec<(String, Option<Vec<u8>>)>,
}

impl Metadata {
    /// The decoded value of `key` as UTF-8 text, if present and valid UTF-8.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Parses `Upload-Metadata: key base64, key2, key3 base64`.
///
/// Keys must be non-empty, unique, and free of spaces and commas; values must be valid
/// base64. `max_len` bounds the raw header so metadata cannot bloat every record.
pub fn parse_metadata(raw: &str, max_len: usize) -> Result<Metadata, ProtocolError> {
    if raw.len() > max_len {
        return Err(ProtocolError::MetadataTooLarge(max_len));
    }
    let mut pairs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if raw.trim().is_empty() {
        return Ok(Metadata { pairs });
    }
    for element in raw.split(',') {
        let element = element.trim();
        let mut parts = element.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() {
            return Err(ProtocolError::InvalidMetadata(
                "a pair has more than one space",
            ));
        }
        if key.is_empty() {
            return Err(ProtocolError::InvalidMetadata("empty key"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(ProtocolError::InvalidMetadata(
                "key has a forbidden character",
            ));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(ProtocolError::InvalidMetadata("duplicate key"));
        }
        let decoded = match value {
            None | Some("") => None,
            Some(v) => Some(
                STANDARD
                    .decode(v)
                    .map_err(|_| ProtocolError::InvalidMetadata("value is not base64"))?,
            ),
        };
        pairs.push((key.to_string(), decoded));
    }
    Ok(Metadata { pairs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let m = parse_metadata(
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
            4096,
        )
        .expect("valid");
        assert_eq!(m.text("filename"), Some("world_domination_plan.pdf"));
        assert_eq!(m.pairs[1], ("is_confidential".to_string(), None));
    }

    #[test]
    fn rejects_bad_metadata() {
        for bad in ["key !!!", ",", "a aGk=,a aGk=", "k a b", "k\u{1}ey aGk="] {
            assert!(parse_metadata(bad, 4096).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_metadata(&"k".repeat(5000), 4096),
            Err(ProtocolError::MetadataTooLarge(4096))
        );
    }

    proptest! {
        #[test]
        fn round_trips_encoded_pairs(
            pairs in proptest::collection::btree_map("[a-zA-Z0-9_.-]{1,16}", proptest::collection::vec(any::<u8>(), 0..64), 0..8)
        ) {
            let raw = pairs
                .iter()
                .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k} {}", STANDARD.encode(v)) })
                .collect::<Vec<_>>()
                .join(",");
            let parsed = parse_metadata(&raw, usize::MAX).expect("generated metadata is valid");
            prop_assert_eq!(parsed.pairs.len(), pairs.len());
            for ((k, v), (pk, pv)) in pairs.iter().zip(parsed.pairs.iter()) {
                prop_assert_eq!(k, pk);
                prop_assert_eq!(if v.is_empty() { None } else { Some(v.clone()) }, pv.clone());
            }
        }

        #[test]
        fn never_panics(raw in ".{0,300}") {
            let _ = parse_metadata(&raw, 4096);
        }
    }
}
