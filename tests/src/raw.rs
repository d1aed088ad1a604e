//! Raw Kafka frames, for tests that must send what no well-behaved client
//! sends (bad CRCs, odd versions, pipelined bursts).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use ferry_log::batch::put_varint;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A length-prefixed request frame.
pub fn frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ferry-tests")));
    header.encode(&mut buf, api.request_header_version(version)).expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// An uncompressed v2 record batch holding `values`, with a correct CRC.
pub fn record_batch(values: &[&[u8]]) -> Vec<u8> {
    producer_batch(values, -1, -1, -1)
}

/// Like [`record_batch`], from an idempotent producer.
pub fn producer_batch(values: &[&[u8]], producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = vec![0u8];
        put_varint(&mut r, 0);
        put_varint(&mut r, i as i64);
        put_varint(&mut r, -1);
        put_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        put_varint(&mut r, 0);
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((values.len() as i32) - 1).to_be_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&base_sequence.to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A transactional batch of a producer (the attributes' transactional bit set).
pub fn transactional_batch(values: &[&[u8]], producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
    let mut b = producer_batch(values, producer_id, epoch, base_sequence);
    b[22] |= 0x10;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A Produce v8 frame writing `batch` to partition 0 of `topic`.
pub fn produce_frame(topic: &str, batch: Vec<u8>, acks: i16, correlation_id: i32) -> Vec<u8> {
    produce_frame_at(8, topic, batch, acks, correlation_id)
}

/// A Produce frame of the given version writing `batch` to partition 0 of `topic`.
pub fn produce_frame_at(version: i16, topic: &str, batch: Vec<u8>, acks: i16, correlation_id: i32) -> Vec<u8> {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    frame(ApiKey::Produce, version, correlation_id, &req)
}

/// Decodes a Produce response frame body of the given version.
pub fn produce_response(frame_body: &[u8], version: i16) -> ProduceResponse {
    let mut b = Bytes::copy_from_slice(&frame_body[4..]); // skip correlation id
    if version >= 9 {
        let _ = b.get_u8(); // the flexible header's tagged fields
    }
    ProduceResponse::decode(&mut b, version).expect("produce response")
}

/// Decodes a Produce v8 response frame body; returns (error code, base offset) of the first partition.
pub fn produce_result(frame_body: &[u8]) -> (i16, i64) {
    let mut b = Bytes::copy_from_slice(&frame_body[4..]); // skip correlation id
    let resp = ProduceResponse::decode(&mut b, 8).expect("produce response");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn correlation_id(frame_body: &[u8]) -> i32 {
    i32::from_be_bytes([frame_body[0], frame_body[1], frame_body[2], frame_body[3]])
}

/// Creates `topic` (one partition) through a Metadata request with
/// auto-creation, as clients do; Produce alone never creates a topic.
pub fn ensure_topic(addr: &str, topic: &str) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::MetadataRequest;
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    crate::raw_roundtrip(addr, &frame(ApiKey::Metadata, 4, 1, &req)).expect("metadata answer");
}

/// InitProducerId v1 for an idempotent producer: (producer id, epoch).
pub fn init_producer_id(addr: &str) -> (i64, i16) {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1);
    let resp = crate::raw_roundtrip(addr, &frame(ApiKey::InitProducerId, 1, 1, &req)).expect("answer");
    let mut b = Bytes::copy_from_slice(&resp[4..]);
    let r = InitProducerIdResponse::decode(&mut b, 1).expect("InitProducerId response");
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

/// Sends one request on a new connection and decodes its answer (header
/// version taken from the API and version).
pub fn call<Req: Encodable, Resp: Decodable>(addr: &str, api: ApiKey, version: i16, body: &Req) -> Resp {
    use kafka_protocol::messages::ResponseHeader;
    let answer = crate::raw_roundtrip(addr, &frame(api, version, 1, body)).unwrap_or_else(|| panic!("no answer to {api:?} v{version}"));
    let mut b = Bytes::from(answer);
    ResponseHeader::decode(&mut b, api.response_header_version(version)).expect("response header");
    Resp::decode(&mut b, version).unwrap_or_else(|e| panic!("cannot decode {api:?} v{version} answer: {e}"))
}

/// The controller id DescribeCluster v0 names (-1 when none or unreachable).
pub fn controller_id(addr: &str) -> i32 {
    use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
    let Some(resp) = crate::raw_roundtrip(addr, &frame(ApiKey::DescribeCluster, 0, 1, &DescribeClusterRequest::default())) else {
        return -1;
    };
    let mut b = Bytes::copy_from_slice(&resp[4..]);
    // DescribeCluster is flexible: a tagged-field byte follows the correlation id.
    let _ = b.get_u8();
    DescribeClusterResponse::decode(&mut b, 0).map(|r| r.controller_id.0).unwrap_or(-1)
}
