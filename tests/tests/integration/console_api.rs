//! The JSON API the console reads, against the real binary: aborting an
//! open transaction over HTTP (fenced producer, ABORT markers, the LSO
//! released), the per-topic counts the rates come from, the fsync
//! histogram, the broker list, and the console's files; with ACLs on, a
//! login from the user store and only what the user may describe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_keyed};
use ferry_tests::{ferry_bin, free_port, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

/// One request over a plain socket; returns (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    (status, body.to_string())
}

fn get(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn txn_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "600000")
        .create()
        .expect("transactional producer")
}

fn start() -> (Ferry, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let f = Ferry::start_with(&["--http-listen", &http], &[]);
    (f, http)
}

#[tokio::test]
async fn abort_over_http_fences_the_producer_and_releases_the_lso() {
    let (f, addr) = start();
    let p = txn_producer(&f.bootstrap(), "pay/1");
    p.init_transactions(Duration::from_secs(10)).expect("init");
    p.begin_transaction().expect("begin");
    for i in 0..5 {
        p.send(BaseRecord::<(), str>::to("held").partition(0).payload(&format!("t{i}"))).map_err(|(e, _)| e).expect("send");
    }
    p.flush(Duration::from_secs(10)).expect("flush");
    let before = get(&addr, "/api/transactions");
    let t = &before[0];
    assert_eq!((t["state"].as_str(), t["partitions"][0]["last_stable_offset"].as_i64()), (Some("Ongoing"), Some(0)), "{before}");
    let epoch = t["producer_epoch"].as_i64().expect("epoch");

    assert_eq!(http(&addr, "POST", "/api/transactions/nobody/abort", &[]).0, 404);
    assert_eq!(http(&addr, "GET", "/api/transactions/pay%2F1/abort", &[]).0, 405);
    let (status, _) = http(&addr, "POST", "/api/transactions/pay%2F1/abort", &["Origin: https://elsewhere.example"]);
    assert_eq!(status, 403, "a page on another site cannot abort");

    let (status, body) = http(&addr, "POST", "/api/transactions/pay%2F1/abort", &[&format!("Origin: http://{addr}")]);
    assert_eq!(status, 200, "{body}");
    let after: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((after["state"].as_str(), after["producer_epoch"].as_i64()), (Some("CompleteAbort"), Some(epoch + 1)), "{after}");
    // Five records and the ABORT marker: nothing held back any more.
    let part = &after["partitions"][0];
    assert_eq!((part["last_stable_offset"].as_i64(), part["high_watermark"].as_i64()), (Some(6), Some(6)), "{after}");
    assert_eq!(http(&addr, "POST", "/api/transactions/pay%2F1/abort", &[]).0, 409, "no longer ongoing");

    let committed = read_keyed(&f.bootstrap(), "held", 0, "read_committed", Duration::from_secs(2));
    assert!(committed.is_empty(), "read_committed sees nothing aborted: {committed:?}");
    let uncommitted = read_keyed(&f.bootstrap(), "held", 0, "read_uncommitted", Duration::from_secs(2));
    assert_eq!(uncommitted.len(), 5, "the records were there");
    let err = p.commit_transaction(Duration::from_secs(10)).expect_err("the fenced producer cannot commit");
    assert!(format!("{err:?}").to_lowercase().contains("fenced"), "{err:?}");
    assert!(f.log().contains("transaction aborted over HTTP"), "{}", f.log());
}

