use std::path::Path;
use std::sync::Arc;

use crate::batch::tests::make_batch;
use crate::batch::BatchHeader;
use crate::storage::FsStorage;
use crate::{DiskLog, LogConfig, LogError};

const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> DiskLog {
    let config = LogConfig { segment_bytes: 700, retention_ms: -1, ..LogConfig::default() };
    DiskLog::open(dir, Arc::new(FsStorage), config).unwrap()
}

/// Appends batches of two records each; returns each batch's base offset.
fn append_batches(log: &mut DiskLog, n: usize, tag: &str) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let (a, b) = (format!("{tag}{i}a"), format!("{tag}{i}b"));
            let mut batch = make_batch(0, &[a.as_bytes(), b.as_bytes()]);
            let h = BatchHeader::parse(&batch).unwrap();
            log.append(&mut batch, &[h], T0).unwrap().base_offset
        })
        .collect()
}

/// Every segment file's bytes, in offset order.
fn read_all(log: &DiskLog) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in log.segments.values() {
        out.extend_from_slice(&std::fs::read(segment.file.path()).unwrap());
    }
    out
}

#[test]
fn truncation_removes_the_suffix_across_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let bases = append_batches(&mut log, 40, "x");
    let segments = log.segments.len();
    assert!(segments > 3, "small segments roll: {segments}");
    let cut = bases[13];
    log.truncate_to(cut).unwrap();
    assert_eq!(log.next_offset(), cut);
    assert!(log.segments.len() < segments);
    assert!(log.durable_offset() <= cut);
    let kept = read_all(&log);
    // New entries take the freed offsets, as a follower's do after Raft overwrote its tail.
    assert_eq!(append_batches(&mut log, 3, "y"), vec![cut, cut + 2, cut + 4]);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.next_offset(), cut + 6);
    assert!(read_all(&log).starts_with(&kept));
}

#[test]
fn only_batch_starts_and_nothing_below_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let bases = append_batches(&mut log, 10, "x");
    assert!(matches!(log.truncate_to(bases[4] + 1), Err(LogError::OffsetOutOfRange { .. })), "mid-batch");
    log.truncate_to(log.next_offset() + 5).unwrap();
    assert_eq!(log.next_offset(), 20, "past the end: nothing to do");
    log.delete_records(bases[6]).unwrap();
    assert!(matches!(log.truncate_to(bases[2]), Err(LogError::OffsetOutOfRange { .. })));
    log.truncate_to(bases[6]).unwrap();
    assert_eq!(log.next_offset(), bases[6]);
    assert_eq!(log.log_start_offset(), bases[6]);
}
