//! The two structured-field items (RFC 9651) the draft's headers use: Boolean and Integer.
//! Parameters on an item are allowed by the syntax and carry nothing the draft defines, so
//! they are skipped once they are well-formed enough to find the item's end.

/// An sf-boolean: `?1` or `?0`.
pub(crate) fn boolean(raw: &[u8]) -> Option<bool> {
    match bare_item(raw)? {
        b"?1" => Some(true),
        b"?0" => Some(false),
        _ => None,
    }
}

/// A non-negative sf-integer (at most 15 digits, as RFC 9651 bounds it).
pub(crate) fn non_negative_integer(raw: &[u8]) -> Option<u64> {
    let digits = bare_item(raw)?;
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The item without surrounding spaces and without its parameters.
fn bare_item(raw: &[u8]) -> Option<&[u8]> {
    let trimmed = raw.trim_ascii();
    let item = match trimmed.iter().position(|&b| b == b';') {
        Some(at) => &trimmed[..at],
        None => trimmed,
    };
    (!item.is_empty()).then_some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn booleans() {
        assert_eq!(boolean(b"?1"), Some(true));
        assert_eq!(boolean(b" ?0 "), Some(false));
        assert_eq!(boolean(b"?1;note=x"), Some(true));
        for bad in [&b""[..], b"1", b"true", b"?2", b"?", b"??1", b"?1 ?0"] {
            assert_eq!(boolean(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(non_negative_integer(b"0"), Some(0));
        assert_eq!(
            non_negative_integer(b"999999999999999"),
            Some(999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"1000000000000000",
            b"+1",
            b"0x10",
            b" ",
        ] {
            assert_eq!(non_negative_integer(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panic(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = boolean(&raw);
            let _ = non_negative_integer(&raw);
        }
    }
}
