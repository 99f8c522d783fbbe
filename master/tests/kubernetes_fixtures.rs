//! Well-known Kubernetes manifests (from the Kubernetes docs, written out
//! here as fixtures) read unchanged: strictly, with no field dropped,
//! renamed or added on the way back out.

use skiff_objects::manifest::{parse_manifest, to_json_value};
use skiff_objects::ObjectExt;

fn fixtures() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn kubernetes_documentation_manifests_read_strictly_and_round_trip() {
    let all = fixtures();
    assert!(all.len() >= 6, "fixtures missing: {}", all.len());
    let mut objects = 0;
    for (name, text) in all {
        let manifest = parse_manifest(&name, &text, true)
            .unwrap_or_else(|e| panic!("{name} does not read: {e}"));
        assert!(
            manifest.warnings.is_empty(),
            "{name}: {:?}",
            manifest.warnings
        );
        let documents: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect();
        assert_eq!(documents.len(), manifest.objects.len(), "{name}");
        for (object, original) in manifest.objects.iter().zip(documents) {
            assert_eq!(
                to_json_value(object),
                original,
                "{name}: {} changed on the way through",
                object.display_name()
            );
            objects += 1;
        }
    }
    assert!(objects >= 8);
}
