//! A container's `securityContext` as the kubelet and containerd's CRI
//! plugin make it: the container's own settings over the pod's, the image's
//! user where neither names one, resolved into [`ProcessSecurity`] for the
//! OCI spec.
//!
//! - The user: `runAsUser` (container, else pod), else the image's `USER`
//!   (a name resolved through the image's `/etc/passwd`); the group:
//!   `runAsGroup`, else the image's `USER` group when the user is the
//!   image's too, else the user's primary group
//!   ([`crate::runtime::image_accounts`]).
//! - `runAsNonRoot`: a container that would run as UID 0 is not started;
//!   the kubelet's messages say why.
//! - Supplementary groups: the user's groups in the image, then the pod's
//!   `supplementalGroups` and its `fsGroup`.
//! - Capabilities: containerd's default set, all of them when
//!   `privileged`; `add`, then `drop` (`ALL` first, then each name, with or
//!   without `CAP_`), as containerd applies them.
//! - `allowPrivilegeEscalation: false` sets `noNewPrivileges`;
//!   `readOnlyRootFilesystem` a read-only root.
//! - `seccompProfile` (container, else pod): RuntimeDefault, and Localhost
//!   (skiff loads no profile files; the API warns), get the runtime default
//!   profile; Unconfined or none, no filter; a privileged container none.

use skiff_proto::v1;

use crate::runtime::image_accounts::{ImageAccounts, UserError};
use crate::runtime::spec::{ProcessSecurity, Seccomp, ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

/// Why a container may not start as its securityContext asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error("container {container}: {source}")]
    User {
        container: String,
        #[source]
        source: UserError,
    },
}

/// The pod as the kubelet names it in messages: `name_namespace(uid)`.
fn pod_name(pod: &v1::Pod) -> String {
    let meta = pod.metadata.clone().unwrap_or_default();
    format!("{}_{}({})", meta.name, meta.namespace, meta.uid)
}

/// A capability name as the runtime spells it (`CAP_NET_ADMIN`).
fn capability(name: &str) -> String {
    let name = name.trim().to_ascii_uppercase();
    if name.starts_with("CAP_") {
        name
    } else {
        format!("CAP_{name}")
    }
}

