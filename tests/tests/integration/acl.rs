//! ACLs on the real binary with librdkafka: `--acls-enable true`, the
//! admin a super user on the PLAINTEXT listener (User:ANONYMOUS there),
//! users alice and root on SASL_PLAINTEXT, ACLs changed with `ferry acl`.

use std::process::Command;
use std::time::Duration;

use ferry_tests::cluster::create_topic;
use ferry_tests::{ferry_bin, free_port, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

fn broker() -> (Ferry, u16) {
    let (port, sasl) = (free_port(), free_port());
    let listen = format!("PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}");
    let args = ["--listen", &listen, "--sasl-enabled-mechanisms", "PLAIN", "--acls-enable", "true", "--super-users", "User:ANONYMOUS;User:root"];
    let mut ferry = Ferry::unstarted(port, &args, &[]);
    for user in ["alice", "root"] {
        ferry_tests::add_user(&ferry.data_dir, user, &format!("{user}-pw"));
    }
    ferry.spawn_and_wait();
    (ferry, sasl)
}

fn user(port: u16, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", name)
        .set("sasl.password", format!("{name}-pw"));
    c
}

/// `ferry acl ARGS` against the broker's PLAINTEXT listener (a super user).
fn ferry_acl(ferry: &Ferry, args: &[&str]) -> String {
    let out = Command::new(ferry_bin()).arg("acl").args(args).args(["--bootstrap-server", &ferry.bootstrap()]).output().expect("ferry acl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferry acl {args:?}: {text}");
    text
}

/// One record; the error code when it is refused.
async fn produce_one(config: &ClientConfig, topic: &str) -> Result<i64, RDKafkaErrorCode> {
    let p: FutureProducer = config.clone().set("message.timeout.ms", "5000").create().expect("producer");
    match p.send(FutureRecord::<str, str>::to(topic).payload("v"), Duration::from_secs(5)).await {
        Ok(delivery) => Ok(delivery.offset),
        Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
    }
}

fn high_watermark(ferry: &Ferry, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(5)).expect("watermarks").1
}

fn visible_topics(config: &ClientConfig) -> Vec<String> {
    let c: BaseConsumer = config.create().expect("consumer");
    let md = c.fetch_metadata(None, Duration::from_secs(5)).expect("metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

#[tokio::test]
async fn writes_need_an_acl_which_applies_at_once_survives_a_restart_and_super_users_bypass() {
    let (mut ferry, sasl) = broker();
    let alice = user(sasl, "alice");
    for t in ["orders", "secret"] {
        assert_eq!(create_topic(&ferry.bootstrap(), t, 1, 1).await, None, "the super user creates topics");
    }
    assert_eq!(produce_one(&alice, "orders").await, Err(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert_eq!(high_watermark(&ferry, "orders"), 0, "nothing was written");

    ferry_acl(&ferry, &["add", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "orders"]);
    assert_eq!(produce_one(&alice, "orders").await, Ok(0));
    assert_eq!(visible_topics(&alice), vec!["orders".to_string()], "WRITE implies DESCRIBE; secret is hidden");
    assert_eq!(produce_one(&user(sasl, "root"), "secret").await, Ok(0), "a super user needs no ACL");

    ferry.restart();
    assert!(ferry_acl(&ferry, &["list"]).contains("User:alice"), "ACLs survive a restart");
    assert_eq!(produce_one(&alice, "orders").await, Ok(1));
    let removed = ferry_acl(&ferry, &["remove", "--allow-principal", "User:alice", "--topic", "orders"]);
    assert!(removed.contains("WRITE"), "{removed}");
    assert_eq!(produce_one(&alice, "orders").await, Err(RDKafkaErrorCode::TopicAuthorizationFailed), "a deleted ACL applies at once");
    assert_eq!(high_watermark(&ferry, "orders"), 2);
}

#[tokio::test]
async fn groups_transactional_ids_and_topic_creation_are_checked() {
    let (ferry, sasl) = broker();
    let alice = user(sasl, "alice");
    let created = {
        let admin: rdkafka::admin::AdminClient<_> = alice.create().expect("admin");
        let t = rdkafka::admin::NewTopic::new("alice-topic", 1, rdkafka::admin::TopicReplication::Fixed(1));
        admin.create_topics([&t], &rdkafka::admin::AdminOptions::new()).await.expect("answer")[0].clone()
    };
    assert_eq!(created.err().map(|(_, code)| code), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "CREATE is needed");
    ferry_acl(&ferry, &["add", "--allow-principal", "User:alice", "--operation", "Create", "--topic", "alice-", "--resource-pattern-type", "prefixed"]);
    let admin: rdkafka::admin::AdminClient<_> = alice.create().expect("admin");
    let t = rdkafka::admin::NewTopic::new("alice-topic", 1, rdkafka::admin::TopicReplication::Fixed(1));
    assert!(admin.create_topics([&t], &rdkafka::admin::AdminOptions::new()).await.expect("answer")[0].is_ok(), "a prefixed CREATE allows it");

    // READ on the topic but not on the group.
    ferry_acl(&ferry, &["add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "alice-topic"]);
    let consumer: BaseConsumer = alice.clone().set("group.id", "alice-group").set("auto.offset.reset", "earliest").create().expect("consumer");
    consumer.subscribe(&["alice-topic"]).expect("subscribe");
    let mut refused = None;
    for _ in 0..50 {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            refused = e.rdkafka_error_code();
            break;
        }
    }
    assert_eq!(refused, Some(RDKafkaErrorCode::GroupAuthorizationFailed));

    let txn: FutureProducer = alice.clone().set("transactional.id", "tx-alice").create().expect("producer");
    let e = txn.init_transactions(Duration::from_secs(10)).expect_err("no ACL on the transactional id");
    assert_eq!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed));
    ferry_acl(&ferry, &["add", "--allow-principal", "User:alice", "--operation", "Write", "--transactional-id", "tx-alice", "--topic", "alice-topic"]);
    let txn: FutureProducer = alice.clone().set("transactional.id", "tx-alice").create().expect("producer");
    txn.init_transactions(Duration::from_secs(10)).expect("allowed now");
    txn.begin_transaction().expect("begin");
    txn.send(FutureRecord::<str, str>::to("alice-topic").payload("t"), Duration::from_secs(5)).await.expect("sent");
    txn.commit_transaction(Duration::from_secs(10)).expect("committed");
}
