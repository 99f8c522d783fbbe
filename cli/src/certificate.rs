//! `skiff certificate rotate`: asks the running master and agent of a data
//! dir to renew their certificates now, without a restart, and waits until
//! they have. (A master signs its own with the CA; an agent gets its new
//! one from a master.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_security::{CertInfo, SecurityError};

use crate::{server, DEFAULT_DATA_DIR};

/// The certificate file of a master and of an agent, in their TLS dirs.
const CERTIFICATE_FILES: [&str; 2] = ["master.crt", "node.crt"];

/// Why `skiff certificate rotate` did not see the certificates renewed.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("no skiff certificates under {}: pass the --data-dir of a master, agent or server", .data_dir.display())]
    NoCertificates { data_dir: PathBuf },
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: SecurityError,
    },
    #[error("cannot ask for renewal: {0}; run as the user that owns the data dir")]
    Request(#[source] SecurityError),
    #[error("{}: not renewed within {timeout}; is skiff running on this data dir? (its log says why)", .path.display())]
    NotRenewed {
        path: PathBuf,
        timeout: humantime::Duration,
    },
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
}

/// Flags of `skiff certificate`.
#[derive(Debug, clap::Args)]
pub struct CertificateArgs {
    #[command(subcommand)]
    pub command: CertificateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertificateCommand {
    /// Renew the certificates of the skiff running on this data dir now.
    Rotate {
        /// A master's, an agent's, or a server's data dir (then both).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How long to wait for the running process to renew.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
}

/// The TLS dirs under `data_dir` and the certificate file in each.
fn targets(data_dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut found = Vec::new();
    for base in [
        data_dir.to_owned(),
        data_dir.join(server::MASTER_DIR),
        data_dir.join(server::AGENT_DIR),
    ] {
        let tls = base.join("tls");
        for file in CERTIFICATE_FILES {
            if tls.join(file).exists() {
                found.push((tls.clone(), file));
            }
        }
    }
    found
}

/// The serial number of the certificate `file` in `tls`.
fn serial(tls: &Path, file: &str) -> Result<String, CertificateError> {
    let path = tls.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(CertificateError::Read { path, source }),
    };
    match CertInfo::from_pem(&text) {
        Ok(info) => Ok(info.serial),
        Err(source) => Err(CertificateError::Parse { path, source }),
    }
}

/// Runs a `certificate` command.
pub fn run(args: CertificateArgs, out: &mut dyn Write) -> Result<(), CertificateError> {
    let CertificateCommand::Rotate { data_dir, timeout } = args.command;
    let targets = targets(&data_dir);
    if targets.is_empty() {
        return Err(CertificateError::NoCertificates { data_dir });
    }
    let mut waiting = Vec::new();
    for (tls, file) in &targets {
        let before = serial(tls, file)?;
        let request = skiff_security::rotate_request_path(tls);
        skiff_security::files::write_private(&request, b"").map_err(CertificateError::Request)?;
        waiting.push((tls.clone(), *file, before, request));
    }
    let deadline = Instant::now() + Duration::from(timeout);
    for (tls, file, before, request) in waiting {
        loop {
            let now = serial(&tls, file)?;
            if !request.exists() && now != before {
                let text = std::fs::read_to_string(tls.join(file)).unwrap_or_default();
                let until = CertInfo::from_pem(&text)
                    .map(|i| skiff_objects::rfc3339(i.not_after))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}: renewed (serial {before} -> {now}, valid until {until})",
                    tls.join(file).display()
                )?;
                break;
            }
            if Instant::now() > deadline {
                // Withdrawn, so a skiff that starts later does not renew
                // without being asked.
                let _ = std::fs::remove_file(&request);
                return Err(CertificateError::NotRenewed {
                    path: tls.join(file),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
