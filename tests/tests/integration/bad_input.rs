//! Bad input gets a Kafka error code or a logged close, never a crash, and
//! the broker keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use ferry_tests::raw::{self, produce_frame, produce_result, record_batch};
use ferry_tests::{closed_by_peer, raw_roundtrip, read_frame, Ferry};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafka_protocol::protocol::Decodable;

fn still_serving(ferry: &Ferry) {
    let req = raw::frame(ApiKey::ApiVersions, 0, 77, &ApiVersionsRequest::default());
    let resp = raw_roundtrip(&ferry.bootstrap(), &req).expect("broker still answers");
    assert_eq!(raw::correlation_id(&resp), 77);
}

fn send_and_expect_close(ferry: &Ferry, bytes: &[u8]) {
    let mut s = TcpStream::connect(ferry.bootstrap()).unwrap();
    s.write_all(bytes).unwrap();
    assert!(closed_by_peer(&mut s), "connection should be closed");
}

#[test]
fn negative_and_oversized_frames_close_the_connection() {
    let ferry = Ferry::start_with(&["--socket-request-max-bytes", "4096"], &[]);
    send_and_expect_close(&ferry, &(-5i32).to_be_bytes());
    let mut big = 100_000i32.to_be_bytes().to_vec();
    big.extend_from_slice(&[0u8; 64]);
    send_and_expect_close(&ferry, &big);
    std::thread::sleep(Duration::from_millis(200));
    let log = ferry.log();
    assert!(log.contains("negative"), "{log}");
    assert!(log.contains("socket.request.max.bytes"), "{log}");
    still_serving(&ferry);
}

#[test]
fn undecodable_requests_close_the_connection() {
    let ferry = Ferry::start();
    // Unknown API key.
    let mut f = 10i32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    send_and_expect_close(&ferry, &f);
    // Metadata v1 whose topic array claims more entries than the body holds.
    let req = raw::frame(ApiKey::Metadata, 1, 3, &MetadataRequest::default().with_topics(Some(vec![])));
    let mut cut = req.clone();
    let n = cut.len();
    cut[n - 4..].copy_from_slice(&1000i32.to_be_bytes());
    send_and_expect_close(&ferry, &cut);
    // Too short for a header.
    send_and_expect_close(&ferry, &[0, 0, 0, 3, 1, 2, 3]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(ferry.log().contains("undecodable request"), "{}", ferry.log());
    still_serving(&ferry);
}

#[test]
fn peer_vanishing_mid_frame_is_logged_and_harmless() {
    let ferry = Ferry::start();
    for _ in 0..50 {
        let mut s = TcpStream::connect(ferry.bootstrap()).unwrap();
        s.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(ferry.log().contains("mid-frame"), "{}", ferry.log());
    still_serving(&ferry);
}

#[test]
fn unsupported_api_versions_version_gets_v0_answer_with_ranges() {
    let ferry = Ferry::start();
    let mut req = raw::frame(ApiKey::ApiVersions, 0, 9, &ApiVersionsRequest::default());
    req[6..8].copy_from_slice(&99i16.to_be_bytes()); // api_version field of the header
    let resp = raw_roundtrip(&ferry.bootstrap(), &req).expect("answer");
    assert_eq!(raw::correlation_id(&resp), 9);
    let mut body = Bytes::copy_from_slice(&resp[4..]);
    let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("v0 format");
    assert_eq!(decoded.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = decoded.api_keys.iter().find(|k| k.api_key == 0).expect("Produce advertised");
    assert!(produce.min_version <= 3 && produce.max_version >= 7);
}

#[test]
fn bad_crc_and_truncated_batches_get_corrupt_message_and_write_nothing() {
    let ferry = Ferry::start();
    raw::ensure_topic(&ferry.bootstrap(), "crc");
    let good = record_batch(&[b"ok"]);
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("crc", good.clone(), 1, 1)).unwrap();
    assert_eq!(produce_result(&resp), (0, 0));
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x55;
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("crc", bad, 1, 2)).unwrap();
    assert_eq!(produce_result(&resp).0, 2, "CORRUPT_MESSAGE");
    let truncated = good[..good.len() - 5].to_vec();
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("crc", truncated, 1, 3)).unwrap();
    assert_eq!(produce_result(&resp).0, 2, "CORRUPT_MESSAGE");
    let mut wrong_count = good.clone();
    wrong_count[57..61].copy_from_slice(&5i32.to_be_bytes());
    let crc = crc32c::crc32c(&wrong_count[21..]);
    wrong_count[17..21].copy_from_slice(&crc.to_be_bytes());
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("crc", wrong_count, 1, 4)).unwrap();
    assert_eq!(produce_result(&resp).0, 2, "CORRUPT_MESSAGE");
    // Nothing of the bad ones was written: the next good batch gets offset 1.
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("crc", good, 1, 5)).unwrap();
    assert_eq!(produce_result(&resp), (0, 1));
}

