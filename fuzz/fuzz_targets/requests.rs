//! Any bytes as the request of any RPC, sent as an admin to a real server
//! in this process (its data dir on /dev/shm where there is one): the
//! answer is OK or a small error with a precise code. The first byte picks
//! the RPC (from the API's own descriptors), the rest is the request as
//! sent: protobuf or not, any field at any length. The server must never
//! answer UNKNOWN, INTERNAL but for undecodable bytes (gRPC's rule), or an
//! error over 2 KiB as sent; and a panic anywhere in it ends the run.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use swarmdesk::client::AuthedChannel;
use swarmdesk::rpc::raw::{api, call, wire_size, Method};
use swarmdesk::server::ServerConfig;
use tonic::Code;

struct Harness {
    runtime: tokio::runtime::Runtime,
    channel: AuthedChannel,
    methods: Vec<Method>,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let data_dir = dir.path().join("data");
        let channel = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let config = ServerConfig::new(&data_dir);
            tokio::spawn(async move {
                if let Err(e) =
                    swarmdesk::server::run(listener, config, std::future::pending()).await
                {
                    panic!("the server stopped: {e}");
                }
            });
            let token = loop {
                if let Some(token) = swarmdesk::client::token_from_data_dir(&data_dir) {
                    break token;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            swarmdesk::client::with_token(channel, Some(&token)).unwrap()
        });
        Harness {
            runtime,
            channel,
            methods: api().methods,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let method = &h.methods[usize::from(pick) % h.methods.len()];
    // Backups stream the whole store: valid, and slow to repeat.
    if method.name.ends_with(".Backup") {
        return;
    }
    let outcome = h.runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            call(&h.channel, method, body.to_vec()),
        )
        .await
    });
    let Ok(outcome) = outcome else {
        panic!("{} did not answer within 30 s", method.name);
    };
    let Err(status) = outcome else {
        return;
    };
    assert!(
        wire_size(&status) < 2048,
        "{}: a {}-byte error",
        method.name,
        wire_size(&status)
    );
    let undecodable = status.message().contains("decode");
    assert!(
        !matches!(status.code(), Code::Unknown | Code::Internal) || undecodable,
        "{}: {:?} {}",
        method.name,
        status.code(),
        status.message()
    );
});
