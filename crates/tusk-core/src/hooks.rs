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

/// The request that triggered a hook, as the hook receiver sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestInfo {
    pub method: String,
    pub uri: String,
    pub remote_addr: Option<String>,
    /// Request headers (names lower-case); the receiver decides what to trust.
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

    /// Before HEAD, PATCH, GET or DELETE touches an existing upload.
    async fn pre_access(
        &self,
        upload: &UploadRecord,
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
