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

#[test]
fn reset_to_empties_the_log_at_a_new_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    log.reset_to(250).unwrap();
    assert_eq!((log.log_start_offset(), log.next_offset(), log.segments.len()), (250, 250, 1));
    assert!(log.read_plan(250).unwrap().is_none(), "nothing to read yet");
    append_n(&mut log, 3);
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.next_offset()), (250, 253), "reopened as left");
    assert!(matches!(log.read_plan(249), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn a_reset_cut_short_leaves_an_empty_log_not_overlapping_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    drop(log);
    // As if the old segments were removed and the process died before the
    // new one was made: an empty log the caller resets again.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut log = open(dir.path());
    assert_eq!(log.next_offset(), 0);
    log.reset_to(70).unwrap();
    assert_eq!((log.log_start_offset(), log.next_offset()), (70, 70));
}

#[test]
fn retention_cut_names_the_first_segment_kept_without_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    append_n(&mut log, 100);
    assert_eq!(log.retention_cut(T0), None, "retention off");
    log.config.retention_bytes = 700;
    let cut = log.retention_cut(T0).expect("over the size limit");
    let count = log.segments.len();
    assert!(log.segments.contains_key(&cut) && cut > 0);
    assert_eq!(log.segments.len(), count, "nothing deleted");
    log.apply_retention(T0).unwrap();
    assert_eq!(*log.segments.keys().next().unwrap(), cut, "apply_retention deletes up to the cut");
}