/// The capabilities of a container: the default set (every one when
/// `privileged`), with `add` and `drop` applied as containerd applies
/// them: `ALL` in `add`, then `ALL` in `drop`, then each name added, then
/// each name dropped.
pub fn capabilities(caps: Option<&v1::Capabilities>, privileged: bool) -> Vec<String> {
    let base: &[&str] = if privileged {
        &ALL_CAPABILITIES
    } else {
        &DEFAULT_CAPABILITIES
    };
    let mut out: Vec<String> = base.iter().map(|c| c.to_string()).collect();
    let Some(caps) = caps else {
        return out;
    };
    let is_all = |c: &String| c.trim().eq_ignore_ascii_case("ALL");
    if caps.add.iter().any(is_all) {
        out = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    if caps.drop.iter().any(is_all) {
        out.clear();
    }
    for add in caps.add.iter().filter(|&c| !is_all(c)) {
        let add = capability(add);
        if !out.contains(&add) {
            out.push(add);
        }
    }
    for drop in caps.drop.iter().filter(|&c| !is_all(c)) {
        let drop = capability(drop);
        out.retain(|c| *c != drop);
    }
    out
}

/// `value` as a user or group ID; the API allows 0 to 2^31-1, so anything
/// else cannot come from it.
fn id(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// How `container` of `pod` runs, its image running as `image_user` (its
/// `USER`, `name[:group]` or `uid[:gid]`) with `accounts`.
pub fn resolve(
    pod: &v1::Pod,
    container: &v1::Container,
    image_user: Option<&str>,
    accounts: &ImageAccounts,
) -> Result<ProcessSecurity, SecurityError> {
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let run_as_group = sc.run_as_group.or(pod_sc.run_as_group);
    let run_as_non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);

    let image_user = image_user.unwrap_or("");
    let (image_name, image_group) = match image_user.split_once(':') {
        Some((user, group)) => (user, Some(group).filter(|g| !g.is_empty())),
        None => (image_user, None),
    };
    let user_part = match run_as_user {
        Some(uid) => id(uid).to_string(),
        None if image_name.is_empty() => "0".to_owned(),
        None => image_name.to_owned(),
    };
    let group_part = match (run_as_group, run_as_user) {
        (Some(gid), _) => Some(id(gid).to_string()),
        (None, Some(_)) => None,
        (None, None) => image_group.map(str::to_owned),
    };
    let spec = match &group_part {
        Some(group) => format!("{user_part}:{group}"),
        None => user_part,
    };
    let user = accounts
        .resolve(&spec)
        .map_err(|source| SecurityError::User {
            container: container.name.clone(),
            source,
        })?;

    if run_as_non_root == Some(true) {
        let refusal = match run_as_user {
            Some(0) => Some(SecurityError::RunAsUserIsRoot {
                pod: pod_name(pod),
                container: container.name.clone(),
            }),
            None if user.uid == 0 => Some(SecurityError::ImageRunsAsRoot {
                pod: pod_name(pod),
                container: container.name.clone(),
            }),
            _ => None,
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
    }

    let mut additional_gids = user.additional_gids;
    let pod_groups = pod_sc.supplemental_groups.iter().chain(&pod_sc.fs_group);
    for group in pod_groups.map(|g| id(*g)) {
        if !additional_gids.contains(&group) {
            additional_gids.push(group);
        }
    }

    let privileged = sc.privileged == Some(true);
    let profile = sc.seccomp_profile.or(pod_sc.seccomp_profile);
    let seccomp = match profile.as_ref().map(|p| p.r#type.as_str()) {
        _ if privileged => Seccomp::Unconfined,
        Some("RuntimeDefault") | Some("Localhost") => Seccomp::RuntimeDefault,
        _ => Seccomp::Unconfined,
    };
    Ok(ProcessSecurity {
        uid: user.uid,
        gid: user.gid,
        additional_gids,
        capabilities: capabilities(sc.capabilities.as_ref(), privileged),
        read_only_root: sc.read_only_root_filesystem == Some(true),
        no_new_privileges: sc.allow_privilege_escalation == Some(false),
        privileged,
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> ImageAccounts {
        ImageAccounts {
            passwd: "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n".into(),
            group: "root:x:0:\napp:x:1000:\nstaff:x:50:app\n".into(),
        }
    }

    fn pod(pod_sc: Option<v1::PodSecurityContext>, sc: Option<v1::SecurityContext>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "uid1".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                security_context: pod_sc.map(Box::new),
                containers: vec![v1::Container {
                    name: "main".into(),
                    security_context: sc.map(Box::new),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What `main` of a pod with these contexts runs as, from an image
    /// running as `image_user`.
    fn run(
        pod_sc: Option<v1::PodSecurityContext>,
        sc: Option<v1::SecurityContext>,
        image_user: Option<&str>,
    ) -> Result<ProcessSecurity, SecurityError> {
        let pod = pod(pod_sc, sc);
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        resolve(&pod, &container, image_user, &accounts())
    }

    fn ids(s: &ProcessSecurity) -> (u32, u32, Vec<u32>) {
        (s.uid, s.gid, s.additional_gids.clone())
    }

    #[test]
    fn the_user_comes_from_the_container_then_the_pod_then_the_image() {
        // Nothing set: the image's user, else root.
        assert_eq!(ids(&run(None, None, None).unwrap()), (0, 0, vec![0]));
        let named = run(None, None, Some("app")).unwrap();
        assert_eq!(ids(&named), (1000, 1000, vec![1000, 50]));
        let image_group = run(None, None, Some("app:staff")).unwrap();
        assert_eq!(ids(&image_group), (1000, 50, vec![50]));
        // The pod's runAsUser over the image's, its group from passwd.
        let pod_sc = v1::PodSecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        };
        let s = run(Some(pod_sc.clone()), None, Some("nobody:staff")).unwrap();
        assert_eq!(ids(&s), (1000, 1000, vec![1000, 50]));
        // The container's over the pod's; runAsGroup over everything.
        let sc = v1::SecurityContext {
            run_as_user: Some(2000),
            run_as_group: Some(3000),
            ..Default::default()
        };
        let s = run(Some(pod_sc), Some(sc), Some("app")).unwrap();
        assert_eq!(ids(&s), (2000, 3000, vec![3000]));
        // runAsGroup alone keeps the image's user.
        let sc = v1::SecurityContext {
            run_as_group: Some(3000),
            ..Default::default()
        };
        let s = run(None, Some(sc), Some("app")).unwrap();
        assert_eq!(ids(&s), (1000, 3000, vec![3000, 50]));
        // A name the image does not have.
        let err = run(None, None, Some("postgres")).unwrap_err();
        assert!(matches!(err, SecurityError::User { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("container main: user \"postgres\""));
    }

    #[test]
    fn supplemental_groups_and_fs_group_join_the_users_groups() {
        let pod_sc = v1::PodSecurityContext {
            run_as_user: Some(1000),
            supplemental_groups: vec![4000, 50],
            fs_group: Some(2000),
            ..Default::default()
        };
        let s = run(Some(pod_sc), None, None).unwrap();
        assert_eq!(ids(&s), (1000, 1000, vec![1000, 50, 4000, 2000]));
    }

    #[test]
    fn run_as_non_root_refuses_root_with_the_kubelets_words() {
        let non_root = |user: Option<i64>| v1::SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: user,
            ..Default::default()
        };
        let err = run(None, Some(non_root(None)), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"container has runAsNonRoot and image will run as root (pod: "web_default(uid1)", container: main)"#
        );
        let err = run(None, Some(non_root(None)), Some("root")).unwrap_err();
        assert!(matches!(err, SecurityError::ImageRunsAsRoot { .. }));
        let err = run(None, Some(non_root(Some(0))), Some("app")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"container's runAsUser breaks non-root policy (pod: "web_default(uid1)", container: main)"#
        );
        // A non-root user, by number or by the image's name: it starts.
        assert!(run(None, Some(non_root(Some(1000))), None).is_ok());
        assert!(run(None, Some(non_root(None)), Some("app")).is_ok());
        assert!(run(None, Some(non_root(None)), Some("1000")).is_ok());
        // The pod's runAsNonRoot counts too; the container's overrides it.
        let pod_sc = v1::PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert!(run(Some(pod_sc.clone()), None, None).is_err());
        let allow = v1::SecurityContext {
            run_as_non_root: Some(false),
            ..Default::default()
        };
        assert!(run(Some(pod_sc), Some(allow), None).is_ok());
    }

    fn caps(add: &[&str], drop: &[&str]) -> v1::Capabilities {
        v1::Capabilities {
            add: add.iter().map(|c| c.to_string()).collect(),
            drop: drop.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn capabilities_are_added_then_dropped_as_containerd_does() {
        let default: Vec<String> = DEFAULT_CAPABILITIES.map(str::to_owned).to_vec();
        assert_eq!(capabilities(None, false), default);
        let all: Vec<String> = ALL_CAPABILITIES.map(str::to_owned).to_vec();
        assert_eq!(capabilities(None, true), all);
        let only = capabilities(Some(&caps(&["NET_BIND_SERVICE"], &["ALL"])), false);
        assert_eq!(only, ["CAP_NET_BIND_SERVICE"]);
        let added = capabilities(Some(&caps(&["net_admin", "CAP_SYS_TIME"], &[])), false);
        assert!(added.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(added.contains(&"CAP_SYS_TIME".to_owned()));
        assert_eq!(added.len(), DEFAULT_CAPABILITIES.len() + 2);
        let dropped = capabilities(Some(&caps(&[], &["CHOWN", "NET_RAW"])), false);
        assert!(!dropped.contains(&"CAP_CHOWN".to_owned()));
        assert!(!dropped.contains(&"CAP_NET_RAW".to_owned()));
        assert_eq!(dropped.len(), DEFAULT_CAPABILITIES.len() - 2);
        // A drop wins over an add of the same; ALL then a drop.
        let both = capabilities(Some(&caps(&["NET_ADMIN"], &["NET_ADMIN"])), false);
        assert!(!both.contains(&"CAP_NET_ADMIN".to_owned()));
        let all_but = capabilities(Some(&caps(&["ALL"], &["SYS_ADMIN"])), false);
        assert_eq!(all_but.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!all_but.contains(&"CAP_SYS_ADMIN".to_owned()));
    }

    #[test]
    fn the_other_settings_reach_the_process() {
        let plain = run(None, None, None).unwrap();
        assert_eq!(
            plain,
            ProcessSecurity {
                additional_gids: vec![0],
                ..ProcessSecurity::default()
            }
        );
        let sc = v1::SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        };
        let s = run(None, Some(sc), None).unwrap();
        assert!(s.read_only_root && s.no_new_privileges && !s.privileged);
        let allowed = v1::SecurityContext {
            allow_privilege_escalation: Some(true),
            ..Default::default()
        };
        assert!(!run(None, Some(allowed), None).unwrap().no_new_privileges);
        let privileged = v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
        let s = run(None, Some(privileged), None).unwrap();
        assert!(s.privileged);
        assert_eq!(s.capabilities.len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn seccomp_profiles_come_from_the_container_then_the_pod() {
        let profile = |t: &str| {
            Some(v1::SeccompProfile {
                r#type: t.into(),
                localhost_profile: String::new(),
            })
        };
        let pod_default = v1::PodSecurityContext {
            seccomp_profile: profile("RuntimeDefault"),
            ..Default::default()
        };
        let seccomp = |pod_sc: Option<v1::PodSecurityContext>, sc: Option<v1::SecurityContext>| {
            run(pod_sc, sc, None).unwrap().seccomp
        };
        assert_eq!(seccomp(None, None), Seccomp::Unconfined);
        assert_eq!(
            seccomp(Some(pod_default.clone()), None),
            Seccomp::RuntimeDefault
        );
        let unconfined = v1::SecurityContext {
            seccomp_profile: profile("Unconfined"),
            ..Default::default()
        };
        assert_eq!(
            seccomp(Some(pod_default.clone()), Some(unconfined)),
            Seccomp::Unconfined
        );
        let localhost = v1::SecurityContext {
            seccomp_profile: profile("Localhost"),
            ..Default::default()
        };
        assert_eq!(seccomp(None, Some(localhost)), Seccomp::RuntimeDefault);
        let privileged = v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
        assert_eq!(
            seccomp(Some(pod_default), Some(privileged)),
            Seccomp::Unconfined
        );
    }
}
