//! Logging, metrics and traces for the Tusk binaries: the tracing subscriber with optional
//! OpenTelemetry export ([`init`]), and [`Metrics`], the Prometheus implementation of the
//! engine's `Observer`. The engine and the HTTP layer only see the `tracing` facade, the
//! `Observer` trait and [`set_remote_parent`].

mod metrics;
mod otel;

pub use metrics::Metrics;
pub use otel::{init, set_remote_parent, Telemetry, TelemetryError, TraceExport};
use serde::{Deserialize, Serialize};

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
