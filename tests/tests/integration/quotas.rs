//! Client quotas on the real binary: set with AlterClientQuotas, a
//! producer over producer_byte_rate answered with Kafka's throttle time and
//! its connection muted for it, librdkafka (client defaults) slowed to the
//! quota while another client id is not, and the quotas surviving a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::raw::{self, call};
use ferry_tests::Ferry;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, ProducerContext};
use rdkafka::statistics::Statistics;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// Sets `key` on `clients/<client_id>`; the entry's error code.
fn set_client_quota(addr: &str, client_id: &str, key: &str, value: f64, validate_only: bool) -> i16 {
    let entry = EntryData::default()
        .with_entity(vec![EntityData::default().with_entity_type(s("client-id")).with_entity_name(Some(s(client_id)))])
        .with_ops(vec![OpData::default().with_key(s(key)).with_value(value)]);
    let req = AlterClientQuotasRequest::default().with_entries(vec![entry]).with_validate_only(validate_only);
    let resp: AlterClientQuotasResponse = call(addr, ApiKey::AlterClientQuotas, 1, &req);
    resp.entries[0].error_code
}

/// The quotas of `clients/<client_id>` as DescribeClientQuotas lists them.
fn client_quotas(addr: &str, client_id: &str) -> Vec<(String, f64)> {
    let req = DescribeClientQuotasRequest::default()
        .with_components(vec![ComponentData::default().with_entity_type(s("client-id")).with_match_type(0).with_match(Some(s(client_id)))]);
    let resp: DescribeClientQuotasResponse = call(addr, ApiKey::DescribeClientQuotas, 1, &req);
    assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
    resp.entries.unwrap_or_default().iter().flat_map(|e| e.values.iter().map(|v| (v.key.to_string(), v.value))).collect()
}

/// Sends one frame on `conn` and reads its answer's body.
fn roundtrip(conn: &mut TcpStream, frame: &[u8]) -> Vec<u8> {
    conn.write_all(frame).expect("send");
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).expect("answer length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut body).expect("answer");
    body
}

const QUOTA: f64 = 200_000.0;

/// Three produces of ~900 KB on one connection (client id `ferry-tests`,
/// quota 200,000 B/s); answers (throttle_time_ms of the third, ms the
/// fourth waited for its answer).
fn burst(addr: &str, topic: &str) -> (i32, u128, usize) {
    let value = vec![b'q'; 90_000];
    let values: Vec<&[u8]> = (0..10).map(|_| value.as_slice()).collect();
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut throttles = Vec::new();
    let mut sent = 0;
    for i in 0..3 {
        let frame = raw::produce_frame(topic, raw::record_batch(&values), 1, i);
        sent += frame.len();
        let resp = raw::produce_response(&roundtrip(&mut conn, &frame), 8);
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        throttles.push(resp.throttle_time_ms);
    }
    assert_eq!(&throttles[..2], &[0, 0], "within the quota over the 10 s window");
    let started = Instant::now();
    let frame = raw::produce_frame(topic, raw::record_batch(&[b"small"]), 1, 9);
    roundtrip(&mut conn, &frame);
    (throttles[2], started.elapsed().as_millis(), sent)
}

#[test]
fn a_producer_over_its_byte_rate_gets_kafkas_throttle_time_and_a_muted_connection_even_after_a_restart() {
    let mut ferry = Ferry::start();
    let addr = ferry.bootstrap();
    raw::ensure_topic(&addr, "quota-raw");
    assert_eq!(set_client_quota(&addr, "ferry-tests", "producer_byte_rate", QUOTA, true), 0);
    assert!(client_quotas(&addr, "ferry-tests").is_empty(), "validate_only changes nothing");
    assert_eq!(set_client_quota(&addr, "ferry-tests", "producer_byte_rate", 1.5, false), 42, "a byte rate is a Long: INVALID_REQUEST");
    assert_eq!(set_client_quota(&addr, "ferry-tests", "no_such_quota", 1.0, false), 42);
    assert_eq!(set_client_quota(&addr, "ferry-tests", "producer_byte_rate", QUOTA, false), 0);
    assert_eq!(set_client_quota(&addr, "ferry-tests", "controller_mutation_rate", 10.0, false), 0);

    for round in ["before", "after"] {
        let (throttle, waited, sent) = burst(&addr, "quota-raw");
        // Kafka's arithmetic: rate = bytes / window (10 to 11 s while the
        // first 10 windows fill), throttle = (rate - quota) / quota × window
        // = bytes / quota - window: 13.5 s - 10..11 s.
        let expected = sent as f64 / QUOTA * 1000.0;
        println!("{round} restart: {sent} bytes, throttle_time_ms {throttle} (bytes/quota {expected:.0} ms - window), next answer after {waited} ms");
        assert!((2000..=4000).contains(&throttle), "throttle_time_ms {throttle}");
        assert!(waited + 150 >= throttle as u128, "the connection stays muted for the throttle time: {waited} ms");
        if round == "before" {
            ferry.restart();
        }
    }
    let mut kept = client_quotas(&addr, "ferry-tests");
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(kept, vec![("controller_mutation_rate".to_string(), 10.0), ("producer_byte_rate".to_string(), QUOTA)], "kept across the restart");
}

/// Keeps librdkafka's largest reported broker throttle time.
struct ThrottleSeen(Arc<AtomicI64>);

