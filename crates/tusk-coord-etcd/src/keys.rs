//! The keys Tusk keeps in etcd and how a record is spread over them.
//!
//! Under one configurable prefix:
//! - `u/<id>/h`: the record's head, JSON: every field but the segments, the next write
//!   target's sequence number and how many segments there are;
//! - `u/<id>/s/<index>`: one committed segment each (JSON), the index zero-padded so that
//!   keys sort in segment order. One key per segment, never a list in one value: etcd keeps
//!   every revision of a value until compaction, and a request is at most 1.5 MiB;
//! - `l/<id>`: the upload's lease. Its `create_revision` is the fencing token; its value is
//!   when it expires (Unix ms, zero-padded, so etcd compares values as numbers);
//! - `x/<time>/<id>`: the sweep index, by the time `UploadRecord::sweep_at` gives;
//! - `q/r/<id>`: release requests, `q/s/<id>/<nonce>`: settle requests (see `requests`);
//! - `r/<role>`: singleton roles.

use serde::{Deserialize, Serialize};
use tusk_core::{CoordError, Segment, UploadRecord};

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

    pub fn segment(&self, id: &str, index: usize) -> String {
        format!("{}u/{id}/s/{index:08}", self.prefix)
    }

    pub fn segments(&self, id: &str) -> String {
        format!("{}u/{id}/s/", self.prefix)
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
    /// The next write target's sequence number.
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

pub(crate) fn encode_segment(segment: &Segment) -> Result<Vec<u8>, CoordError> {
    serde_json::to_vec(segment).map_err(corrupt)
}

/// A record from the keys under [`Keys::upload`] (as etcd lists them: sorted), with its
/// head's sequence number and mod revision; `None` without a head.
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
    let segments = kvs
        .iter()
        .filter(|kv| kv.key().starts_with(segments_prefix.as_bytes()))
        .map(|kv| serde_json::from_slice::<Segment>(kv.value()).map_err(corrupt))
        .collect::<Result<Vec<_>, _>>()?;
    if segments.len() != head.segments {
        return Err(corrupt(format!(
            "upload {id} has {} segment keys, its head says {}",
            segments.len(),
            head.segments
        )));
    }
    let mut record = head.record;
    record.segments = segments;
    Ok(Some((record, head.seq, head_kv.mod_revision())))
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

    #[test]
    fn lock_values_compare_as_numbers() {
        assert!(padded(99) < padded(100));
        assert_eq!(padded(u64::MAX).len(), WIDTH);
    }
}
