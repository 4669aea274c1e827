//! Where an upload's bytes live in the bucket and how they are cut into parts: pure
//! functions, no I/O.
//!
//! An upload `<id>` is, while unfinished, one S3 multipart upload on the key `<prefix><id>`
//! whose parts cut the upload at multiples of the part size, followed by *tail* objects
//! `<prefix>.tails/<id>/<token>` holding the bytes after the last full part (one per PATCH
//! that ended inside a part). Finishing completes the multipart upload, so the finished
//! upload is the object `<prefix><id>`. Upload IDs never contain a `.` or a `/`, so the
//! tails' folder can be no upload's object, and listing it (for the leftovers sweep) never
//! walks the finished objects. A PATCH whose client stalls mid-part leaves a tail at each
//! progress commit: its n-th write (n > 0) names its tail `<token>-<n>`.

use serde::{Deserialize, Serialize};
use tusk_core::{Segment, StorageError, UploadRecord, WriteTarget};
use tusk_protocol::is_valid_upload_id;

/// S3's smallest part (all but the last), and its largest.
pub const S3_MIN_PART: u64 = 5 << 20;
pub const S3_MAX_PART: u64 = 5 << 30;

/// Share of the part numbers an upload's size is planned for; the rest absorbs the numbers
/// that failed or interrupted writes reserve and never commit.
const PLANNED_PARTS_PERCENT: u64 = 90;

/// What the record keeps for S3 between PATCHes (the record's `session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Fixed by the first write, so that every part but the last has this size.
    pub part_size: u64,
    /// The multipart upload, once the first part was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
}

impl Session {
    pub fn of(record: &UploadRecord) -> Result<Option<Self>, StorageError> {
        record.session.as_deref().map(Self::decode).transpose()
    }

    pub fn decode(session: &str) -> Result<Self, StorageError> {
        serde_json::from_str(session)
            .map_err(|e| StorageError::Backend(format!("bad S3 session {session:?}: {e}")))
    }

    pub fn encode(&self) -> String {
        // A struct of a number and a string always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A committed part: its number is the target's sequence number plus one, its receipt the
/// ETag and checksum S3 answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub etag: String,
    pub checksum: Option<String>,
}

impl PartReceipt {
    pub fn encode(&self) -> String {
        match &self.checksum {
            Some(c) => format!("{} {c}", self.etag),
            None => self.etag.clone(),
        }
    }

    pub fn decode(receipt: &str) -> Self {
        match receipt.split_once(' ') {
            Some((etag, checksum)) => Self {
                etag: etag.to_string(),
                checksum: Some(checksum.to_string()),
            },
            None => Self {
                etag: receipt.to_string(),
                checksum: None,
            },
        }
    }
}

/// S3 part number of a segment's target: sequence numbers start at 0, part numbers at 1.
pub fn part_number(segment: &Segment) -> i32 {
    i32::try_from(segment.target.seq).map_or(i32::MAX, |n| n.saturating_add(1))
}

/// The record's committed parts (segments with a receipt) and tails (without), in order.
pub fn split_parts_and_tails(segments: &[Segment]) -> (&[Segment], &[Segment]) {
    let parts = segments
        .iter()
        .position(|s| s.receipt.is_none())
        .unwrap_or(segments.len());
    segments.split_at(parts)
}

/// The bucket keys of one Tusk store.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The finished object, and the key of the multipart upload that becomes it.
    pub fn object(&self, upload: &str) -> String {
        format!("{}{upload}", self.prefix)
    }

    /// The object a node writes and removes at start to learn that it may write.
    pub fn start_probe(&self, node: &str) -> String {
        format!("{}.probe/{node}", self.prefix)
    }

    /// The folder of every upload's tails.
    pub fn all_tails(&self) -> String {
        format!("{}.tails/", self.prefix)
    }

    /// The folder of `upload`'s tails.
    pub fn tails(&self, upload: &str) -> String {
        format!("{}.tails/{upload}/", self.prefix)
    }

    /// The tail a writer left: its token names it, and the write of the lease it came from
    /// (the target's `seq`; the first write's keeps the bare token).
    pub fn tail(&self, upload: &str, target: WriteTarget) -> String {
        match target.seq {
            0 => format!("{}{:016x}", self.tails(upload), target.token),
            n => format!("{}{:016x}-{n}", self.tails(upload), target.token),
        }
    }

