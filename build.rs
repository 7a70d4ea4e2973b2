//! Compiles proto/swarmdesk/v1 with protox (no system protoc) into OUT_DIR,
//! along with the descriptor set that server reflection serves (the public
//! API only, not the benchmark's baseline service).

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build only watches the files it is given; watch the folder.
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let api = protox::compile(["swarmdesk/v1/swarmdesk.proto"], ["proto"])?;
    fs::write(
        out_dir.join("swarmdesk_descriptor.bin"),
        api.encode_to_vec(),
    )?;
    let all = protox::compile(
        [
            "swarmdesk/v1/swarmdesk.proto",
            "swarmdesk/v1/bench_baseline.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Hand-written (src/rpc/wire.rs): streams share one encoding of an event.
        .extern_path(".swarmdesk.v1.SwarmEvent", "crate::rpc::wire::SwarmEvent")
        .compile_fds(all)?;
    Ok(())
}
