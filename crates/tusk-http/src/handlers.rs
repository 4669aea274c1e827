//! The tus methods, and the door to the IETF draft's (`rufh.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tracing::Instrument;
use tusk_core::{
    Access, BodyError, CreateUpload, Error, IncomingBody, PatchRequest, Presentation, RequestInfo,
    UploadRecord,
};
use tusk_protocol::rufh::headers::UPLOAD_DRAFT_INTEROP_VERSION as DRAFT_VERSION;
use tusk_protocol::{self as tus, headers as h, ConcatRequest, Concatenation};

use crate::error::Refusal;
use crate::url::{self, Target};
use crate::{download, ApiError, AppState};

type Result<T> = std::result::Result<T, ApiError>;

/// The single entry point: resolves the target, then runs the method.
pub(crate) async fn dispatch(State(app): State<Arc<AppState>>, request: Request) -> Response {
    match route(&app, request).await {
        Ok(r) => r,
        Err(e) => error_response(&app, e),
    }
}

pub(crate) fn error_response(app: &AppState, error: ApiError) -> Response {
    // The error metric counts failed tus operations; the HTTP layer's own refusals (a stray
    // path, a bad method) show in the request metric by status only.
    if let ApiError::Engine(engine_error) = &error {
        app.engine
            .observer()
            .error(crate::error::kind_of(engine_error));
    }
    error.into_response()
}

async fn route(app: &AppState, request: Request) -> Result<Response> {
    // A client of the IETF draft names its interop version on every request.
    if let Some(version) = request.headers().get(DRAFT_VERSION).cloned() {
        return Ok(crate::rufh::route(app, request, version.as_bytes()).await);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let target = url::target(&path, &app.config.base_path);
    if method == Method::OPTIONS {
        return Ok(options(app));
    }
    let id = match target {
        Target::Elsewhere => return Err(Refusal::NoSuchPath.into()),
        Target::Invalid => return Err(Error::NotFound.into()),
        Target::Collection => None,
        Target::Upload(id) => Some(id.to_string()),
    };
    // Downloads are plain HTTP (browsers, curl); every tus method needs the version header.
    if method != Method::GET {
        tus::check_tus_resumable(
            request
                .headers()
                .get(h::TUS_RESUMABLE)
                .map(HeaderValue::as_bytes),
        )?;
    }
    if !served(app, &method) {
        return Err(Refusal::MethodNotAllowed.into());
    }
    let info = request_info(&request, &method);
    if let Some(id) = &id {
        let access = access_of(&method).ok_or(Refusal::MethodNotAllowed)?;
        app.engine.authorize(id, access, &info).await?;
    }
    match (method, id) {
        (Method::POST, None) => create(app, request, info).await,
        (Method::HEAD, Some(id)) => head(app, &id).await,
        (Method::PATCH, Some(id)) => patch(app, &id, request, info).await,
        (Method::DELETE, Some(id)) => terminate(app, &id, &info).await,
        (Method::GET, Some(id)) => get(app, &id, request.headers()).await,
        _ => Err(Refusal::MethodNotAllowed.into()),
    }
}

/// False for a method the operator turned off (tusd's -disable-download and
/// -disable-termination): refused before any hook or lookup.
pub(crate) fn served(app: &AppState, method: &Method) -> bool {
    match *method {
        Method::GET => app.config.download,
        Method::DELETE => app.engine.config().termination,
        _ => true,
    }
}

/// What a method does to an existing upload, for pre-access; `None` for a method that
/// means nothing on an upload.
pub(crate) fn access_of(method: &Method) -> Option<Access> {
    match *method {
        Method::HEAD | Method::GET => Some(Access::Read),
        Method::PATCH => Some(Access::Write),
        Method::DELETE => Some(Access::Terminate),
        _ => None,
    }
}

/// The client's address, set on every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub std::net::SocketAddr);

/// Marks a request that came over TLS terminated by Tusk itself: its URLs are `https://`.
#[derive(Clone, Copy)]
pub(crate) struct OverTls;

/// What hooks see of a request: method, URI, client address and headers.
pub(crate) fn request_info(request: &Request, method: &Method) -> RequestInfo {
    RequestInfo {
        method: method.to_string(),
        uri: request.uri().to_string(),
        remote_addr: request
            .extensions()
            .get::<PeerAddr>()
            .map(|peer| peer.0.to_string()),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_string(), value)
            })
            .collect(),
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

pub(crate) fn options(app: &AppState) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    set(headers, h::TUS_VERSION, tus::TUS_VERSION);
    set(headers, h::TUS_EXTENSION, app.engine.extensions().join(","));
    set(
        headers,
        h::TUS_CHECKSUM_ALGORITHM,
        tus::ChecksumAlgorithm::advertised(),
    );
    if let Some(max) = app.engine.config().max_size {
        set(headers, h::TUS_MAX_SIZE, max);
    }
    response
}

fn incoming(body: Body) -> IncomingBody {
    Box::pin(
        crate::drain::DrainOnDrop::new(body.into_data_stream())
            .map_err(|e| BodyError(e.to_string())),
    )
}

/// A request's headers as the tus parsers read them.
pub(crate) struct RequestHeaders<'a>(pub &'a HeaderMap);

impl tus::Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