impl ClientContext for ThrottleSeen {
    fn stats(&self, stats: Statistics) {
        for b in stats.brokers.values() {
            if let Some(t) = &b.throttle {
                self.0.fetch_max(t.max, Ordering::Relaxed);
            }
        }
    }
}

impl ProducerContext for ThrottleSeen {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Produces 1,000-byte records as fast as acknowledgements allow (at most
/// 2 MB unacknowledged) for `run`; answers the acknowledgement times.
async fn produce_for(addr: &str, client_id: &str, run: Duration, throttle: Arc<AtomicI64>) -> Vec<Duration> {
    let producer: FutureProducer<ThrottleSeen> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("client.id", client_id)
        .set("statistics.interval.ms", "500")
        .create_with_context(ThrottleSeen(throttle))
        .expect("producer");
    let payload = vec![b'p'; 1000];
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut acked = Vec::new();
    use futures::StreamExt;
    while started.elapsed() < run {
        while pending.len() < 2000 {
            let p = producer.clone();
            let payload = payload.clone();
            pending.push(async move {
                let r = p.send(FutureRecord::<(), _>::to("quota-rd").payload(&payload), Duration::from_secs(60)).await;
                r.map(|_| ()).map_err(|(e, _)| e)
            });
        }
        if let Some(r) = pending.next().await {
            r.expect("delivered");
            acked.push(started.elapsed());
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_is_slowed_to_producer_byte_rate_and_others_are_not() {
    let ferry = Ferry::start();
    let addr = ferry.bootstrap();
    raw::ensure_topic(&addr, "quota-rd");
    let quota = 500_000.0;
    assert_eq!(set_client_quota(&addr, "slow", "producer_byte_rate", quota, false), 0);

    let throttled = Arc::new(AtomicI64::new(0));
    let acked = produce_for(&addr, "slow", Duration::from_secs(22), throttled.clone()).await;
    let rate = |from: f64, to: f64| acked.iter().filter(|t| (from..to).contains(&t.as_secs_f64())).count() as f64 * 1000.0 / (to - from);
    let (overall, steady) = (rate(0.0, 22.0), rate(12.0, 22.0));
    let max_throttle = throttled.load(Ordering::Relaxed);
    println!("slow: {} records, overall {overall:.0} B/s, from 12 s {steady:.0} B/s (quota {quota}), largest throttle_time_ms librdkafka saw {max_throttle}", acked.len());
    // Once the first 10 s window is spent, the rate is the quota's. The
    // margin is for the suite's other tests sharing two cores: answers held
    // up by them arrive in bursts (measured 1.39x once); an unthrottled
    // client runs at well over 4x.
    assert!(steady > 0.4 * quota && steady < 1.6 * quota, "steady rate {steady:.0} B/s");
    // At most a first window's burst above it.
    assert!(overall < 2.0 * quota, "overall {overall:.0} B/s");
    assert!(max_throttle > 0, "librdkafka reports the broker's throttle_time_ms");

    let free = produce_for(&addr, "fast", Duration::from_secs(3), Arc::new(AtomicI64::new(0))).await;
    let fast = free.len() as f64 * 1000.0 / 3.0;
    println!("fast (no quota): {fast:.0} B/s");
    assert!(fast > 4.0 * quota, "another client id is not throttled: {fast:.0} B/s");
}

/// Metadata v4 on `conn`: (throttle_time_ms, ms until the answer came).
fn metadata(conn: &mut TcpStream) -> (i32, u128) {
    use bytes::Buf;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::Decodable;
    let started = Instant::now();
    let body = roundtrip(conn, &raw::frame(ApiKey::Metadata, 4, 7, &MetadataRequest::default().with_topics(Some(vec![]))));
    let mut b = bytes::Bytes::from(body);
    b.advance(4); // correlation id
    let resp = MetadataResponse::decode(&mut b, 4).expect("metadata answer");
    (resp.throttle_time_ms, started.elapsed().as_millis())
}

#[test]
fn request_percentage_throttles_handling_time_at_most_a_window_at_a_time() {
    let ferry = Ferry::start();
    let addr = ferry.bootstrap();
    // A ten-thousandth of one percent of a thread: any request goes over.
    assert_eq!(set_client_quota(&addr, "ferry-tests", "request_percentage", 0.0001, false), 0);
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (first, _) = metadata(&mut conn);
    let (throttle, _) = metadata(&mut conn);
    let (_, waited) = metadata(&mut conn);
    println!("request_percentage=0.0001: throttle_time_ms {first} then {throttle}; the next answer came after {waited} ms");
    assert_eq!(first, 0, "nothing was used before the first request");
    // Kafka caps a request-time throttle at one window (quota.window.size.seconds).
    assert!(throttle > 0 && throttle <= 1000, "throttle_time_ms {throttle}");
    assert!(waited + 100 >= throttle as u128, "muted for the throttle time: {waited} ms");
}

#[test]
fn the_quota_apis_need_cluster_configs_acls() {
    let ferry = Ferry::start_with(&["--acls-enable", "true"], &[]);
    let addr = ferry.bootstrap();
    assert_eq!(set_client_quota(&addr, "x", "producer_byte_rate", 1.0, false), 31, "CLUSTER_AUTHORIZATION_FAILED without ALTER_CONFIGS");
    let req = DescribeClientQuotasRequest::default();
    let resp: DescribeClientQuotasResponse = call(&addr, ApiKey::DescribeClientQuotas, 1, &req);
    assert_eq!(resp.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED without DESCRIBE_CONFIGS");
}
