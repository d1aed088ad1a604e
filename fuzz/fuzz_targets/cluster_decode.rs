//! What one broker reads from another and from its own metadata log:
//! arbitrary bytes as a cluster frame (header and body), as the file
//! `metadata.wal` opened at start, and as a partition group's marks,
//! membership, anchor (snapshot) and hard-state files. Each must answer Ok or Err, never
//! panic; a recovered log must reopen to the same entries.
#![no_main]

use ferry_cluster::partition::state_files::{AnchorFile, ConfFile, HardStateFile, MarkFile};
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

    let group = dir.path().join("7.raft");
    std::fs::write(dir.path().join("7.marks"), data).expect("write");
    std::fs::write(dir.path().join("7.conf"), data).expect("write");
    std::fs::write(dir.path().join("7.snap"), data).expect("write");
    std::fs::write(&group, data).expect("write");
    if let Ok(marks) = MarkFile::new(dir.path().join("7.marks")).load() {
        assert!(marks.windows(2).all(|w| w[0].index < w[1].index), "marks come in index order");
    }
    let _ = ConfFile::new(dir.path().join("7.conf")).load();
    if let Ok(Some(anchor)) = AnchorFile::new(dir.path().join("7.snap")).load() {
        let again = dir.path().join("8.snap");
        AnchorFile::new(again.clone()).save(&anchor).expect("save");
        assert_eq!(AnchorFile::new(again).load().expect("reload"), Some(anchor), "an anchor saves and loads back the same");
    }
    let _ = HardStateFile::new(group).load();
});