#[tokio::test]
async fn counts_fsyncs_brokers_and_the_console_files() {
    let (f, addr) = start();
    let p = producer(&f.bootstrap(), &[("acks", "all")]);
    produce_all(&p, "counted", &(0..20).map(|i| format!("v{i}")).collect::<Vec<_>>()).await;

    let topics = get(&addr, "/api/topics");
    let t = topics.as_array().expect("array").iter().find(|t| t["name"] == "counted").expect("topic");
    assert_eq!(t["records_in"].as_i64(), Some(20), "{t}");
    assert_eq!(t["bytes_in"].as_u64(), t["partitions"][0]["size_bytes"].as_u64(), "{t}");
    assert!(t["bytes_out"].as_u64().is_some(), "{t}");

    let fsync = get(&addr, "/api/fsync");
    let buckets = fsync["buckets"].as_array().expect("buckets");
    let count = fsync["count"].as_u64().expect("count");
    assert!(count >= 1, "acks=all fsynced: {fsync}");
    assert_eq!(buckets.last().map(|b| (&b["le"], b["count"].as_u64())), Some((&Value::Null, Some(count))), "+Inf holds all");
    assert!(buckets.windows(2).all(|w| w[0]["count"].as_u64() <= w[1]["count"].as_u64()), "cumulative");

    let cluster = get(&addr, "/api/cluster");
    assert_eq!((cluster["mode"].as_str(), cluster["brokers"].as_array().map(Vec::len)), (Some("single"), Some(1)), "{cluster}");
    let led = cluster["partitions"].as_array().expect("partitions").iter().find(|p| p["topic"] == "counted").expect("partition");
    assert_eq!(led["leader"], cluster["node_id"], "{cluster}");

    for (path, needle) in [("/", "/console.js"), ("/console.js", "drawChart"), ("/console.css", "canvas")] {
        let (status, body) = http(&addr, "GET", path, &[]);
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path} holds {needle}");
    }
}

/// `Authorization: Basic ...` for `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn topic_names(addr: &str, login: &str) -> Vec<String> {
    let (status, body) = http(addr, "GET", "/api/topics", &[login]);
    assert_eq!(status, 200, "{body}");
    let topics: Value = serde_json::from_str(&body).expect("JSON");
    let mut names: Vec<String> = topics.as_array().expect("array").iter().map(|t| t["name"].as_str().expect("name").to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn with_acls_the_console_takes_a_login_and_shows_what_the_user_may_describe() {
    let http_addr = format!("127.0.0.1:{}", free_port());
    let args = ["--http-listen", &http_addr, "--acls-enable", "true", "--super-users", "User:ANONYMOUS;User:root"];
    let mut ferry = Ferry::unstarted(free_port(), &args, &[]);
    for user in ["alice", "root"] {
        ferry_tests::add_user(&ferry.data_dir, user, &format!("{user}-pw"));
    }
    ferry.spawn_and_wait();
    let p = producer(&ferry.bootstrap(), &[]);
    for topic in ["public", "private"] {
        produce_all(&p, topic, &["v".to_string()]).await;
    }
    let out = Command::new(ferry_bin())
        .args(["acl", "add", "--allow-principal", "User:alice", "--operation", "Describe", "--topic", "public", "--bootstrap-server", &ferry.bootstrap()])
        .output()
        .expect("ferry acl add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for path in ["/", "/api/topics", "/metrics"] {
        let (status, body) = http(&http_addr, "GET", path, &[]);
        assert_eq!(status, 401, "{path} without a login: {body}");
    }
    let (status, _) = http(&http_addr, "GET", "/api/topics", &[&basic("alice", "wrong")]);
    assert_eq!(status, 401, "a wrong password");
    let (status, _) = http(&http_addr, "GET", "/api/topics", &[&basic("mallory", "alice-pw")]);
    assert_eq!(status, 401, "an unknown user");

    let (root, alice) = (basic("root", "root-pw"), basic("alice", "alice-pw"));
    assert_eq!(topic_names(&http_addr, &root), ["private", "public"], "a super user sees every topic");
    assert_eq!(topic_names(&http_addr, &alice), ["public"], "alice sees the topic she may describe");
    let (status, page) = http(&http_addr, "GET", "/", &[&alice]);
    assert!(status == 200 && page.contains("<html"), "the console itself after the login");
    for path in ["/metrics", "/api/cluster", "/api/fsync"] {
        assert_eq!(http(&http_addr, "GET", path, &[&alice]).0, 403, "{path}: alice may not describe the cluster");
        assert_eq!(http(&http_addr, "GET", path, &[&root]).0, 200, "{path}: root may");
    }
    let (status, body) = http(&http_addr, "POST", "/api/transactions/some-id/abort", &[&alice]);
    assert_eq!(status, 403, "aborting takes WRITE on the transactional id: {body}");
    let (status, _) = http(&http_addr, "POST", "/api/transactions/some-id/abort", &[&root]);
    assert_eq!(status, 404, "root may, and the id is unknown");
}
