use std::path::Path;
use std::sync::Arc;

use crate::batch::tests::make_batch;
use crate::batch::BatchHeader;
use crate::storage::FsStorage;
use crate::{DiskLog, LogConfig, LogError, MemoryLog};

const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> DiskLog {
    // Small segments: ten one-record batches of ~70 bytes per segment or so.
    let config = LogConfig { segment_bytes: 700, retention_ms: -1, ..LogConfig::default() };
    DiskLog::open(dir, Arc::new(FsStorage), config).unwrap()
}

fn append_n(log: &mut DiskLog, n: usize) {
    for i in 0..n {
        let mut b = make_batch(0, &[format!("v{i}").as_bytes()]);
        let h = BatchHeader::parse(&b).unwrap();
        log.append(&mut b, &[h], T0).unwrap();
    }
}

#[test]
fn delete_records_moves_the_start_durably_and_never_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    let segments_before = log.segments.len();
    assert!(segments_before > 3);
    assert_eq!(log.delete_records(40).unwrap(), 40);
    assert!(log.segments.len() < segments_before, "segments wholly below 40 are deleted");
    assert!(*log.segments.keys().next().unwrap() <= 40);
    assert!(matches!(log.read_plan(39), Err(LogError::OffsetOutOfRange { .. })));
    assert!(log.read_plan(40).unwrap().is_some());
    assert_eq!(log.delete_records(30).unwrap(), 40, "a lower request leaves the start");
    assert!(matches!(log.delete_records(101), Err(LogError::OffsetOutOfRange { .. })));
    assert!(matches!(log.delete_records(-5), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let mut log = open(dir.path());
    assert_eq!(log.log_start_offset(), 40, "restored from the checkpoint");
    assert_eq!(log.next_offset(), 100);
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|t| t.offset), Some(40));
    assert_eq!(log.delete_records(100).unwrap(), 100, "up to the end is allowed");
    assert_eq!(log.segments.len(), 1, "only the active segment is left");
}

#[test]
fn retention_after_delete_records_keeps_the_higher_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    log.delete_records(45).unwrap();
    let second_base = *log.segments.keys().nth(1).unwrap();
    assert!(second_base > 45, "45 lies inside the first remaining segment");
    log.config.retention_bytes = i64::MAX;
    log.config.retention_ms = 1;
    log.apply_retention(T0 + 10).unwrap();
    assert!(log.log_start_offset() >= 45);
    assert_eq!(log.segments.len(), 1);
}

#[test]
fn an_interrupted_delete_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    let count = log.segments.len();
    drop(log);
    // As if the checkpoint was written and the process died before the deletes.
    std::fs::write(dir.path().join("log-start-offset-checkpoint"), "60\n").unwrap();
    let log = open(dir.path());
    assert_eq!(log.log_start_offset(), 60);
    assert!(log.segments.len() < count);
    let files = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log")).count();
    assert_eq!(files, log.segments.len());
}

#[test]
fn memory_log_delete_records() {
    let mut log = MemoryLog::new(1 << 20);
    for i in 0..10 {
        let mut b = make_batch(0, &[format!("v{i}").as_bytes()]);
        let h = BatchHeader::parse(&b).unwrap();
        log.append(&mut b, &[h]);
    }
    assert_eq!(log.delete_records(4).unwrap(), 4);
    assert_eq!(log.delete_records(2).unwrap(), 4);
    assert!(log.read(3, 1 << 20, i64::MAX, true).is_err());
    assert!(!log.read(4, 1 << 20, i64::MAX, true).unwrap().is_empty());
    assert!(log.delete_records(11).is_err());
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|t| t.offset), Some(4));
}
