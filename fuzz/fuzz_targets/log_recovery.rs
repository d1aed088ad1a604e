//! Crash recovery of the on-disk log: arbitrary bytes become the segment file
//! `00000000000000000000.log` of a fresh partition directory, then the log
//! is opened exactly as at broker start (`Engine::open_partition`):
//! `DiskLog::open_observed` (what `DiskLog::open` calls, with a no-op
//! observer) rebuilding a `ProducerStateTable` with `replay` from every batch
//! kept. It must return Ok or Err, never panic. When it recovers the log:
//! * the observer saw whole batches, each matching its header;
//! * the segment file may only have shrunk (a torn tail is truncated);
//! * reading from `log_start_offset` (`read_plan` + `read_slice`), walking
//!   the log like a consumer, and `offset_for_timestamp` must not panic;
//! * the rebuilt producer state answers queries (last stable offset,
//!   aborted transactions, summaries, sequence checks, expiry) without panic;
//! * the recovered log must take an append and reopen cleanly at the new
//!   end offset (what a restart after recovery does).
//!
//! Input format (see `ferry_fuzz::log_recovery_segment`): first byte even =
//! the rest is the file verbatim; odd = the rest drives a generator of valid
//! batches plus damage (CRC-valid bad fields, torn tails, inserted garbage).
//!
//! FERRY_FUZZ_STRICT=1 adds semantic checks beyond "no panic" that the
//! current recovery does not promise; see fuzz/README.md.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ferry_broker::producer_state::ProducerStateTable;
use ferry_log::batch::{split_and_validate, BatchHeader, BATCH_HEADER_LEN};
use ferry_log::storage::FsStorage;
use ferry_log::{read_slice, DiskLog, LogConfig, ReadPlan};
use libfuzzer_sys::fuzz_target;

const SEGMENT: &str = "00000000000000000000.log";
/// ferry_broker's MAX_PRODUCERS_PER_PARTITION (not exported).
const MAX_PRODUCERS: usize = 10_000;
const NOW_MS: i64 = 1_700_000_000_000;

static BASE: OnceLock<PathBuf> = OnceLock::new();
static STRICT: OnceLock<bool> = OnceLock::new();

fn init() {
    ferry_fuzz::install_panic_hook();
    // tmpfs when there is one: thousands of directories per second.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    BASE.set(base).unwrap();
    STRICT
        .set(std::env::var_os("FERRY_FUZZ_STRICT").is_some_and(|v| v != "0" && !v.is_empty()))
        .unwrap();
}

/// Opens the log as the broker does, rebuilding producer state; returns the
/// headers and lengths the observer was given.
fn open(
    dir: &Path,
    producers: &mut ProducerStateTable,
) -> (
    Result<DiskLog, ferry_log::LogError>,
    Vec<(BatchHeader, Vec<u8>)>,
) {
    let mut seen = Vec::new();
    let mut observe = |h: &BatchHeader, bytes: &[u8]| {
        seen.push((*h, bytes[..bytes.len().min(BATCH_HEADER_LEN)].to_vec()));
        assert_eq!(
            bytes.len(),
            h.total_len(),
            "observer got {} bytes for a batch of {}",
            bytes.len(),
            h.total_len()
        );
        producers.replay(h, bytes, NOW_MS);
    };
    let result =
        DiskLog::open_observed(dir, Arc::new(FsStorage), LogConfig::default(), &mut observe);
    (result, seen)
}

fuzz_target!(
    init: init(),
    |data: &[u8]| ferry_fuzz::guarded("log_recovery checks", || check(data))
);

