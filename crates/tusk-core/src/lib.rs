//! The Tusk upload engine, independent of the HTTP framework and of any backend.
//!
//! Two planes meet here (see docs/architecture.md):
//! - the data plane, [`Storage`]: bytes only, written to targets reserved under a lease;
//! - the control plane, [`Coordinator`]: upload records and leases with fencing tokens.
//!
//! [`Engine`] runs the tus operations on top of both, including the PATCH commit protocol:
//! acquire the lease, check the offset, stream into a reserved target, commit with a
//! compare-and-set on the fencing token, answer, release.

mod body;
mod checksum;
#[cfg(feature = "contract")]
pub mod contract;
mod coordinator;
pub mod embedded;
mod engine;
mod error;
pub mod fold;
pub mod group_commit;
mod hooks;
mod lease;
mod observed;
mod observer;
mod record;
mod storage;

pub use body::{BodyError, IncomingBody};
pub use checksum::Hasher;
pub use coordinator::{
    Commit, CoordError, Coordinator, InFlightElsewhere, Leadership, SettleLocally,
};
pub use engine::{
    CreateUpload, Engine, EngineConfig, Inspection, PatchPhase, PatchRequest, SweepReport,
    UploadView,
};
pub use error::Error;
pub use hooks::{
    Access, CreateChanges, HookEvent, HookRefusal, HookRejection, Hooks, NoHooks, RequestInfo,
};
pub use lease::{HeldLease, Lease, ReleaseRequest};
pub use observer::{NoObserver, Observer};
pub use record::{
    unix_now, CommitStamp, ConcatKind, OwedNotice, Segment, UploadRecord, UploadState, WriteTarget,
};
pub use storage::{
    ByteStream, Chunks, Concatenation, Leftovers, Presentation, Presign, Removal, Storage,
    StorageError, Stored, WriteContext, WriteUnits,
};
