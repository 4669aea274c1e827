//! Trace export: a real node sends its spans over OTLP/HTTP to a small receiver started here,
//! and the request spans continue the trace named by the client's W3C `traceparent`; over
//! https, to a collector trusted through `log.otlp_ca_file`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use tusk_tests::conformance::util::{poll, random_bytes, Ctx};
use tusk_tests::harness::{NodeOptions, TestServer};
use tusk_tests::tls::{ConnectionLog, Opened, SelfSigned};

/// Every span received, with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1:0: `POST /v1/traces` with a protobuf body.
async fn start_receiver() -> Result<(String, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let received = Received::default();
    let state = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            serve_connection(stream, state.clone());
        }
    });
    Ok((url, received))
}

/// The same receiver at an https URL presenting `cert`'s certificate; the log says how each
/// connection to it began.
async fn start_tls_receiver(cert: &SelfSigned) -> Result<(String, Received, ConnectionLog)> {
    let mut listener = cert.listen().await?;
    let url = format!("https://{}", listener.local_addr()?);
    let log = listener.log();
    let received = Received::default();
    let state = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.next().await {
            serve_connection(stream, state.clone());
        }
    });
    Ok((url, received, log))
}

fn serve_connection<S>(stream: S, state: Received)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(receive(&state, request).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

async fn receive(state: &Received, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let what = format!(
        "{} {} {:?}",
        request.method(),
        request.uri().path(),
        request.headers().get("content-type")
    );
    if let Ok(mut r) = state.requests.lock() {
        r.push(what);
    }
    let reply = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if request.method() != hyper::Method::POST || request.uri().path() != "/v1/traces" {
        return reply(404, Vec::new());
    }
    let Ok(body) = request.into_body().collect().await else {
        return reply(400, Vec::new());
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return reply(400, Vec::new());
    };
    if let Ok(mut spans) = state.spans.lock() {
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| text(v.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    reply(200, ExportTraceServiceResponse::default().encode_to_vec())
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = text(kv.value.as_ref()?.value.as_ref())?;
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn describe(spans: &[(String, Span)]) -> String {
    spans
        .iter()
        .map(|(_, s)| {
            format!(
                "  {} trace={} span={} parent={} {:?}\n",
                s.name,
                hex::encode(&s.trace_id),
                hex::encode(&s.span_id),
                hex::encode(&s.parent_span_id),
                attributes(s)
            )
        })
        .collect()
}

/// The spans the test waits for: the POST and PATCH request spans under the caller's parents,
/// storage or coordinator calls that are children of them, and the HEAD request span.
type Expected = (
    (String, Span),
    (String, Span),
    Vec<(String, Span)>,
    Option<(String, Span)>,
);

fn expected_spans(
    spans: &[(String, Span)],
    trace_id: &str,
    post_parent: &str,
    patch_parent: &str,
) -> Option<Expected> {
    let in_trace = |s: &Span| hex::encode(&s.trace_id) == trace_id;
    let is_call = |s: &Span| s.name.starts_with("storage.") || s.name.starts_with("coordinator.");
    let method = |s: &Span| attributes(s).get("method").cloned();
    let request = |want: &str, parent: &str| {
        spans.iter().find(|(_, s)| {
            s.name == "request"
                && in_trace(s)
                && hex::encode(&s.parent_span_id) == parent
                && method(s).as_deref() == Some(want)
        })
    };
    let post = request("POST", post_parent)?;
    let patch = request("PATCH", patch_parent)?;
    // The PATCH's own storage and coordinator calls must be its children.
    let request_ids = [patch.1.span_id.clone()];
    let calls: Vec<_> = spans
        .iter()
        .filter(|(_, s)| in_trace(s) && is_call(s) && request_ids.contains(&s.parent_span_id))
        .cloned()
        .collect();
    let head = spans
        .iter()
        .find(|(_, s)| s.name == "request" && method(s).as_deref() == Some("HEAD"))?;
    if calls.is_empty() {
        return None;
    }
    Some((post.clone(), patch.clone(), calls, Some(head.clone())))
}

/// A node on its own data directory (kept until the returned guard drops), with `env` (the
/// OTLP endpoint and exporter settings).
async fn start_exporting_node(
    env: Vec<(String, String)>,
) -> Result<(TestServer, tempfile::TempDir)> {
    let data = tempfile::Builder::new().prefix("tusk-tracing-").tempdir()?;
    let server = TestServer::start_with(NodeOptions {
        args: vec![
            "--upload-dir".into(),
            data.path().join("data").display().to_string(),
        ],
        env,
        label: String::new(),
    })
    .await?;
    Ok((server, data))
}

#[tokio::test]
async fn spans_reach_the_collector_under_the_callers_trace() -> Result<()> {
    let (collector, received) = start_receiver().await?;
    let (server, _data) = start_exporting_node(vec![
        ("TUSK_LOG__OTLP_ENDPOINT".into(), collector.clone()),
        ("TUSK_LOG__SERVICE_NAME".into(), "tusk-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ])
    .await?;
    let t = Ctx::new(&server)?;

    // The caller's trace: one trace ID, a parent span ID per request.
    let trace_id = hex::encode(random_bytes(16));
    let post_parent = hex::encode(random_bytes(8));
    let patch_parent = hex::encode(random_bytes(8));
    let traceparent = |parent: &str| format!("00-{trace_id}-{parent}-01");

    let url = t
        .create_with(&[
            ("Upload-Length", "10"),
            ("traceparent", &traceparent(&post_parent)),
        ])
        .await?;
    let upload_id = url
        .rsplit('/')
        .next()
        .context("Location without an upload ID")?
        .to_string();
    let patched = t
        .send(
            t.patch_req(&url, 0, vec![7u8; 10])
                .header("traceparent", traceparent(&patch_parent)),
            "PATCH",
        )
        .await?;
    ensure!(
        patched.status() == 204,
        "PATCH answered {}",
        patched.status()
    );
    // A request without trace context still gets a span, in a trace of its own.
    let head = t.send(t.tus(Method::HEAD, &url), "HEAD").await?;
    ensure!(head.status() == 200, "HEAD answered {}", head.status());

    let in_trace = |s: &Span| hex::encode(&s.trace_id) == trace_id;
    let found = poll(Duration::from_secs(10), || {
        let found = expected_spans(&received.spans(), &trace_id, &post_parent, &patch_parent);
        async move { Ok(found) }
    })
    .await?;
    let Some((post, (service, patch), calls, head)) = found else {
        let spans = received.spans();
        let requests = received
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        anyhow::bail!(
            "within 10 s the collector did not get the expected spans of trace {trace_id}; \
             export requests: {requests:?}; spans received:\n{}",
            describe(&spans)
        );
    };

    ensure!(
        service == "tusk-under-test",
        "service.name is {service:?}, not the configured one"
    );
    let patch_attrs = attributes(&patch);
    ensure!(
        patch_attrs.get("upload_id") == Some(&upload_id),
        "the PATCH span's upload_id is {:?}, the upload is {upload_id}",
        patch_attrs.get("upload_id")
    );
    ensure!(
        patch_attrs.get("status").map(String::as_str) == Some("204"),
        "the PATCH span's status is {:?}",
        patch_attrs.get("status")
    );
    ensure!(
        patch_attrs.get("path") == Some(&format!("{}{upload_id}", t.base_path)),
        "the PATCH span's path is {:?}",
        patch_attrs.get("path")
    );
    let post_attrs = attributes(&post.1);
    ensure!(
        post_attrs.get("status").map(String::as_str) == Some("201"),
        "the POST span's status is {:?}",
        post_attrs.get("status")
    );
    ensure!(
        !post_attrs.contains_key("upload_id"),
        "the POST names no upload in its path, yet its span has upload_id {:?}",
        post_attrs.get("upload_id")
    );
    // Storage and coordinator calls are children of a request span, about this upload.
    for (_, call) in &calls {
        let attrs = attributes(call);
        ensure!(
            attrs.get("upload_id") == Some(&upload_id),
            "{} has upload_id {:?}, not {upload_id}",
            call.name,
            attrs.get("upload_id")
        );
        ensure!(
            attrs.get("backend").is_some_and(|b| !b.is_empty()),
            "{} has no backend",
            call.name
        );
    }
    // The HEAD carried no trace context: its span starts a trace of its own.
    let head = head.context("no HEAD span")?.1;
    ensure!(
        head.parent_span_id.is_empty() && !in_trace(&head),
        "the HEAD span without traceparent was not a root: {}",
        describe(&[(String::new(), head.clone())])
    );
    Ok(())
}

/// Spans still buffered when the node stops are sent before it exits: with a batch delay of a
/// minute, only the flush on SIGTERM can deliver them.
#[tokio::test]
async fn buffered_spans_are_flushed_at_exit() -> Result<()> {
    let (collector, received) = start_receiver().await?;
    let (mut server, _data) = start_exporting_node(vec![
        ("TUSK_LOG__OTLP_ENDPOINT".into(), collector),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "60000".into()),
    ])
    .await?;
    let t = Ctx::new(&server)?;
    let trace_id = hex::encode(random_bytes(16));
    let parent = hex::encode(random_bytes(8));
    t.create_with(&[
        ("Upload-Length", "10"),
        ("traceparent", &format!("00-{trace_id}-{parent}-01")),
    ])
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        received.spans().is_empty(),
        "spans arrived before the batch delay: the test cannot tell a flush from a batch"
    );
    server.signal("TERM")?;
    let code = server.wait_exit(Duration::from_secs(30)).await?;
    ensure!(code == Some(0), "tusk exited with {code:?} after SIGTERM");
    let spans = received.spans();
    ensure!(
        spans.iter().any(|(service, s)| s.name == "request"
            && service == "tusk"
            && hex::encode(&s.trace_id) == trace_id
            && hex::encode(&s.parent_span_id) == parent),
        "the POST's span was not flushed at exit; received:\n{}",
        describe(&spans)
    );
    Ok(())
}

/// Over https, with the collector's certificate trusted through `log.otlp_ca_file`, spans
/// arrive, and only over completed TLS sessions.
#[tokio::test]
async fn spans_reach_an_https_collector_trusted_through_otlp_ca_file() -> Result<()> {
    let cert = SelfSigned::new()?;
    let (collector, received, connections) = start_tls_receiver(&cert).await?;
    let (server, _data) = start_exporting_node(vec![
        ("TUSK_LOG__OTLP_ENDPOINT".into(), collector),
        (
            "TUSK_LOG__OTLP_CA_FILE".into(),
            cert.pem_path().display().to_string(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ])
    .await?;
    let t = Ctx::new(&server)?;
    let trace_id = hex::encode(random_bytes(16));
    let parent = hex::encode(random_bytes(8));
    t.create_with(&[
        ("Upload-Length", "10"),
        ("traceparent", &format!("00-{trace_id}-{parent}-01")),
    ])
    .await?;
    let arrived = poll(Duration::from_secs(10), || {
        let found = received.spans().iter().any(|(_, s)| {
            s.name == "request"
                && hex::encode(&s.trace_id) == trace_id
                && hex::encode(&s.parent_span_id) == parent
        });
        async move { Ok(found.then_some(())) }
    })
    .await?;
    ensure!(
        arrived.is_some(),
        "the POST's span never reached the https collector; connections: {:?}",
        connections.all()
    );
    let opened = connections.all();
    ensure!(
        opened.iter().all(|o| matches!(o, Opened::Tls)),
        "every connection to the collector must be a completed TLS session: {opened:?}"
    );
    Ok(())
}

/// Without the CA file the collector's certificate is not trusted: nothing arrives, no byte
/// goes out in clear, and serving goes on.
#[tokio::test]
async fn an_https_collector_whose_certificate_is_not_trusted_gets_nothing() -> Result<()> {
    let cert = SelfSigned::new()?;
    let (collector, received, connections) = start_tls_receiver(&cert).await?;
    let (server, _data) = start_exporting_node(vec![
        ("TUSK_LOG__OTLP_ENDPOINT".into(), collector),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ])
    .await?;
    let t = Ctx::new(&server)?;
    t.create(10).await?;
    let tried = poll(Duration::from_secs(10), || {
        let tried = !connections.all().is_empty();
        async move { Ok(tried.then_some(())) }
    })
    .await?;
    ensure!(tried.is_some(), "the node never tried to export its spans");
    // Let any further export attempt land before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.create(10).await?;
    let opened = connections.all();
    ensure!(
        opened
            .iter()
            .all(|o| matches!(o, Opened::HandshakeFailed(_))),
        "every connection must be a TLS handshake the node broke off (none in clear): {opened:?}"
    );
    ensure!(
        received.spans().is_empty(),
        "spans reached a collector with an untrusted certificate"
    );
    Ok(())
}
