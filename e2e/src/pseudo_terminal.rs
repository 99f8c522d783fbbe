//! A command run on a pseudo-terminal, as someone at a terminal runs it:
//! `kubectl exec -it` and `kubectl run -it` only take a TTY when their
//! stdin is one. The child gets the terminal's slave end as stdin, stdout
//! and stderr (80×24); a thread collects what it prints from the master
//! end, and the test types into it. The child is stopped by its own PID
//! when the handle drops.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A child process on a pseudo-terminal of its own.
pub struct OnTerminal {
    child: Child,
    master: std::fs::File,
    printed: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    /// Starts `command` with a new pseudo-terminal as its stdio.
    pub fn start(mut command: Command) -> anyhow::Result<OnTerminal> {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None::<&nix::sys::termios::Termios>)
            .context("open a pseudo-terminal")?;
        let slave = std::fs::File::from(pty.slave);
        command
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave);
        let child = command.spawn().context("start a command on the terminal")?;
        // Our copies of the slave end go, so the master reads an error once
        // the child has gone.
        drop(command);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone()?;
        let printed = Arc::new(Mutex::new(Vec::new()));
        let collected = printed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => collected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        Ok(OnTerminal {
            child,
            master,
            printed,
        })
    }

    /// Everything it printed so far.
    pub fn printed(&self) -> String {
        let bytes = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Types `keys` (a line ends with `\r`, as the Enter key sends it).
    pub fn type_keys(&mut self, keys: &str) -> anyhow::Result<()> {
        self.master.write_all(keys.as_bytes())?;
        Ok(self.master.flush()?)
    }

    /// Waits until it has printed `text`, at most `timeout`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let printed = self.printed();
            if printed.contains(text) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                // What it printed last may still be on its way.
                std::thread::sleep(Duration::from_millis(200));
                let printed = self.printed();
                anyhow::ensure!(
                    printed.contains(text),
                    "it exited ({status}) without printing {text:?}; it printed:\n{printed}"
                );
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{text:?} not printed within {timeout:?}; it printed:\n{printed}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit, at most `timeout` (then it is killed).
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                crate::terminate(&mut self.child, Duration::from_secs(5));
                anyhow::bail!(
                    "still running after {timeout:?}; it printed:\n{}",
                    self.printed()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::terminate(&mut self.child, Duration::from_secs(5));
        }
    }
}