#[test]
fn acks_0_produce_error_closes_connection_and_success_sends_nothing() {
    let ferry = Ferry::start();
    raw::ensure_topic(&ferry.bootstrap(), "zero");
    let mut s = TcpStream::connect(ferry.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s.write_all(&produce_frame("zero", record_batch(&[b"a"]), 0, 1)).unwrap();
    // No response for acks=0: the next thing read is the ApiVersions answer.
    s.write_all(&raw::frame(ApiKey::ApiVersions, 0, 2, &ApiVersionsRequest::default())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let next = read_frame(&mut s).expect("answer");
    assert_eq!(raw::correlation_id(&next), 2);
    let mut bad = record_batch(&[b"a"]);
    bad[30] ^= 1;
    s.write_all(&produce_frame("zero", bad, 0, 3)).unwrap();
    assert!(closed_by_peer(&mut s), "a failed acks=0 produce closes the connection");
}

#[test]
fn oversized_batch_gets_message_too_large() {
    let ferry = Ferry::start();
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().unwrap();
    let t = NewTopic::new("small", 1, TopicReplication::Fixed(1)).set("max.message.bytes", "200");
    let r = rt.block_on(admin.create_topics([&t], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok());
    let big = vec![b'x'; 500];
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("small", record_batch(&[&big]), 1, 1)).unwrap();
    assert_eq!(produce_result(&resp).0, 10, "MESSAGE_TOO_LARGE");
}

#[test]
fn unknown_topic_with_auto_create_off() {
    let ferry = Ferry::start_with(&["--auto-create-topics-enable", "false"], &[]);
    let resp = raw_roundtrip(&ferry.bootstrap(), &produce_frame("nope", record_batch(&[b"a"]), 1, 1)).unwrap();
    assert_eq!(produce_result(&resp).0, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let ferry = Ferry::start();
    raw::ensure_topic(&ferry.bootstrap(), "pipe");
    let mut s = TcpStream::connect(ferry.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut burst = Vec::new();
    for cid in 0..20 {
        if cid % 2 == 0 {
            burst.extend(produce_frame("pipe", record_batch(&[format!("v{cid}").as_bytes()]), -1, cid));
        } else {
            burst.extend(raw::frame(ApiKey::Metadata, 4, cid, &MetadataRequest::default().with_topics(None)));
        }
    }
    s.write_all(&burst).unwrap();
    let mut expected_offset = 0;
    for cid in 0..20 {
        let f = read_frame(&mut s).expect("answer");
        assert_eq!(raw::correlation_id(&f), cid, "answers in request order");
        if cid % 2 == 0 {
            assert_eq!(produce_result(&f), (0, expected_offset), "appends in request order");
            expected_offset += 1;
        }
    }
}

#[test]
fn connection_limit_closes_extra_connections() {
    let ferry = Ferry::start_with(&["--max-connections", "2"], &[]);
    let req = raw::frame(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default());
    // Let the harness's readiness probe connection finish closing.
    std::thread::sleep(Duration::from_millis(300));
    let mut a = TcpStream::connect(ferry.bootstrap()).unwrap();
    let mut b = TcpStream::connect(ferry.bootstrap()).unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(&req).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(read_frame(s).is_some());
    }
    let mut c = TcpStream::connect(ferry.bootstrap()).unwrap();
    let _ = c.write_all(&req);
    assert!(closed_by_peer(&mut c), "third connection refused");
    assert!(ferry.log().contains("max.connections"), "{}", ferry.log());
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut d = TcpStream::connect(ferry.bootstrap()).unwrap();
    d.write_all(&req).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut d).is_some(), "a freed slot is reusable");
}

/// `max.connections.per.ip` with an override for the loopback address: the
/// override's count holds, one more connection is closed at once.
#[test]
fn per_ip_limit_closes_extra_connections_from_one_address() {
    let ferry = Ferry::start_with(&["--max-connections-per-ip", "1", "--max-connections-per-ip-overrides", "127.0.0.1:2"], &[]);
    let req = raw::frame(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default());
    std::thread::sleep(Duration::from_millis(300));
    let mut open: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(ferry.bootstrap()).unwrap()).collect();
    for s in &mut open {
        s.write_all(&req).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(read_frame(s).is_some());
    }
    let mut extra = TcpStream::connect(ferry.bootstrap()).unwrap();
    let _ = extra.write_all(&req);
    assert!(closed_by_peer(&mut extra), "a third connection from 127.0.0.1 is refused");
    assert!(ferry.log().contains("max.connections.per.ip"), "{}", ferry.log());
    open.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(ferry.bootstrap()).unwrap();
    again.write_all(&req).unwrap();
    again.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut again).is_some(), "a closed connection frees its address's slot");
}

#[test]
fn per_ip_limit_settings_are_checked() {
    let out = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["serve", "--max-connections-per-ip-overrides", "localhost:5"])
        .output()
        .expect("run ferry serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IP address"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Found by the request_decode fuzz target: an array count of 2^31 made the
/// decoder reserve ~150 GB and the failed allocation aborted the broker.
#[test]
fn huge_array_counts_do_not_abort_the_broker() {
    let ferry = Ferry::start();
    // Metadata v0, client id null, topics count 2147483647.
    let frames: [&[u8]; 2] = [
        &[0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        // Fetch v4 with a huge topics count.
        &[0, 0, 0, 30, 0, 1, 0, 4, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x7f, 0xff, 0xff, 0xff],
    ];
    for f in frames {
        let mut s = TcpStream::connect(ferry.bootstrap()).unwrap();
        s.write_all(f).unwrap();
        assert!(closed_by_peer(&mut s));
    }
    still_serving(&ferry);
}
