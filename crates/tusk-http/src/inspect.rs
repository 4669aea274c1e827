//! The admin listener's views of uploads, as JSON, for `tusk inspect` and `tusk uploads`:
//! `/uploads/{id}` (any upload the coordinator knows) and `/uploads` (the ones this node is
//! writing now). On the admin port only: a record's metadata is the client's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tusk_core::{ConcatKind, Engine, Inspection, PatchPhase, UploadState};

pub(crate) async fn one(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Response {
    match engine.inspect(&id).await {
        Ok(Some(found)) => answer(StatusCode::OK, view(&found, engine.node())),
        Ok(None) => answer(
            StatusCode::NOT_FOUND,
            json!({ "error": "no such upload", "node": engine.node() }),
        ),
        Err(error) => unavailable(&engine, &error),
    }
}

pub(crate) async fn writing_here(State(engine): State<Arc<Engine>>) -> Response {
    match engine.writing_here().await {
        Ok(found) => answer(
            StatusCode::OK,
            json!({
                "node": engine.node(),
                "uploads": found.iter().map(|f| view(f, engine.node())).collect::<Vec<_>>(),
            }),
        ),
        Err(error) => unavailable(&engine, &error),
    }
}

fn unavailable(engine: &Engine, error: &tusk_core::Error) -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": error.to_string(), "node": engine.node() }),
    )
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

fn view(found: &Inspection, node: &str) -> Value {
    let record = &found.record;
    let (state, purge_at) = match record.state {
        UploadState::Active if record.is_finished() => ("finished", None),
        UploadState::Active => ("active", None),
        UploadState::Gone { purge_at } => ("gone", Some(purge_at)),
    };
    json!({
        "id": record.id,
        "state": state,
        "offset": record.offset,
        "length": record.length,
        "metadata": record.metadata,
        "concat": match &record.concat {
            None => Value::Null,
            Some(ConcatKind::Partial) => json!("partial"),
            Some(ConcatKind::Final { parts, .. }) => json!({ "final": parts }),
        },
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "purge_at": purge_at,
        "segments": record.segments.len(),
        "last_commit": record.last_commit,
        "writing_here": found.writing_here.map(|phase| json!({
            "node": node,
            "phase": match phase {
                PatchPhase::Reading => "reading",
                PatchPhase::AwaitingClient => "awaiting-client",
                PatchPhase::Ended => "committing",
            },
        })),
    })
}
