//! Hooks: how the application around Tusk hears about uploads and decides about them.
//!
//! Blocking hooks (pre-create, pre-access, pre-finish) answer before the request goes on and
//! may reject it with a status and body that reach the client; pre-create may also change
//! the metadata or choose the upload ID. Notify hooks (post-*) are fire-and-forget for the
//! engine: their delivery (retries, at least once, with an idempotency key) is the
//! implementation's business and never holds up or fails an upload.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::UploadRecord;

/// The hook events, named as tusd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    PreCreate,
    PostCreate,
    PostReceive,
    PreFinish,
    PostFinish,
    PostTerminate,
    PreAccess,
}

impl HookEvent {
    pub fn name(self) -> &'static str {
        match self {
            Self::PreCreate => "pre-create",
            Self::PostCreate => "post-create",
            Self::PostReceive => "post-receive",
            Self::PreFinish => "pre-finish",
            Self::PostFinish => "post-finish",
            Self::PostTerminate => "post-terminate",
            Self::PreAccess => "pre-access",
        }
    }
}

/// What a request wants to do with an existing upload: pre-access decides per kind, so a
/// "yes" to reading is never a "yes" to terminating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// HEAD or GET: its offset, metadata or bytes.
    Read,
    /// PATCH: appending bytes (or declaring its length).
    Write,
    /// DELETE: terminating it.
    Terminate,
    /// A final upload created over it (`Upload-Concat: final;...`), which reads its bytes.
    Concatenate,
}

impl Access {
    /// The name hook receivers see (`"read"`, `"write"`, `"terminate"`, `"concatenate"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Terminate => "terminate",
            Self::Concatenate => "concatenate",
        }
    }
}

/// The request that triggered a hook, as the hook receiver sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestInfo {
    pub method: String,
    pub uri: String,
    pub remote_addr: Option<String>,
    /// Request headers (names lower-case), all of them: the hook implementation chooses
    /// which it forwards; the receiver decides what to trust.
    pub headers: Vec<(String, String)>,
}

/// A blocking hook said no: this status and body go to the client as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRejection {
    pub status: u16,
    pub body: String,
}

/// Why a blocking hook did not let a request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookRefusal {
    /// The hook said no; its status and body go to the client as they are.
    Rejected(HookRejection),
    /// The hook could not be asked (unreachable, failing, an answer that cannot be used):
    /// the request is refused, since a hook that guards access must fail closed.
    Unavailable,
}

/// What a pre-create hook may change about the upload about to be created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateChanges {
    /// A new upload ID (validated by the engine like any ID).
    pub id: Option<String>,
    /// New `Upload-Metadata`, in the header's own format.
    pub metadata: Option<String>,
}

/// Hooks as the engine calls them.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Whether `event` is configured; the engine skips the work of unconfigured ones.
    fn enabled(&self, event: HookEvent) -> bool;

    /// Before an upload is created: reject, or change its metadata or ID.
    async fn pre_create(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<CreateChanges, HookRefusal>;

    /// Before `request` does `access` to the existing upload `upload`: HEAD, PATCH, GET or
    /// DELETE on it, or the creation of a final upload over it (then `request` is the
    /// creating POST). A "yes" may be reused only for the same upload, the same `access`
    /// and the same credentials.
    async fn pre_access(
        &self,
        upload: &UploadRecord,
        access: Access,
        request: &RequestInfo,
    ) -> Result<(), HookRefusal>;

    /// Before the answer to the request that made an upload complete (its bytes are
    /// committed already; a rejection only changes the answer).
    async fn pre_finish(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<(), HookRefusal>;

    /// A notify event (post-*): queued for delivery, never awaited by the request.
    fn notify(&self, event: HookEvent, upload: &UploadRecord, request: Option<&RequestInfo>);

    /// Delivers a notify event, retried as configured; true once the receiver acknowledged
    /// it. Awaited off the request's path, for notices the coordinator holds until then.
    async fn deliver(
        &self,
        event: HookEvent,
        upload: &UploadRecord,
        request: Option<&RequestInfo>,
    ) -> bool;

    /// The longest one [`Hooks::deliver`] takes, all retries included: how long the node
    /// that owes a notice gets before the sweeper delivers it again.
    fn delivery_time(&self) -> std::time::Duration;
}

/// No hooks configured.
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    fn enabled(&self, _event: HookEvent) -> bool {
        false
    }
    async fn pre_create(
        &self,
        _upload: &UploadRecord,
        _request: &RequestInfo,
    ) -> Result<CreateChanges, HookRefusal> {
        Ok(CreateChanges::default())
    }
    async fn pre_access(
        &self,
        _upload: &UploadRecord,
        _access: Access,
        _request: &RequestInfo,
    ) -> Result<(), HookRefusal> {
        Ok(())
    }
    async fn pre_finish(
        &self,
        _upload: &UploadRecord,
        _request: &RequestInfo,
    ) -> Result<(), HookRefusal> {
        Ok(())
    }
    fn notify(&self, _event: HookEvent, _upload: &UploadRecord, _request: Option<&RequestInfo>) {}
    async fn deliver(
        &self,
        _event: HookEvent,
        _upload: &UploadRecord,
        _request: Option<&RequestInfo>,
    ) -> bool {
        true
    }
    fn delivery_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
