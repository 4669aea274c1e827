//! Joining objects server-side. GCS composes at most 32 sources a call, so more go through a
//! tree of intermediates. Every object made is create-only, and every result is checked
//! against the CRC32C its sources combine to, so a composition never passes off other bytes
//! as the upload's.

use crc_fast::CrcAlgorithm;
use tusk_core::StorageError;

use crate::client::{backend_error, piece_of, status, Bucket, Piece};

/// GCS's limit of sources per compose call.
pub(crate) const MOST_SOURCES: usize = 32;

/// The CRC32C of `pieces` one after another, from theirs alone.
pub(crate) fn combined_crc32c(pieces: &[Piece]) -> u32 {
    let mut crc = 0u64;
    for piece in pieces {
        crc = crc_fast::checksum_combine(
            CrcAlgorithm::Crc32Iscsi,
            crc,
            u64::from(piece.crc32c),
            piece.len,
        );
    }
    // A CRC-32 combined from CRC-32s fits in 32 bits.
    crc as u32
}

/// Composes `sources`, in order, into `dest`, through intermediates named by `intermediate`
/// (each name used once) when there are more than [`MOST_SOURCES`]. Returns the result and
/// the intermediates it made, for the caller to remove once the result is in use.
pub(crate) async fn compose(
    bucket: &Bucket,
    dest: &str,
    mut sources: Vec<Piece>,
    mut intermediate: impl FnMut() -> String,
) -> Result<(Piece, Vec<String>), StorageError> {
    let mut made = Vec::new();
    while sources.len() > MOST_SOURCES {
        let mut next = Vec::with_capacity(sources.len().div_ceil(MOST_SOURCES));
        for group in sources.chunks(MOST_SOURCES) {
            if let [single] = group {
                next.push(single.clone());
                continue;
            }
            let name = intermediate();
            next.push(compose_once(bucket, &name, group).await?);
            made.push(name);
        }
        sources = next;
    }
    let result = compose_once(bucket, dest, &sources).await?;
    Ok((result, made))
}

/// One compose call into a new object. An object already there under `dest` is taken only
/// if it holds exactly what the sources combine to (an earlier attempt made it).
async fn compose_once(
    bucket: &Bucket,
    dest: &str,
    sources: &[Piece],
) -> Result<Piece, StorageError> {
    let expected = (
        combined_crc32c(sources),
        sources.iter().map(|p| p.len).sum(),
    );
    match bucket.compose_new(dest, sources).await {
        Ok(object) => piece_of(&object, expected),
        Err(e) if status(&e) == Some(412) => match bucket.get(dest).await? {
            Some(object) => piece_of(&object, expected),
            None => Err(backend_error("objects.compose", dest, &e)),
        },
        Err(e) => Err(backend_error("objects.compose", dest, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(bytes: &[u8]) -> Piece {
        Piece {
            name: String::new(),
            generation: 1,
            crc32c: crc_fast::crc32_iscsi(bytes),
            len: bytes.len() as u64,
        }
    }

    #[test]
    fn combined_crc32c_is_the_crc32c_of_the_joined_bytes() {
        let parts: [&[u8]; 4] = [b"hello ", b"", b"resumable ", b"world"];
        let pieces: Vec<Piece> = parts.iter().map(|p| piece(p)).collect();
        assert_eq!(
            combined_crc32c(&pieces),
            crc_fast::crc32_iscsi(b"hello resumable world")
        );
        assert_eq!(combined_crc32c(&[]), crc_fast::crc32_iscsi(b""));
    }
}
