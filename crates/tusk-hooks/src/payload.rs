//! The JSON bodies: what Tusk sends to the hook endpoint and what a blocking hook answers.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tusk_core::{
    Access, ConcatKind, CreateChanges, HookEvent, HookRejection, RequestInfo, UploadRecord,
};

/// `<upload id>:<event>:<offset>`, sent in the body and as the `Idempotency-Key` header.
pub(crate) fn idempotency_key(event: HookEvent, upload: &UploadRecord) -> String {
    format!("{}:{}:{}", upload.id, event.name(), upload.offset)
}

#[derive(Serialize)]
struct Payload<'a> {
    event: &'static str,
    idempotency_key: &'a str,
    /// pre-access only: what the request wants to do with the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'static str>,
    upload: UploadJson<'a>,
    request: Option<RequestJson<'a>>,
}

#[derive(Serialize)]
struct UploadJson<'a> {
    id: &'a str,
    offset: u64,
    length: Option<u64>,
    metadata: BTreeMap<String, Option<String>>,
    metadata_raw: Option<&'a str>,
    concat: Option<String>,
    created_at: u64,
    expires_at: Option<u64>,
}

#[derive(Serialize)]
struct RequestJson<'a> {
    method: &'a str,
    uri: &'a str,
    remote_addr: Option<&'a str>,
    headers: BTreeMap<String, String>,
}

/// The request body for `event` (`access`: what a pre-access request wants to do). Every
/// header of `request` is sent: the caller filters them.
pub(crate) fn body(
    event: HookEvent,
    key: &str,
    upload: &UploadRecord,
    access: Option<Access>,
    request: Option<&RequestInfo>,
) -> Vec<u8> {
    let payload = Payload {
        event: event.name(),
        idempotency_key: key,
        operation: access.map(Access::name),
        upload: UploadJson {
            id: &upload.id,
            offset: upload.offset,
            length: upload.length,
            metadata: decode_metadata(upload.metadata.as_deref()),
            metadata_raw: upload.metadata.as_deref(),
            concat: upload.concat.as_ref().map(|c| match c {
                ConcatKind::Partial => "partial".to_string(),
                ConcatKind::Final { header, .. } if header.starts_with("final;") => header.clone(),
                ConcatKind::Final { parts, .. } => format!("final;{}", parts.join(" ")),
            }),
            created_at: upload.created_at,
            expires_at: upload.expires_at,
        },
        request: request.map(|r| RequestJson {
            method: &r.method,
            uri: &r.uri,
            remote_addr: r.remote_addr.as_deref(),
            headers: headers_map(&r.headers),
        }),
    };
    let mut body = serde_json::to_vec(&payload).expect("a hook payload always serializes");
    // Serializing grew the buffer by doubling; a queued body holds exactly its length, which
    // is what `hooks.queue_bytes` counts.
    body.shrink_to_fit();
    body
}

