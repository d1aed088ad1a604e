//! Torn tails are truncated to the last whole batch; corruption followed
//! by valid data stops the broker with a message naming file and position.

use std::io::Write;
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::{segment_files, Ferry};

async fn write_records(ferry: &Ferry, topic: &str, n: usize) -> Vec<String> {
    // One record per batch so a cut removes exactly one record.
    let p = producer(&ferry.bootstrap(), &[("acks", "all"), ("linger.ms", "0"), ("batch.num.messages", "1")]);
    let values: Vec<String> = (0..n).map(|i| format!("rec-{i:05}")).collect();
    for chunk in values.chunks(10) {
        produce_all(&p, topic, chunk).await;
    }
    values
}

#[tokio::test]
async fn torn_tail_cut_is_truncated_to_last_whole_batch() {
    let mut ferry = Ferry::start();
    let values = write_records(&ferry, "torn", 100).await;
    ferry.kill9();
    let seg = segment_files(&ferry.partition_dir("torn", 0)).pop().expect("segment");
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    ferry.spawn_and_wait();
    assert!(ferry.log().contains("truncating torn tail"), "{}", ferry.log());
    let read = read_partition(&ferry.bootstrap(), "torn", 0, Duration::from_secs(2));
    assert_eq!(read.len(), 99, "the torn last batch is gone, the rest intact");
    for (o, v) in &read {
        assert_eq!(v, &values[*o as usize]);
    }
    // The log continues at the truncation point.
    let p = producer(&ferry.bootstrap(), &[("acks", "all")]);
    assert_eq!(produce_all(&p, "torn", &["next".into()]).await, vec![99]);
}

#[tokio::test]
async fn torn_tail_garbage_is_truncated() {
    let mut ferry = Ferry::start();
    write_records(&ferry, "garbage", 50).await;
    ferry.kill9();
    let seg = segment_files(&ferry.partition_dir("garbage", 0)).pop().expect("segment");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    ferry.spawn_and_wait();
    let read = read_partition(&ferry.bootstrap(), "garbage", 0, Duration::from_secs(2));
    assert_eq!(read.len(), 50);
    let p = producer(&ferry.bootstrap(), &[("acks", "all")]);
    assert_eq!(produce_all(&p, "garbage", &["next".into()]).await, vec![50]);
}

#[tokio::test]
async fn mid_log_corruption_refuses_to_start_naming_file_and_position() {
    let mut ferry = Ferry::start();
    write_records(&ferry, "corrupt", 100).await;
    ferry.kill9();
    let seg = segment_files(&ferry.partition_dir("corrupt", 0)).pop().expect("segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, log) = ferry.start_expecting_exit();
    assert_ne!(code, Some(0), "must not start on a corrupt log");
    assert!(log.contains(&seg.display().to_string()), "message names the file:\n{log}");
    assert!(log.contains("byte position"), "message names the position:\n{log}");
    // Nothing was truncated.
    assert_eq!(std::fs::read(&seg).unwrap().len(), bytes.len());
}
