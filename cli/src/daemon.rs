//! What the long-running commands (`server`, `master`, `agent`) share: the
//! settings-file and log-format flags, listen-address flags, and `serve`,
//! which checks a command's config, starts logging and the tokio runtime
//! and runs the command until the one shutdown path (`shutdown`) ends it.
//! A bad flag exits with 2 before anything starts, as clap's own usage
//! errors do; a failure while running exits with 1.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use skiff_master::api::transport::{parse_listen, ListenAddressError};
use tokio_util::sync::CancellationToken;

use crate::{logging, print_error, runtime, settings, shutdown};

/// What a metrics-listen flag says to serve no metrics endpoint at all.
const OFF: &str = "none";

/// Flags every long-running command has.
#[derive(Debug, clap::Args)]
pub struct DaemonFlags {
    /// Settings file: flag names as keys (flags and SKIFF_* variables win).
    #[arg(long = "config", env = "SKIFF_CONFIG_FILE", default_value = settings::DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Log format: text or json.
    #[arg(long, default_value = logging::TEXT)]
    pub log_format: String,
}

/// A listen or advertise address that does not resolve to a socket
/// address. The master's `parse_listen` words the message: it names the
/// flag and the value.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AddressError(ListenAddressError);

/// The socket address `value` of `flag` stands for (`host:port`).
pub fn listen_address(flag: &str, value: &str) -> Result<SocketAddr, AddressError> {
    parse_listen(flag, value).map_err(AddressError)
}

/// A metrics-listen flag: where `/metrics`, `/healthz` and `/readyz` are
/// served, or `None` for "none".
pub fn metrics_address(flag: &str, value: &str) -> Result<Option<SocketAddr>, AddressError> {
    if value == OFF {
        return Ok(None);
    }
    listen_address(flag, value).map(Some)
}

/// The checked configuration with logging set up, or the exit code of a
/// bad flag (2), the error printed.
pub fn configured<C, E: Display>(config: Result<C, E>, log_format: &str) -> Result<C, ExitCode> {
    let config = config.map_err(|e| {
        print_error(&e);
        ExitCode::from(2)
    })?;
    if let Err(e) = logging::init(log_format) {
        print_error(&e);
        return Err(ExitCode::from(2));
    }
    Ok(config)
}

/// Runs a long-lived command: checks its config (exit 2 on a bad flag),
/// sets up logging and the runtime, and runs `body` until a signal.
pub fn serve<C, E, F, Fut, R>(config: Result<C, E>, log_format: &str, body: F) -> ExitCode
where
    E: Display,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), R>>,
    R: Display,
{
    let config = match configured(config, log_format) {
        Ok(config) => config,
        Err(code) => return code,
    };
    tracing::info!(allocator = crate::allocator::name(), "memory allocator");
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match body(config, shutdown::on_signals()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                print_error(&e);
                ExitCode::FAILURE
            }
        }
    })
}
