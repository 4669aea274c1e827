//! Concatenation: a final upload's bytes are assembled from its finished partials, once.

use super::Engine;
use crate::{Commit, Error, HookEvent, Stored, UploadRecord, UploadState, WriteContext};

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
        let mut lease = self.acquire(&record.id).await?;
        let result = async {
            let current = lease.record();
            if current.state != UploadState::Active {
                return Err(Error::Gone);
            }
            if current.is_finished() && current.length.is_some() {
                return Ok(current.clone()); // another request assembled it meanwhile
            }
            let total = partials.iter().map(|p| p.offset).sum::<u64>();
            let context = WriteContext {
                lease: &lease,
                length: Some(total),
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
