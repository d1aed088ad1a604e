//! `ferry_log::batch::validate_batch` and `split_and_validate` (what Produce
//! runs on every partition's records) on arbitrary bytes. Neither may panic;
//! when they accept, the result must describe the input exactly.
//!
//! Random bytes almost never carry a valid CRC-32C, so every input is checked
//! twice: as is, and with the CRC of every complete batch (walking the
//! batchLength fields) recomputed, which lets the fuzzer reach the record
//! framing checks and multi-batch splitting.
#![no_main]

use ferry_log::batch::{split_and_validate, validate_batch, BatchHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: ferry_fuzz::install_panic_hook(),
    |data: &[u8]| ferry_fuzz::guarded("batch_validate checks", || {
        check(data);
        let mut fixed = data.to_vec();
        if ferry_fuzz::fix_all_crcs(&mut fixed) {
            check(&fixed);
        }
    })
);

fn check_header(h: &BatchHeader, bytes: &[u8]) {
    assert_eq!(
        h.total_len(),
        bytes.len(),
        "header.total_len() != batch bytes"
    );
    assert_eq!(h.magic, 2);
    assert!(
        h.record_count > 0,
        "accepted record_count {}",
        h.record_count
    );
    assert_eq!(
        h.record_count as i64,
        h.last_offset_delta as i64 + 1,
        "record_count != last_offset_delta + 1"
    );
    assert!(
        matches!(h.compression(), 0..=4),
        "accepted compression {}",
        h.compression()
    );
    assert_eq!(
        h.base_offset,
        i64::from_be_bytes(bytes[0..8].try_into().unwrap())
    );
}

fn check(data: &[u8]) {
    let single = ferry_fuzz::guarded("batch::validate_batch", || validate_batch(data));
    if let Ok(h) = &single {
        check_header(h, data);
    }
    let split = ferry_fuzz::guarded("batch::split_and_validate", || split_and_validate(data));
    match split {
        Ok(batches) => {
            assert!(!batches.is_empty(), "Ok with no batch");
            let mut pos = 0usize;
            for (range, h) in &batches {
                assert_eq!(range.start, pos, "ranges are not contiguous");
                assert!(
                    range.start < range.end && range.end <= data.len(),
                    "range {range:?} outside input of {}",
                    data.len()
                );
                let bytes = &data[range.clone()];
                check_header(h, bytes);
                assert_eq!(
                    validate_batch(bytes).as_ref(),
                    Ok(h),
                    "split result disagrees with validate_batch"
                );
                pos = range.end;
            }
            assert_eq!(pos, data.len(), "ranges do not cover the input");
            if let Ok(h) = single {
                // One valid batch is also a valid one-batch payload.
                assert_eq!(batches.len(), 1);
                assert_eq!(batches[0].1, h);
            }
        }
        Err(_) => assert!(
            single.is_err(),
            "validate_batch accepts what split_and_validate rejects"
        ),
    }
}
