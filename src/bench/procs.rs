//! Server processes the benchmark starts: swarmdesk on a temporary data dir
//! and the bare baseline, each a child running this same binary.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::BenchError;

/// A child server, killed when dropped.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `swarmdesk serve` on `addr` and `data_dir`, warnings to stderr.
fn serve(addr: SocketAddr, data_dir: &Path) -> Result<Command, BenchError> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(command)
}

impl ServerProcess {
    /// Starts `swarmdesk serve` on `data_dir`; returns once it is SERVING,
    /// with the time that took.
    pub(crate) async fn swarmdesk(data_dir: &Path) -> Result<(Self, Duration), BenchError> {
        let addr = free_addr()?;
        let started = Instant::now();
        let child = serve(addr, data_dir)?.spawn()?;
        let process = ServerProcess { child, addr };
        wait_serving(addr).await?;
        Ok((process, started.elapsed()))
    }

    /// Starts a cluster node (`serve --cluster`) on `data_dir`; returns once
    /// it accepts connections (it serves once the cluster has a writer).
    pub(crate) async fn cluster_node(
        data_dir: &Path,
        nats: &[String],
        node_id: &str,
        name: &str,
    ) -> Result<Self, BenchError> {
        let addr = free_addr()?;
        let child = serve(addr, data_dir)?
            .args(["--cluster", &nats.join(","), "--node-id", node_id])
            .args([
                "--cluster-name",
                name,
                "--lease-ms",
                "2000",
                "--heartbeat-ms",
                "500",
            ])
            .spawn()?;
        let process = ServerProcess { child, addr };
        wait_connectable(addr).await?;
        Ok(process)
    }

    /// Waits until the server says SERVING.
    pub(crate) async fn serving(&self) -> Result<(), BenchError> {
        wait_serving(self.addr).await
    }

    /// Starts the bare baseline server; its `DurableEcho` writes to a
    /// store on `data_dir` when one is given.
    pub(crate) async fn baseline(data_dir: Option<&Path>) -> Result<Self, BenchError> {
        let addr = free_addr()?;
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["bench-baseline", "--listen", &addr.to_string()]);
        if let Some(dir) = data_dir {
            command.arg("--data-dir").arg(dir);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let process = ServerProcess { child, addr };
        wait_connectable(addr).await?;
        Ok(process)
    }

    /// Resident memory of the child, in bytes.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.id())
    }

    /// What became of the process, for an error: how it exited, or that
    /// it still runs.
    pub(crate) fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status})"),
            Ok(None) => "it is still running".into(),
            Err(e) => format!("its state is unknown ({e})"),
        }
    }

    /// Ends the child with SIGKILL, as a crash would.
    pub(crate) fn kill(mut self) -> Result<(), BenchError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The admin token a server started on `data_dir` wrote there.
pub(crate) fn admin_token(data_dir: &Path) -> Result<String, BenchError> {
    crate::client::token_from_data_dir(data_dir)
        .ok_or_else(|| BenchError::Failed(format!("no admin.token in {}", data_dir.display())))
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(crate) async fn channel(addr: SocketAddr) -> Result<Channel, BenchError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::Failed(e.to_string()))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn wait_connectable(addr: SocketAddr) -> Result<Channel, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match channel(addr).await {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => return Err(e),
        }
    }
}

async fn wait_serving(addr: SocketAddr) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut health = HealthClient::new(wait_connectable(addr).await?);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!("{addr} never became SERVING")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
