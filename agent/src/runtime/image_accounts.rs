//! The users and groups of an image, as its `/etc/passwd` and `/etc/group`
//! list them, and who a container runs as: a user spec (`1000`, `app`,
//! `app:staff`, `1000:50`, the image's `USER` or the pod's `runAsUser`)
//! resolved the way containerd resolves it for Kubernetes. A numeric user
//! takes its primary group from the user's `/etc/passwd` entry (0 without
//! one); a name must be listed; a group given by name must be in
//! `/etc/group`; and the process also gets every group of `/etc/group`
//! that lists the user by name, its primary group among them (as
//! containerd does since the fix for CVE-2023-25173). Nothing here reads
//! the image: the runtime hands over the two files' text.

/// An image's `/etc/passwd` and `/etc/group`, empty when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageAccounts {
    pub passwd: String,
    pub group: String,
}

/// Who a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary group, then the groups of
    /// `/etc/group` that list the user by name.
    pub additional_gids: Vec<u32>,
}

/// A user spec the image's files cannot resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {user:?} is not in the image's /etc/passwd; use a numeric runAsUser or add the user to the image")]
    NoSuchUser { user: String },
    #[error("group {group:?} is not in the image's /etc/group; use a numeric runAsGroup or add the group to the image")]
    NoSuchGroup { group: String },
}

/// One line of `/etc/passwd`.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

/// The well-formed entries of `/etc/passwd` (`name:x:uid:gid:...`);
/// comments, NIS lines and malformed lines are skipped, as libc does.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.trim_end().split(':');
        let name = fields.next()?;
        if name.is_empty() || name.starts_with('#') || name.starts_with('+') {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    })
}

/// The well-formed entries of `/etc/group` (`name:x:gid:member,member`).
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.trim_end().split(':');
        let name = fields.next()?;
        if name.is_empty() || name.starts_with('#') || name.starts_with('+') {
            return None;
        }
        let _password = fields.next()?;
        let gid = fields.next()?.parse().ok()?;
        let members = fields.next().unwrap_or("");
        Some(GroupEntry { name, gid, members })
    })
}

impl ImageAccounts {
    /// Resolves `user` (`user` or `user:group`, each a number or a name).
    pub fn resolve(&self, user: &str) -> Result<ProcessUser, UserError> {
        let (user_part, group_part) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
            None => (user, None),
        };
        let user_part = if user_part.is_empty() { "0" } else { user_part };
        let entry = match user_part.parse::<u32>() {
            Ok(uid) => passwd_entries(&self.passwd).find(|e| e.uid == uid),
            Err(_) => passwd_entries(&self.passwd).find(|e| e.name == user_part),
        };
        let (uid, name, primary) = match (user_part.parse::<u32>(), entry) {
            (Ok(uid), Some(e)) => (uid, Some(e.name), e.gid),
            // A number the image does not list: group 0, as containerd.
            (Ok(uid), None) => (uid, None, 0),
            (Err(_), Some(e)) => (e.uid, Some(e.name), e.gid),
            (Err(_), None) => {
                return Err(UserError::NoSuchUser {
                    user: user_part.to_owned(),
                })
            }
        };
        let gid = match group_part {
            None => primary,
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(&self.group)
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| UserError::NoSuchGroup {
                        group: group.to_owned(),
                    })?,
            },
        };
        let mut additional_gids = vec![gid];
        if let Some(name) = name {
            let listed = group_entries(&self.group)
                .filter(|g| g.name != name && g.members.split(',').any(|m| m.trim() == name))
                .map(|g| g.gid);
            for group in listed {
                if !additional_gids.contains(&group) {
                    additional_gids.push(group);
                }
            }
        }
        Ok(ProcessUser {
            uid,
            gid,
            additional_gids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpine() -> ImageAccounts {
        ImageAccounts {
            passwd: "root:x:0:0:root:/root:/bin/ash\n\
                     # a comment\n\
                     bin:x:1:1:bin:/bin:/sbin/nologin\n\
                     broken line\n\
                     app:x:1000:1000:App:/home/app:/bin/sh\n\
                     nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
                .into(),
            group: "root:x:0:root\n\
                    bin:x:1:root,bin,daemon\n\
                    wheel:x:10:root\n\
                    app:x:1000:\n\
                    staff:x:50:app, other\n\
                    video:x:27:app\n"
                .into(),
        }
    }

    fn user(uid: u32, gid: u32, additional: &[u32]) -> ProcessUser {
        ProcessUser {
            uid,
            gid,
            additional_gids: additional.to_vec(),
        }
    }

    #[test]
    fn user_specs_resolve_as_containerd_resolves_them() {
        let accounts = alpine();
        let cases = [
            // No user: root, with the groups that list root.
            ("", user(0, 0, &[0, 1, 10])),
            ("0", user(0, 0, &[0, 1, 10])),
            ("root", user(0, 0, &[0, 1, 10])),
            // A name: its uid and primary group, and its other groups.
            ("app", user(1000, 1000, &[1000, 50, 27])),
            // A number the image lists: the same.
            ("1000", user(1000, 1000, &[1000, 50, 27])),
            // A number it does not list: group 0, no other groups.
            ("4242", user(4242, 0, &[0])),
            // A group given: it replaces the primary one.
            ("app:staff", user(1000, 50, &[50, 27])),
            ("1000:3000", user(1000, 3000, &[3000, 50, 27])),
            ("4242:3000", user(4242, 3000, &[3000])),
            ("nobody", user(65534, 65534, &[65534])),
        ];
        for (spec, expected) in cases {
            assert_eq!(accounts.resolve(spec), Ok(expected), "{spec:?}");
        }
    }

    #[test]
    fn names_the_image_does_not_list_are_errors_naming_them() {
        let accounts = alpine();
        let err = accounts.resolve("postgres").unwrap_err();
        assert_eq!(
            err,
            UserError::NoSuchUser {
                user: "postgres".into()
            }
        );
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
        let err = accounts.resolve("app:docker").unwrap_err();
        assert_eq!(
            err,
            UserError::NoSuchGroup {
                group: "docker".into()
            }
        );
        // An image without the files: numbers only.
        let empty = ImageAccounts::default();
        assert_eq!(empty.resolve("1000"), Ok(user(1000, 0, &[0])));
        assert_eq!(empty.resolve("1000:1000"), Ok(user(1000, 1000, &[1000])));
        assert!(empty.resolve("app").is_err());
    }
}
