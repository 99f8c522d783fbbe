//! Logging of the long-running commands: `tracing` events on stderr, as
//! text lines or as one JSON object per line (timestamp, level, target,
//! fields), filtered by `SKIFF_LOG` (an `EnvFilter` directive).

use tracing_subscriber::EnvFilter;

/// `--log-format text`: lines for people (the default).
pub const TEXT: &str = "text";
/// `--log-format json`: one JSON object per line, for log shippers.
pub const JSON: &str = "json";

/// The filter when `SKIFF_LOG` is not set (or not a valid directive).
/// hickory-server logs every DNS query at info: only its warnings.
const DEFAULT_FILTER: &str = "info,openraft=error,hickory_server=warn";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("--log-format {0:?}: unknown format; use \"text\" or \"json\"")]
    UnknownFormat(String),
}

/// Installs the process's subscriber for `format` (`TEXT` or `JSON`).
/// Call once, before the runtime starts.
pub fn init(format: &str) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // With stderr gone (a closed pipe), tracing would report each
        // failed write with eprintln!, which panics in whichever task
        // logged: events are dropped instead.
        .log_internal_errors(false);
    match format {
        TEXT => builder.init(),
        JSON => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        other => return Err(LoggingError::UnknownFormat(other.to_owned())),
    }
    Ok(())
}
