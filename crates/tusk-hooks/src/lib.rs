//! Tusk's hooks: every enabled event is POSTed as JSON to one endpoint (tusd's
//! `-hooks-http`), or run as an executable of a directory with tusd's JSON on stdin (tusd's
//! `-hooks-dir`, see `tusd_payload.rs` and [`HookSettings::dir`]), or called on tusd's gRPC
//! hook service (tusd's `-hooks-grpc`, `grpc.rs`).
//!
//! - Blocking hooks (pre-create, pre-access, pre-finish) wait for the answer: a 2xx with an
//!   empty body allows, `{"reject": true, "status": 403, "body": "..."}` rejects, and on
//!   pre-create `{"change": {"id": "...", "metadata": {"k": "v"}}}` changes the upload. They
//!   fail closed: an endpoint that cannot be reached or answers badly refuses the request
//!   ([`tusk_core::HookRefusal::Unavailable`], 503 with Retry-After in tusk-http's table).
//! - Notify hooks carry an idempotency key (`<upload id>:<event>:<offset>`) and are retried.
//!   post-create and post-receive are queued ([`Hooks::notify`] never waits) and delivered
//!   by a background task while the process lives. post-finish and post-terminate are owed
//!   in the coordinator by the engine, which awaits [`Hooks::deliver`] off the request's
//!   path and delivers again until one is acknowledged.
//!
//! Every HTTP attempt is reported with [`Observer::hook_call`]: outcome "ok", "rejected"
//! (a blocking hook said no) or "failed"; a notification dropped from a full queue is
//! reported as "dropped".

mod access_cache;
mod grpc;
mod headers;
mod hooks;
mod payload;
mod progress;
mod pruned;
mod queue;
mod sender;
mod settings;
mod tusd_payload;

pub use hooks::{HookError, HttpHooks};
pub use settings::HookSettings;
