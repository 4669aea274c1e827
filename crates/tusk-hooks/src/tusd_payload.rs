//! tusd's hook messages, for hooks written for tusd (file hooks, `-hooks-dir`): the event
//! as tusd's `HookRequest` JSON, and tusd's `HookResponse` read back. Only the fields whose
//! meaning Tusk has are read; `StopUpload` is not (a hook cannot stop an upload in Tusk).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tusk_core::{
    Access, ConcatKind, CreateChanges, HookEvent, HookRejection, RequestInfo, UploadRecord,
};

use crate::payload::{decode_metadata, encode_metadata, Decision, DEFAULT_REJECT_STATUS};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HookRequest<'a> {
    #[serde(rename = "Type")]
    kind: &'static str,
    event: Event<'a>,
    /// Tusk's pre-access only: what the request wants to do (tusd has no such event).
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Event<'a> {
    upload: FileInfo<'a>,
    #[serde(rename = "HTTPRequest")]
    http_request: HttpRequest<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FileInfo<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    size: u64,
    size_is_deferred: bool,
    offset: u64,
    #[serde(rename = "MetaData")]
    metadata: BTreeMap<String, String>,
    is_partial: bool,
    is_final: bool,
    partial_uploads: Option<&'a [String]>,
    storage: Option<()>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct HttpRequest<'a> {
    method: &'a str,
    #[serde(rename = "URI")]
    uri: &'a str,
    remote_addr: &'a str,
    header: BTreeMap<String, Vec<&'a str>>,
}

/// `event` on `upload` as tusd's HookRequest. A notification sent after its request (no
/// `request`) carries an empty HTTPRequest, as tusd's do.
pub(crate) fn body(
    event: HookEvent,
    upload: &UploadRecord,
    access: Option<Access>,
    request: Option<&RequestInfo>,
) -> Vec<u8> {
    let parts = match &upload.concat {
        Some(ConcatKind::Final { parts, .. }) => Some(parts.as_slice()),
        _ => None,
    };
    let http_request = request.map_or_else(HttpRequest::default, |r| {
        let mut header: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, value) in &r.headers {
            header.entry(canonical(name)).or_default().push(value);
        }
        HttpRequest {
            method: &r.method,
            uri: &r.uri,
            remote_addr: r.remote_addr.as_deref().unwrap_or(""),
            header,
        }
    });
    let request = HookRequest {
        kind: event.name(),
        event: Event {
            upload: FileInfo {
                id: &upload.id,
                size: upload.length.unwrap_or(0),
                size_is_deferred: upload.length.is_none(),
                offset: upload.offset,
                metadata: decode_metadata(upload.metadata.as_deref())
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
                is_partial: matches!(upload.concat, Some(ConcatKind::Partial)),
                is_final: parts.is_some(),
                partial_uploads: parts,
                storage: None,
            },
            http_request,
        },
        access: access.map(Access::name),
    };
    serde_json::to_vec(&request).expect("a hook request always serializes")
}

/// Go's canonical header key: `content-type` becomes `Content-Type`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HookResponse {
    #[serde(rename = "HTTPResponse")]
    http_response: HttpResponse,
    reject_upload: bool,
    reject_termination: bool,
    change_file_info: Option<ChangeFileInfo>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HttpResponse {
    status_code: u16,
    body: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ChangeFileInfo {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MetaData")]
    metadata: Option<BTreeMap<String, Option<String>>>,
}

/// Reads tusd's HookResponse: empty allows; `RejectUpload`, `RejectTermination`, or an
/// `HTTPResponse` with an error status rejects (with that status and body, 403 if none);
/// `ChangeFileInfo` changes a creation's ID and metadata.
pub(crate) fn parse_answer(body: &[u8]) -> Result<Decision, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Decision::Allow(CreateChanges::default()));
    }
    let answer: HookResponse = serde_json::from_slice(body)
        .map_err(|e| format!("answer is not tusd's HookResponse JSON: {e}"))?;
    let status = answer.http_response.status_code;
    if answer.reject_upload || answer.reject_termination || (400..=599).contains(&status) {
        return Ok(Decision::Reject(HookRejection {
            status: if (400..=599).contains(&status) {
                status
            } else {
                DEFAULT_REJECT_STATUS
            },
            body: answer.http_response.body,
        }));
    }
    let mut changes = CreateChanges::default();
    if let Some(change) = answer.change_file_info {
        changes.id = Some(change.id).filter(|id| !id.is_empty());
        if let Some(metadata) = change.metadata {
            changes.metadata = Some(encode_metadata(&metadata)?);
        }
    }
    Ok(Decision::Allow(changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_reads_as_tusd_writes_it() {
        let upload = UploadRecord {
            length: Some(10),
            metadata: Some("filename aGkudHh0".into()),
            concat: None,
            offset: 0,
            ..crate::payload::tests::record()
        };
        let request = RequestInfo {
            method: "POST".into(),
            uri: "/files/".into(),
            remote_addr: Some("10.0.0.1:5000".into()),
            headers: vec![("upload-length".into(), "10".into())],
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body(HookEvent::PreCreate, &upload, None, Some(&request)))
                .expect("json");
        assert_eq!(json["Type"], "pre-create");
        assert_eq!(json["Event"]["Upload"]["ID"], "abc");
        assert_eq!(json["Event"]["Upload"]["Size"], 10);
        assert_eq!(json["Event"]["Upload"]["MetaData"]["filename"], "hi.txt");
        assert_eq!(
            json["Event"]["HTTPRequest"]["Header"]["Upload-Length"][0],
            "10"
        );
        assert_eq!(json["Event"]["HTTPRequest"]["RemoteAddr"], "10.0.0.1:5000");
    }

    #[test]
    fn answers_read_as_tusd_means_them() {
        assert!(matches!(parse_answer(b""), Ok(Decision::Allow(_))));
        let rejected = parse_answer(
            br#"{"RejectUpload": true, "HTTPResponse": {"StatusCode": 422, "Body": "no"}}"#,
        );
        assert!(
            matches!(rejected, Ok(Decision::Reject(ref r)) if r.status == 422 && r.body == "no")
        );
        let plain = parse_answer(br#"{"RejectUpload": true}"#);
        assert!(matches!(plain, Ok(Decision::Reject(ref r)) if r.status == 403));
        let changed =
            parse_answer(br#"{"ChangeFileInfo": {"ID": "mine", "MetaData": {"a": "b"}}}"#);
        assert!(
            matches!(changed, Ok(Decision::Allow(ref c)) if c.id.as_deref() == Some("mine") && c.metadata.as_deref() == Some("a Yg=="))
        );
        assert!(parse_answer(b"not json").is_err());
    }
}
