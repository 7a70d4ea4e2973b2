//! The sled store's recovery from its last commit cut or damaged in any
//! combination: each 3 bytes of input are one damage (a XOR byte, 0 for a
//! cut, then a 16-bit offset into the commit). The store must open with a
//! prefix and take the next write, or refuse with its reason; never panic
//! (see `swarmdesk::store::sled::torn`).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use swarmdesk::store::sled::torn::{Damage, TornLog};

struct Harness {
    runtime: tokio::runtime::Runtime,
    torn: TornLog,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shm = std::path::Path::new("/dev/shm");
        let parent = shm.is_dir().then_some(shm);
        let torn = runtime.block_on(TornLog::prepare(20, parent)).unwrap();
        Harness { runtime, torn }
    })
}

fuzz_target!(|data: &[u8]| {
    let damage: Vec<Damage> = data
        .chunks_exact(3)
        .take(16)
        .map(|c| {
            let at = usize::from(u16::from_le_bytes([c[1], c[2]]));
            match c[0] {
                0 => Damage::Cut(at),
                with => Damage::Flip(at, with),
            }
        })
        .collect();
    if damage.is_empty() {
        return;
    }
    let h = harness();
    if let Err(e) = h.runtime.block_on(h.torn.recover(&damage)) {
        panic!("{damage:?}: {e}");
    }
});
