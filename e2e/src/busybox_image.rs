//! A tiny OCI image built in memory from the static busybox binary, for
//! the runtime tests: no docker, no network. One uncompressed layer holds
//! `/bin/busybox` and symlinks to the applets the tests use, the usual
//! top-level dirs, `/etc/passwd` and `/etc/group`, and `/www/index.html`
//! (`hello from skiff\n`) for `httpd -f -h /www`. The image runs `sh` with
//! `PATH=/bin` (another command with [`BusyboxImage::with_command`]), as
//! root unless [`BusyboxImage::with_user`] names a `USER`.
//!
//! Every entry has mtime 0 and owner 0:0 and all JSON has sorted keys, so
//! the digests only change when `/bin/busybox` does. The image can be
//! written as an OCI image-layout archive (what `skopeo copy
//! oci-archive:` and `ctr images import` read) or as a `docker save`
//! archive.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The contents of `/www/index.html` in the image.
pub const INDEX_HTML: &str = "hello from skiff\n";

/// The applets linked into `/bin` (besides `busybox` itself).
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "httpd", "wget", "ls", "true", "false", "nc", "dd", "head", "ps",
    "ip", "hostname", "env", "tail", "nslookup", "grep", "tar", "mkdir", "id",
];

const PASSWD: &str = "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The image's blobs and their digests (`sha256:<hex>`).
#[derive(Clone)]
pub struct BusyboxImage {
    /// The rootfs layer, an uncompressed tar (so its digest is its diff id).
    pub layer: Vec<u8>,
    pub layer_digest: String,
    /// The OCI image config.
    pub config: Vec<u8>,
    pub config_digest: String,
    /// The OCI image manifest (schemaVersion 2).
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl BusyboxImage {
    /// Builds the image from [`BUSYBOX`].
    pub fn build() -> anyhow::Result<BusyboxImage> {
        BusyboxImage::build_from(Path::new(BUSYBOX))
    }

    /// Builds the image from a statically linked busybox at `busybox`.
    pub fn build_from(busybox: &Path) -> anyhow::Result<BusyboxImage> {
        let bin = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
        ensure_static(&bin).with_context(|| {
            format!(
                "{} cannot run alone in a container (install busybox-static)",
                busybox.display()
            )
        })?;

        let layer = rootfs_layer(&bin)?;
        let layer_digest = sha256_digest(&layer);

        let config = serde_json::to_vec(&json!({
            "architecture": arch(),
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin"],
                "Cmd": ["sh"],
                "WorkingDir": "/",
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [layer_digest],
            },
        }))?;

        BusyboxImage::assemble(layer, layer_digest, config)
    }

    /// The image of `layer` with `config`: its manifest and digests.
    fn assemble(
        layer: Vec<u8>,
        layer_digest: String,
        config: Vec<u8>,
    ) -> anyhow::Result<BusyboxImage> {
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": layer_digest,
                "size": layer.len(),
            }],
        }))?;
        let manifest_digest = sha256_digest(&manifest);

        Ok(BusyboxImage {
            layer,
            layer_digest,
            config,
            config_digest,
            manifest,
            manifest_digest,
        })
    }

    /// The same image, its config saying it runs as `user` (its `USER`,
    /// a name of its `/etc/passwd` or a number).
    pub fn with_user(&self, user: &str) -> anyhow::Result<BusyboxImage> {
        let mut config: Value = serde_json::from_slice(&self.config)?;
        config["config"]["User"] = json!(user);
        let config = serde_json::to_vec(&config)?;
        BusyboxImage::assemble(self.layer.clone(), self.layer_digest.clone(), config)
    }

    /// The same image, its config running `command` (its `Cmd`) in a
    /// container that names no command of its own.
    pub fn with_command(&self, command: &[&str]) -> anyhow::Result<BusyboxImage> {
        anyhow::ensure!(!command.is_empty(), "an image command needs a program");
        let mut config: Value = serde_json::from_slice(&self.config)?;
        config["config"]["Cmd"] = json!(command);
        let config = serde_json::to_vec(&config)?;
        BusyboxImage::assemble(self.layer.clone(), self.layer_digest.clone(), config)
    }

    /// Writes an OCI image-layout archive: `oci-layout`, `index.json` (one
    /// manifest, annotated with `io.containerd.image.name` = `image_name`,
    /// e.g. `docker.io/library/busybox:e2e`, and
    /// `org.opencontainers.image.ref.name` = its tag) and
    /// `blobs/sha256/<hex>` for the manifest, config and layer.
    pub fn write_oci_archive(&self, path: &Path, image_name: &str) -> anyhow::Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": self.manifest_digest,
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": image_name,
                    "org.opencontainers.image.ref.name": tag_of(image_name),
                },
            }],
        });
        let mut tar = TarWriter::new();
        tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.file("index.json", 0o644, &serde_json::to_vec(&index)?)?;
        tar.dir("blobs", 0o755)?;
        tar.dir("blobs/sha256", 0o755)?;
        for (digest, blob) in [
            (&self.manifest_digest, &self.manifest),
            (&self.config_digest, &self.config),
            (&self.layer_digest, &self.layer),
        ] {
            tar.file(&format!("blobs/sha256/{}", hex_of(digest)), 0o644, blob)?;
        }
        write_archive(path, tar)
    }

    /// Writes a `docker save` archive: `manifest.json` (`RepoTags` =
    /// `[repo_tag]`, e.g. `busybox:e2e`), the config at `<hex>.json`, the
    /// layer at `<layer hex>/layer.tar` and the legacy `repositories` file.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> anyhow::Result<()> {
        let config_hex = hex_of(&self.config_digest);
        let layer_hex = hex_of(&self.layer_digest);
        let manifest = json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [repo_tag],
            "Layers": [format!("{layer_hex}/layer.tar")],
        }]);
        let (repo, tag) = split_repo_tag(repo_tag);
        let mut tags = Map::new();
        tags.insert(tag.to_string(), Value::String(layer_hex.to_string()));
        let mut repositories = Map::new();
        repositories.insert(repo.to_string(), Value::Object(tags));

        let mut tar = TarWriter::new();
        tar.file("manifest.json", 0o644, &serde_json::to_vec(&manifest)?)?;
        tar.file(&format!("{config_hex}.json"), 0o644, &self.config)?;
        tar.dir(layer_hex, 0o755)?;
        tar.file(&format!("{layer_hex}/layer.tar"), 0o644, &self.layer)?;
        tar.file(
            "repositories",
            0o644,
            &serde_json::to_vec(&Value::Object(repositories))?,
        )?;
        write_archive(path, tar)
    }
}

