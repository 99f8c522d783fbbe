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
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("opening {}: {e}", path.display())))?;
        let mut start = 0u64;
        if let Some(n) = req.tail_lines.filter(|n| *n >= 0) {
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            start = tail_offset(&data, n as usize) as u64;
        }
        let (tx, rx) = mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        let follow = req.follow;
        tokio::spawn(async move {
            let mut offset = start;
            let run_count = runs(&dir).len();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let len = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len < offset {
                    // Rotated: the file was truncated under us.
                    offset = 0;
                }
                if file.seek(SeekFrom::Start(offset)).await.is_err() {
                    return;
                }
                loop {
                    match file.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            offset += n as u64;
                            if tx
                                .send(Ok(LogChunk {
                                    data: buf[..n].to_vec(),
                                }))
                                .await
                                .is_err()
                            {
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
                if !follow || !dir.exists() || runs(&dir).len() != run_count {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