    /// The upload whose object (or multipart upload) `key` is.
    pub fn upload_of_object<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.prefix)?;
        is_valid_upload_id(id).then_some(id)
    }

    /// The fencing token of the writer of tail `key`.
    pub fn token_of_tail(&self, key: &str) -> Option<u64> {
        let (_, name) = key.rsplit_once('/')?;
        let token = name.split_once('-').map_or(name, |(token, _write)| token);
        u64::from_str_radix(token, 16).ok()
    }

    /// The upload whose tail `key` is.
    pub fn upload_of_tail<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(".tails/")?;
        let (id, _token) = rest.split_once('/')?;
        is_valid_upload_id(id).then_some(id)
    }
}

/// What the bucket's provider allows, as settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRules {
    /// Part size wanted when the upload is small enough.
    pub preferred: u64,
    /// The provider's smallest part but the last.
    pub min: u64,
    /// The provider's largest part number (10,000 on AWS, fewer on some providers).
    pub max_parts: u32,
    /// Every part but the last has the same size (Cloudflare R2).
    pub equal_parts: bool,
}

impl PartRules {
    /// The part size for an upload of at most `size` bytes (unknown: the preferred one):
    /// the preferred size, grown so that the upload fits in the planned share of the part
    /// numbers, in whole MiB.
    pub fn part_size_for(&self, size: Option<u64>) -> Result<u64, StorageError> {
        let planned = (u64::from(self.max_parts) * PLANNED_PARTS_PERCENT / 100).max(1);
        let mut part = self.preferred.max(self.min);
        if let Some(size) = size {
            part = part.max(size.div_ceil(planned));
        }
        let part = part.div_ceil(1 << 20) * (1 << 20);
        if part > S3_MAX_PART {
            return Err(StorageError::UploadTooLarge(
                "the upload is larger than S3 can hold in its part count",
            ));
        }
        Ok(part)
    }
}

/// One piece of a part built by concatenation: bytes `range` of partial upload `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub source: usize,
    pub range: std::ops::Range<u64>,
}

