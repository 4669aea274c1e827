/// Shortest upload ID Tusk accepts: 22 base64url characters carry 132 bits.
pub const MIN_ID_LEN: usize = 22;
/// Longest upload ID Tusk accepts; pre-create hooks may choose their own IDs up to this.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` may name an upload: URL-safe base64 characters only, bounded length.
///
/// An ID that passes is safe to use as a single path component or object-key segment:
/// it contains no `/`, `.`, `%` or NUL, so `..` and encoded separators never reach storage.
pub fn is_valid_upload_id(id: &str) -> bool {
    (MIN_ID_LEN..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_ids_are_rejected() {
        let long = "a".repeat(10_000);
        for bad in [
            "..",
            "../../etc/passwd",
            "a%2Fb",
            "abc\0def",
            "",
            long.as_str(),
        ] {
            assert!(!is_valid_upload_id(bad), "{bad:?} accepted");
        }
        assert!(is_valid_upload_id("AbCdEfGhIjKlMnOpQrStUv_-"));
    }

    proptest! {
        #[test]
        fn accepted_ids_are_single_safe_path_components(id in ".{0,200}") {
            if is_valid_upload_id(&id) {
                prop_assert!(!id.contains('/') && !id.contains('.') && !id.contains('\0'));
            }
        }
    }
}
