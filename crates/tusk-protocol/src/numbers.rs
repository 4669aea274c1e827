use crate::ProtocolError;

/// Longest decimal rendering of a u64; anything longer cannot be a valid value.
const MAX_DIGITS: usize = 20;

fn parse_decimal(value: &[u8], header: &'static str) -> Result<u64, ProtocolError> {
    if value.is_empty() || value.len() > MAX_DIGITS || !value.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::InvalidNumber(header));
    }
    value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
            .ok_or(ProtocolError::InvalidNumber(header))
    })
}

/// Parses `Upload-Offset`: a non-negative decimal that fits in a u64.
pub fn parse_offset(value: &[u8]) -> Result<u64, ProtocolError> {
    parse_decimal(value, "Upload-Offset")
}

/// Parses `Upload-Length`: a non-negative decimal that fits in a u64.
pub fn parse_upload_length(value: &[u8]) -> Result<u64, ProtocolError> {
    parse_decimal(value, "Upload-Length")
}

/// Parses `Content-Length`: a non-negative decimal that fits in a u64.
pub fn parse_content_length(value: &[u8]) -> Result<u64, ProtocolError> {
    parse_decimal(value, "Content-Length")
}

/// Parses `Upload-Defer-Length`, whose only valid value is `1`.
pub fn parse_defer_length(value: &[u8]) -> Result<(), ProtocolError> {
    if value == b"1" {
        Ok(())
    } else {
        Err(ProtocolError::InvalidDeferLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_signs_spaces_and_overflow() {
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "0x10",
            "1e3",
            "18446744073709551616",
        ] {
            assert!(parse_offset(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_offset(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_offset(b"007"), Ok(7));
    }

    proptest! {
        #[test]
        fn every_u64_round_trips(n: u64) {
            prop_assert_eq!(parse_upload_length(n.to_string().as_bytes()), Ok(n));
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = parse_offset(&bytes);
        }
    }
}
