//! The backup reader on any bytes: it refuses them with a reason, or reads
//! pairs that, written again, give back exactly the same bytes (a file is
//! accepted only whole, so nothing else may pass). Never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmdesk::backup::{read_backup, BackupWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = read_backup(data) else {
        return;
    };
    let mut writer = BackupWriter::new(Vec::new()).unwrap();
    for (key, value) in &pairs {
        writer.pair(key, value).unwrap();
    }
    let (written, count) = writer.finish().unwrap();
    assert_eq!(count as usize, pairs.len());
    assert_eq!(
        written, data,
        "accepted bytes that are not what the writer writes"
    );
});