/// Decoded metadata: key to UTF-8 text (lossy), `None` for a bare key. Unparseable
/// metadata (the engine validated it at creation, so this does not happen) gives no keys.
pub(crate) fn decode_metadata(raw: Option<&str>) -> BTreeMap<String, Option<String>> {
    let Some(raw) = raw else {
        return BTreeMap::new();
    };
    match tusk_protocol::parse_metadata(raw, usize::MAX) {
        Ok(parsed) => parsed
            .pairs
            .into_iter()
            .map(|(k, v)| (k, v.map(|v| String::from_utf8_lossy(&v).into_owned())))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Headers as one object; repeated names are joined (`; ` for cookies, `, ` otherwise).
fn headers_map(headers: &[(String, String)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let sep = if name == "cookie" { "; " } else { ", " };
        map.entry(name)
            .and_modify(|v| {
                v.push_str(sep);
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    map
}

/// A blocking hook's JSON answer; every field optional.
#[derive(Deserialize, Default)]
struct HookAnswer {
    #[serde(default)]
    reject: bool,
    status: Option<u16>,
    body: Option<String>,
    change: Option<Change>,
}

#[derive(Deserialize)]
struct Change {
    id: Option<String>,
    metadata: Option<BTreeMap<String, Option<String>>>,
}

/// What a blocking hook decided.
pub(crate) enum Decision {
    Allow(CreateChanges),
    Reject(HookRejection),
}

/// Status of a rejection that names none, or one that is not an error status.
pub(crate) const DEFAULT_REJECT_STATUS: u16 = 403;

/// Reads a 2xx answer: empty (allow), `{"reject": true, ...}` or `{"change": {...}}`.
pub(crate) fn parse_answer(body: &[u8]) -> Result<Decision, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Decision::Allow(CreateChanges::default()));
    }
    let answer: HookAnswer =
        serde_json::from_slice(body).map_err(|e| format!("answer is not the hook JSON: {e}"))?;
    if answer.reject {
        let status = answer
            .status
            .filter(|s| (400..=599).contains(s))
            .unwrap_or(DEFAULT_REJECT_STATUS);
        return Ok(Decision::Reject(HookRejection {
            status,
            body: answer.body.unwrap_or_default(),
        }));
    }
    let mut changes = CreateChanges::default();
    if let Some(change) = answer.change {
        changes.id = change.id;
        if let Some(metadata) = change.metadata {
            changes.metadata = Some(encode_metadata(&metadata)?);
        }
    }
    Ok(Decision::Allow(changes))
}

/// `Upload-Metadata` format: `key base64value` pairs joined by `,`, keys sorted; a key with
/// a null or empty value is sent bare. An empty map gives an empty string (no metadata).
pub(crate) fn encode_metadata(
    metadata: &BTreeMap<String, Option<String>>,
) -> Result<String, String> {
    let mut pairs = Vec::with_capacity(metadata.len());
    for (key, value) in metadata {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(format!(
                "metadata key {key:?} cannot be sent in Upload-Metadata"
            ));
        }
        match value.as_deref() {
            Some(v) if !v.is_empty() => pairs.push(format!("{key} {}", STANDARD.encode(v))),
            _ => pairs.push(key.clone()),
        }
    }
    Ok(pairs.join(","))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An upload with metadata and a final concatenation, for payload tests.
    pub(crate) fn record() -> UploadRecord {
        UploadRecord {
            id: "abc".into(),
            offset: 5,
            length: None,
            metadata: Some("filename d29ybGQ=,flag".into()),
            concat: Some(ConcatKind::Final {
                parts: vec!["a".into(), "b".into()],
                header: "final;/files/a /files/b".into(),
            }),
            created_at: 100,
            expires_at: Some(200),
            state: tusk_core::UploadState::Active,
            segments: vec![],
            session: None,
            notice: None,
            expected_digest: None,
            last_commit: None,
        }
    }

    /// The queue counts a body's length against `hooks.queue_bytes`, so the body must not
    /// hold more memory than that (serializing grows a buffer by doubling: before, a body
    /// with a 60 KB header held up to twice its length).
    #[test]
    fn a_body_holds_no_more_memory_than_its_length() {
        let request = RequestInfo {
            method: "POST".into(),
            uri: "/files/".into(),
            remote_addr: None,
            headers: vec![("x-padding".into(), "p".repeat(60_000))],
        };
        let body = body(HookEvent::PostCreate, "k", &record(), None, Some(&request));
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn body_has_the_documented_shape() {
        let upload = record();
        let request = RequestInfo {
            method: "PATCH".into(),
            uri: "/files/abc".into(),
            remote_addr: Some("10.0.0.1:5000".into()),
            headers: vec![
                ("Authorization".into(), "Bearer x".into()),
                ("cookie".into(), "a=1".into()),
                ("cookie".into(), "b=2".into()),
            ],
        };
        let key = idempotency_key(HookEvent::PostReceive, &upload);
        assert_eq!(key, "abc:post-receive:5");
        let json: serde_json::Value = serde_json::from_slice(&body(
            HookEvent::PostReceive,
            &key,
            &upload,
            None,
            Some(&request),
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event": "post-receive",
                "idempotency_key": "abc:post-receive:5",
                "upload": {
                    "id": "abc", "offset": 5, "length": null,
                    "metadata": {"filename": "world", "flag": null},
                    "metadata_raw": "filename d29ybGQ=,flag",
                    "concat": "final;/files/a /files/b",
                    "created_at": 100, "expires_at": 200
                },
                "request": {
                    "method": "PATCH", "uri": "/files/abc", "remote_addr": "10.0.0.1:5000",
                    "headers": {"authorization": "Bearer x", "cookie": "a=1; b=2"}
                }
            })
        );
        let json: serde_json::Value =
            serde_json::from_slice(&body(HookEvent::PostFinish, "k", &upload, None, None)).unwrap();
        assert!(json["request"].is_null());
        assert!(
            json.get("operation").is_none(),
            "only pre-access says the operation"
        );
        let json: serde_json::Value = serde_json::from_slice(&body(
            HookEvent::PreAccess,
            "k",
            &upload,
            Some(Access::Terminate),
            Some(&request),
        ))
        .unwrap();
        assert_eq!(json["operation"], "terminate");
        assert_eq!(json["request"]["method"], "PATCH");
    }

    #[test]
    fn answers() {
        assert!(
            matches!(parse_answer(b" \n"), Ok(Decision::Allow(c)) if c == CreateChanges::default())
        );
        match parse_answer(br#"{"reject":true}"#) {
            Ok(Decision::Reject(r)) => assert_eq!(
                r,
                HookRejection {
                    status: 403,
                    body: String::new()
                }
            ),
            _ => panic!(),
        }
        match parse_answer(br#"{"reject":true,"status":401,"body":"no"}"#) {
            Ok(Decision::Reject(r)) => assert_eq!(
                r,
                HookRejection {
                    status: 401,
                    body: "no".into()
                }
            ),
            _ => panic!(),
        }
        match parse_answer(br#"{"change":{"metadata":{"b":"x","a":null,"c":""}}}"#) {
            Ok(Decision::Allow(c)) => {
                assert_eq!(c.metadata.as_deref(), Some("a,b eA==,c"));
                assert_eq!(c.id, None);
            }
            _ => panic!(),
        }
        assert!(parse_answer(b"nope").is_err());
        assert!(parse_answer(br#"{"change":{"metadata":{"a b":"x"}}}"#).is_err());
    }
}