/// Cuts the concatenation of sources of `lens` bytes into parts. A part of one piece can
/// be copied inside S3 (UploadPartCopy); a part of several is read and sent by the node.
/// With equal parts, parts are cut every `part_size` bytes. Otherwise a source of at least
/// the minimum part size is copied whole (split evenly where it exceeds S3's largest part),
/// and small sources are gathered until a part is big enough, so that only small sources'
/// bytes pass through the node.
pub fn plan_concatenation(lens: &[u64], rules: &PartRules, part_size: u64) -> Vec<Vec<Piece>> {
    let mut parts: Vec<Vec<Piece>> = Vec::new();
    let mut open: Vec<Piece> = Vec::new();
    let mut open_len = 0u64;
    let flush = |open: &mut Vec<Piece>, open_len: &mut u64, parts: &mut Vec<Vec<Piece>>| {
        if !open.is_empty() {
            parts.push(std::mem::take(open));
            *open_len = 0;
        }
    };
    for (source, &len) in lens.iter().enumerate() {
        let mut at = 0u64;
        while at < len {
            let left = len - at;
            if rules.equal_parts {
                let take = left.min(part_size - open_len);
                open.push(Piece {
                    source,
                    range: at..at + take,
                });
                open_len += take;
                at += take;
                if open_len == part_size {
                    flush(&mut open, &mut open_len, &mut parts);
                }
            } else if open.is_empty() && left >= rules.min {
                // Copy inside S3, in parts as large as S3 allows, evenly split.
                let count = left.div_ceil(S3_MAX_PART);
                let size = left.div_ceil(count);
                let take = size.min(left);
                parts.push(vec![Piece {
                    source,
                    range: at..at + take,
                }]);
                at += take;
            } else {
                // Gather into a part that reaches the minimum, taking no more than needed
                // from a big source so that its rest can still be copied.
                let take = if left >= rules.min {
                    (rules.min - open_len).min(left)
                } else {
                    left
                };
                open.push(Piece {
                    source,
                    range: at..at + take,
                });
                open_len += take;
                at += take;
                if open_len >= rules.min {
                    flush(&mut open, &mut open_len, &mut parts);
                }
            }
        }
    }
    flush(&mut open, &mut open_len, &mut parts);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn rules(equal_parts: bool) -> PartRules {
        PartRules {
            preferred: 16 * MIB,
            min: 5 * MIB,
            max_parts: 10_000,
            equal_parts,
        }
    }

    #[test]
    fn part_size_grows_so_the_upload_fits_the_part_numbers() {
        let r = rules(false);
        assert_eq!(r.part_size_for(None).ok(), Some(16 * MIB));
        assert_eq!(r.part_size_for(Some(MIB)).ok(), Some(16 * MIB));
        // 1 TiB over 9,000 planned parts: 117 MiB parts (rounded up to whole MiB).
        let big = r.part_size_for(Some(1 << 40)).unwrap_or(0);
        assert_eq!(big, 117 * MIB);
        assert!((1u64 << 40).div_ceil(big) <= 9_000);
        let few = PartRules {
            max_parts: 1_000,
            ..r
        };
        assert!((100u64 << 30).div_ceil(few.part_size_for(Some(100 << 30)).unwrap_or(1)) <= 900);
        assert!(
            r.part_size_for(Some(100 << 40)).is_err(),
            "beyond 5 GiB parts"
        );
    }

    #[test]
    fn keys_name_one_upload_without_ambiguity() {
        let keys = Keys::new("up/");
        let id = "abcdefghijklmnopqrstuvwx";
        assert_eq!(keys.object(id), format!("up/{id}"));
        let tail = keys.tail(id, WriteTarget { token: 10, seq: 0 });
        assert_eq!(tail, format!("up/.tails/{id}/000000000000000a"));
        assert_eq!(keys.upload_of_tail(&tail), Some(id));
        assert_eq!(keys.token_of_tail(&tail), Some(10));
        let later = keys.tail(id, WriteTarget { token: 10, seq: 3 });
        assert_eq!(later, format!("up/.tails/{id}/000000000000000a-3"));
        assert_eq!(keys.upload_of_tail(&later), Some(id));
        assert_eq!(keys.token_of_tail(&later), Some(10));
        assert_eq!(keys.upload_of_object(&keys.object(id)), Some(id));
        assert_eq!(keys.upload_of_object(&tail), None);
        assert_eq!(keys.upload_of_object("other/abc"), None);
        let longer = format!("{id}z");
        let target = WriteTarget { token: 1, seq: 0 };
        assert!(!keys.tail(&longer, target).starts_with(&keys.tails(id)));
    }

    #[test]
    fn receipts_and_sessions_round_trip() {
        let r = PartReceipt {
            etag: "\"e1\"".into(),
            checksum: Some("AAAA==".into()),
        };
        assert_eq!(PartReceipt::decode(&r.encode()), r);
        let s = Session {
            part_size: 5 * MIB,
            multipart: Some("id".into()),
        };
        assert_eq!(serde_json::from_str::<Session>(&s.encode()).ok(), Some(s));
    }

    fn sizes(parts: &[Vec<Piece>]) -> Vec<u64> {
        parts
            .iter()
            .map(|p| p.iter().map(|x| x.range.end - x.range.start).sum())
            .collect()
    }

    /// Every byte of every source lands exactly once, in order.
    fn covers(lens: &[u64], parts: &[Vec<Piece>]) -> bool {
        let mut expect = (0usize, 0u64);
        for piece in parts.iter().flatten() {
            while expect.0 < lens.len() && expect.1 == lens[expect.0] {
                expect = (expect.0 + 1, 0);
            }
            if piece.source != expect.0 || piece.range.start != expect.1 {
                return false;
            }
            expect.1 = piece.range.end;
        }
        while expect.0 < lens.len() && expect.1 == lens[expect.0] {
            expect = (expect.0 + 1, 0);
        }
        expect.0 == lens.len()
    }

    #[test]
    fn big_sources_are_copied_small_ones_gathered() {
        let r = rules(false);
        let lens = [20 * MIB, MIB, 2 * MIB, 30 * MIB, 3];
        let parts = plan_concatenation(&lens, &r, 16 * MIB);
        assert!(covers(&lens, &parts));
        // 20 MiB copied whole; 1+2 MiB gathered with 2 MiB of the 30 MiB source; the
        // remaining 28 MiB copied; the 3 bytes last.
        assert_eq!(sizes(&parts), vec![20 * MIB, 5 * MIB, 28 * MIB, 3]);
        assert_eq!(parts[0].len(), 1);
        assert_eq!(parts[2].len(), 1);
        let all_but_last = &sizes(&parts)[..parts.len() - 1];
        assert!(all_but_last.iter().all(|&s| s >= r.min));
    }

    #[test]
    fn equal_parts_cut_at_the_part_size() {
        let r = rules(true);
        let lens = [7 * MIB, 7 * MIB, MIB];
        let parts = plan_concatenation(&lens, &r, 5 * MIB);
        assert!(covers(&lens, &parts));
        assert_eq!(sizes(&parts), vec![5 * MIB, 5 * MIB, 5 * MIB]);
    }

    #[test]
    fn empty_sources_give_no_parts() {
        assert!(plan_concatenation(&[0, 0], &rules(false), 16 * MIB).is_empty());
    }
}