/// This machine's architecture as Go (and so OCI) names it.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other, // arm, riscv64, s390x, ... are spelled alike
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The hex part of a `sha256:<hex>` digest.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The tag of an image name: what follows the last `:` after the last `/`,
/// or `latest`.
fn tag_of(name: &str) -> &str {
    split_repo_tag(name).1
}

/// `busybox:e2e` -> (`busybox`, `e2e`); `localhost:5000/busybox` ->
/// (`localhost:5000/busybox`, `latest`).
fn split_repo_tag(name: &str) -> (&str, &str) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "latest"),
    }
}

/// The rootfs layer tar.
fn rootfs_layer(busybox: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tar = TarWriter::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        tar.dir(dir, mode)?;
    }
    tar.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    tar.file("etc/group", 0o644, GROUP.as_bytes())?;
    tar.file("www/index.html", 0o644, INDEX_HTML.as_bytes())?;
    tar.finish()
}

/// Fails if `elf` asks for a program interpreter (is dynamically linked).
/// Only 64-bit little-endian ELF is inspected; anything else passes.
fn ensure_static(elf: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        elf.len() >= 64 && elf.starts_with(b"\x7fELF"),
        "not an ELF executable"
    );
    if elf[4] != 2 || elf[5] != 1 {
        return Ok(());
    }
    let read = |at: usize, len: usize| -> u64 {
        elf.get(at..at + len).map_or(0, |b| {
            b.iter()
                .rev()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
        })
    };
    const PT_INTERP: u64 = 3;
    let phoff = read(32, 8) as usize;
    let phentsize = read(54, 2) as usize;
    let phnum = read(56, 2) as usize;
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        if at.saturating_add(4) > elf.len() {
            break;
        }
        anyhow::ensure!(
            read(at, 4) != PT_INTERP,
            "dynamically linked (it has an ELF interpreter)"
        );
    }
    Ok(())
}

/// A deterministic in-memory tar: ustar headers, mtime 0, owner 0:0.
struct TarWriter(tar::Builder<Vec<u8>>);

impl TarWriter {
    fn new() -> TarWriter {
        TarWriter(tar::Builder::new(Vec::new()))
    }

    fn entry(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(path)
            .with_context(|| format!("tar path {path}"))?;
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header
                .set_link_name(link)
                .with_context(|| format!("tar link {path} -> {link}"))?;
        }
        header.set_cksum();
        self.0
            .append(&header, data)
            .with_context(|| format!("tar entry {path}"))
    }

    fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        self.entry(path, tar::EntryType::Directory, mode, &[], None)
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.entry(path, tar::EntryType::Regular, mode, data, None)
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        self.entry(path, tar::EntryType::Symlink, 0o777, &[], Some(target))
    }

    fn finish(self) -> anyhow::Result<Vec<u8>> {
        self.0.into_inner().context("finish tar")
    }
}

fn write_archive(path: &Path, tar: TarWriter) -> anyhow::Result<()> {
    let bytes = tar.finish()?;
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repo_and_tag() {
        assert_eq!(split_repo_tag("busybox:e2e"), ("busybox", "e2e"));
        assert_eq!(
            split_repo_tag("docker.io/library/busybox:e2e"),
            ("docker.io/library/busybox", "e2e")
        );
        assert_eq!(
            split_repo_tag("localhost:5000/busybox"),
            ("localhost:5000/busybox", "latest")
        );
        assert_eq!(tag_of("127.0.0.1:5000/a/b:v1"), "v1");
    }

    #[test]
    fn digests_are_stable() {
        if !Path::new(BUSYBOX).is_file() {
            eprintln!("skipping: no {BUSYBOX}");
            return;
        }
        let a = BusyboxImage::build().unwrap();
        let b = BusyboxImage::build().unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.layer_digest, sha256_digest(&a.layer));
        let config: Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], a.layer_digest.as_str());
        assert_eq!(config["architecture"], arch());
    }

    #[test]
    fn with_command_changes_only_the_configs_cmd() {
        if !Path::new(BUSYBOX).is_file() {
            eprintln!("skipping: no {BUSYBOX}");
            return;
        }
        let plain = BusyboxImage::build().unwrap();
        let web = plain.with_command(&["httpd", "-f"]).unwrap();
        let config: Value = serde_json::from_slice(&web.config).unwrap();
        assert_eq!(config["config"]["Cmd"], json!(["httpd", "-f"]));
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin"]));
        assert_eq!(web.layer_digest, plain.layer_digest);
        assert_ne!(web.config_digest, plain.config_digest);
        let manifest: Value = serde_json::from_slice(&web.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], web.config_digest.as_str());
        assert!(plain.with_command(&[]).is_err());
    }
}
