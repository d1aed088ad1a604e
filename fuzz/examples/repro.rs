//! Runs fuzz inputs through the same calls as a fuzz target, but in an
//! ordinary build: no libFuzzer, no sanitizer, no malloc limit, the default
//! panic hook. Shows how a saved input behaves in a real broker process.
//!
//!     cd fuzz && cargo +nightly run --release --example repro -- <target> <input>...
//!
//! <target> is request_decode, batch_validate or log_recovery.

use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, inputs) = args
        .split_first()
        .expect("usage: repro <target> <input>...");
    for input in inputs {
        let data = std::fs::read(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        eprintln!("== {target} {input} ({} bytes)", data.len());
        match target.as_str() {
            "request_decode" => {
                let r = ferry_kafka::codec::decode_request(bytes::Bytes::from(data));
                eprintln!(
                    "decode_request -> {:?}",
                    r.map(|d| format!("{d:?}").chars().take(200).collect::<String>())
                );
            }
            "batch_validate" => {
                eprintln!(
                    "validate_batch -> {:?}",
                    ferry_log::batch::validate_batch(&data)
                );
                eprintln!(
                    "split_and_validate -> {:?}",
                    ferry_log::batch::split_and_validate(&data)
                );
            }
            "log_recovery" => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("00000000000000000000.log");
                let segment = ferry_fuzz::log_recovery_segment(&data);
                std::fs::write(&path, &segment).unwrap();
                // As the broker opens a partition: rebuild producer state too.
                let mut producers = ferry_broker::producer_state::ProducerStateTable::new(10_000);
                let opened = ferry_log::DiskLog::open_observed(
                    dir.path(),
                    Arc::new(ferry_log::storage::FsStorage),
                    ferry_log::LogConfig::default(),
                    &mut |h, bytes| producers.replay(h, bytes, 1_700_000_000_000),
                );
                eprintln!("producers after recovery: {:?}", producers.summaries());
                match opened {
                    Ok(log) => {
                        eprintln!(
                            "open -> Ok: segment {} -> {} bytes, log start {}, log end {}",
                            segment.len(),
                            std::fs::metadata(&path).unwrap().len(),
                            log.log_start_offset(),
                            log.next_offset()
                        );
                        match log.read_plan(log.log_start_offset()) {
                            Ok(Some(ferry_log::ReadPlan::Disk(slice))) => {
                                eprintln!(
                                    "read_slice -> {:?}",
                                    ferry_log::read_slice(&slice, 1 << 20, i64::MAX, true)
                                        .map(|b| b.len())
                                )
                            }
                            other => eprintln!("read_plan -> {:?}", other.map(|p| p.is_some())),
                        }
                    }
                    Err(e) => eprintln!("open -> Err: {e}"),
                }
            }
            other => panic!("unknown target {other}"),
        }
    }
}
