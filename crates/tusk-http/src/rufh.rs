//! The IETF draft "Resumable Uploads for HTTP" over the same engine as tus: a request naming
//! an `Upload-Draft-Interop-Version` comes here instead of the tus methods. An upload made
//! here is an ordinary upload (leases, storage, hooks, expiry), readable through tus too.
//!
//! - creation: POST or PUT on the upload collection with the completeness header;
//! - offset retrieval: HEAD on the upload; append: PATCH; cancellation: DELETE;
//! - OPTIONS: tus's capabilities plus `Upload-Limit`.
//!
//! What differs per interop version is asked of [`InteropVersion`]; docs/rufh.md has the
//! table.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tusk_core::{CreateUpload, PatchRequest, RequestInfo, UploadRecord};
use tusk_protocol::rufh::{self, headers as draft, InteropVersion, UploadLimits};
use tusk_protocol::{headers as h, ProtocolError};

use crate::error::Refusal;
use crate::handlers::{self, RequestHeaders};
use crate::interim::InterimSender;
use crate::url::{self, Target};
use crate::{ApiError, AppState};

/// Runs a request of the draft; `raw_version` is its `Upload-Draft-Interop-Version`.
pub(crate) async fn route(app: &AppState, request: Request, raw_version: &[u8]) -> Response {
    let version = match InteropVersion::parse(raw_version) {
        Ok(version) => version,
        Err(e) => return handlers::error_response(app, e.into()),
    };
    let mut response = match route_version(app, request, version).await {
        Ok(response) => response,
        Err(Failure { error, provided }) => error_response(app, error, version, provided),
    };
    set(
        response.headers_mut(),
        draft::UPLOAD_DRAFT_INTEROP_VERSION,
        version,
    );
    response
}

