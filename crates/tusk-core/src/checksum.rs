use md5::Digest as _;
use tusk_protocol::ChecksumAlgorithm;

/// Incremental digest for the checksum extension, fed while the body streams.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Md5 => Self::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
            Self::Md5(h) => h.update(bytes),
            Self::Crc32(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest in the byte order the checksum extension transmits (big-endian for crc32).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let digest = |a| {
            let mut h = Hasher::new(a);
            h.update(b"hello ");
            h.update(b"world");
            h.finish()
        };
        assert_eq!(
            digest(ChecksumAlgorithm::Sha1),
            [
                0x2a, 0xae, 0x6c, 0x35, 0xc9, 0x4f, 0xcf, 0xb4, 0x15, 0xdb, 0xe9, 0x5f, 0x40, 0x8b,
                0x9c, 0xe9, 0x1e, 0xe8, 0x46, 0xed
            ]
        );
        assert_eq!(
            digest(ChecksumAlgorithm::Crc32),
            0x0d4a_1185u32.to_be_bytes()
        );
        assert_eq!(
            digest(ChecksumAlgorithm::Md5)[..4],
            [0x5e, 0xb6, 0x3b, 0xbb]
        );
    }
}
