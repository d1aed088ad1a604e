use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::batch::{control_batch, BatchHeader, CRC_START};
use crate::records::{decode_records, records_section, tests::keyed_batch};
use crate::storage::{FsStorage, Storage};
use crate::{read_slice, LogConfig, ReadPlan};

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 600, compact: true, min_cleanable_dirty_ratio: 0.01, retention_ms: -1, ..LogConfig::default() }
}

fn limits() -> CleanerLimits {
    CleanerLimits { dedupe_buffer_bytes: 1 << 20, throttle: Arc::new(Throttle::new(f64::INFINITY)) }
}

/// Sets producer fields on a batch and fixes its CRC.
fn with_producer(mut b: Vec<u8>, pid: i64, seq: i32, txn: bool) -> Vec<u8> {
    if txn {
        b[22] |= 0x10;
    }
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn append(log: &mut DiskLog, mut batch: Vec<u8>) -> i64 {
    let h = BatchHeader::parse(&batch).unwrap();
    let info = log.append(&mut batch, &[h], T0).unwrap();
    let job = log.sync_job().unwrap();
    let r = job.run();
    log.finish_sync(&job, &r);
    info.base_offset
}

fn put(log: &mut DiskLog, key: &str, value: Option<&str>) -> i64 {
    append(log, keyed_batch(0, 0, &[(Some(key.as_bytes()), value.map(str::as_bytes))], T0))
}

/// Every record in the log: offset → (key, value), plus empty batches' last offsets.
type Content = BTreeMap<i64, (Option<Vec<u8>>, Option<Vec<u8>>)>;

fn read_all(log: &DiskLog) -> Content {
    let mut out = Content::new();
    let mut offset = log.log_start_offset();
    while let Some(ReadPlan::Disk(slice)) = log.read_plan(offset).unwrap() {
        let bytes = read_slice(&slice, usize::MAX / 2, i64::MAX, true).unwrap();
        assert!(!bytes.is_empty(), "a read at {offset} below the log end {} returned nothing: {slice:?} {:?}", log.next_offset(), log.segments.values().map(|s| (s.base_offset, s.next_offset, s.size)).collect::<Vec<_>>());
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).unwrap();
            let batch = &bytes[pos..pos + h.total_len()];
            if !h.is_control() {
                let section = records_section(batch, &h).unwrap();
                for r in decode_records(&h, &section).unwrap() {
                    out.insert(h.base_offset + r.offset_delta as i64, (r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
                }
            }
            offset = h.last_offset() + 1;
            pos += h.total_len();
        }
    }
    out
}

fn headers(log: &DiskLog) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    for s in log.segments.values() {
        let mut pos = 0;
        while pos < s.size {
            let h = s.header_at(pos).unwrap();
            pos += h.total_len() as u64;
            out.push(h);
        }
    }
    out
}

fn run_clean(log: &mut DiskLog, inputs: &CleanInputs) -> Option<CleanOutcome> {
    let plan = log.plan_clean(inputs.now_ms, i64::MAX)?;
    let outcome = clean(&plan, inputs, &limits(), &mut |c| log.install_cleaned(c)).unwrap();
    log.finish_clean(&outcome).unwrap();
    Some(outcome)
}

fn inputs(now_ms: i64) -> CleanInputs {
    CleanInputs { now_ms, ..CleanInputs::default() }
}

fn open(dir: &Path) -> DiskLog {
    DiskLog::open(dir, Arc::new(FsStorage), config()).unwrap()
}

/// Ten keys written ten times each, one record per batch.
fn ten_by_ten(log: &mut DiskLog) -> BTreeMap<String, (i64, String)> {
    let mut last = BTreeMap::new();
    for round in 0..10 {
        for k in 0..10 {
            let (key, value) = (format!("k{k}"), format!("v{round}"));
            let offset = put(log, &key, Some(&value));
            last.insert(key, (offset, value));
        }
    }
    last
}

#[test]
fn keeps_the_last_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    ten_by_ten(&mut log);
    let before = read_all(&log);
    let active_base = *log.segments.keys().next_back().unwrap();
    let end = log.next_offset();
    let outcome = run_clean(&mut log, &inputs(T0)).expect("a dirty log is cleaned");
    assert!(outcome.complete && outcome.bytes_after < outcome.bytes_before);
    let after = read_all(&log);
    // Below the active segment: one record per key, the latest, at its old offset.
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (offset, (key, _)) in before.range(..active_base) {
        latest.insert(key.clone().unwrap(), *offset);
    }
    for (offset, kv) in &before {
        let kept = *offset >= active_base || latest.get(kv.0.as_ref().unwrap()) == Some(offset);
        assert_eq!(after.get(offset), kept.then_some(kv), "offset {offset}");
    }
    assert_eq!(log.next_offset(), end, "the log end never moves");
    drop(log);
    let log = open(dir.path());
    assert_eq!(read_all(&log), after, "a reopened log reads the same");
    assert_eq!(log.next_offset(), end);
    // Nothing new is dirty: no second pass.
    assert!(log.plan_clean(T0, i64::MAX).is_none());
}

