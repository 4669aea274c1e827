//! Logging, metrics and traces for the Tusk binaries: the tracing subscriber with optional
//! OpenTelemetry export ([`init`]), and [`Metrics`], the Prometheus implementation of the
//! engine's `Observer`. The engine and the HTTP layer only see the `tracing` facade, the
//! `Observer` trait and [`set_remote_parent`].

mod metrics;
mod otel;

pub use metrics::Metrics;
pub use otel::{init, set_remote_parent, Telemetry, TelemetryError, TraceExport};
use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, EnvFilter};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already set up: {error}");
    }
}
