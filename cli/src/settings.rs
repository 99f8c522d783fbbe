//! Settings from three places, as k3s takes them: command-line flags, then
//! `SKIFF_*` environment variables, then `/etc/skiff/config.yaml`, then the
//! defaults. Every flag of `skiff server`, `skiff agent` and `skiff master`
//! has a variable (`--node-name` ↔ `SKIFF_NODE_NAME`); the config file
//! uses the flag names as keys (`node-name: pi-1`, lists for repeatable
//! flags). A file setting is handed to clap as its variable unless that
//! variable is already set, which gives exactly that precedence. An unknown
//! key or a value of the wrong shape is an error naming the key and the file.
//! One-time actions (`--cluster-reset`, `--restore`) are flags only: from
//! a variable or the file they would act at every start.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};

use crate::Cli;

/// Where `skiff server|agent|master` read their settings file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/skiff/config.yaml";

/// The long-running subcommands that take settings this way.
const SUBCOMMANDS: [&str; 3] = ["server", "agent", "master"];

/// `SKIFF_NODE_NAME` for `node-name`.
pub fn env_name(flag: &str) -> String {
    format!("SKIFF_{}", flag.replace('-', "_").to_uppercase())
}

/// The subcommand in `args` and the `--config FILE` given to it, if any.
fn subcommand_and_file(args: &[OsString]) -> Option<(String, Option<PathBuf>)> {
    let mut iter = args.iter().skip(1).map(|a| a.to_string_lossy().to_string());
    let sub = iter.by_ref().find(|a| !a.starts_with('-'))?;
    if !SUBCOMMANDS.contains(&sub.as_str()) {
        return None;
    }
    let rest: Vec<String> = iter.collect();
    let mut file = None;
    for (i, a) in rest.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(v));
        } else if a == "--config" {
            file = rest.get(i + 1).map(PathBuf::from);
        }
    }
    Some((sub, file))
}

/// Why the settings file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--config {}: no such file", .file.display())]
    Missing { file: PathBuf },
    #[error("config file {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {source}", .file.display())]
    Yaml {
        file: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("config file {}: expected a mapping of flag names to values", .file.display())]
    NotAMapping { file: PathBuf },
    #[error("config file {}: keys must be flag names", .file.display())]
    KeyNotAName { file: PathBuf },
    #[error("config file {}: unknown setting {key:?} for `skiff {subcommand}` (the keys are its flag names, such as node-name)", .file.display())]
    UnknownSetting {
        file: PathBuf,
        key: String,
        subcommand: String,
    },
    #[error("config file {}: {key}: expected a string, number, boolean or list", .file.display())]
    BadValue { file: PathBuf, key: String },
    #[error("config file {}: {key} is a one-time action, not a setting: give --{key} on the command line, once", .file.display())]
    FlagOnly { file: PathBuf, key: String },
}

/// A YAML value as a flag value (lists joined with commas); `None` for a
/// mapping or null, which no flag takes.
fn flag_value(value: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Sequence(items) => items
            .iter()
            .map(flag_value)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

/// Reads `file` for `subcommand`: (variable, value) pairs.
pub fn read_file(
    file: &Path,
    subcommand: &str,
    known: &[String],
) -> Result<Vec<(String, String)>, SettingsError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SettingsError::Read {
                file: file.to_owned(),
                source,
            })
        }
    };
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|source| SettingsError::Yaml {
            file: file.to_owned(),
            source,
        })?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(SettingsError::NotAMapping {
                file: file.to_owned(),
            })
        }
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| SettingsError::KeyNotAName {
                file: file.to_owned(),
            })?
            .to_string();
        if crate::cluster_reset::FLAGS.contains(&key.as_str()) {
            return Err(SettingsError::FlagOnly {
                file: file.to_owned(),
                key,
            });
        }
        if key == "config" || !known.contains(&key) {
            return Err(SettingsError::UnknownSetting {
                file: file.to_owned(),
                key,
                subcommand: subcommand.to_owned(),
            });
        }
        let Some(value) = flag_value(&v) else {
            return Err(SettingsError::BadValue {
                file: file.to_owned(),
                key,
            });
        };
        out.push((env_name(&key), value));
    }
    Ok(out)
}

