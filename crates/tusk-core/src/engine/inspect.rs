//! What an operator asks of one node (`tusk inspect`, `tusk uploads`, the admin listener's
//! `/uploads`): an upload's committed record as the coordinator holds it, the last commit's
//! writer and time, and whether this node is writing it right now.

use super::in_flight::PatchPhase;
use super::Engine;
use crate::{Error, UploadRecord};

/// One upload as an operator sees it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The committed record (offset, length, segments, expiry, the last commit's stamp).
    pub record: UploadRecord,
    /// Where this node's PATCH of it is, if this node is writing it now.
    pub writing_here: Option<PatchPhase>,
}

impl Engine {
    /// This node's name, as its commits carry it (`EngineConfig::node`).
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// `id`'s record and this node's part in it; `None` if the coordinator has no such
    /// upload (never created, or purged). Takes no lease: it never waits for a writer.
    pub async fn inspect(&self, id: &str) -> Result<Option<Inspection>, Error> {
        if !tusk_protocol::is_valid_upload_id(id) {
            return Ok(None);
        }
        let Some(record) = self.coord.load(id).await? else {
            return Ok(None);
        };
        Ok(Some(Inspection {
            writing_here: self.in_flight.phase_of(id),
            record,
        }))
    }

    /// The uploads this node is writing now, with their committed records, by ID.
    pub async fn writing_here(&self) -> Result<Vec<Inspection>, Error> {
        let mut found = Vec::new();
        for (id, phase) in self.in_flight.list() {
            // Loaded one by one: a node writes a few hundred uploads at most, and a record
            // purged meanwhile is simply left out.
            if let Some(record) = self.coord.load(&id).await? {
                found.push(Inspection {
                    record,
                    writing_here: Some(phase),
                });
            }
        }
        Ok(found)
    }
}
