//! The real binary as a child process, for tests of what only a process
//! shows: kill -9, signals, logs.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::binary;

pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Process {
    // A failed test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `swarmdesk serve` on a free loopback port, logging warnings to the
/// test's stderr.
pub fn start(data_dir: &Path) -> Process {
    start_with(data_dir, |command| {
        command
            .env("SWARMDESK_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
    })
}

/// `swarmdesk serve` on a free loopback port, with `setup` choosing the
/// environment, extra flags and where output goes.
pub fn start_with(data_dir: &Path, setup: impl FnOnce(&mut Command)) -> Process {
    let addr = free_port();
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data_dir);
    setup(&mut command);
    let child = command.spawn().unwrap();
    Process { child, addr }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    panic!("server did not exit in time");
}
