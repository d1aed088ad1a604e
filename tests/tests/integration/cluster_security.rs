//! Users and ACLs on three brokers: a user made at one broker logs in at
//! every broker's store, an ACL added at one is listed and enforced at
//! all, a removal made at a third broker is gone everywhere, and a broker
//! SIGKILLed and restarted keeps them. They travel whole through the
//! metadata group (`Command::PutSecurityStore`).

use std::process::Command;
use std::time::Duration;

use ferry_tests::cluster::{create_topic_when_ready, wait_until};
use ferry_tests::kafka::producer;
use ferry_tests::raw::call;
use ferry_tests::{ferry_bin, Ferry};
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;

/// The users DescribeUserScramCredentials lists at `addr`.
fn users_at(addr: &str) -> Vec<String> {
    let resp: DescribeUserScramCredentialsResponse = call(addr, ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default().with_users(None));
    let mut users: Vec<String> = resp.results.iter().filter(|r| r.error_code == 0).map(|r| r.user.to_string()).collect();
    users.sort();
    users
}

/// `ferry acl list` at `addr`; empty while the broker cannot answer (a
/// broker just restarted).
fn acls_at(addr: &str) -> String {
    let out = Command::new(ferry_bin()).args(["acl", "list", "--bootstrap-server", addr]).output().expect("ferry acl list");
    if out.status.success() { String::from_utf8_lossy(&out.stdout).into_owned() } else { String::new() }
}

/// `ferry acl ARGS` at `addr`: its output.
fn ferry_acl(addr: &str, args: &[&str]) -> String {
    let out = Command::new(ferry_bin()).arg("acl").args(args).args(["--bootstrap-server", addr]).output().expect("ferry acl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferry acl {args:?} at {addr}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_reach_every_broker_and_survive_a_restart() {
    // Everyone may do what no ACL covers: the anonymous test client manages ACLs.
    let mut brokers = Ferry::start_cluster(3, &["--acls-enable", "true", "--allow-everyone-if-no-acl-found", "true"]);
    let addrs: Vec<String> = brokers.iter().map(|b| b.bootstrap()).collect();
    create_topic_when_ready(&addrs[0], "guarded", 1, 3).await;

    let alice = ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_static_str("alice"))
        .with_mechanism(1)
        .with_iterations(8192)
        .with_salt(vec![7u8; 16].into())
        .with_salted_password(vec![9u8; 32].into());
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![alice]);
    let resp: AlterUserScramCredentialsResponse = call(&addrs[0], ApiKey::AlterUserScramCredentials, 0, &req);
    assert_eq!(resp.results[0].error_code, 0, "{:?}", resp.results[0].error_message);
    for addr in &addrs {
        wait_until(&format!("alice listed at {addr}"), Duration::from_secs(10), || users_at(addr) == ["alice"]);
    }

    ferry_acl(&addrs[1], &["add", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "guarded"]);
    for addr in &addrs {
        wait_until(&format!("the ACL listed at {addr}"), Duration::from_secs(10), || acls_at(addr).contains("User:alice"));
    }
    // The topic is now covered by an ACL that names alice alone: the
    // anonymous producer is refused at its leader, whichever broker leads.
    let p = producer(&addrs.join(","), &[("message.timeout.ms", "5000")]);
    let refused = p.send(FutureRecord::<str, str>::to("guarded").payload("v"), Duration::from_secs(5)).await;
    let code = refused.expect_err("refused by the replicated ACL").0.rdkafka_error_code();
    assert_eq!(code, Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed));

    brokers[2].kill9();
    // While the metadata group may be electing a new leader, an admin retries (adding is idempotent).
    wait_until("bob's ACL added with a broker down", Duration::from_secs(30), || {
        let args = ["acl", "add", "--allow-principal", "User:bob", "--operation", "Read", "--topic", "guarded", "--bootstrap-server", &addrs[0]];
        Command::new(ferry_bin()).args(args).output().expect("ferry acl add").status.success()
    });
    brokers[2].spawn_and_wait();
    for addr in &addrs {
        wait_until(&format!("both ACLs at {addr} after the restart"), Duration::from_secs(15), || {
            let listed = acls_at(addr);
            listed.contains("User:alice") && listed.contains("User:bob")
        });
        assert_eq!(users_at(addr), ["alice"], "{addr}");
    }
    ferry_acl(&addrs[2], &["remove", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "guarded"]);
    for addr in &addrs {
        wait_until(&format!("alice's ACL gone at {addr}"), Duration::from_secs(10), || !acls_at(addr).contains("User:alice"));
    }
}
