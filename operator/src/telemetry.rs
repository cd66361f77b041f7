//! Logging setup: `tracing` events to stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! Logs go to stderr so commands that print documents (`nestor crd`) keep stdout clean.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Filter used when `RUST_LOG` is not set: our own info, and only kube's warnings
/// (its watchers log every reconnect at info).
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// Shape of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` does not parse as a filter.
    #[error("RUST_LOG is not a valid filter: {0}")]
    InvalidFilter(#[from] tracing_subscriber::filter::ParseError),
    /// `RUST_LOG` is not valid Unicode.
    #[error("RUST_LOG is not valid Unicode")]
    NotUnicode,
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    AlreadyInstalled(String),
}

/// The filter from `RUST_LOG`, or [`DEFAULT_FILTER`] when it is unset or empty.
/// A set but malformed `RUST_LOG` is an error rather than silently ignored.
pub fn env_filter() -> Result<EnvFilter, TelemetryError> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => DEFAULT_FILTER.to_string(),
        Err(std::env::VarError::NotUnicode(_)) => return Err(TelemetryError::NotUnicode),
    };
    Ok(EnvFilter::try_new(directives)?)
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = env_filter()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; `kubectl logs` and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        // Span fields (namespace, name of the reconciled object) land in each line's
        // "span" object, so a log query can select one tenant.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    installed.map_err(|error| TelemetryError::AlreadyInstalled(error.to_string()))
}