/// An error on its way to a client of the draft, with the offset an append provided.
struct Failure {
    error: ApiError,
    provided: Option<u64>,
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            provided: None,
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

async fn route_version(
    app: &AppState,
    request: Request,
    version: InteropVersion,
) -> Result<Response> {
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return Ok(options(app, version));
    }
    let id = match url::target(request.uri().path(), &app.config.base_path) {
        Target::Elsewhere => return Err(Refusal::NoSuchPath.into()),
        Target::Invalid => return Err(tusk_core::Error::NotFound.into()),
        Target::Collection => None,
        Target::Upload(id) => Some(id.to_string()),
    };
    if !handlers::served(app, &method) {
        return Err(Refusal::MethodNotAllowed.into());
    }
    let info = handlers::request_info(&request, &method);
    if let Some(id) = &id {
        let access = handlers::access_of(&method).ok_or(Refusal::MethodNotAllowed)?;
        app.engine.authorize(id, access, &info).await?;
    }
    let early_rule = version.refuses_append_headers_on_head()
        && rufh::carries_append_headers(&RequestHeaders(request.headers()));
    match (method, id) {
        (Method::POST | Method::PUT, None) => create(app, request, info, version).await,
        (Method::HEAD | Method::DELETE, Some(_)) if early_rule => {
            Err(ProtocolError::AppendHeadersOutOfPlace.into())
        }
        (Method::HEAD, Some(id)) => head(app, &id, version).await,
        (Method::PATCH, Some(id)) => append(app, &id, request, info, version).await,
        (Method::DELETE, Some(id)) => {
            app.engine.terminate(&id, &info).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Some(id)) => Ok(handlers::get(app, &id, request.headers()).await?),
        _ => Err(Refusal::MethodNotAllowed.into()),
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

/// The limits this server announces, `max_age` counted from now for a new upload or from
/// `record`'s expiry.
fn limits(app: &AppState, record: Option<&UploadRecord>) -> UploadLimits {
    let config = app.engine.config();
    let max_age = match record {
        Some(record) => record
            .expires_at
            .map(|at| at.saturating_sub(tusk_core::unix_now())),
        None => config.expire_after.map(|d| d.as_secs()),
    };
    UploadLimits {
        max_size: config.max_size,
        max_age,
    }
}

fn set_limits(headers: &mut HeaderMap, version: InteropVersion, limits: UploadLimits) {
    if let Some(value) = rufh::render_limits(version, limits) {
        set(headers, draft::UPLOAD_LIMIT, value);
    }
}

/// The upload's state as every successful answer carries it.
fn set_state(headers: &mut HeaderMap, version: InteropVersion, record: &UploadRecord) {
    set(headers, h::UPLOAD_OFFSET, record.offset);
    set(
        headers,
        version.completeness_header(),
        version.render_completeness(record.is_finished()),
    );
}

fn options(app: &AppState, version: InteropVersion) -> Response {
    let mut response = handlers::options(app);
    set_limits(response.headers_mut(), version, limits(app, None));
    response
}

async fn create(
    app: &AppState,
    request: Request,
    info: RequestInfo,
    version: InteropVersion,
) -> Result<Response> {
    let interim = request.extensions().get::<InterimSender>().cloned();
    let (parts, body) = request.into_parts();
    let creation = rufh::parse_draft_creation(
        &RequestHeaders(&parts.headers),
        version,
        app.config.max_metadata_bytes,
    )?;
    let record = app
        .engine
        .create(CreateUpload {
            length: creation.length,
            metadata: creation.metadata,
            concat: None,
            expected_digest: creation.repr_digest,
            request: info.clone(),
        })
        .await?;
    let location = format!(
        "{}{}{}",
        url::origin(
            &parts.headers,
            &parts.uri,
            app.config.proxy,
            parts.extensions.get::<handlers::OverTls>().is_some(),
        ),
        app.config.base_path,
        record.id
    );
    if let Some(interim) = interim {
        announce(&interim, version, &location, limits(app, Some(&record))).await;
    }
    let carries_bytes = creation.content_length != Some(0);
    let appended = if carries_bytes || (creation.complete && !record.is_finished()) {
        let patch = PatchRequest {
            offset: 0,
            declare_length: None,
            ends_upload: creation.complete,
            checksum: creation.checksum,
            content_length: creation.content_length,
            request: info,
        };
        handlers::patch_detached(app, &record.id, patch, body).await
    } else {
        Ok(record)
    };
    let mut response = match appended {
        Ok(record) => {
            let mut response = StatusCode::CREATED.into_response();
            let out = response.headers_mut();
            set_state(out, version, &record);
            if !record.is_finished() {
                set_limits(out, version, limits(app, Some(&record)));
            }
            if let Err(e) = answer_digest(app, out, &record, creation.want_digest).await {
                error_response(app, e, version, None)
            } else {
                response
            }
        }
        // The upload exists even when its first bytes failed; the answer still names it.
        Err(e) => error_response(app, e.into(), version, None),
    };
    set(response.headers_mut(), "location", location);
    Ok(response)
}

/// Sends `104 Upload Resumption Supported` before the body is read: a client cut off
/// mid-body knows where to resume. A failure to send it only costs the client that hint.
async fn announce(
    interim: &InterimSender,
    version: InteropVersion,
    location: &str,
    limits: UploadLimits,
) {
    let mut head = format!(
        "HTTP/1.1 104 Upload Resumption Supported\r\nupload-draft-interop-version: {version}\r\nlocation: {location}\r\n"
    );
    if let Some(value) = rufh::render_limits(version, limits) {
        head.push_str(&format!("upload-limit: {value}\r\n"));
    }
    head.push_str("\r\n");
    if let Err(error) = interim.send(head.as_bytes()).await {
        tracing::debug!(%error, "104 interim response not sent");
    }
}

async fn head(app: &AppState, id: &str, version: InteropVersion) -> Result<Response> {
    let view = app.engine.view(id).await?;
    let record = &view.record;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_state(out, version, record);
    if let Some(length) = record.length {
        set(out, h::UPLOAD_LENGTH, length);
    }
    set_limits(out, version, limits(app, Some(record)));
    Ok(response)
}

async fn append(
    app: &AppState,
    id: &str,
    request: Request,
    info: RequestInfo,
    version: InteropVersion,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let append = rufh::parse_draft_append(&RequestHeaders(&parts.headers), version)?;
    let patch = PatchRequest {
        offset: append.offset,
        declare_length: append.length,
        ends_upload: append.complete,
        checksum: append.checksum,
        content_length: append.content_length,
        request: info,
    };
    let provided = append.offset;
    let record = handlers::patch_detached(app, id, patch, body)
        .await
        .map_err(|e| Failure {
            error: e.into(),
            provided: Some(provided),
        })?;
    let status = if !record.is_finished() && version.incomplete_append_is_created() {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut response = status.into_response();
    set_state(response.headers_mut(), version, &record);
    answer_digest(app, response.headers_mut(), &record, append.want_digest).await?;
    Ok(response)
}

/// `Repr-Digest` of a completed upload, in the algorithm its client asked for with
/// `Want-Repr-Digest` (read back from storage).
async fn answer_digest(
    app: &AppState,
    headers: &mut HeaderMap,
    record: &UploadRecord,
    wanted: Option<tusk_protocol::ChecksumAlgorithm>,
) -> std::result::Result<(), ApiError> {
    let Some(algorithm) = wanted.filter(|_| record.is_finished()) else {
        return Ok(());
    };
    let digest = app.engine.digest(record, algorithm).await?;
    if let Some(value) = rufh::render_digest(algorithm, &digest) {
        set(headers, draft::REPR_DIGEST, value);
    }
    Ok(())
}

/// An error as the draft's `version` answers it: its status, and from version 6 on the
/// problem document of the draft's error types. `provided` is an append's offset.
fn error_response(
    app: &AppState,
    error: ApiError,
    version: InteropVersion,
    provided: Option<u64>,
) -> Response {
    let answer = crate::error::draft_answer(&error, version, provided);
    let mut response = handlers::error_response(app, error);
    let Some(answer) = answer else {
        return response;
    };
    *response.status_mut() = answer.status;
    let out = response.headers_mut();
    if let Some(offset) = answer.upload_offset {
        set(out, h::UPLOAD_OFFSET, offset);
        if version.refusal_carries_completeness() {
            set(
                out,
                version.completeness_header(),
                version.render_completeness(false),
            );
        }
    }
    if let Some(document) = answer.problem {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(rufh::PROBLEM_JSON),
        );
        *response.body_mut() = axum::body::Body::from(document);
    }
    response
}