fn check(data: &[u8]) {
    let segment = ferry_fuzz::log_recovery_segment(data);
    let dir = tempfile::Builder::new()
        .prefix("ferry-fuzz-")
        .tempdir_in(BASE.get().unwrap())
        .expect("temp dir");
    let path = dir.path().join(SEGMENT);
    std::fs::write(&path, &segment).expect("write segment");

    let mut producers = ProducerStateTable::new(MAX_PRODUCERS);
    let (opened, seen) = ferry_fuzz::guarded(
        "DiskLog::open_observed + ProducerStateTable::replay",
        || open(dir.path(), &mut producers),
    );
    let Ok(mut log) = opened else {
        return;
    };
    for (h, head) in &seen {
        assert_eq!(
            BatchHeader::parse(head).as_ref(),
            Ok(h),
            "observer header disagrees with the batch bytes"
        );
    }
    let file_len = std::fs::metadata(&path)
        .expect("segment still exists")
        .len();
    assert!(
        file_len <= segment.len() as u64,
        "recovery grew the segment from {} to {file_len} bytes",
        segment.len()
    );
    assert_eq!(
        log.size_bytes(),
        file_len,
        "log size disagrees with the segment file"
    );

    let start = log.log_start_offset();
    let end = log.next_offset();
    if *STRICT.get().unwrap() {
        strict_checks(&log, &path, file_len);
    }

    ferry_fuzz::guarded("read_plan/read_slice/offset_for_timestamp", || {
        if let Ok(Some(ReadPlan::Disk(slice))) = log.read_plan(start) {
            let _ = read_slice(&slice, 1 << 20, i64::MAX, true);
        }
        consume(&log, start);
        let _ = producers.first_unstable_offset(end);
        let _ = producers.aborted_in(start, end);
        let _ = producers.aborted_in(i64::MIN, i64::MAX);
        let _ = producers.summaries();
        for (h, _) in &seen {
            let _ = producers.check(h);
            let _ = producers.check_marker(h.producer_id, h.producer_epoch);
        }
        for ts in [
            i64::MIN,
            -1,
            0,
            1_700_000_000_000,
            1_700_000_050_000,
            i64::MAX,
        ] {
            let _ = log.offset_for_timestamp(ts);
        }
        producers.expire(start, NOW_MS + 1, 7 * 24 * 3600 * 1000);
        producers.expire(end, i64::MAX, 0);
    });

    // A recovered log must take writes and come back after a restart.
    let mut payload = ferry_fuzz::make_batch(0, &[b"after-recovery"]);
    let headers: Vec<BatchHeader> = split_and_validate(&payload)
        .expect("valid batch")
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    let appended = ferry_fuzz::guarded("DiskLog::append", || {
        log.append(&mut payload, &headers, NOW_MS)
    });
    let Ok(info) = appended else { return };
    assert_eq!(info.base_offset, end);
    drop(log);
    let reopened = ferry_fuzz::guarded("DiskLog::open_observed (after append)", || {
        open(dir.path(), &mut ProducerStateTable::new(MAX_PRODUCERS)).0
    });
    match reopened {
        Ok(log) => {
            assert_eq!(
                log.log_start_offset(),
                start,
                "log start moved across a restart"
            );
            assert_eq!(
                log.next_offset(),
                end + 1,
                "log end after restart != log end after append"
            );
        }
        Err(e) => {
            panic!("recovered log (end offset {end}) took an append but then failed to reopen: {e}")
        }
    }
}

/// Reads the log batch by batch from `offset`, as a consumer would.
fn consume(log: &DiskLog, mut offset: i64) {
    for _ in 0..64 {
        let Ok(Some(ReadPlan::Disk(slice))) = log.read_plan(offset) else {
            return;
        };
        let Ok(bytes) = read_slice(&slice, 1, i64::MAX, true) else {
            return;
        };
        let mut pos = 0;
        let mut last = None;
        while bytes.len() - pos >= BATCH_HEADER_LEN {
            let Ok(h) = BatchHeader::parse(&bytes[pos..]) else {
                break;
            };
            pos += h.total_len();
            last = Some(h.last_offset());
        }
        assert!(pos == bytes.len(), "read_slice returned a partial batch");
        match last {
            Some(l) if l >= offset => offset = l + 1,
            _ => return,
        }
    }
}

/// Semantic checks the current recovery does not guarantee (opt-in).
fn strict_checks(log: &DiskLog, path: &Path, file_len: u64) {
    assert!(
        log.next_offset() >= log.log_start_offset(),
        "recovered log ends (offset {}) before it starts (offset {})",
        log.next_offset(),
        log.log_start_offset()
    );
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, file_len);
    let mut pos = 0;
    let mut expected = log.log_start_offset();
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).expect("recovered file holds whole batches");
        assert_eq!(h.base_offset, expected);
        assert!(
            h.record_count > 0 && h.record_count as i64 == h.last_offset_delta as i64 + 1,
            "recovery kept a batch at byte {pos} with recordCount {} and lastOffsetDelta {}",
            h.record_count,
            h.last_offset_delta
        );
        expected = h.last_offset() + 1;
        pos += h.total_len();
    }
}
