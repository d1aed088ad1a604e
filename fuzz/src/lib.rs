//! Helpers shared by Ferry's fuzz targets and the seed generator
//! (`examples/gen_seeds.rs`): building valid v2 record batches, fixing CRCs,
//! the structured segment generator of `log_recovery`, and the panic hook
//! that makes only *uncaught* panics count as crashes.
#![cfg_attr(feature = "alloc-error-panics", feature(alloc_error_hook))]

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libfuzzer_sys::arbitrary::{self, Unstructured};

// ---------------------------------------------------------------------------
// Panic handling
// ---------------------------------------------------------------------------
//
// libfuzzer-sys installs (in LLVMFuzzerInitialize) a panic hook that calls
// the default hook and then `std::process::abort()`. The hook runs *before*
// unwinding starts, so under libFuzzer a panic that Ferry's own
// `catch_unwind` would catch (codec::decode_request wraps the kafka-protocol
// decoder) still kills the process and is reported as a crash.
//
// `install_panic_hook` replaces that hook with one that only records the
// panic (message, location, backtrace) in a thread-local. Targets run the
// code under test inside `guarded`: if a panic escapes Ferry's code, the
// recorded report is printed and the process aborts, which libFuzzer turns
// into a crash artifact. Panics Ferry catches itself are counted and the
// first few are printed, but do not stop fuzzing.
//
// Set FERRY_FUZZ_CAUGHT_PANIC_IS_CRASH=1 to restore "every panic is a crash"
// (useful to hunt for panics in kafka-protocol that Ferry defends against).

/// What the hook saw of the last panic on this thread. The backtrace is
/// captured unresolved; symbolizing happens only when it is printed.
struct PanicReport {
    /// `file:line:col` of the panic, to tell kinds of caught panics apart.
    location: String,
    message: String,
    backtrace: std::backtrace::Backtrace,
}

impl std::fmt::Display for PanicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nstack backtrace:\n{}", self.message, self.backtrace)
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
}
static CAUGHT_PANICS: AtomicU64 = AtomicU64::new(0);
static CAUGHT_PANIC_IS_CRASH: AtomicBool = AtomicBool::new(false);
static SEEN_LOCATIONS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

pub fn install_panic_hook() {
    #[cfg(feature = "alloc-error-panics")]
    std::alloc::set_alloc_error_hook(|layout| {
        panic!(
            "memory allocation of {} bytes failed (feature alloc-error-panics)",
            layout.size()
        )
    });
    let strict = std::env::var_os("FERRY_FUZZ_CAUGHT_PANIC_IS_CRASH")
        .is_some_and(|v| v != "0" && !v.is_empty());
    CAUGHT_PANIC_IS_CRASH.store(strict, Ordering::Relaxed);
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let report = PanicReport {
            location: info.location().map(|l| l.to_string()).unwrap_or_default(),
            message: format!("thread '{}' {info}", thread.name().unwrap_or("<unnamed>")),
            backtrace: std::backtrace::Backtrace::force_capture(),
        };
        if CAUGHT_PANIC_IS_CRASH.load(Ordering::Relaxed) {
            eprintln!("panic (FERRY_FUZZ_CAUGHT_PANIC_IS_CRASH is set, so every panic is a crash):\n{report}");
            std::process::abort();
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(report));
    }));
}

/// Call after code under test returned normally but reported that it caught
/// a panic (e.g. `DecodeError::Malformed { reason: "decoder panicked" }`).
/// Prints the first caught panic from each source location, and the running
/// count at 10, 100, 1000, ...
pub fn note_caught_panic(context: &str) {
    let n = CAUGHT_PANICS.fetch_add(1, Ordering::Relaxed) + 1;
    let report = LAST_PANIC.with(|p| p.borrow_mut().take());
    let location = report
        .as_ref()
        .map(|r| r.location.clone())
        .unwrap_or_default();
    let new_location = SEEN_LOCATIONS
        .lock()
        .map(|mut seen| seen.insert(location))
        .unwrap_or(false);
    if new_location {
        let message = report
            .map(|r| r.message.replace('\n', " "))
            .unwrap_or_else(|| "<no panic recorded>".into());
        eprintln!("[ferry-fuzz] caught panic #{n} in {context} (defended, not a crash), new location: {message}");
    }
    if n >= 10 && 10u64.pow(n.ilog10()) == n {
        eprintln!("[ferry-fuzz] caught panics so far: {n}");
    }
}

