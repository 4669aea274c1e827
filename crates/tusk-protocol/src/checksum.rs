use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::ProtocolError;

/// Checksum algorithms of the checksum extension that Tusk computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
    Md5,
    Crc32,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Every supported algorithm, in the order `Tus-Checksum-Algorithm` lists them.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Sha1,
        Self::Sha256,
        Self::Md5,
        Self::Crc32,
        Self::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Md5 => "md5",
            Self::Crc32 => "crc32",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes; a header whose digest has another length is malformed.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Md5 => 16,
            Self::Crc32 => 4,
            Self::Sha512 => 64,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The value of `Tus-Checksum-Algorithm`.
    pub fn advertised() -> String {
        Self::ALL.map(Self::name).join(",")
    }
}

/// A parsed `Upload-Checksum` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumHeader {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

impl ChecksumHeader {
    /// `<algorithm> <base64 digest>`, as [`parse_checksum`] reads it.
    pub fn render(&self) -> String {
        format!(
            "{} {}",
            self.algorithm.name(),
            STANDARD.encode(&self.digest)
        )
    }
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(value: &str) -> Result<ChecksumHeader, ProtocolError> {
    let (name, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or(ProtocolError::InvalidChecksum)?;
    let algorithm =
        ChecksumAlgorithm::from_name(name).ok_or(ProtocolError::UnsupportedChecksumAlgorithm)?;
    let digest = STANDARD
        .decode(encoded.trim())
        .map_err(|_| ProtocolError::InvalidChecksum)?;
    if digest.len() != algorithm.digest_len() {
        return Err(ProtocolError::InvalidChecksum);
    }
    Ok(ChecksumHeader { algorithm, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_rejects() {
        let h = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").expect("valid");
        assert_eq!(h.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(
            parse_checksum("whirlpool AAAA"),
            Err(ProtocolError::UnsupportedChecksumAlgorithm)
        );
        assert_eq!(parse_checksum("sha1"), Err(ProtocolError::InvalidChecksum));
        assert_eq!(
            parse_checksum("sha1 !!!"),
            Err(ProtocolError::InvalidChecksum)
        );
        assert_eq!(
            parse_checksum("crc32 AAAAAAAA"),
            Err(ProtocolError::InvalidChecksum)
        );
        assert_eq!(
            ChecksumAlgorithm::advertised(),
            "sha1,sha256,md5,crc32,sha512"
        );
    }

    proptest! {
        #[test]
        fn never_panics(raw in ".{0,200}") {
            let _ = parse_checksum(&raw);
        }
    }
}