#[test]
fn a_retired_log_discards_a_pass_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    ten_by_ten(&mut log);
    let before = read_all(&log);
    let files = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let names = files(dir.path());
    let plan = log.plan_clean(T0, i64::MAX).expect("dirty");
    // The topic is deleted while the pass runs: nothing may be swapped in.
    log.retire("topic deleted");
    let outcome = clean(&plan, &inputs(T0), &limits(), &mut |c| log.install_cleaned(c)).unwrap();
    assert!(!outcome.complete);
    assert_eq!(files(dir.path()), names, "no cleaned or swap file left, no segment removed");
    assert_eq!(read_all(&log), before);
    assert!(log.plan_clean(T0, i64::MAX).is_none());
}

#[test]
fn a_read_inside_a_gap_moves_to_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let first = put(&mut log, "a", Some("1"));
    for _ in 0..30 {
        put(&mut log, "b", Some("x"));
    }
    run_clean(&mut log, &inputs(T0)).unwrap();
    let content = read_all(&log);
    assert!(content.contains_key(&first), "a's only value stays");
    let Some(ReadPlan::Disk(slice)) = log.read_plan(first + 1).unwrap() else { panic!("no plan") };
    let bytes = read_slice(&slice, 1 << 20, i64::MAX, true).unwrap();
    let h = BatchHeader::parse(&bytes).unwrap();
    assert!(h.last_offset() > first, "the read returns what follows the gap");
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    put(&mut log, "gone", Some("1"));
    let tombstone = put(&mut log, "gone", None);
    for i in 0..20 {
        put(&mut log, "other", Some(&i.to_string()));
    }
    run_clean(&mut log, &inputs(T0)).unwrap();
    let c = read_all(&log);
    assert_eq!(c.get(&tombstone), Some(&(Some(b"gone".to_vec()), None)), "the tombstone stays first");
    assert_eq!(c.values().filter(|(k, _)| k.as_deref() == Some(b"gone")).count(), 1, "the value it deletes is gone");
    // Not yet past delete.retention.ms: nothing is due.
    assert!(log.plan_clean(T0 + HOUR_MS, i64::MAX).is_none());
    let late = T0 + config().delete_retention_ms + 1;
    run_clean(&mut log, &inputs(late)).expect("the delete horizon makes a pass due");
    assert!(!read_all(&log).contains_key(&tombstone), "the tombstone is removed after delete.retention.ms");
    drop(log);
    assert!(!read_all(&open(dir.path())).contains_key(&tombstone));
}

#[test]
fn aborted_data_goes_and_markers_go_once_their_data_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let aborted_at = append(&mut log, with_producer(keyed_batch(0, 0, &[(Some(b"x"), Some(b"aborted"))], T0), 7, 0, true));
    let abort_marker = append(&mut log, control_batch(7, 0, false, 0, T0));
    let committed_at = append(&mut log, with_producer(keyed_batch(0, 0, &[(Some(b"y"), Some(b"committed"))], T0), 8, 0, true));
    let commit_marker = append(&mut log, control_batch(8, 0, true, 0, T0));
    for i in 0..20 {
        put(&mut log, "filler", Some(&i.to_string()));
    }
    let mut inp = inputs(T0);
    inp.aborted = vec![AbortedRange { producer_id: 7, first_offset: aborted_at, last_offset: abort_marker }];
    run_clean(&mut log, &inp).unwrap();
    let c = read_all(&log);
    assert!(!c.contains_key(&aborted_at), "aborted data is removed");
    assert!(c.contains_key(&committed_at), "committed data stays");
    let markers = |log: &DiskLog| -> Vec<i64> { headers(log).iter().filter(|h| h.is_control()).map(|h| h.base_offset).collect() };
    assert_eq!(markers(&log), vec![abort_marker, commit_marker], "both markers stay for now");
    inp.now_ms = T0 + config().delete_retention_ms + 1;
    run_clean(&mut log, &inp).unwrap();
    assert_eq!(markers(&log), vec![commit_marker], "the abort marker goes; the commit marker guards kept data");
    drop(log);
    let log = open(dir.path());
    assert!(read_all(&log).contains_key(&committed_at));
}

