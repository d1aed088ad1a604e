//! The examples run as a user runs them, against the real broker, and the
//! two-phase commit survives a SIGKILL at each of its steps.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ferry_tests::Ferry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

fn start_broker() -> Ferry {
    Ferry::start_with(&["--group-initial-rebalance-delay-ms", "0"], &[])
}

fn example(binary: &str, ferry: &Ferry, args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Output {
    let mut command = Command::new(binary);
    command.current_dir(dir).arg("--bootstrap-server").arg(ferry.bootstrap()).args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run the example")
}

/// The last stdout line, which every example prints as its JSON summary.
fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("no JSON summary ({e}); status {:?}\nstdout:\n{stdout}\nstderr:\n{}", output.status, String::from_utf8_lossy(&output.stderr))
    })
}

fn succeeded(output: Output) -> Value {
    assert!(output.status.success(), "status {:?}, stderr:\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    summary(&output)
}

#[test]
fn metrics_at_most_once() {
    let ferry = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let s = succeeded(example(env!("CARGO_BIN_EXE_metrics-amo"), &ferry, &["--samples", "5000", "--idle-ms", "1500"], &[], dir.path()));
    let received = s["received"].as_u64().unwrap();
    // At most once: never more than was sent (loss would be allowed; on a healthy broker there is none to see).
    assert!(received > 0 && received <= 5000, "{s}");
}

#[test]
fn notifications_processed_once_across_runs() {
    let ferry = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--orders", "1000", "--idle-ms", "1500"];
    let bin = env!("CARGO_BIN_EXE_notifications-alo");
    let first = succeeded(example(bin, &ferry, &args, &[], dir.path()));
    assert_eq!(first["published"], 1100, "{first}");
    assert_eq!(first["processed"], 1000, "{first}");
    assert_eq!(first["duplicates_filtered"], 100, "{first}");
    assert_eq!(first["notifications_sent"], 1000, "{first}");
    // The same orders published again: every one is a duplicate now, and the
    // group's committed offsets kept the first run's records from coming back.
    let second = succeeded(example(bin, &ferry, &args, &[], dir.path()));
    assert_eq!(second["processed"], 0, "{second}");
    assert_eq!(second["duplicates_filtered"], 1100, "{second}");
    assert_eq!(second["notifications_sent"], 1000, "{second}");
}

#[test]
fn payments_exactly_once_through_an_aborted_batch() {
    let ferry = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let s = succeeded(example(env!("CARGO_BIN_EXE_payments-eos"), &ferry, &["--payments", "2000", "--idle-ms", "1500"], &[], dir.path()));
    assert!(s["aborted_inputs"].as_u64().unwrap() > 0, "the simulated failure must abort a batch: {s}");
    assert_eq!(s["committed_inputs"], 2000, "{s}");
    assert_eq!(s["payments_in_ledger"], 2000, "{s}");
    assert_eq!(s["payments_with_wrong_entries"], 0, "{s}");
}

fn committed_total(ferry: &Ferry, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", ferry.bootstrap())
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    partitions.add_partition(topic, 1);
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// Kills the bank-transfer example at each step of its third batch; the
/// next run recovers, and the database and the topic agree: every transfer
/// applied once, money conserved, offsets committed to the end.
#[test]
fn two_phase_commit_survives_a_kill_at_every_step() {
    const TRANSFERS: i64 = 200;
    let ferry = start_broker();
    let bin = env!("CARGO_BIN_EXE_bank-transfer");
    let points = [
        ("before-prepare", false),
        ("between-prepares", false),
        ("after-prepares", false),
        ("after-decision", true),
        ("between-commits", true),
        ("after-commits", true),
    ];
    for (point, decided) in points {
        let dir = tempfile::tempdir().unwrap();
        let topic = format!("transfers-{point}");
        let seeded = succeeded(example(bin, &ferry, &["--topic", &topic, "seed", "--transfers", &TRANSFERS.to_string()], &[], dir.path()));
        assert_eq!(seeded["seeded"], TRANSFERS);
        let run_args = ["--topic", &topic, "run", "--group", &topic, "--transactional-id", &topic, "--max-batch", "20", "--idle-ms", "1500"];
        let failpoint = format!("{point}:3");
        let killed = example(bin, &ferry, &run_args, &[("FERRY_2PC_FAILPOINT", &failpoint)], dir.path());
        assert_eq!(killed.status.signal(), Some(9), "{point}: expected a SIGKILL at the failpoint, stderr:\n{}", String::from_utf8_lossy(&killed.stderr));

        let s = succeeded(example(bin, &ferry, &run_args, &[], dir.path()));
        let recovered = if decided { &s["recovery"]["committed"] } else { &s["recovery"]["aborted"] };
        assert_eq!(recovered.as_array().map(Vec::len), Some(1), "{point}: recovery should resolve the killed batch: {s}");
        assert_eq!(s["transfers"], TRANSFERS, "{point}: each transfer applied exactly once: {s}");
        assert_eq!(s["total_balance"], 10 * 1000, "{point}: money is conserved: {s}");
        assert_eq!(committed_total(&ferry, &topic, &topic), TRANSFERS, "{point}: offsets committed to the end");
    }
}