pub fn caught_panics() -> u64 {
    CAUGHT_PANICS.load(Ordering::Relaxed)
}

/// Runs `f`; a panic escaping it is a crash: print what the hook recorded
/// and abort so that libFuzzer saves the input.
pub fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    LAST_PANIC.with(|p| *p.borrow_mut() = None);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let report = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .map(|r| r.to_string())
                .unwrap_or_else(|| {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "<non-string panic payload>".into());
                    format!("panicked: {msg} (no hook report)")
                });
            eprintln!("==== UNCAUGHT PANIC in {what} ====\n{report}");
            std::process::abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Feature `alloc-error-panics`: look past huge-allocation bugs
// ---------------------------------------------------------------------------
//
// A failed allocation normally aborts the process (`handle_alloc_error`),
// which no `catch_unwind` can stop, and under libFuzzer any allocation over
// -malloc_limit_mb (default 2 GiB) is reported as an OOM crash. With this
// feature (nightly only), allocations over ALLOC_CAP fail at once and the
// failure panics instead of aborting, so Ferry's own catch_unwind (in
// decode_request) catches it and fuzzing continues. Only for exploring past
// a known bug of that kind; never for judging whether Ferry is fixed.

#[cfg(feature = "alloc-error-panics")]
mod alloc_cap {
    use std::alloc::{GlobalAlloc, Layout, System};

    pub const ALLOC_CAP: usize = 256 << 20;

    pub struct Capped;

    unsafe impl GlobalAlloc for Capped {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.size() > ALLOC_CAP {
                return std::ptr::null_mut();
            }
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.size() > ALLOC_CAP {
                return std::ptr::null_mut();
            }
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if new_size > ALLOC_CAP {
                return std::ptr::null_mut();
            }
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Capped = Capped;
}

// ---------------------------------------------------------------------------
// Record batches (magic v2)
// ---------------------------------------------------------------------------

pub const BATCH_HEADER_LEN: usize = 61;
pub const LOG_OVERHEAD: usize = 12;
pub const CRC_START: usize = 21;

pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// Records in Kafka's v2 framing: length varint, attributes, timestamp
/// delta, offset delta, key, value, no headers.
pub fn encode_records(values: &[&[u8]]) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        put_varint(&mut r, i as i64); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        put_varint(&mut r, -1); // null key
        put_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        put_varint(&mut r, 0); // no headers
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    records
}

/// A v2 batch with the given payload (`records` is the part after the
/// 61-byte header) and a correct CRC.
pub fn batch_with_payload(
    base_offset: i64,
    record_count: i32,
    attributes: i16,
    base_timestamp: i64,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + payload.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, fixed below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(record_count - 1).to_be_bytes()); // lastOffsetDelta
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(
        &base_timestamp
            .saturating_add(record_count.max(1) as i64 - 1)
            .to_be_bytes(),
    ); // maxTimestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b.extend_from_slice(&record_count.to_be_bytes());
    b.extend_from_slice(payload);
    fix_crc(&mut b);
    b
}

/// A valid uncompressed batch holding `values`.
pub fn make_batch(base_offset: i64, values: &[&[u8]]) -> Vec<u8> {
    batch_with_payload(
        base_offset,
        values.len() as i32,
        0,
        1_700_000_000_000,
        &encode_records(values),
    )
}

