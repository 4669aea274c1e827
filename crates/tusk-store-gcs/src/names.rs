//! Where an upload's bytes live in the bucket: pure functions, no I/O.
//!
//! A finished upload `<id>` is the object `<prefix><id>`. Until then its bytes are *chunk*
//! objects `<prefix>.chunks/<id>/<token>-<stretch>-<n>`: the fencing token of the lease they
//! were written under, the write's number within that lease, and the chunk's number within
//! the write. No two writers share a token and a writer never repeats a write number, so a
//! chunk name is written once, ever: a zombie's chunk can never take a committed chunk's
//! place, whatever the server does with preconditions. Finishing composes the committed
//! chunks into the final object through intermediates `<prefix>.chunks/<id>/final-<i>`
//! when there are more than GCS composes at once. Upload IDs never contain `.` or `/`, so the
//! chunks' folder is no upload's object and listing it never walks finished objects.

use tusk_core::{Segment, StorageError, WriteTarget};
use tusk_protocol::is_valid_upload_id;

const CHUNKS: &str = ".chunks/";
const FINAL: &str = "final-";

#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

/// A chunk's place among the writes of its lease: the segment's target is `(token,
/// stretch)` and `n` tells the write's chunks apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkId {
    pub target: WriteTarget,
    pub n: u32,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The finished upload's object.
    pub fn object(&self, upload: &str) -> String {
        format!("{}{upload}", self.prefix)
    }

    /// The folder of every chunk of `upload`.
    pub fn chunks(&self, upload: &str) -> String {
        format!("{}{CHUNKS}{upload}/", self.prefix)
    }

    /// The folder of every upload's chunks (for the leftovers sweep).
    pub fn all_chunks(&self) -> String {
        format!("{}{CHUNKS}", self.prefix)
    }

    pub fn chunk(&self, upload: &str, chunk: ChunkId) -> String {
        format!(
            "{}{}-{}-{}",
            self.chunks(upload),
            chunk.target.token,
            chunk.target.seq,
            chunk.n
        )
    }

    /// The `i`-th intermediate object on the way to the finished upload's object.
    pub fn intermediate(&self, upload: &str, i: usize) -> String {
        format!("{}{FINAL}{i}", self.chunks(upload))
    }

    /// The upload a chunk (or intermediate) object belongs to.
    pub fn upload_of_chunk<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(&self.all_chunks())?;
        let (upload, _) = rest.split_once('/')?;
        is_valid_upload_id(upload).then_some(upload)
    }

    /// The fencing token in a chunk's name; `None` for intermediates and foreign names.
    pub fn token_of_chunk(&self, name: &str) -> Option<u64> {
        let rest = name.strip_prefix(&self.all_chunks())?;
        let (_, chunk) = rest.split_once('/')?;
        chunk.split('-').next()?.parse().ok()
    }
}

/// What the record keeps of a chunk (the segment's receipt): its number within the write,
/// the CRC32C GCS computed of it, and its generation, so finishing composes exactly the
/// committed version and can check the result's CRC32C without reading a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub n: u32,
    pub crc32c: u32,
    pub generation: i64,
}

impl Receipt {
    pub fn encode(&self) -> String {
        format!("{} {:08x} {}", self.n, self.crc32c, self.generation)
    }

    pub fn of(segment: &Segment) -> Result<Self, StorageError> {
        let bad = || {
            StorageError::Backend(format!(
                "segment {:?} has no valid GCS chunk receipt ({:?})",
                segment.target, segment.receipt
            ))
        };
        let text = segment.receipt.as_deref().ok_or_else(bad)?;
        let mut fields = text.split(' ');
        let mut next = || fields.next().ok_or_else(bad);
        let n = next()?.parse().map_err(|_| bad())?;
        let crc32c = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
        let generation = next()?.parse().map_err(|_| bad())?;
        Ok(Self {
            n,
            crc32c,
            generation,
        })
    }

    pub fn chunk(&self, segment: &Segment) -> ChunkId {
        ChunkId {
            target: segment.target,
            n: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_carry_their_upload_and_token() {
        let names = Names::new("up/");
        let id = "AbCdEfGhIjKlMnOpQrStUv_-";
        let chunk = ChunkId {
            target: WriteTarget { token: 42, seq: 3 },
            n: 7,
        };
        let name = names.chunk(id, chunk);
        assert_eq!(name, format!("up/.chunks/{id}/42-3-7"));
        assert_eq!(names.upload_of_chunk(&name), Some(id));
        assert_eq!(names.token_of_chunk(&name), Some(42));
        let intermediate = names.intermediate(id, 2);
        assert_eq!(names.upload_of_chunk(&intermediate), Some(id));
        assert_eq!(names.token_of_chunk(&intermediate), None);
        assert_eq!(names.upload_of_chunk("up/.chunks/../x/1-1-1"), None);
        assert!(!names.object(id).starts_with(&names.all_chunks()));
    }

    #[test]
    fn receipts_round_trip_and_refuse_garbage() {
        let receipt = Receipt {
            n: 3,
            crc32c: 0xdead_beef,
            generation: 1_700_000_000_123_456,
        };
        let mut segment = Segment::new(WriteTarget { token: 1, seq: 0 }, 10);
        segment.receipt = Some(receipt.encode());
        assert_eq!(Receipt::of(&segment).expect("decodes"), receipt);
        for bad in [None, Some("".to_string()), Some("1 zz 3".to_string())] {
            segment.receipt = bad;
            assert!(Receipt::of(&segment).is_err());
        }
    }
}
