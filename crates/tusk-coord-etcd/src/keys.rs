//! The keys Tusk keeps in etcd and how a record is spread over them.
//!
//! Under one configurable prefix:
//! - `u/<id>/h`: the record's head, JSON: every field but the segments, the next write
//!   target's sequence number and how many segments there are;
//! - `u/<id>/r`: write targets reserved as leases were taken (see [`Keys::reservations`]):
//!   its version counts them, so the next sequence number is the head's plus that version;
//! - `u/<id>/s/<group>`: the committed segments, [`GROUP`] to a key (a JSON list), the
//!   group's number zero-padded so that keys sort in segment order. Never the whole list in
//!   one value: etcd keeps every revision of a value until compaction, so a commit rewrites
//!   only the groups it changes (usually the last), and a request is at most 1.5 MiB;
//! - `l/<id>`: the upload's lease. Its `create_revision` is the fencing token; its value is
//!   when it expires (Unix ms, zero-padded, so etcd compares values as numbers);
//! - `x/<time>/<id>`: the sweep index, by the time `UploadRecord::sweep_at` gives;
//! - `q/r/<id>`: release requests, `q/s/<id>/<nonce>`: settle requests (see `requests`);
//! - `r/<role>`: singleton roles.

use etcd_client::{DeleteOptions, TxnOp};
use serde::{Deserialize, Serialize};
use tusk_core::{CoordError, Segment, UploadRecord};

/// Segments per segment key: a commit rewrites at most this many that it did not change.
pub(crate) const GROUP: usize = 64;

/// Operations one transaction may spend on segment keys: etcd's default `--max-txn-ops` is
/// 128, and the head, the lock and the sweep index take a few.
const MAX_SEGMENT_OPS: usize = 120;

/// Bytes of segment values one transaction may carry: etcd's default `--max-request-bytes`
/// is 1.5 MiB, which also holds the keys and the head.
const MAX_SEGMENT_BYTES: usize = 1 << 20;

/// Width of zero-padded numbers in keys and lock values: every u64 fits.
const WIDTH: usize = 20;

pub(crate) fn padded(n: u64) -> String {
    format!("{n:0WIDTH$}")
}

#[derive(Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// Every key of one upload's record (head and segments).
    pub fn upload(&self, id: &str) -> String {
        format!("{}u/{id}/", self.prefix)
    }

    pub fn head(&self, id: &str) -> String {
        format!("{}u/{id}/h", self.prefix)
    }

    /// Taking a lease to write puts this key (an etcd transaction cannot increment a
    /// number it has not read) and reserves the sequence number its previous version
    /// counted to; the holder's next change of the head takes the count into the head's
    /// sequence number and deletes the key, which starts its version from zero again.
    pub fn reservations(&self, id: &str) -> String {
        format!("{}u/{id}/r", self.prefix)
    }

    pub fn segment_group(&self, id: &str, group: usize) -> String {
        format!("{}u/{id}/s/{group:08}", self.prefix)
    }

    pub fn segments(&self, id: &str) -> String {
        format!("{}u/{id}/s/", self.prefix)
    }

    /// The first key past every segment key of `id` (`0` follows `/`).
    fn segments_end(&self, id: &str) -> String {
        format!("{}u/{id}/s0", self.prefix)
    }

    pub fn lock(&self, id: &str) -> String {
        format!("{}l/{id}", self.prefix)
    }

    pub fn sweep_index(&self) -> String {
        format!("{}x/", self.prefix)
    }

    pub fn swept_at(&self, at: u64, id: &str) -> String {
        format!("{}x/{}/{id}", self.prefix, padded(at))
    }

    /// The ID in a sweep index key.
    pub fn id_of_swept(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.sweep_index().as_bytes())?;
        let id = rest.get(WIDTH + 1..)?;
        String::from_utf8(id.to_vec()).ok()
    }

    pub fn requests(&self) -> String {
        format!("{}q/", self.prefix)
    }

    pub fn release_request(&self, id: &str) -> String {
        format!("{}q/r/{id}", self.prefix)
    }

    pub fn settle_request(&self, id: &str, nonce: &str) -> String {
        format!("{}q/s/{id}/{nonce}", self.prefix)
    }

    pub fn role(&self, role: &str) -> String {
        format!("{}r/{role}", self.prefix)
    }

    /// The key etcd must answer for a ping: any key, present or not.
    pub fn ping(&self) -> String {
        format!("{}ping", self.prefix)
    }
}

/// What the head key holds.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The record without its segments.
    pub record: UploadRecord,
    /// The next write target's sequence number, but for those [`Keys::reservations`]
    /// counts.
    pub seq: u32,
    /// How many segment keys there are.
    pub segments: usize,
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> CoordError {
    CoordError::Corrupt(format!("etcd record: {what}"))
}