#[test]
fn a_producers_last_batch_stays_even_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let last = append(&mut log, with_producer(keyed_batch(0, 0, &[(Some(b"k"), Some(b"1")), (Some(b"k"), Some(b"2"))], T0), 5, 0, false));
    for i in 0..20 {
        put(&mut log, "k", Some(&i.to_string()));
    }
    let mut inp = inputs(T0);
    inp.producer_last_offsets.insert(5, last + 1);
    run_clean(&mut log, &inp).unwrap();
    let seen = headers(&log)
        .iter()
        .filter(|h| h.producer_id == 5)
        .map(|h| (h.base_offset, h.last_offset_delta, h.record_count, h.base_sequence))
        .last();
    assert_eq!(seen, Some((last, 1, 0, 0)), "an empty batch keeps the producer's offsets and sequence");
    drop(log);
    open(dir.path());
}

#[test]
fn the_active_segment_and_young_records_are_not_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = DiskLog::open(dir.path(), Arc::new(FsStorage), LogConfig { min_compaction_lag_ms: HOUR_MS, ..config() }).unwrap();
    ten_by_ten(&mut log);
    // Records stamped T0 are younger than an hour at T0 + 1 minute.
    assert!(log.plan_clean(T0 + 60_000, i64::MAX).is_none());
    assert!(log.plan_clean(T0 + 2 * HOUR_MS, i64::MAX).is_some());
    // A stable offset at the log start leaves nothing cleanable.
    assert!(log.plan_clean(T0 + 2 * HOUR_MS, 0).is_none());
}

/// Storage that fails every directory change from the `crash_at`-th on:
/// the files stay as a crash at that point would leave them.
#[derive(Debug)]
struct CrashingStorage {
    ops: AtomicUsize,
    crash_at: usize,
}

impl CrashingStorage {
    fn step(&self) -> io::Result<()> {
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.crash_at {
            return Err(io::Error::other("crashed"));
        }
        Ok(())
    }
}

impl Storage for CrashingStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn crate::storage::StorageFile>> {
        FsStorage.open(path, create)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        FsStorage.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.sync_dir(path)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_crash_at_any_step_of_a_pass_leaves_the_old_log_or_the_cleaned_one() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let mut log = open(&original);
    ten_by_ten(&mut log);
    let before = read_all(&log);
    drop(log);
    let done = base.path().join("done");
    copy_dir(&original, &done);
    let mut log = open(&done);
    run_clean(&mut log, &inputs(T0)).unwrap();
    let after = read_all(&log);
    assert_ne!(before, after);
    let mut saw_old = false;
    let mut saw_new = false;
    for crash_at in 0..64 {
        let dir = base.path().join(format!("crash{crash_at}"));
        copy_dir(&original, &dir);
        let storage = Arc::new(CrashingStorage { ops: AtomicUsize::new(0), crash_at });
        let mut log = DiskLog::open(&dir, storage, config()).unwrap();
        let plan = log.plan_clean(T0, i64::MAX).unwrap();
        let result = clean(&plan, &inputs(T0), &limits(), &mut |c| log.install_cleaned(c))
            .and_then(|outcome| log.finish_clean(&outcome));
        if log.cleaner_failed.is_some() {
            assert!(log.plan_clean(T0, i64::MAX).is_none(), "a log whose swap failed is not cleaned again before a restart");
        }
        drop(log);
        let content = read_all(&open(&dir));
        // Each group swaps on its own, so a crash may leave some groups
        // cleaned: every key's latest value is there, nothing else is new.
        for (offset, kv) in &content {
            assert_eq!(before.get(offset), Some(kv), "crash at step {crash_at}: offset {offset}");
        }
        for (offset, kv) in &after {
            assert_eq!(content.get(offset), Some(kv), "crash at step {crash_at}: offset {offset} lost");
        }
        saw_old |= content == before;
        saw_new |= content == after;
        if result.is_ok() {
            assert_eq!(content, after);
            break;
        }
        assert!(crash_at < 63, "the pass never completed");
    }
    assert!(saw_old && saw_new);
}

#[test]
fn cleaning_after_delete_records_keeps_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let last = ten_by_ten(&mut log);
    assert_eq!(log.delete_records(35).unwrap(), 35);
    run_clean(&mut log, &inputs(T0 + HOUR_MS)).expect("a pass runs");
    assert_eq!(log.log_start_offset(), 35);
    assert!(log.read_plan(34).is_err());
    let content = read_all(&log);
    assert!(content.keys().all(|o| *o >= 35), "nothing below the log start is read: {:?}", content.keys().next());
    for (key, (offset, value)) in &last {
        assert_eq!(content.get(offset), Some(&(Some(key.as_bytes().to_vec()), Some(value.as_bytes().to_vec()))));
    }
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.log_start_offset(), 35);
    assert_eq!(read_all(&log), content);
}
