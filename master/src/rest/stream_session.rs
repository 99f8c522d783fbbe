//! What exec, attach and port-forward sessions share whatever carries them
//! (WebSocket channels in `pod_streams`, SPDY streams in `spdy_streams`):
//! which of exec and attach a command stream is ([`CommandSession`]: the
//! same streams, the same client protocol), the `Status` written on the
//! error channel or stream as the kubelet writes it, and the queued
//! WebSocket frame writer (small frames queued together go out in one
//! write).

use serde_json::{json, Value};
use skiff_proto::api::{ExecInput, ExecOutput, ExecStart};
use skiff_security::Identity;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Code, Status};

use super::websocket;
use crate::api::pod_sessions::SessionOutput;
use crate::api::ApiService;

/// The two sessions kubectl runs over the same streams (stdin, stdout,
/// stderr, the error channel, resizes): exec runs a command; attach joins
/// the container's own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommandSession {
    Exec,
    Attach,
}

impl CommandSession {
    /// The subresource's name.
    pub(super) fn name(self) -> &'static str {
        match self {
            CommandSession::Exec => "exec",
            CommandSession::Attach => "attach",
        }
    }

    /// Opens the session through the API service (authorization, the
    /// session log, the relay to the agent).
    pub(super) async fn open<S>(
        self,
        api: &ApiService,
        identity: &Identity,
        start: ExecStart,
        input: S,
    ) -> Result<SessionOutput<ExecOutput>, Status>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        match self {
            CommandSession::Exec => api.open_exec(identity, start, input).await,
            CommandSession::Attach => api.open_attach(identity, start, input).await,
        }
    }

    /// The error channel's `Status` for the session's last message: exec's
    /// exit code as the kubelet writes it; an attach that ends is a
    /// success, as the kubelet's (kubectl reads the container's exit code
    /// from the pod).
    pub(super) fn final_status(self, code: i32, command: &[String]) -> Value {
        match self {
            CommandSession::Exec => exit_status(code, command),
            CommandSession::Attach => exit_status(0, command),
        }
    }
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
