//! systemd's readiness protocol: a `Type=notify` unit starts this process
//! with `$NOTIFY_SOCKET`, and `READY=1` sent there as one datagram says the
//! service is up; `STATUS=<one line>` says what it is doing meanwhile (shown
//! by `systemctl status`). Without the variable (not under systemd) nothing
//! is sent.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `READY=1`) to systemd if it is listening.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send(&path, state)?;
    Ok(true)
}

/// Sends `state` as one datagram to the notify socket at `path` (a file,
/// or an abstract name after `@`).
fn send(path: &OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // An abstract socket name.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Tells systemd the service is ready; logs instead of failing.
pub fn ready() {
    match notify("READY=1") {
        Ok(true) => tracing::info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
}

/// Tells systemd what the service is doing (`systemctl status` shows it
/// until the next one); logs instead of failing.
pub fn status(text: &str) {
    if let Err(e) = notify(&status_message(text)) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `STATUS=<text>` on one line: a newline would end the assignment and
/// start another.
fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("skiff-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY-free: tests in this crate do not read NOTIFY_SOCKET concurrently.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(super::notify("READY=1").unwrap());
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_status_is_one_line_on_the_socket() {
        let dir = std::env::temp_dir().join(format!("skiff-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let message = super::status_message("joining 192.168.1.10:6443\nretrying");
        assert_eq!(message, "STATUS=joining 192.168.1.10:6443 retrying");
        super::send(path.as_os_str(), &message).unwrap();
        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], message.as_bytes());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
