//! Termination messages, as the kubelet keeps them: each run of a
//! container gets an empty file, writable by any user, bind-mounted at its
//! `terminationMessagePath` (`/dev/termination-log` unless set); when the
//! run ends, what it wrote there (at most 4 KiB) is the `message` of its
//! terminated state. With `terminationMessagePolicy:
//! FallbackToLogsOnError`, a run that failed and wrote nothing there gets
//! the end of its log instead (at most 80 lines and 2 KiB).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use skiff_proto::v1;

use crate::pods::layout::PodLayout;
use crate::runtime::spec::ContainerMount;

/// The most of a termination message kept.
const MESSAGE_MAX: u64 = 4096;
/// The end of a log a fallback message takes.
const FALLBACK_LINES: usize = 80;
const FALLBACK_MAX: u64 = 2048;

/// Makes the empty message file of `container`'s next run; the mount that
/// puts it at the container's `terminationMessagePath` (none when the
/// path is unset).
pub(super) fn prepare(
    layout: &PodLayout,
    pod: &v1::Pod,
    container: &v1::Container,
) -> io::Result<Option<ContainerMount>> {
    if container.termination_message_path.is_empty() {
        return Ok(None);
    }
    let file = layout.termination_log(pod, &container.name);
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&file, "")?;
    // Whoever the container runs as may write it.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666))?;
    Ok(Some(ContainerMount {
        destination: container.termination_message_path.clone(),
        source: file.display().to_string(),
        read_only: false,
        host_to_container: false,
    }))
}

/// The message of `container`'s run number `run`, which exited with `code`.
pub(super) fn message(
    layout: &PodLayout,
    pod: &v1::Pod,
    container: &v1::Container,
    run: i32,
    code: u32,
) -> String {
    let file = layout.termination_log(pod, &container.name);
    let written = read_head(&file, MESSAGE_MAX).unwrap_or_default();
    let fallback = container.termination_message_policy == "FallbackToLogsOnError";
    if written.trim().is_empty() && code != 0 && fallback {
        let log = layout.log_file(pod, &container.name, run);
        return read_tail(&log, FALLBACK_MAX, FALLBACK_LINES).unwrap_or_default();
    }
    written
}

/// The first `max` bytes of `path`, as text.
fn read_head(path: &Path, max: u64) -> io::Result<String> {
    let mut data = Vec::new();
    fs::File::open(path)?.take(max).read_to_end(&mut data)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// The last `lines` lines of `path`, at most its last `max` bytes.
fn read_tail(path: &Path, max: u64, lines: usize) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    file.seek(SeekFrom::Start(size.saturating_sub(max)))?;
    let mut data = Vec::new();
    file.take(max).read_to_end(&mut data)?;
    let text = String::from_utf8_lossy(&data);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut kept: Vec<&str> = body.rsplit('\n').take(lines).collect();
    kept.reverse();
    if text.ends_with('\n') {
        kept.push("");
    }
    Ok(kept.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "job".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(policy: &str) -> v1::Container {
        v1::Container {
            name: "main".into(),
            termination_message_path: "/dev/termination-log".into(),
            termination_message_policy: policy.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_run_gets_an_empty_file_anyone_may_write() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let (pod, c) = (pod(), container("File"));
        let mount = prepare(&layout, &pod, &c).unwrap().expect("a mount");
        assert_eq!(mount.destination, "/dev/termination-log");
        assert!(!mount.read_only);
        let file = layout.termination_log(&pod, "main");
        assert_eq!(mount.source, file.display().to_string());
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        fs::write(&file, "done").unwrap();
        prepare(&layout, &pod, &c).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "",
            "emptied for the next run"
        );
        let unset = v1::Container {
            termination_message_path: String::new(),
            ..c
        };
        assert_eq!(prepare(&layout, &pod, &unset).unwrap(), None);
    }

    #[test]
    fn the_message_is_the_file_else_on_failure_the_end_of_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let pod = pod();
        let file_policy = container("File");
        let fallback = container("FallbackToLogsOnError");
        prepare(&layout, &pod, &file_policy).unwrap();
        let log = layout.log_file(&pod, "main", 2);
        let lines: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
        fs::write(&log, lines.join("\n") + "\n").unwrap();
        // Nothing written: the log's end only under the fallback policy
        // and only for a failure.
        assert_eq!(message(&layout, &pod, &file_policy, 2, 1), "");
        assert_eq!(message(&layout, &pod, &fallback, 2, 0), "");
        let tail = message(&layout, &pod, &fallback, 2, 1);
        assert!(tail.starts_with("line 21\n"), "{tail}");
        assert!(tail.ends_with("line 100\n"), "{tail}");
        assert_eq!(tail.lines().count(), 80);
        // What the container wrote wins, cut at 4 KiB.
        let file = layout.termination_log(&pod, "main");
        fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(message(&layout, &pod, &fallback, 2, 1).len(), 4096);
        fs::write(&file, "migration 7 failed").unwrap();
        assert_eq!(
            message(&layout, &pod, &file_policy, 2, 1),
            "migration 7 failed"
        );
        // A long log: 2 KiB at most.
        fs::write(&log, "y".repeat(10_000)).unwrap();
        fs::write(&file, "").unwrap();
        assert_eq!(message(&layout, &pod, &fallback, 2, 1).len(), 2048);
    }
}
