//! The client subcommands as a user runs them: the binary spawned, its
//! JSON output parsed.

use std::process::{Command, Output};
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer};
use ferry_tests::{ferry_bin, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

fn ferry(ferry: &Ferry, args: &[&str]) -> Output {
    Command::new(ferry_bin()).args(args).args(["--bootstrap-server", &ferry.bootstrap()]).output().expect("run ferry")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

#[tokio::test]
async fn group_list_describe_reset_delete() {
    let f = Ferry::start();
    let p = producer(&f.bootstrap(), &[("acks", "all")]);
    produce_all(&p, "cli-orders", &(0..10).map(|i| format!("o{i}")).collect::<Vec<_>>()).await;
    {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", f.bootstrap()).set("group.id", "cli-app").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("cli-orders", 0, Offset::Offset(7)).unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let groups = json_lines(&ferry(&f, &["group", "list", "--output", "json"]));
    assert!(groups.iter().any(|g| g["group"] == "cli-app" && g["state"] == "Empty"), "{groups:?}");
    let described = json_lines(&ferry(&f, &["group", "describe", "cli-app", "--output", "json"]));
    let offsets = described[0]["offsets"].as_array().unwrap();
    let row = offsets.iter().find(|o| o["topic"] == "cli-orders").expect("committed row");
    assert_eq!((row["committed_offset"].as_i64(), row["log_end_offset"].as_i64(), row["lag"].as_i64()), (Some(7), Some(10), Some(3)));
    let out = ferry(&f, &["group", "reset-offsets", "cli-app", "--topic", "cli-orders", "--to-earliest", "--execute"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let described = json_lines(&ferry(&f, &["group", "describe", "cli-app", "--output", "json"]));
    let row = described[0]["offsets"].as_array().unwrap().iter().find(|o| o["topic"] == "cli-orders").cloned().unwrap();
    assert_eq!(row["committed_offset"].as_i64(), Some(0));
    assert!(ferry(&f, &["group", "delete", "cli-app"]).status.success());
    let groups = json_lines(&ferry(&f, &["group", "list", "--output", "json"]));
    assert!(!groups.iter().any(|g| g["group"] == "cli-app"));
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    let port = ferry_tests::free_port();
    let out = Command::new(ferry_bin())
        .args(["group", "list", "--bootstrap-server", &format!("127.0.0.1:{port}"), "--timeout-ms", "1500"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("ferry serve"), "{err}");
    let bad = Command::new(ferry_bin()).args(["group", "frobnicate"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "usage error");
}

#[test]
fn txn_list_describe_abort_a_hanging_transaction() {
    let f = Ferry::start();
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", f.bootstrap())
        .set("transactional.id", "cli-hanging")
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..5 {
        p.send(BaseRecord::<(), str>::to("cli-txn").partition(0).payload(&format!("t{i}"))).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let listed = json_lines(&ferry(&f, &["txn", "list", "--output", "json"]));
    let row = listed.iter().find(|t| t["transactional_id"] == "cli-hanging").expect("listed");
    assert_eq!(row["state"], "Ongoing");
    let described = json_lines(&ferry(&f, &["txn", "describe", "cli-hanging", "--output", "json"]));
    let part = &described[0]["partitions"][0];
    assert_eq!(part["topic"], "cli-txn");
    assert_eq!(part["last_stable_offset"].as_i64(), Some(0), "the open transaction holds the LSO at its first offset");
    assert_eq!(part["held_back"].as_i64(), Some(5));
    let out = ferry(&f, &["txn", "abort", "cli-hanging"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let described = json_lines(&ferry(&f, &["txn", "describe", "cli-hanging", "--output", "json"]));
    assert_ne!(described[0]["state"], "Ongoing");
    let lso = described[0]["partitions"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(lso, 0, "no partitions left open");
    let err = p.commit_transaction(Duration::from_secs(10)).expect_err("the fenced producer cannot commit");
    assert!(format!("{err:?}").to_lowercase().contains("fenced"), "{err:?}");
}

#[test]
fn topic_create_list_describe_alter_delete() {
    let f = Ferry::start();
    let out = ferry(&f, &["topic", "create", "cli-t", "--partitions", "3", "--config", "retention.ms=60000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = json_lines(&ferry(&f, &["topic", "list", "--output", "json"]));
    assert!(listed.iter().any(|t| t["topic"] == "cli-t" && t["partitions"] == 3), "{listed:?}");
    let d = json_lines(&ferry(&f, &["topic", "describe", "cli-t", "--output", "json"]));
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d[0]["configs"]["retention.ms"]["value"], "60000");
    assert!(ferry(&f, &["topic", "alter", "cli-t", "--config", "segment.bytes=1048576"]).status.success());
    let d = json_lines(&ferry(&f, &["topic", "describe", "cli-t", "--output", "json"]));
    assert_eq!(d[0]["configs"]["segment.bytes"]["value"], "1048576");
    assert_eq!(d[0]["configs"]["retention.ms"]["value"], "60000", "alter keeps the other explicit configs");
    let bad = ferry(&f, &["topic", "alter", "cli-t", "--config", "retention.ms=soon"]);
    assert!(!bad.status.success(), "a refused config is an error");
    let dup = ferry(&f, &["topic", "create", "cli-t"]);
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("cli-t"));
    assert!(ferry(&f, &["topic", "delete", "cli-t"]).status.success());
    let listed = json_lines(&ferry(&f, &["topic", "list", "--output", "json"]));
    assert!(!listed.iter().any(|t| t["topic"] == "cli-t"));
}

fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(ferry_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn produce_and_consume_with_each_semantics() {
    let f = Ferry::start();
    let bs = f.bootstrap();
    for (i, semantics) in ["at-most-once", "at-least-once", "exactly-once"].iter().enumerate() {
        let topic = format!("cli-rec-{i}");
        let out = run_with_stdin(
            &["produce", &topic, "--semantics", semantics, "--key-separator", ":", "--header", "source=cli", "--bootstrap-server", &bs],
            "k1:one\nk2:two\nthree\n",
        );
        assert!(out.status.success(), "{semantics}: {}", String::from_utf8_lossy(&out.stderr));
        let group = format!("g-{i}");
        let args = ["consume", &topic, "--group", &group, "--semantics", semantics, "--from-beginning", "--idle-timeout-ms", "3000", "--output", "json", "--bootstrap-server", &bs];
        let records = json_lines(&Command::new(ferry_bin()).args(args).output().unwrap());
        let values: Vec<&str> = records.iter().map(|r| r["value"].as_str().unwrap()).collect();
        assert_eq!(values, vec!["one", "two", "three"], "{semantics}");
        assert_eq!(records[0]["key"], "k1");
        assert_eq!(records[2]["key"], serde_json::Value::Null);
        assert_eq!(records[0]["headers"]["source"], "cli");
        assert_eq!(records[1]["offset"], 1);
        // The group committed: a second consume gets nothing new.
        let again = json_lines(&Command::new(ferry_bin()).args(args).output().unwrap());
        assert!(again.is_empty(), "{semantics}: {again:?}");
    }
    let bad = Command::new(ferry_bin()).args(["consume", "t", "--semantics", "sometimes"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "usage error");
}

#[test]
fn bench_produces_and_reads_back_with_each_semantics() {
    let broker = Ferry::start();
    for semantics in ["at-most-once", "at-least-once", "exactly-once"] {
        let topic = format!("bench-{semantics}");
        let out = ferry(&broker, &["bench", "--topic", &topic, "--records", "20000", "--partitions", "2", "--semantics", semantics, "--consume", "--output", "json"]);
        assert!(out.status.success(), "{semantics}: {}", String::from_utf8_lossy(&out.stderr));
        let summary = &json_lines(&out)[0];
        assert_eq!(summary["semantics"], semantics);
        assert_eq!(summary["delivered"], 20000, "{summary}");
        assert_eq!(summary["consume"]["records"], 20000, "{summary}");
        assert!(summary["produce_records_per_sec"].as_f64().unwrap() > 0.0);
        if semantics == "exactly-once" {
            assert!(summary["transactions"].as_u64().unwrap() >= 1, "{summary}");
        }
    }
    let bad = Command::new(ferry_bin()).args(["bench", "--records", "0"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--records"));
}

/// Where `ferry consume` overlaps kafka-console-consumer.sh it takes that
/// tool's names and meanings: --topic, --timeout-ms (exit when no message
/// arrives), --max-messages, --partition with --offset, --property print.*.
#[test]
fn console_consumer_habits() {
    let f = Ferry::start();
    let bs = f.bootstrap();
    let out = run_with_stdin(&["produce", "--topic", "habits", "--property", "parse.key=true", "--property", "key.separator=:", "--bootstrap-server", &bs], "k0:v0\nk1:v1\nk2:v2\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = std::time::Instant::now();
    let out = Command::new(ferry_bin())
        .args(["consume", "--topic", "habits", "--from-beginning", "--timeout-ms", "2000", "--property", "print.key=true", "--property", "print.offset=true"])
        .args(["--bootstrap-server", &bs])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(25), "--timeout-ms ends the consumer when nothing more arrives");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Offset:0\tk0\tv0\nOffset:1\tk1\tv1\nOffset:2\tk2\tv2\n");
    let out = Command::new(ferry_bin())
        .args(["consume", "--topic", "habits", "--partition", "0", "--offset", "1", "--max-messages", "1", "--bootstrap-server", &bs])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
    let bad = Command::new(ferry_bin()).args(["consume", "--topic", "habits", "--property", "print.colour=true", "--bootstrap-server", &bs]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("print.colour"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = Command::new(ferry_bin()).args(["consume", "--topic", "habits", "--partition", "7", "--bootstrap-server", &bs]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no partition 7"), "{}", String::from_utf8_lossy(&bad.stderr));
}
