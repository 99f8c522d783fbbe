//! `skiff certificate rotate`: asks the running master and agent of a data
//! dir to renew their certificates now, without a restart, and waits until
//! they have. (A master signs its own with the CA; an agent gets its new
//! one from a master.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_security::CertInfo;

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
        #[arg(long, default_value = "/var/lib/skiff")]
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
        data_dir.join("server"),
        data_dir.join("agent"),
    ] {
        let tls = base.join("tls");
        for file in ["master.crt", "node.crt"] {
            if tls.join(file).exists() {
                found.push((tls.clone(), file));
            }
        }
    }
    found
}

/// Runs a `certificate` command.
pub fn run(args: CertificateArgs, out: &mut dyn Write) -> Result<(), String> {
    let CertificateCommand::Rotate { data_dir, timeout } = args.command;
    let targets = targets(&data_dir);
    if targets.is_empty() {
        return Err(format!(
            "no skiff certificates under {}: pass the --data-dir of a master, agent or server",
            data_dir.display()
        ));
    }
    let serial = |tls: &Path, file: &str| -> Result<String, String> {
        let text = std::fs::read_to_string(tls.join(file))
            .map_err(|e| format!("{}: {e}", tls.join(file).display()))?;
        CertInfo::from_pem(&text)
            .map(|i| i.serial)
            .map_err(|e| format!("{}: {e}", tls.join(file).display()))
    };
    let mut waiting = Vec::new();
    for (tls, file) in &targets {
        let before = serial(tls, file)?;
        let request = skiff_security::rotate_request_path(tls);
        skiff_security::files::write_private(&request, b"").map_err(|e| e.to_string())?;
        waiting.push((tls.clone(), *file, before, request));
    }
    let deadline = Instant::now() + Duration::from(timeout);
    for (tls, file, before, request) in waiting {
        loop {
            let now = serial(&tls, file)?;
            if !request.exists() && now != before {
                let text = std::fs::read_to_string(tls.join(file)).unwrap_or_default();
                let until = CertInfo::from_pem(&text)
                    .map(|i| humantime::format_rfc3339_seconds(i.not_after).to_string())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}: renewed (serial {before} -> {now}, valid until {until})",
                    tls.join(file).display()
                )
                .map_err(|e| e.to_string())?;
                break;
            }
            if Instant::now() > deadline {
                let _ = std::fs::remove_file(&request);
                return Err(format!(
                    "{}: not renewed within {timeout}; is skiff running on this data dir? (its log says why)",
                    tls.join(file).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
