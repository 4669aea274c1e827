//! gRPC hooks (tusd's `-hooks-grpc`): each event goes to tusd's `HookHandler.InvokeHook`
//! (proto/hook.proto), so a hook server written for tusd answers Tusk as it is.
//!
//! The event is built as for file hooks (tusd's HookRequest, `tusd_payload.rs`) and carried
//! over into the protobuf message; the answer is carried back into tusd's HookResponse JSON,
//! which `tusd_payload::parse_answer` reads for both transports.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::hooks::HookError;

mod wire {
    tonic::include_proto!("proto");
}

use wire::hook_handler_client::HookHandlerClient;

/// A lazily connected channel to the hook server.
pub(crate) struct GrpcTarget {
    client: HookHandlerClient<Channel>,
}

/// How one call ended, for the sender's retry loop.
pub(crate) enum Called {
    /// tusd's HookResponse as JSON.
    Answered(Bytes),
    /// Worth another attempt: unreachable, or the server failed.
    Failed(String),
    /// Not worth another: the server refused the call as such.
    Refused(String),
}

impl GrpcTarget {
    /// `endpoint` is `host:port` (as tusd takes it) or `http://host:port`; the connection is
    /// made on the first call, and again after it breaks.
    pub(crate) fn new(endpoint: &str) -> Result<Self, HookError> {
        let invalid = |reason: String| HookError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        if uri.starts_with("https://") {
            return Err(invalid(
                "gRPC hooks over TLS are not supported yet: use a plaintext endpoint on a trusted network, or -hooks-http with https".into(),
            ));
        }
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| invalid(e.to_string()))?
            .connect_lazy();
        Ok(Self {
            client: HookHandlerClient::new(channel),
        })
    }

    /// Sends `body` (tusd's HookRequest JSON) as an InvokeHook call.
    pub(crate) async fn call(&self, body: &[u8]) -> Called {
        let request = match serde_json::from_slice::<Value>(body) {
            Ok(json) => to_wire(&json),
            Err(e) => return Called::Refused(format!("the event is not JSON: {e}")),
        };
        match self.client.clone().invoke_hook(request).await {
            Ok(answer) => Called::Answered(from_wire(answer.into_inner())),
            Err(status) => {
                let problem = format!("gRPC {:?}: {}", status.code(), status.message());
                match status.code() {
                    Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::DeadlineExceeded => Called::Failed(problem),
                    _ => Called::Refused(problem),
                }
            }
        }
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn strings(value: &Value) -> HashMap<String, String> {
    value
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

fn to_wire(json: &Value) -> wire::HookRequest {
    let upload = &json["Event"]["Upload"];
    let request = &json["Event"]["HTTPRequest"];
    wire::HookRequest {
        r#type: text(&json["Type"]),
        event: Some(wire::Event {
            upload: Some(wire::FileInfo {
                id: text(&upload["ID"]),
                size: upload["Size"].as_i64().unwrap_or_default(),
                size_is_deferred: upload["SizeIsDeferred"].as_bool().unwrap_or_default(),
                offset: upload["Offset"].as_i64().unwrap_or_default(),
                meta_data: strings(&upload["MetaData"]),
                is_partial: upload["IsPartial"].as_bool().unwrap_or_default(),
                is_final: upload["IsFinal"].as_bool().unwrap_or_default(),
                partial_uploads: upload["PartialUploads"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect())
                    .unwrap_or_default(),
                storage: HashMap::new(),
            }),
            http_request: Some(wire::HttpRequest {
                method: text(&request["Method"]),
                uri: text(&request["URI"]),
                remote_addr: text(&request["RemoteAddr"]),
                // The proto carries one value per header: repeated ones are joined.
                header: request["Header"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(name, values)| {
                                let joined = values
                                    .as_array()
                                    .map(|v| v.iter().map(text).collect::<Vec<_>>().join(", "))
                                    .unwrap_or_default();
                                (name.clone(), joined)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
        }),
    }
}

fn from_wire(answer: wire::HookResponse) -> Bytes {
    let http = answer.http_response.unwrap_or_default();
    let mut json = json!({
        "HTTPResponse": {
            "StatusCode": u16::try_from(http.status_code).unwrap_or(0),
            "Body": http.body,
        },
        "RejectUpload": answer.reject_upload,
    });
    if let Some(change) = answer.change_file_info {
        let metadata = (!change.meta_data.is_empty()).then_some(change.meta_data);
        json["ChangeFileInfo"] = json!({"ID": change.id, "MetaData": metadata});
    }
    Bytes::from(json.to_string())
}
