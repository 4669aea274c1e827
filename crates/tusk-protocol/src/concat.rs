use crate::ProtocolError;

/// What a creation request's `Upload-Concat` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConcatRequest {
    Partial,
    /// The partial uploads, as the URLs or paths the client sent, in order.
    Final(Vec<String>),
}

/// Most partial uploads a final upload can ever name, whatever the server's setting (at
/// most this): an S3 concatenation needs at least one part per partial, and S3 allows 10,000
/// parts. Parsing stops here, so a header cannot make a list longer than this.
pub const MAX_CONCAT_PARTS: usize = 10_000;

/// Parses `Upload-Concat: partial` or `Upload-Concat: final;<url> <url> ...`.
pub fn parse_concat(value: &str) -> Result<ConcatRequest, ProtocolError> {
    let value = value.trim();
    if value == "partial" {
        return Ok(ConcatRequest::Partial);
    }
    let list = value
        .strip_prefix("final;")
        .ok_or(ProtocolError::InvalidConcat(
            "expected 'partial' or 'final;<urls>'",
        ))?;
    let urls: Vec<String> = list
        .split_whitespace()
        .take(MAX_CONCAT_PARTS + 1)
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(ProtocolError::InvalidConcat(
            "a final upload names no partial uploads",
        ));
    }
    if urls.len() > MAX_CONCAT_PARTS {
        return Err(ProtocolError::InvalidConcat("too many partial uploads"));
    }
    Ok(ConcatRequest::Final(urls))
}

/// Renders `Upload-Concat` for HEAD: `partial`, or `final;` and the partials' URLs.
pub fn render_concat(request: &ConcatRequest) -> String {
    match request {
        ConcatRequest::Partial => "partial".to_string(),
        ConcatRequest::Final(urls) => format!("final;{}", urls.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(parse_concat("partial"), Ok(ConcatRequest::Partial));
        assert_eq!(
            parse_concat("final;/files/a http://x/files/b"),
            Ok(ConcatRequest::Final(vec![
                "/files/a".into(),
                "http://x/files/b".into()
            ]))
        );
        assert!(parse_concat("final;").is_err());
        assert!(parse_concat("full").is_err());
    }

    proptest! {
        #[test]
        fn final_round_trips(urls in proptest::collection::vec("[a-z0-9/:._-]{1,30}", 1..20)) {
            let request = ConcatRequest::Final(urls);
            prop_assert_eq!(parse_concat(&render_concat(&request)), Ok(request));
        }
    }
}
