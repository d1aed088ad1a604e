//! Helpers for tests of a cluster of real brokers: waiting, creating topics
//! and asking who leads what, through librdkafka.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin")
}

/// Polls `ok` every 100 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CreateTopics through librdkafka; None when created, else the error.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, replication: i32) -> Option<RDKafkaErrorCode> {
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    match admin(bootstrap).create_topics([&t], &AdminOptions::new()).await {
        Ok(r) => r[0].as_ref().err().map(|(_, code)| *code),
        Err(e) => Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
    }
}

/// Creates a topic once the cluster can (at start there may be no
/// metadata leader yet), retrying for up to 30 s.
pub async fn create_topic_when_ready(bootstrap: &str, name: &str, partitions: i32, replication: i32) {
    // librdkafka sends CreateTopics to the controller; until the metadata
    // group elected one there is none to send it to.
    wait_until("a metadata leader", Duration::from_secs(30), || crate::raw::controller_id(bootstrap) > 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_topic(bootstrap, name, partitions, replication).await {
            None | Some(RDKafkaErrorCode::TopicAlreadyExists) => return,
            Some(code) => assert!(Instant::now() < deadline, "cannot create {name}: {code:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Each partition's leader as `bootstrap` answers Metadata (-1: none);
/// empty when the broker does not answer.
pub fn leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    let Ok(md) = admin(bootstrap).inner().fetch_metadata(Some(topic), Duration::from_secs(3)) else { return Vec::new() };
    let Some(t) = md.topics().first() else { return Vec::new() };
    let mut parts: Vec<(i32, i32)> = t.partitions().iter().map(|p| (p.id(), p.leader())).collect();
    parts.sort();
    parts.into_iter().map(|(_, l)| l).collect()
}

/// Each partition's in-sync replicas as `bootstrap` answers Metadata, sorted.
pub fn in_sync(bootstrap: &str, topic: &str) -> Vec<Vec<i32>> {
    let Ok(md) = admin(bootstrap).inner().fetch_metadata(Some(topic), Duration::from_secs(3)) else { return Vec::new() };
    let Some(t) = md.topics().first() else { return Vec::new() };
    let mut parts: Vec<(i32, Vec<i32>)> = t
        .partitions()
        .iter()
        .map(|p| {
            let mut isr = p.isr().to_vec();
            isr.sort();
            (p.id(), isr)
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, isr)| isr).collect()
}

/// Waits until every partition of `topic` has a leader, as `bootstrap` sees it.
pub fn wait_for_leaders(bootstrap: &str, topic: &str, partitions: usize) -> Vec<i32> {
    let mut seen = Vec::new();
    wait_until(&format!("leaders for every partition of {topic}"), Duration::from_secs(30), || {
        seen = leaders(bootstrap, topic);
        seen.len() == partitions && seen.iter().all(|l| *l > 0)
    });
    seen
}
