//! The agent's log endpoint: masters call it to serve `skiff ctl logs`.
//! Container logs are the files the runc shim writes
//! (`pods/<ns>_<name>_<uid>/<container>/<run>.log`); this reads the current
//! or previous run, optionally only its last lines, and with `follow` keeps
//! sending what is appended until the container is restarted or the pod
//! goes away.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::{LogChunk, PodLogsRequest};
use skiff_proto::node::agent_logs_server::AgentLogs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::pods::layout::PodLayout;

/// Serves container logs from the files under the data dir.
#[derive(Debug, Clone)]
pub struct LogService {
    layout: Arc<PodLayout>,
    shutdown: CancellationToken,
}

impl LogService {
    pub fn new(layout: Arc<PodLayout>, shutdown: CancellationToken) -> LogService {
        LogService { layout, shutdown }
    }
}

/// Runs of a container's log, oldest first.
fn runs(dir: &Path) -> Vec<(i32, PathBuf)> {
    let mut out: Vec<(i32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let run = name.strip_suffix(".log")?.parse().ok()?;
            Some((run, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The log file a request means, or why there is none.
pub fn find_log(layout: &PodLayout, req: &PodLogsRequest) -> Result<(PathBuf, PathBuf), Status> {
    let prefix = format!("{}_{}_", req.namespace, req.name);
    let pod_dir = std::fs::read_dir(layout.pods_dir())
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .ok_or_else(|| {
            Status::not_found(format!(
                "pod {}/{} has no logs on this node",
                req.namespace, req.name
            ))
        })?;
    let containers: Vec<String> = std::fs::read_dir(&pod_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.path().is_dir() && PodLayout::is_container_dir(&e.file_name().to_string_lossy())
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let container = if req.container.is_empty() {
        match containers.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Status::not_found(format!(
                    "pod {} has not started a container yet",
                    req.name
                )))
            }
            many => {
                return Err(Status::invalid_argument(format!(
                    "pod {} has several containers; choose one with -c: {}",
                    req.name,
                    many.join(", ")
                )))
            }
        }
    } else if containers.contains(&req.container) {
        req.container.clone()
    } else {
        return Err(Status::not_found(format!(
            "container {} of pod {} has no logs (containers: {})",
            req.container,
            req.name,
            containers.join(", ")
        )));
    };
    let dir = pod_dir.join(&container);
    let all = runs(&dir);
    let chosen = if req.previous {
        all.iter().rev().nth(1)
    } else {
        all.last()
    };
    let (_, path) = chosen.ok_or_else(|| {
        Status::not_found(if req.previous {
            format!(
                "container {container} of pod {} has no previous run",
                req.name
            )
        } else {
            format!("container {container} of pod {} has no log yet", req.name)
        })
    })?;
    Ok((dir, path.clone()))
}

/// Where the last `n` lines of `data` start.
pub fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let mut seen = 0;
    // A trailing newline ends the last line; it does not start a new one.
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// One request's read of a log file.
struct LogReader {
    dir: PathBuf,
    path: PathBuf,
    file: tokio::fs::File,
    /// Where reading the file goes on from.
    offset: u64,
    /// With a tail, the last lines as read when the request came: lines
    /// written while they are sent are not added to a `--tail=2` (they are
    /// to a followed one, after it).
    tail: Option<Vec<u8>>,
    follow: bool,
}

impl LogReader {
    async fn open(
        dir: PathBuf,
        path: PathBuf,
        tail_lines: Option<i64>,
        follow: bool,
    ) -> Result<LogReader, Status> {
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("opening {}: {e}", path.display())))?;
        let mut offset = 0u64;
        let mut tail = None;
        if let Some(n) = tail_lines.filter(|n| *n >= 0) {
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .await
                .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
            offset = data.len() as u64;
            let start = tail_offset(&data, usize::try_from(n).unwrap_or(usize::MAX));
            tail = Some(data.split_off(start));
        }
        Ok(LogReader {
            dir,
            path,
            file,
            offset,
            tail,
            follow,
        })
    }

    /// Sends the log; when following, keeps sending what is appended until
    /// the container restarts, the pod goes, the caller leaves or the agent
    /// stops.
    async fn send(
        mut self,
        tx: mpsc::Sender<Result<LogChunk, Status>>,
        shutdown: CancellationToken,
    ) {
        let run_count = runs(&self.dir).len();
        if let Some(tail) = self.tail.take() {
            for chunk in tail.chunks(64 << 10) {
                let chunk = LogChunk {
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if !self.follow {
                return;
            }
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let len = tokio::fs::metadata(&self.path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if len < self.offset {
                // Rotated: the file was truncated under us.
                self.offset = 0;
            }
            if self.file.seek(SeekFrom::Start(self.offset)).await.is_err() {
                return;
            }
            loop {
                match self.file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        self.offset += n as u64;
                        let chunk = LogChunk {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
            // Following ends when the container restarts or the pod goes.
            if !self.follow || !self.dir.exists() || runs(&self.dir).len() != run_count {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

#[tonic::async_trait]
impl AgentLogs for LogService {
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn logs(
        &self,
        request: Request<PodLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        // Only masters (relaying for an admin) and admins read logs here.
        skiff_security::PeerInfo::require(
            &request,
            skiff_security::Identity::is_privileged,
            "read this node's logs",
        )?;
        let req = request.into_inner();
        let (dir, path) = find_log(&self.layout, &req)?;
        let reader = LogReader::open(dir, path, req.tail_lines, req.follow).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(reader.send(tx, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `line` at the end of the log, as the container would.
    fn append(path: &Path, line: &str) {
        let mut log = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut log, line.as_bytes()).unwrap();
    }

    /// Everything a reader sends, as text.
    async fn read_all(reader: LogReader) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let sending = tokio::spawn(reader.send(tx, CancellationToken::new()));
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk.unwrap().data);
        }
        sending.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn a_tail_is_the_last_lines_when_asked_and_nothing_written_after() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("0.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let dir = tmp.path().to_path_buf();
        let tail = LogReader::open(dir.clone(), path.clone(), Some(2), false)
            .await
            .unwrap();
        let whole = LogReader::open(dir.clone(), path.clone(), None, false)
            .await
            .unwrap();
        // A line the container writes while the answers are on their way.
        append(&path, "d\n");
        assert_eq!(read_all(tail).await, "b\nc\n");
        assert_eq!(read_all(whole).await, "a\nb\nc\nd\n");
    }

    #[tokio::test]
    async fn a_followed_tail_goes_on_with_what_is_written_after() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("0.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let reader = LogReader::open(tmp.path().to_path_buf(), path.clone(), Some(1), true)
            .await
            .unwrap();
        append(&path, "d\n");
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let sending = tokio::spawn(reader.send(tx, shutdown.clone()));
        let mut got = Vec::new();
        while got != b"c\nd\n" {
            let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the appended line within 10 s")
                .expect("the reader still sending")
                .unwrap();
            got.extend(chunk.data);
            assert!(
                b"c\nd\n".starts_with(&got),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
        }
        shutdown.cancel();
        sending.await.unwrap();
    }

    #[test]
    fn tail_finds_the_last_lines() {
        let data = b"a\nb\nc\n";
        assert_eq!(&data[tail_offset(data, 1)..], b"c\n");
        assert_eq!(&data[tail_offset(data, 2)..], b"b\nc\n");
        assert_eq!(&data[tail_offset(data, 10)..], b"a\nb\nc\n");
        let unterminated = b"a\nb";
        assert_eq!(&unterminated[tail_offset(unterminated, 1)..], b"b");
        assert_eq!(tail_offset(data, 0), data.len());
    }

    #[test]
    fn previous_and_current_runs_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let dir = layout.pod_dir_for("default", "web", "u1").join("c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), "zero").unwrap();
        std::fs::write(dir.join("1.log"), "one").unwrap();
        let mut req = PodLogsRequest {
            namespace: "default".into(),
            name: "web".into(),
            ..Default::default()
        };
        assert_eq!(find_log(&layout, &req).unwrap().1, dir.join("1.log"));
        req.previous = true;
        assert_eq!(find_log(&layout, &req).unwrap().1, dir.join("0.log"));
        req.container = "other".into();
        let err = find_log(&layout, &req).unwrap_err();
        assert!(err.message().contains("containers: c"), "{}", err.message());
    }
}
