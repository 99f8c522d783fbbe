//! The local terminal of `skiff ctl exec -t`: raw mode for the session
//! ([`RawTerminal`]), and its size sent to the remote terminal at the start
//! and again on every `SIGWINCH` ([`ResizeWatch`]), as kubectl's terminal
//! size queue does. The size is read with the `TIOCGWINSZ` ioctl, the one
//! call here that needs `unsafe`.

use std::os::fd::{AsRawFd, RawFd};

use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::{ExecInput, TerminalSize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Puts the terminal on stdin in raw mode until dropped.
pub struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    pub fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            // Not a terminal: nothing to restore.
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// The size of the terminal on `fd` in character cells, if it is one.
#[allow(unsafe_code)]
fn window_size(fd: RawFd) -> Option<TerminalSize> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through its pointer argument,
    // which points at `size`, live and writable for the whole call; a
    // descriptor that is not a terminal makes the call fail with ENOTTY,
    // leaving `size` untouched.
    let done = unsafe {
        nix::libc::ioctl(
            fd,
            nix::libc::TIOCGWINSZ,
            &mut size as *mut nix::libc::winsize,
        )
    };
    (done == 0 && size.ws_col > 0 && size.ws_row > 0).then_some(TerminalSize {
        width: u32::from(size.ws_col),
        height: u32::from(size.ws_row),
    })
}

/// The local terminal's size: stdout's, else stdin's (kubectl asks stdout).
pub fn local_size() -> Option<TerminalSize> {
    window_size(std::io::stdout().as_raw_fd()).or_else(|| window_size(std::io::stdin().as_raw_fd()))
}

/// Sends the local terminal's size as exec input now and after each
/// `SIGWINCH`; stops when dropped or when the session takes no more input.
pub struct ResizeWatch {
    task: tokio::task::JoinHandle<()>,
}

impl ResizeWatch {
    pub fn start(to_master: mpsc::Sender<ExecInput>) -> ResizeWatch {
        let task = tokio::spawn(async move {
            // Without the signal the first size is all the remote gets.
            let mut changes = signal(SignalKind::window_change()).ok();
            let mut last = None;
            loop {
                let size = local_size();
                if size.is_some() && size != last {
                    last = size;
                    let message = ExecInput {
                        input: size.map(ExecIn::Resize),
                    };
                    if to_master.send(message).await.is_err() {
                        return;
                    }
                }
                match changes.as_mut() {
                    Some(changes) => {
                        if changes.recv().await.is_none() {
                            return;
                        }
                    }
                    None => return,
                }
            }
        });
        ResizeWatch { task }
    }
}

impl Drop for ResizeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_terminal_has_no_size() {
        let file = tempfile::tempfile().unwrap();
        assert_eq!(window_size(file.as_raw_fd()), None);
        assert_eq!(window_size(-1), None);
    }
}
