//! Trace export: the `tracing` spans of the Tusk crates sent to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf), batched on the tokio runtime, and the W3C `traceparent` of an incoming
//! request made the parent of its span.
//!
//! Logs and traces are filtered separately: the log filter (`log.level`, `RUST_LOG`) decides
//! what is printed, while every `info` span of a `tusk*` crate is exported whatever the log
//! level, so a quiet log still gives complete traces. Spans of other crates (hyper, the
//! exporter's own client) are never exported, which also keeps the exporter from tracing itself.

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt as tfmt, EnvFilter, Layer};

use crate::LogFormat;

/// The OTLP/HTTP path of traces under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Time limit of one export request, connecting included (the OTLP default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long exit waits for the last batch of spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go.
#[derive(Debug, Clone, Default)]
pub struct TraceExport {
    /// The collector's OTLP/HTTP base URL, e.g. `https://collector:4318` or
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended unless the URL already ends with
    /// it). `None` or empty: no export.
    pub otlp_endpoint: Option<String>,
    /// PEM CA certificates that alone are trusted for an `https://` endpoint; `None` or
    /// empty: the Mozilla roots.
    pub otlp_ca_file: Option<PathBuf>,
    /// `service.name` of the exported resource.
    pub service_name: String,
}

/// Setting up telemetry failed (an unusable endpoint, or a subscriber already installed).
#[derive(Debug)]
pub struct TelemetryError(String);

impl fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TelemetryError {}

/// Keeps trace export running; dropping it flushes the spans not yet sent, waiting at most
/// a few seconds for the collector.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The batch processor's shutdown blocks until its tokio task has exported the last
        // batch; that task needs a runtime worker, so wait on a thread of our own (never a
        // runtime thread), and only for a bounded time.
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("tusk-otel-flush".into())
            .spawn(move || {
                let _ = done.send(provider.shutdown());
            });
        if spawned.is_err() {
            return;
        }
        match finished.recv_timeout(FLUSH_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("flushing traces failed: {error}"),
            Err(_) => eprintln!("flushing traces timed out after {FLUSH_TIMEOUT:?}"),
        }
    }
}

/// Installs the global subscriber: log lines in `format` filtered by `level` (`RUST_LOG`
/// overrides it) and, when `traces` names an endpoint, span export over OTLP/HTTP. Must be
/// called inside a tokio runtime when exporting (the batch processor runs on it).
pub fn init(
    format: LogFormat,
    level: &str,
    traces: &TraceExport,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = match format {
        LogFormat::Text => tfmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tfmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);

    let endpoint = traces
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let provider = endpoint
        .map(|e| tracer_provider(e, traces.otlp_ca_file.as_deref(), &traces.service_name))
        .transpose()?;
    let export = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tusk"))
            .with_filter(
                Targets::new()
                    .with_target("tusk", LevelFilter::INFO)
                    .with_default(LevelFilter::OFF),
            )
    });
    let guard = Telemetry { provider };
    tracing_subscriber::registry()
        .with(logs)
        .with(export)
        .try_init()
        .map_err(|e| TelemetryError(format!("logging was already set up: {e}")))?;
    if let Some(endpoint) = endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(guard)
}

/// The collector's traces URL for a configured endpoint.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

fn tracer_provider(
    endpoint: &str,
    ca_file: Option<&std::path::Path>,
    service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let url = traces_url(endpoint);
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(TelemetryError(format!(
            "log.otlp_endpoint must be an http:// or https:// URL (OTLP/HTTP), got {endpoint:?}"
        )));
    }
    // The exporter's own hyper client knows no TLS; ours is the same client over the shared
    // rustls connector, which verifies the collector's certificate for https:// URLs.
    let connector = tusk_tls::connector(ca_file, "log.otlp_ca_file", Some(EXPORT_TIMEOUT))
        .map_err(|e| TelemetryError(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(HyperClient::new(connector, EXPORT_TIMEOUT, None))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| TelemetryError(format!("log.otlp_endpoint: {e}")))?;
    // Batch size, queue and delay follow the standard OTEL_BSP_* environment variables.
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let service_name = if service_name.is_empty() {
        "tusk"
    } else {
        service_name
    };
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// Reads W3C trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the trace named by the request's `traceparent` (and `tracestate`) the parent of
/// `span`. Call it before the span is first entered; without a valid header, or without
/// trace export, it does nothing.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") || span.is_disabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Without the export layer there is no OpenTelemetry span to attach; that is fine.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces_url("http://gw/otlp"), "http://gw/otlp/v1/traces");
    }

    #[test]
    fn extractor_reads_traceparent() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        use opentelemetry::trace::TraceContextExt;
        let remote = cx.span().span_context().clone();
        assert!(remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(remote.span_id().to_string(), "b7ad6b7169203331");
    }
}