/// Sets producerId, producerEpoch and baseSequence (and the transactional
/// attribute bit) of a batch and recomputes its CRC.
pub fn set_producer(
    b: &mut [u8],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    transactional: bool,
) {
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let mut attributes = i16::from_be_bytes([b[21], b[22]]);
    if transactional {
        attributes |= 0x10;
    } else {
        attributes &= !0x10;
    }
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    fix_crc(b);
}

/// A transaction marker as Kafka writes it: a transactional control batch
/// with one record, key (version 0, `kind`: 0 abort, 1 commit), value
/// (version 0, coordinator epoch).
pub fn control_batch(
    base_offset: i64,
    producer_id: i64,
    epoch: i16,
    kind: i16,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let mut record = vec![0u8]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    put_varint(&mut record, 6);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut record, 0); // no headers
    let mut records = Vec::new();
    put_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);
    let mut b = batch_with_payload(base_offset, 1, 0x30, 1_700_000_000_000, &records);
    set_producer(&mut b, producer_id, epoch, -1, true);
    b
}

/// Recomputes the CRC of one batch occupying all of `b`.
pub fn fix_crc(b: &mut [u8]) {
    if b.len() >= CRC_START {
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Walks `bytes` as back-to-back batches (by their batchLength fields) and
/// recomputes the CRC of every complete one. Returns true if anything
/// changed. Lets the fuzzer get past the CRC check.
pub fn fix_all_crcs(bytes: &mut [u8]) -> bool {
    let mut changed = false;
    let mut pos = 0usize;
    while bytes.len() - pos >= BATCH_HEADER_LEN {
        let blen = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if blen < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            break;
        }
        let end = pos + LOG_OVERHEAD + blen as usize;
        if end > bytes.len() {
            break;
        }
        let before: [u8; 4] = bytes[pos + 17..pos + 21].try_into().unwrap();
        fix_crc(&mut bytes[pos..end]);
        changed |= before != bytes[pos + 17..pos + 21];
        pos = end;
    }
    changed
}

/// A clean segment of `n` batches starting at offset 0, batch i holding
/// i+1 records.
pub fn valid_segment(n: usize) -> Vec<u8> {
    let mut seg = Vec::new();
    let mut next = 0i64;
    for i in 0..n {
        let values: Vec<Vec<u8>> = (0..=i)
            .map(|j| format!("value-{i}-{j}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        seg.extend_from_slice(&make_batch(next, &refs));
        next += refs.len() as i64;
    }
    seg
}

// ---------------------------------------------------------------------------
// log_recovery input format
// ---------------------------------------------------------------------------

/// `log_recovery` input: the first byte selects the mode.
/// * even: the rest of the input is the segment file, verbatim;
/// * odd: the rest drives [`structured_segment`], which builds valid batches
///   and then damages them in ways a raw byte mutator rarely reaches
///   (CRC-valid batches with bad fields, torn tails, garbage in between).
pub fn log_recovery_segment(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        None => Vec::new(),
        Some((mode, rest)) if mode & 1 == 0 => rest.to_vec(),
        Some((_, rest)) => {
            let mut u = Unstructured::new(rest);
            structured_segment(&mut u).unwrap_or_default()
        }
    }
}

/// Header fields of a v2 batch as (offset, length).
const HEADER_FIELDS: [(usize, usize); 13] = [
    (0, 8),  // baseOffset
    (8, 4),  // batchLength
    (12, 4), // partitionLeaderEpoch
    (16, 1), // magic
    (17, 4), // crc
    (21, 2), // attributes
    (23, 4), // lastOffsetDelta
    (27, 8), // baseTimestamp
    (35, 8), // maxTimestamp
    (43, 8), // producerId
    (51, 2), // producerEpoch
    (53, 4), // baseSequence
    (57, 4), // recordCount
];

pub fn structured_segment(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let n = u.int_in_range(1..=8)?;
    let mut seg = Vec::new();
    let mut next = 0i64;
    let mut sequences = [0i32; 3];
    for _ in 0..n {
        let count = u.int_in_range(1..=5u8)? as i32;
        let compressed = u.ratio(1, 8)?;
        let ts: i64 = if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            1_700_000_000_000 + u.int_in_range(0..=100_000)?
        };
        // Who wrote it: nobody (-1), or one of three idempotent or
        // transactional producers, in sequence or not; sometimes a marker.
        let producer = u.int_in_range(0..=3usize)?;
        let control = producer > 0 && u.ratio(1, 4)?;
        let mut b = if control {
            let kind = if u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=1i16)?
            };
            control_batch(
                next,
                producer as i64 - 1,
                u.int_in_range(0..=2i16)?,
                kind,
                u.arbitrary()?,
            )
        } else if compressed {
            // Opaque payload: Ferry does not look inside compressed batches.
            let codec = u.int_in_range(1..=7i16)?;
            let len = u.int_in_range(0..=32usize)?;
            let payload = u.bytes(len)?.to_vec();
            batch_with_payload(next, count, codec, ts, &payload)
        } else {
            let mut values = Vec::new();
            for _ in 0..count {
                let len = u.int_in_range(0..=16usize)?;
                values.push(u.bytes(len)?.to_vec());
            }
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            make_batch(next, &refs)
        };
        if producer > 0 && !control {
            let seq = &mut sequences[producer - 1];
            let base_sequence = if u.ratio(1, 8)? { u.arbitrary()? } else { *seq };
            *seq = base_sequence.wrapping_add(count);
            let epoch = u.int_in_range(0..=2i16)?;
            set_producer(
                &mut b,
                producer as i64 - 1,
                epoch,
                base_sequence,
                u.arbitrary()?,
            );
        }
        match u.int_in_range(0..=15u8)? {
            // Set one header field to arbitrary bytes, keep or fix the CRC.
            0..=3 => {
                let (at, len) = *u.choose(&HEADER_FIELDS)?;
                let bytes = u.bytes(len)?;
                if bytes.len() == len {
                    b[at..at + len].copy_from_slice(bytes);
                }
                if at != 17 && u.arbitrary()? {
                    fix_crc(&mut b);
                }
            }
            // Flip one byte anywhere, keep or fix the CRC.
            4 | 5 => {
                let at = u.choose_index(b.len())?;
                b[at] ^= u.int_in_range(1..=255u8)?;
                if u.arbitrary()? {
                    fix_crc(&mut b);
                }
            }
            // Small arithmetic change to a counting field, CRC fixed.
            6 => {
                let (at, len) = *u.choose(&[(0usize, 8usize), (23, 4), (57, 4), (8, 4)])?;
                let delta = u.int_in_range(-3i64..=3)?;
                if len == 8 {
                    let v =
                        i64::from_be_bytes(b[at..at + 8].try_into().unwrap()).wrapping_add(delta);
                    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
                } else {
                    let v = i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
                        .wrapping_add(delta as i32);
                    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
                fix_crc(&mut b);
            }
            _ => {}
        }
        // The next batch continues from whatever this one claims.
        let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        next = if u.ratio(1, 16)? {
            u.arbitrary()?
        } else {
            base.wrapping_add(delta as i64).wrapping_add(1)
        };
        seg.extend_from_slice(&b);
    }
    // Damage to the file as a whole.
    match u.int_in_range(0..=7u8)? {
        0 => {
            let keep = u.int_in_range(0..=seg.len())?;
            seg.truncate(keep);
        }
        1 => {
            let len = u.int_in_range(0..=80usize)?;
            seg.extend_from_slice(u.bytes(len)?);
        }
        2 => {
            let at = u.int_in_range(0..=seg.len())?;
            let len = u.int_in_range(1..=16usize)?;
            let garbage = u.bytes(len)?.to_vec();
            seg.splice(at..at, garbage);
        }
        3 => {
            let at = u.int_in_range(0..=seg.len())?;
            seg.splice(
                at..at,
                std::iter::repeat_n(0u8, u.int_in_range(1..=128usize)?),
            );
        }
        _ => {}
    }
    Ok(seg)
}