impl Head {
    /// The head of `record` (its segments are stored apart).
    pub fn of(record: &UploadRecord, seq: u32) -> Self {
        let mut bare = record.clone();
        bare.segments = Vec::new();
        Self {
            record: bare,
            seq,
            segments: record.segments.len(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CoordError> {
        serde_json::to_vec(self).map_err(corrupt)
    }

    pub fn decode(value: &[u8]) -> Result<Self, CoordError> {
        serde_json::from_slice(value).map_err(corrupt)
    }
}

/// The operations that store `segments`, the whole list after a change, of which the first
/// `unchanged` are stored already and `stored` were stored before: the groups from the
/// first changed one on are written, the groups past the new end deleted.
///
/// `TooLarge` if that does not fit in one transaction: a commit of more than about 7,500
/// new segments (a final upload over very many pieces), which is refused before it is sent.
pub(crate) fn segment_writes(
    keys: &Keys,
    id: &str,
    segments: &[Segment],
    unchanged: usize,
    stored: usize,
) -> Result<Vec<TxnOp>, CoordError> {
    let too_large = CoordError::TooLarge(
        "the upload would gain more pieces in one step than one etcd transaction holds",
    );
    let first = unchanged.min(segments.len()) / GROUP;
    let mut ops = Vec::new();
    let mut bytes = 0;
    for (group, members) in segments.chunks(GROUP).enumerate().skip(first) {
        let value = serde_json::to_vec(members).map_err(corrupt)?;
        bytes += value.len();
        if ops.len() == MAX_SEGMENT_OPS || bytes > MAX_SEGMENT_BYTES {
            return Err(too_large);
        }
        ops.push(TxnOp::put(keys.segment_group(id, group), value, None));
    }
    let groups = segments.len().div_ceil(GROUP);
    if stored.div_ceil(GROUP) > groups {
        if ops.len() == MAX_SEGMENT_OPS {
            return Err(too_large);
        }
        ops.push(TxnOp::delete(
            keys.segment_group(id, groups),
            Some(DeleteOptions::new().with_range(keys.segments_end(id))),
        ));
    }
    Ok(ops)
}

/// A record from the keys under [`Keys::upload`] (as etcd lists them: sorted), with the
/// next write target's sequence number and the head's mod revision; `None` without a head.
pub(crate) fn assemble(
    keys: &Keys,
    id: &str,
    kvs: &[etcd_client::KeyValue],
) -> Result<Option<(UploadRecord, u32, i64)>, CoordError> {
    let head_key = keys.head(id);
    let segments_prefix = keys.segments(id);
    let Some(head_kv) = kvs.iter().find(|kv| kv.key() == head_key.as_bytes()) else {
        return Ok(None);
    };
    let head = Head::decode(head_kv.value())?;
    let mut segments = Vec::with_capacity(head.segments);
    for kv in kvs
        .iter()
        .filter(|kv| kv.key().starts_with(segments_prefix.as_bytes()))
    {
        let group: Vec<Segment> = serde_json::from_slice(kv.value()).map_err(corrupt)?;
        segments.extend(group);
    }
    if segments.len() != head.segments {
        return Err(corrupt(format!(
            "upload {id} has {} segments in its keys, its head says {}",
            segments.len(),
            head.segments
        )));
    }
    let reservations_key = keys.reservations(id);
    let reserved = kvs
        .iter()
        .find(|kv| kv.key() == reservations_key.as_bytes())
        .map_or(0, |kv| kv.version());
    let seq = u32::try_from(reserved)
        .ok()
        .and_then(|reserved| head.seq.checked_add(reserved))
        .ok_or_else(|| corrupt(format!("upload {id} ran out of write target numbers")))?;
    let mut record = head.record;
    record.segments = segments;
    Ok(Some((record, seq, head_kv.mod_revision())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_keys_sort_by_time_and_give_back_their_id() {
        let keys = Keys::new("tusk/");
        let early = keys.swept_at(999, "a-b_c");
        let late = keys.swept_at(1_000, "a");
        assert!(early < late, "{early} sorts before {late}");
        assert_eq!(keys.id_of_swept(early.as_bytes()).as_deref(), Some("a-b_c"));
        assert_eq!(keys.id_of_swept(b"tusk/x/short"), None);
    }

    fn pieces(n: u32) -> Vec<Segment> {
        (0..n)
            .map(|seq| Segment::new(tusk_core::WriteTarget { token: 7, seq }, 1))
            .collect()
    }

    #[test]
    fn a_commit_writes_only_the_groups_it_changes() {
        let keys = Keys::new("tusk/");
        let writes = |segments: &[Segment], unchanged, stored| {
            segment_writes(&keys, "a", segments, unchanged, stored).map(|ops| ops.len())
        };
        // One more segment after 1,000: only the last group is written again.
        assert_eq!(writes(&pieces(1_001), 1_000, 1_000).ok(), Some(1));
        // A fold from 1,600 segments to 101: one group written, the rest one range delete.
        assert_eq!(writes(&pieces(101), 100, 1_600).ok(), Some(2));
        // A final upload's 1,600 pieces at once: 25 groups.
        assert_eq!(writes(&pieces(1_600), 0, 0).ok(), Some(25));
        // Emptied: nothing written, everything deleted.
        assert_eq!(writes(&[], 0, 3).ok(), Some(1));
        assert!(matches!(
            writes(&pieces(20_000), 0, 0),
            Err(CoordError::TooLarge(_))
        ));
    }

    #[test]
    fn lock_values_compare_as_numbers() {
        assert!(padded(99) < padded(100));
        assert_eq!(padded(u64::MAX).len(), WIDTH);
    }
}
