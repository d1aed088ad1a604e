//! What one broker reads from another and from its own metadata log:
//! arbitrary bytes as a cluster frame (header and body) and as the file
//! `metadata.wal` opened at start. Both must answer Ok or Err, never panic;
//! a recovered log must reopen to the same entries.
#![no_main]

use ferry_cluster::{wal::Wal, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = wire::body_len([data[0], data[1], data[2], data[3]]);
    }
    let _ = wire::decode(data);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("metadata.wal"), data).expect("write");
    if let Ok((_, first)) = Wal::open(dir.path()) {
        let (_, again) = Wal::open(dir.path()).expect("a recovered log reopens");
        assert_eq!(first.entries, again.entries);
        assert_eq!(first.hard_state, again.hard_state);
    }
});
