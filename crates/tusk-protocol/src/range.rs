use crate::ProtocolError;

/// A satisfiable byte range of a download, inclusive of both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses a single-range `Range: bytes=...` header against a resource of `total` bytes.
///
/// `Ok(None)` means the range cannot be satisfied (416). Multi-range requests are refused as
/// invalid rather than answered with multipart bodies, which no tus client asks for.
pub fn parse_range(value: &str, total: u64) -> Result<Option<ByteRange>, ProtocolError> {
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or(ProtocolError::InvalidRange)?;
    if spec.contains(',') {
        return Err(ProtocolError::InvalidRange);
    }
    let (start, end) = spec.split_once('-').ok_or(ProtocolError::InvalidRange)?;
    let number = |s: &str| {
        crate::numbers::parse_offset(s.trim().as_bytes()).map_err(|_| ProtocolError::InvalidRange)
    };
    let range = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => return Err(ProtocolError::InvalidRange),
        // bytes=-N: the last N bytes.
        (true, false) => {
            let suffix = number(end)?;
            if suffix == 0 || total == 0 {
                return Ok(None);
            }
            ByteRange {
                first: total.saturating_sub(suffix),
                last: total - 1,
            }
        }
        (false, open_end) => {
            let first = number(start)?;
            let last = if open_end { u64::MAX } else { number(end)? };
            if last < first {
                return Err(ProtocolError::InvalidRange);
            }
            if first >= total {
                return Ok(None);
            }
            ByteRange {
                first,
                last: last.min(total - 1),
            }
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_forms() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Ok(Some(ByteRange { first: 0, last: 9 }))
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Ok(Some(ByteRange {
                first: 90,
                last: 99
            }))
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Ok(Some(ByteRange {
                first: 90,
                last: 99
            }))
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Ok(Some(ByteRange {
                first: 50,
                last: 99
            }))
        );
        assert_eq!(parse_range("bytes=100-", 100), Ok(None));
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("bytes=0-1,3-4", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
    }

    proptest! {
        #[test]
        fn satisfiable_ranges_stay_inside(value in "bytes=[0-9]{0,5}-[0-9]{0,5}", total in 0u64..100_000) {
            if let Ok(Some(r)) = parse_range(&value, total) {
                prop_assert!(r.first <= r.last && r.last < total);
            }
        }
    }
}
