//! What exec and port-forward sessions share whatever carries them
//! (WebSocket channels in `pod_streams`, SPDY streams in `spdy_streams`):
//! the `Status` written on the error channel or stream as the kubelet
//! writes it, the words of a listed header, and the queued WebSocket frame
//! writer (small frames queued together go out in one write).

use http::HeaderMap;
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::websocket;

/// Header values of `name`, split at commas, trimmed.
pub(super) fn header_words(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Small frames queued behind one are written with it, up to this many
/// bytes: one TLS record and one system call for a burst of small frames
/// rather than one each.
const COALESCE: usize = 16 << 10;

/// Writes queued frames until every sender is gone, then closes.
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(mut out) = frames.recv().await {
        while out.len() < COALESCE {
            match frames.try_recv() {
                Ok(next) => out.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        if websocket::write_frame(&mut w, &out).await.is_err() {
            return;
        }
    }
    let _ = websocket::write_frame(&mut w, &websocket::close_frame(1000)).await;
    let _ = w.shutdown().await;
}

/// The error channel's `Status` for an exit code, as the kubelet writes it.
pub(super) fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's `Status` for a session that failed.
pub(super) fn failure_status(status: &Status) -> Value {
    let (code, reason) = match status.code() {
        Code::NotFound => (404, "NotFound"),
        Code::InvalidArgument | Code::FailedPrecondition => (400, "BadRequest"),
        Code::PermissionDenied => (403, "Forbidden"),
        Code::Unavailable => (503, "ServiceUnavailable"),
        _ => (500, "InternalError"),
    };
    json!({
        "metadata": {},
        "status": "Failure",
        "message": status.message(),
        "reason": reason,
        "code": code,
    })
}
