//! Image references (`[registry/]repository[:tag][@digest]`), parsed by
//! hand with Docker's normalisation: `busybox` is
//! `docker.io/library/busybox:latest`. (oci-spec's parser uses a regex
//! whose per-thread caches kept most of a megabyte each for the life of the
//! agent.)

const DOCKER_HUB: &str = "docker.io";
const NAME_MAX: usize = 255;

/// Which part of an image reference is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("digest {digest:?} is not algorithm:hex (for example sha256: and 64 hex digits)")]
    Digest { digest: String },
    #[error("tag {tag:?} is not valid: use letters, digits, '_', '.' and '-', at most 128")]
    Tag { tag: String },
    #[error("no repository name (want [registry/]repository[:tag][@digest])")]
    NoRepository,
    #[error("name longer than {NAME_MAX} characters")]
    TooLong,
    #[error("registry {registry:?} is not a host[:port]")]
    Registry { registry: String },
    #[error("repository component {component:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-'")]
    Component { component: String },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or any number of "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host(.host)*(:port)?`, host labels of letters, digits and inner '-'.
fn domain_ok(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`
fn tag_ok(t: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex` with at least 32 hex digits.
fn digest_ok(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algo_ok = !algorithm.is_empty()
        && algorithm.as_bytes()[0].is_ascii_alphabetic()
        && algorithm
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_+.".contains(&c));
    algo_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

impl ImageRef {
    /// Parses and normalises `text`, saying what is wrong otherwise.
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if !digest_ok(d) {
                    return Err(ReferenceError::Digest {
                        digest: d.to_owned(),
                    });
                }
                (r, Some(d.to_owned()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                let t = &t[1..];
                if !tag_ok(t) {
                    return Err(ReferenceError::Tag { tag: t.to_owned() });
                }
                (n, Some(t.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::NoRepository);
        }
        if name.len() > NAME_MAX {
            return Err(ReferenceError::TooLong);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                if !domain_ok(first) {
                    return Err(ReferenceError::Registry {
                        registry: first.to_owned(),
                    });
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        if let Some(bad) = path.split('/').find(|c| !path_component_ok(c)) {
            return Err(ReferenceError::Component {
                component: bad.to_owned(),
            });
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// What a manifest URL names: the digest when there is one (a tag
    /// beside it is only informative), else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_normalise_like_docker() {
        for (given, whole) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("index.docker.io/user/app", "docker.io/user/app:latest"),
            ("127.0.0.1:5000/busybox:e2e", "127.0.0.1:5000/busybox:e2e"),
            ("localhost/app", "localhost/app:latest"),
            (
                "registry.lan:5000/a/b/c:1.0-rc_1",
                "registry.lan:5000/a/b/c:1.0-rc_1",
            ),
            ("my-reg.io/x__y.z--w", "my-reg.io/x__y.z--w:latest"),
        ] {
            assert_eq!(ImageRef::parse(given).unwrap().whole(), whole, "{given}");
        }
        let pinned = ImageRef::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(
            pinned.whole(),
            format!("docker.io/library/busybox@{DIGEST}")
        );
        let both = ImageRef::parse(&format!("busybox:1@{DIGEST}")).unwrap();
        assert_eq!(
            both.whole(),
            format!("docker.io/library/busybox:1@{DIGEST}")
        );
        // What the registry is asked for: the digest before the tag.
        assert_eq!(pinned.manifest_reference(), DIGEST);
        assert_eq!(both.manifest_reference(), DIGEST);
        let tagged = ImageRef::parse("127.0.0.1:5000/a/b:c").unwrap();
        assert_eq!(tagged.manifest_reference(), "c");
        assert_eq!(
            ImageRef::parse("busybox").unwrap().manifest_reference(),
            "latest"
        );
    }

    #[test]
    fn bad_references_say_which_part_is_wrong() {
        for (given, why) in [
            ("busybox:bad tag", "tag"),
            ("Busybox", "repository component"),
            ("a//b", "repository component"),
            ("app-", "repository component"),
            ("reg.io:port/app", "registry"),
            ("busybox@sha256:short", "digest"),
            ("", "no repository"),
            (":tag", "no repository"),
        ] {
            let err = ImageRef::parse(given).unwrap_err().to_string();
            assert!(err.contains(why), "{given:?}: {err}");
        }
    }
}