/// The settings a file for `skiff <sub>` may hold: its long flags (none
/// for an unknown subcommand).
fn known_settings(command: &clap::Command, sub: &str) -> Vec<String> {
    command
        .find_subcommand(sub)
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses the command line with variables and the config file applied.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let mut file_note = None;
    if let Some((sub, file)) = subcommand_and_file(&args) {
        let explicit = file.is_some();
        let file = file
            .or_else(|| std::env::var_os("SKIFF_CONFIG_FILE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let known = known_settings(&command, &sub);
        if explicit && !file.exists() {
            return Err(command.error(
                clap::error::ErrorKind::ValueValidation,
                SettingsError::Missing { file },
            ));
        }
        let settings = read_file(&file, &sub, &known)
            .map_err(|e| command.error(clap::error::ErrorKind::ValueValidation, e))?;
        for (var, value) in settings {
            if std::env::var_os(&var).is_none() {
                // Single-threaded: nothing else runs yet.
                std::env::set_var(&var, value);
            }
        }
        file_note = Some(file);
    }
    for sub in SUBCOMMANDS {
        command = command.mut_subcommand(sub, |c| {
            c.mut_args(|a| {
                let Some(long) = a.get_long() else { return a };
                if a.get_env().is_some() || long == "help" || long == "version" {
                    return a;
                }
                if crate::cluster_reset::FLAGS.contains(&long) {
                    return a;
                }
                let var: &'static str = Box::leak(env_name(long).into_boxed_str());
                a.env(var)
            })
        });
    }
    let matches = command.try_get_matches_from(args).inspect_err(|e| {
        if let Some(file) = &file_note {
            if e.kind() == clap::error::ErrorKind::ValueValidation
                || e.kind() == clap::error::ErrorKind::InvalidValue
            {
                eprintln!(
                    "note: settings come from flags, then SKIFF_* variables, then {}",
                    file.display()
                );
            }
        }
    })?;
    Cli::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_flags() {
        assert_eq!(env_name("node-name"), "SKIFF_NODE_NAME");
        assert_eq!(env_name("data-dir"), "SKIFF_DATA_DIR");
    }

    #[test]
    fn the_file_is_checked_against_the_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.yaml");
        let known = vec![
            "node-name".to_string(),
            "node-label".to_string(),
            "node-cidr-mask-size".to_string(),
        ];
        std::fs::write(
            &file,
            "node-name: pi-1\nnode-label: [a=b, c=d]\nnode-cidr-mask-size: 25\n",
        )
        .unwrap();
        let got = read_file(&file, "agent", &known).unwrap();
        assert_eq!(
            got,
            vec![
                ("SKIFF_NODE_NAME".to_string(), "pi-1".to_string()),
                ("SKIFF_NODE_LABEL".to_string(), "a=b,c=d".to_string()),
                ("SKIFF_NODE_CIDR_MASK_SIZE".to_string(), "25".to_string()),
            ]
        );
        std::fs::write(&file, "nod-name: pi-1\n").unwrap();
        let err = read_file(&file, "agent", &known).unwrap_err().to_string();
        assert!(
            err.contains("unknown setting \"nod-name\"") && err.contains("config.yaml"),
            "{err}"
        );
        std::fs::write(&file, "node-name: {a: b}\n").unwrap();
        assert!(read_file(&file, "agent", &known)
            .unwrap_err()
            .to_string()
            .contains("node-name"));
        std::fs::write(&file, "node-name: [unclosed\n").unwrap();
        assert!(read_file(&file, "agent", &known)
            .unwrap_err()
            .to_string()
            .contains("line"));
        assert!(read_file(&tmp.path().join("absent.yaml"), "agent", &known)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_servers_file_takes_the_failover_timings() {
        let known = known_settings(&Cli::command(), "server");
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.yaml");
        std::fs::write(
            &file,
            "node-monitor-grace-period: 20s\npod-eviction-timeout: 1m\n",
        )
        .unwrap();
        let grace = (env_name("node-monitor-grace-period"), "20s".to_owned());
        let eviction = (env_name("pod-eviction-timeout"), "1m".to_owned());
        let got = read_file(&file, "server", &known).unwrap();
        assert_eq!(got, [grace, eviction]);
    }

    #[test]
    fn a_cluster_reset_is_never_a_setting() {
        let known = known_settings(&Cli::command(), "server");
        assert!(known.iter().any(|k| k == "cluster-reset"));
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.yaml");
        for text in ["cluster-reset: true\n", "restore: /tmp/x.skiffsnap\n"] {
            std::fs::write(&file, text).unwrap();
            let e = read_file(&file, "server", &known).unwrap_err().to_string();
            assert!(e.contains("one-time action"), "{e}");
        }
        std::fs::write(&file, "snapshot-schedule: 6h\nsnapshot-retention: 10\n").unwrap();
        let got = read_file(&file, "server", &known).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn subcommand_and_file_are_found() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            subcommand_and_file(&args(&["skiff", "agent", "--config", "/x.yaml"])),
            Some(("agent".into(), Some(PathBuf::from("/x.yaml"))))
        );
        assert_eq!(
            subcommand_and_file(&args(&["skiff", "server"])),
            Some(("server".into(), None))
        );
        assert_eq!(
            subcommand_and_file(&args(&["skiff", "ctl", "get", "po"])),
            None
        );
    }
}