async fn create(app: &AppState, request: Request, info: RequestInfo) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let creation = tus::parse_creation(
        &RequestHeaders(headers),
        app.config.max_metadata_bytes,
        |reference| url::upload_id_of(reference, &app.config.base_path),
    )?;
    let first_chunk = creation.upload.map(|body| PatchRequest {
        offset: 0,
        declare_length: None,
        ends_upload: false,
        checksum: body.checksum,
        content_length: body.content_length,
        request: info.clone(),
    });
    let with_upload = first_chunk.is_some();
    let concat = creation.concat.map(|concat| match concat {
        Concatenation::Partial => (ConcatRequest::Partial, Vec::new()),
        Concatenation::Final { urls, upload_ids } => (ConcatRequest::Final(urls), upload_ids),
    });
    let record = app
        .engine
        .create(CreateUpload {
            length: creation.length,
            metadata: creation.metadata,
            concat,
            expected_digest: None,
            request: info,
        })
        .await?;
    let location = format!(
        "{}{}{}",
        url::origin(
            headers,
            &parts.uri,
            app.config.proxy,
            parts.extensions.get::<OverTls>().is_some(),
        ),
        app.config.base_path,
        record.id
    );
    let (record, first_chunk_error) = match first_chunk {
        None => (record, None),
        Some(patch) => match patch_detached(app, &record.id, patch, body).await {
            Ok(r) => (r, None),
            // The upload exists even when its first chunk failed; the client may resume it,
            // so the error answer still carries its Location.
            Err(e) => (record, Some(e)),
        },
    };
    let mut response = match first_chunk_error {
        Some(e) => error_response(app, ApiError::Engine(e)),
        None => StatusCode::CREATED.into_response(),
    };
    let out = response.headers_mut();
    set(out, "location", location);
    if with_upload {
        set(out, h::UPLOAD_OFFSET, record.offset);
    }
    expires(out, &record);
    Ok(response)
}

/// Runs a PATCH in its own task. hyper drops a request's future when its client goes
/// away; the PATCH must still commit what arrived and release its lease, so it must not be
/// that future.
pub(crate) async fn patch_detached(
    app: &AppState,
    id: &str,
    request: PatchRequest,
    body: Body,
) -> std::result::Result<UploadRecord, Error> {
    let engine = app.engine.clone();
    let id = id.to_string();
    let body = incoming(body);
    tokio::spawn(async move { engine.patch(&id, request, body).await }.in_current_span())
        .await
        .unwrap_or_else(|e| Err(Error::TaskFailed(e.to_string())))
}

fn expires(headers: &mut HeaderMap, record: &UploadRecord) {
    if let Some(at) = record.expires_at.filter(|_| !record.is_finished()) {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
        set(headers, h::UPLOAD_EXPIRES, tus::render_http_date(when));
    }
}

async fn head(app: &AppState, id: &str) -> Result<Response> {
    let view = app.engine.view(id).await?;
    let record = &view.record;
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if view.offset_known {
        set(out, h::UPLOAD_OFFSET, record.offset);
    }
    match record.length {
        Some(length) => set(out, h::UPLOAD_LENGTH, length),
        None if !record.is_final() => set(out, h::UPLOAD_DEFER_LENGTH, 1),
        None => {}
    }
    if let Some(m) = &record.metadata {
        set(out, h::UPLOAD_METADATA, m);
    }
    match &record.concat {
        Some(tusk_core::ConcatKind::Partial) => set(out, h::UPLOAD_CONCAT, "partial"),
        Some(tusk_core::ConcatKind::Final { header, .. }) => set(out, h::UPLOAD_CONCAT, header),
        None => {}
    }
    expires(out, record);
    Ok(response)
}

async fn patch(app: &AppState, id: &str, request: Request, info: RequestInfo) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let patch = tus::parse_patch(&RequestHeaders(headers))?;
    let request = PatchRequest {
        offset: patch.offset,
        declare_length: patch.declare_length,
        ends_upload: false,
        checksum: patch.body.checksum,
        content_length: patch.body.content_length,
        request: info,
    };
    let record = patch_detached(app, id, request, body).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    set(out, h::UPLOAD_OFFSET, record.offset);
    expires(out, &record);
    Ok(response)
}

async fn terminate(app: &AppState, id: &str, info: &RequestInfo) -> Result<Response> {
    app.engine.terminate(id, info).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The upload's metadata as pairs (empty when it has none or it does not parse).
fn parsed_metadata(record: &UploadRecord) -> tus::Metadata {
    record
        .metadata
        .as_deref()
        .and_then(|m| tus::parse_metadata(m, usize::MAX).ok())
        .unwrap_or_default()
}

pub(crate) async fn get(app: &AppState, id: &str, headers: &HeaderMap) -> Result<Response> {
    let view = app.engine.view(id).await?;
    let record = view.record;
    if let Some(valid_for) = app.config.presigned_get.filter(|_| view.offset_known) {
        let (content_type, content_disposition) = download::presentation(&parsed_metadata(&record));
        let presentation = Presentation {
            content_type,
            content_disposition,
        };
        if let Some(url) = app
            .engine
            .presigned_download(&record, valid_for, &presentation)
            .await?
        {
            let mut response = StatusCode::FOUND.into_response();
            set(response.headers_mut(), "location", url);
            return Ok(response);
        }
    }
    let total = if view.offset_known { record.offset } else { 0 };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match tus::parse_range(value, total) {
            Ok(Some(r)) => Some(r),
            Ok(None) => return Err(Refusal::RangeNotSatisfiable { total }.into()),
            // A Range header we do not understand is ignored (RFC 9110 allows it).
            Err(_) => None,
        },
    };
    let (status, start, end) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.first, r.last + 1),
        None => (StatusCode::OK, 0, total),
    };
    let stream = app.engine.read_record(&record, start..end).await?;
    let (content_type, disposition) = download::presentation(&parsed_metadata(&record));
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    set(out, "content-type", content_type);
    set(out, "content-disposition", disposition);
    set(out, "content-length", end - start);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    download::guard(out);
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            out,
            "content-range",
            format!("bytes {start}-{}/{total}", end - 1),
        );
    }
    Ok(response)
}
