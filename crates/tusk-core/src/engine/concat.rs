//! Concatenation: a final upload's bytes are assembled from its finished partials, once.

use std::collections::HashSet;

use futures_util::{StreamExt, TryStreamExt};

use super::Engine;
use crate::{Commit, Error, HookEvent, Stored, UploadRecord, UploadState, WriteContext};

/// Partial records one request loads at once: a final over many partials costs a few
/// round trips of the coordinator, not one per partial, without flooding it.
const CONCURRENT_LOADS: usize = 16;

/// `total + length`, or 413 when the concatenated upload's length would not fit in u64.
/// The lengths are the clients': two partials of 2^63 bytes must not add up to 0.
pub(super) fn add_length(total: u64, length: u64) -> Result<u64, Error> {
    total.checked_add(length).ok_or(Error::TooLarge(
        "the concatenated upload's length does not fit in 64 bits",
    ))
}

impl Engine {
    /// Builds the bytes of final upload `record` from `partials` under its lease, and
    /// commits them; a request that finds it assembled already returns it as it is.
    pub(super) async fn assemble_final(
        &self,
        record: UploadRecord,
        partials: &[UploadRecord],
    ) -> Result<UploadRecord, Error> {
        let concatenation = self
            .storage
            .concatenation()
            .ok_or(Error::InvalidConcat("this storage cannot concatenate"))?;
        let mut lease = self.acquire_to_write(&record.id).await?;
        let result = async {
            let current = lease.record();
            if current.state != UploadState::Active {
                return Err(Error::Gone);
            }
            if current.is_finished() && current.length.is_some() {
                return Ok(current.clone()); // another request assembled it meanwhile
            }
            let total = partials
                .iter()
                .try_fold(0, |total, p| add_length(total, p.offset))?;
            let context = WriteContext {
                lease: &lease,
                length: Some(total),
                stretch: 0,
            };
            let stored = lease
                .hold_while(
                    self.config.lease_renew_interval,
                    concatenation.concatenate(context, partials),
                )
                .await??;
            let commit = Commit {
                expected_offset: 0,
                added: stored.written,
                append: stored.append,
                fold: 0,
                session: stored.session,
                declare_length: Some(total),
                expires_at: None,
                notice: self.owe(HookEvent::PostFinish),
                stamp: Some(self.stamp(&lease)),
            };
            if let Err(e) = lease.commit(&commit).await {
                if e.is_refusal() {
                    self.discard(&lease, &Stored::of(&commit)).await;
                }
                return Err(e.into());
            }
            self.observer.upload_finished();
            let assembled = lease.record().clone();
            self.finish_in_storage(&assembled).await;
            self.deliver_later(assembled.clone(), None);
            Ok(assembled)
        }
        .await;
        self.release(lease).await;
        result
    }
}

impl Engine {
    /// Refuses a list of partials a final upload may not name: none, more than
    /// `max_parts_per_final`, or one partial twice (its bytes would be linked or copied once
    /// per mention, for the cost of one upload).
    pub(super) fn check_part_list(&self, parts: &[String]) -> Result<(), Error> {
        if parts.is_empty() {
            return Err(Error::InvalidConcat(
                "a final upload names no partial uploads",
            ));
        }
        if parts.len() > self.config.max_parts_per_final {
            return Err(Error::InvalidConcat(
                "a final upload names more partial uploads than this server allows",
            ));
        }
        let mut seen = HashSet::with_capacity(parts.len());
        if !parts.iter().all(|id| seen.insert(id.as_str())) {
            return Err(Error::InvalidConcat(
                "a final upload names the same partial upload twice",
            ));
        }
        Ok(())
    }

    /// The records of a final upload's partials, in order, loaded [`CONCURRENT_LOADS`] at
    /// a time; a partial that is gone makes the final upload unusable.
    pub(super) async fn load_partials(&self, parts: &[String]) -> Result<Vec<UploadRecord>, Error> {
        // Owned futures: borrowed ones make the handler's future not `Send` for every
        // lifetime (a known limitation of async closures over borrowed streams).
        let coord = self.coord.clone();
        futures_util::stream::iter(parts.to_vec())
            .map(move |id| {
                let coord = coord.clone();
                async move {
                    match coord.load(&id).await? {
                        Some(p) if p.state == UploadState::Active => Ok(p),
                        _ => Err(Error::InvalidConcat(
                            "a partial upload of this final upload is gone",
                        )),
                    }
                }
            })
            .buffered(CONCURRENT_LOADS)
            .try_collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_lengths_never_wrap() {
        assert_eq!(add_length(1, 2).ok(), Some(3));
        assert_eq!(add_length(u64::MAX - 1, 1).ok(), Some(u64::MAX));
        assert!(matches!(
            add_length(1 << 63, 1 << 63),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(add_length(u64::MAX, 1), Err(Error::TooLarge(_))));
    }
}
