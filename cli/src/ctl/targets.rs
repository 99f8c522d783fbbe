//! What a `ctl` command names, written as kubectl takes it: `KIND NAME...`,
//! `KIND/NAME...`, or several kinds at once (`pods,svc`). Kinds are read
//! by `Kind::parse_cli` (name, plural or short name), so every command
//! knows the same aliases.

use skiff_objects::{Kind, UnknownKind};

/// Why the command line does not name objects the way a command takes them.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    #[error("name a kind (pods, deploy, svc,...) or an object (deploy/web)")]
    Missing,
    #[error("{0:?}: write KIND NAME, KIND/NAME or KIND,KIND (here a kind or name is empty, or a '/' is too many)")]
    Empty(String),
    #[error("{0:?}: name the kind once and then the names (deploy web api), or every object as KIND/NAME (deploy/web svc/web), not both")]
    Mixed(String),
    #[error("{0:?}: name one object, as KIND/NAME or KIND NAME")]
    NotOne(String),
}

pub type Result<T> = std::result::Result<T, TargetError>;

/// The objects of one kind a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindTargets {
    pub kind: Kind,
    /// The named objects, in order; empty for every object of the kind.
    pub names: Vec<String>,
}

/// Reads `KIND[,KIND...] [NAME...]` or `KIND/NAME...`: one entry per
/// kind, in the order the kinds first appear.
pub fn parse_targets(args: &[String]) -> Result<Vec<KindTargets>> {
    let Some(first) = args.first() else {
        return Err(TargetError::Missing);
    };
    let mut targets: Vec<KindTargets> = Vec::new();
    if first.contains('/') {
        for arg in args {
            if !arg.contains('/') {
                return Err(TargetError::Mixed(arg.clone()));
            }
            let (kind, name) = split_object(arg)?;
            match targets.iter_mut().find(|t| t.kind == kind) {
                Some(t) => t.names.push(name),
                None => targets.push(KindTargets {
                    kind,
                    names: vec![name],
                }),
            }
        }
        return Ok(targets);
    }
    let mut names = Vec::new();
    for name in &args[1..] {
        if name.contains('/') {
            return Err(TargetError::Mixed(name.clone()));
        }
        if name.is_empty() {
            return Err(TargetError::Empty(name.clone()));
        }
        names.push(name.clone());
    }
    for kind in first.split(',') {
        if kind.is_empty() {
            return Err(TargetError::Empty(first.clone()));
        }
        let kind = Kind::parse_cli(kind)?;
        if targets.iter().all(|t| t.kind != kind) {
            targets.push(KindTargets {
                kind,
                names: names.clone(),
            });
        }
    }
    Ok(targets)
}

/// Exactly one object: `KIND/NAME`, or `KIND NAME`.
pub fn parse_one(args: &[String]) -> Result<(Kind, String)> {
    match args {
        [one] if one.contains('/') => split_object(one),
        [kind, name] if !kind.contains(['/', ',']) && !name.contains('/') && !name.is_empty() => {
            Ok((Kind::parse_cli(kind)?, name.clone()))
        }
        [] => Err(TargetError::Missing),
        _ => Err(TargetError::NotOne(args.join(" "))),
    }
}

/// A pod as `logs` takes it: `NAME` is a pod's name; `KIND/NAME` may name
/// something else that has pods.
pub fn parse_pod(arg: &str) -> Result<(Kind, String)> {
    if arg.contains('/') {
        split_object(arg)
    } else if arg.is_empty() {
        Err(TargetError::Empty(arg.to_owned()))
    } else {
        Ok((Kind::Pod, arg.to_owned()))
    }
}

/// `deploy/web` → (Deployment, "web").
fn split_object(arg: &str) -> Result<(Kind, String)> {
    match arg.split_once('/') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
            if kind.contains(',') {
                return Err(TargetError::Mixed(arg.to_owned()));
            }
            Ok((Kind::parse_cli(kind)?, name.to_owned()))
        }
        _ => Err(TargetError::Empty(arg.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn of(kind: Kind, names: &[&str]) -> KindTargets {
        KindTargets {
            kind,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn targets(text: &str) -> Vec<KindTargets> {
        parse_targets(&args(text)).unwrap()
    }

    #[test]
    fn kind_and_names_or_kind_slash_name() {
        assert_eq!(targets("pods"), vec![of(Kind::Pod, &[])]);
        assert_eq!(
            targets("deploy web api"),
            vec![of(Kind::Deployment, &["web", "api"])]
        );
        assert_eq!(targets("deploy/web"), vec![of(Kind::Deployment, &["web"])]);
        assert_eq!(
            targets("deploy/web svc/web deployments/api po/x"),
            vec![
                of(Kind::Deployment, &["web", "api"]),
                of(Kind::Service, &["web"]),
                of(Kind::Pod, &["x"]),
            ]
        );
    }

    #[test]
    fn comma_separated_kinds_keep_their_order() {
        assert_eq!(
            targets("pods,svc"),
            vec![of(Kind::Pod, &[]), of(Kind::Service, &[])]
        );
        assert_eq!(
            targets("deploy,rs,po,pods web"),
            vec![
                of(Kind::Deployment, &["web"]),
                of(Kind::ReplicaSet, &["web"]),
                of(Kind::Pod, &["web"]),
            ]
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_argument() {
        for (text, needle) in [
            ("", "name a kind"),
            ("pods,", "\"pods,\": write KIND NAME"),
            ("deploy/", "\"deploy/\": write KIND NAME"),
            ("/web", "\"/web\""),
            ("a/b/c", "\"a/b/c\""),
            ("deploy/web api", "\"api\": name the kind once"),
            ("deploy web svc/x", "\"svc/x\": name the kind once"),
            ("pods,svc/web", "not both"),
            ("widgets", "unknown kind \"widgets\""),
            ("deploy,wd", "unknown kind \"wd\""),
        ] {
            let e = parse_targets(&args(text)).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {needle:?} not in {e}");
        }
    }

    #[test]
    fn one_object_by_either_form() {
        let one = |text: &str| parse_one(&args(text));
        assert_eq!(
            one("deploy/web").unwrap(),
            (Kind::Deployment, "web".to_owned())
        );
        assert_eq!(one("rs web").unwrap(), (Kind::ReplicaSet, "web".to_owned()));
        for bad in [
            "",
            "deploy",
            "deploy/web api",
            "deploy web api",
            "deploy,rs web",
        ] {
            assert!(one(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_pod("web-1").unwrap(), (Kind::Pod, "web-1".to_owned()));
        assert_eq!(
            parse_pod("po/web-1").unwrap(),
            (Kind::Pod, "web-1".to_owned())
        );
        assert_eq!(
            parse_pod("deploy/web").unwrap(),
            (Kind::Deployment, "web".to_owned())
        );
        assert!(parse_pod("pod/").is_err());
    }
}
