//! Auto-deployed manifests, as k3s does them: YAML or JSON files in
//! `<data-dir>/manifests/` are applied when this master becomes leader and
//! again whenever a file changes (checked every few seconds). Applying is
//! create-or-update through the same validated write path as the API, so a
//! file that is re-applied unchanged changes nothing. A file that does not
//! parse or does not validate is logged by name and retried when it
//! changes; the others are applied regardless. Removing a file leaves its
//! objects in place.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use tokio_util::sync::CancellationToken;

use crate::controllers::Context;
use crate::writer::{self, DEFAULT_NAMESPACE};
use skiff_objects::generic;
use skiff_objects::manifest::{parse_manifest, ManifestError};
use skiff_objects::{Kind, ObjectExt};

/// How often the directory is looked at.
const POLL: Duration = Duration::from_secs(3);

/// Why a manifest file was not (wholly) applied; it is tried again when
/// it changes.
#[derive(Debug, thiserror::Error)]
pub enum AutoDeployError {
    #[error(transparent)]
    Manifest(Box<ManifestError>),
    #[error("{file}: applying {what}: {source}")]
    Apply {
        file: String,
        what: String,
        #[source]
        source: Box<writer::Error>,
    },
}

impl From<ManifestError> for AutoDeployError {
    fn from(e: ManifestError) -> Self {
        AutoDeployError::Manifest(Box::new(e))
    }
}

fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    files
}

fn fingerprint(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Creates the object, or updates the stored one to match it.
async fn apply(ctx: &Context, mut object: Object) -> writer::Result<()> {
    let kind = object.kind()?;
    if kind.namespaced() {
        if let Ok(meta) = object.meta_mut() {
            if meta.namespace.is_empty() {
                meta.namespace = DEFAULT_NAMESPACE.to_owned();
            }
        }
    }
    match ctx.writer.create(object.clone()).await {
        Err(e) if e.is_already_exists() => {}
        other => return other.map(|_| ()),
    }
    let meta = object.meta().clone();
    let mut conflicts = 0;
    loop {
        let Some(current) = ctx.store.get(kind, &meta.namespace, &meta.name)? else {
            return Ok(());
        };
        let mut desired = object.clone();
        if let Ok(m) = desired.meta_mut() {
            m.resource_version = current.meta().resource_version.clone();
        }
        if let (Some(Body::Generic(stored)), Some(Body::Generic(sent))) =
            (&current.kind, &mut desired.kind)
        {
            generic::keep_generated(kind, stored, sent);
        }
        match ctx.writer.update(desired).await {
            Ok(_) => return Ok(()),
            // Someone else wrote it meanwhile; read it again, a few times.
            Err(e) if e.is_conflict() && conflicts < 4 => conflicts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Applies one file; returns how many objects it holds.
async fn apply_file(ctx: &Context, path: &Path, text: &str) -> Result<usize, AutoDeployError> {
    let file = path.display().to_string();
    let manifest = parse_manifest(&file, text, true)?;
    let mut objects = manifest.objects;
    // Namespaces first, so what is in them can be created in the same pass.
    objects.sort_by_key(|o| o.kind().ok() != Some(Kind::Namespace));
    let count = objects.len();
    for object in objects {
        let what = format!(
            "{} {}",
            object.kind().map(|k| k.name()).unwrap_or("object"),
            object.meta().name
        );
        apply(ctx, object)
            .await
            .map_err(|source| AutoDeployError::Apply {
                file: file.clone(),
                what,
                source: Box::new(source),
            })?;
    }
    Ok(count)
}

/// Applies the directory's manifests until `shutdown` (leader only).
pub async fn run(ctx: Context, dir: PathBuf, shutdown: CancellationToken) {
    let mut applied: HashMap<PathBuf, u64> = HashMap::new();
    loop {
        for path in manifest_files(&dir) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let print = fingerprint(&text);
            if applied.get(&path) == Some(&print) {
                continue;
            }
            match apply_file(&ctx, &path, &text).await {
                Ok(n) => {
                    tracing::info!(file = %path.display(), objects = n, "applied auto-deploy manifest")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "auto-deploy manifest not applied")
                }
            }
            // A broken file is retried when it changes, not every pass.
            applied.insert(path, print);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
