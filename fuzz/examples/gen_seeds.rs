//! Writes the seed corpora under fuzz/seeds/<target>/. Deterministic, so the
//! committed files only change when this program does.
//!
//!     cd fuzz && cargo +nightly run --example gen_seeds
//!
//! request_decode: valid request frames (no length prefix): hand-built ones
//!   with real content, one per API in `versions::SUPPORTED` at its lowest,
//!   middle and highest version with default fields, and an unsupported
//!   version. Rerun when SUPPORTED changes (the check fails on a missing API).
//! batch_validate: valid batches and multi-batch payloads.
//! log_recovery: first byte 0 = raw segment (clean, torn tail, corrupt
//!   middle), first byte 1 = structured-mode generator input.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ferry_fuzz::{batch_with_payload, make_batch, valid_segment};
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}
fn topic(x: &str) -> TopicName {
    TopicName(s(x))
}

/// A request frame without its length prefix.
fn frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("ferry-fuzz")));
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
    buf.to_vec()
}

/// A request with every field at its default, for any API kafka-protocol
/// knows: covers whatever `versions::SUPPORTED` lists, including APIs added
/// after these seeds were written.
fn default_request(api: ApiKey) -> m::RequestKind {
    macro_rules! kinds {
        ($($name:ident)*) => {
            match api {
                $(ApiKey::$name => m::RequestKind::$name(Default::default()),)*
            }
        };
    }
    kinds!(
        Produce Fetch ListOffsets Metadata OffsetCommit OffsetFetch FindCoordinator JoinGroup
        Heartbeat LeaveGroup SyncGroup DescribeGroups ListGroups SaslHandshake ApiVersions CreateTopics
        DeleteTopics DeleteRecords InitProducerId OffsetForLeaderEpoch AddPartitionsToTxn AddOffsetsToTxn EndTxn WriteTxnMarkers
        TxnOffsetCommit DescribeAcls CreateAcls DeleteAcls DescribeConfigs AlterConfigs AlterReplicaLogDirs DescribeLogDirs
        SaslAuthenticate CreatePartitions CreateDelegationToken RenewDelegationToken ExpireDelegationToken DescribeDelegationToken DeleteGroups ElectLeaders
        IncrementalAlterConfigs AlterPartitionReassignments ListPartitionReassignments OffsetDelete DescribeClientQuotas AlterClientQuotas DescribeUserScramCredentials AlterUserScramCredentials
        Vote BeginQuorumEpoch EndQuorumEpoch DescribeQuorum AlterPartition UpdateFeatures Envelope FetchSnapshot
        DescribeCluster DescribeProducers BrokerRegistration BrokerHeartbeat UnregisterBroker DescribeTransactions ListTransactions AllocateProducerIds
        ConsumerGroupHeartbeat ConsumerGroupDescribe ControllerRegistration GetTelemetrySubscriptions PushTelemetry AssignReplicasToDirs ListConfigResources DescribeTopicPartitions
        ShareGroupHeartbeat ShareGroupDescribe ShareFetch ShareAcknowledge AddRaftVoter RemoveRaftVoter UpdateRaftVoter InitializeShareGroupState
        ReadShareGroupState WriteShareGroupState DeleteShareGroupState ReadShareGroupStateSummary DescribeShareGroupOffsets AlterShareGroupOffsets DeleteShareGroupOffsets
    )
}

/// A frame holding an already built body.
fn frame_kind(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &m::RequestKind,
) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("ferry-fuzz")));
    header
        .encode(&mut buf, api.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn request_seeds(dir: &Path) {
    // Every API and version bound Ferry serves, with default field values.
    for &(api, min, max) in ferry_kafka::versions::SUPPORTED {
        for v in [min, (min + max) / 2, max] {
            let name = format!("default_{api:?}_v{v}");
            match frame_kind(api, v, 100, &default_request(api)) {
                Some(bytes) => write(dir, &name, &bytes),
                None => eprintln!(
                    "note: {api:?} v{v} with default fields does not encode; no {name} seed"
                ),
            }
        }
    }

    let batch = Bytes::from(make_batch(0, &[b"hello", b"world"]));
    let produce = m::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![m::produce_request::TopicProduceData::default()
            .with_name(topic("t"))
            .with_partition_data(vec![
                m::produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch)),
            ])]);
    for v in [3, 9, 12] {
        write(
            dir,
            &format!("produce_v{v}"),
            &frame(ApiKey::Produce, v, 1, &produce),
        );
    }

    let fetch = m::FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![m::fetch_request::FetchTopic::default()
            .with_topic(topic("t"))
            .with_partitions(vec![m::fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    for v in [4, 12] {
        write(
            dir,
            &format!("fetch_v{v}"),
            &frame(ApiKey::Fetch, v, 2, &fetch),
        );
    }
    // v13+ name topics by id only.
    let fetch_id = m::FetchRequest::default()
        .with_max_wait_ms(500)
        .with_topics(vec![m::fetch_request::FetchTopic::default()
            .with_topic_id(m::fetch_request::FetchTopic::default().topic_id)
            .with_partitions(vec![
                m::fetch_request::FetchPartition::default().with_partition(0)
            ])]);
    write(dir, "fetch_v16", &frame(ApiKey::Fetch, 16, 2, &fetch_id));

    let list = m::ListOffsetsRequest::default()
        .with_replica_id(m::BrokerId(-1))
        .with_topics(vec![m::list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic("t"))
            .with_partitions(vec![
                m::list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
            ])]);
    for v in [1, 8] {
        write(
            dir,
            &format!("list_offsets_v{v}"),
            &frame(ApiKey::ListOffsets, v, 3, &list),
        );
    }

    let metadata_all = m::MetadataRequest::default().with_topics(None);
    write(
        dir,
        "metadata_v0",
        &frame(
            ApiKey::Metadata,
            0,
            4,
            &m::MetadataRequest::default().with_topics(Some(vec![])),
        ),
    );
    write(
        dir,
        "metadata_v12_all",
        &frame(ApiKey::Metadata, 12, 4, &metadata_all),
    );
    let metadata_t = m::MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            m::metadata_request::MetadataRequestTopic::default().with_name(Some(topic("t"))),
        ]));
    write(
        dir,
        "metadata_v4",
        &frame(ApiKey::Metadata, 4, 4, &metadata_t),
    );
    write(
        dir,
        "metadata_v12",
        &frame(ApiKey::Metadata, 12, 4, &metadata_t),
    );

    write(
        dir,
        "api_versions_v0",
        &frame(ApiKey::ApiVersions, 0, 5, &m::ApiVersionsRequest::default()),
    );
    let api_versions = m::ApiVersionsRequest::default()
        .with_client_software_name(s("ferry-fuzz"))
        .with_client_software_version(s("1.0"));
    write(
        dir,
        "api_versions_v3",
        &frame(ApiKey::ApiVersions, 3, 5, &api_versions),
    );
    write(
        dir,
        "api_versions_v4",
        &frame(ApiKey::ApiVersions, 4, 5, &api_versions),
    );

    let create = m::CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![m::create_topics_request::CreatableTopic::default()
            .with_name(topic("t"))
            .with_num_partitions(3)
            .with_replication_factor(1)
            .with_configs(vec![
                m::create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("60000"))),
            ])]);
    for v in [2, 7] {
        write(
            dir,
            &format!("create_topics_v{v}"),
            &frame(ApiKey::CreateTopics, v, 6, &create),
        );
    }

    let delete_names = m::DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![topic("t")]);
    write(
        dir,
        "delete_topics_v1",
        &frame(ApiKey::DeleteTopics, 1, 7, &delete_names),
    );
    let delete = m::DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            m::delete_topics_request::DeleteTopicState::default().with_name(Some(topic("t")))
        ]);
    write(
        dir,
        "delete_topics_v6",
        &frame(ApiKey::DeleteTopics, 6, 7, &delete),
    );

    let partitions = m::CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            m::create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic("t"))
                .with_count(4),
        ]);
    for v in [0, 3] {
        write(
            dir,
            &format!("create_partitions_v{v}"),
            &frame(ApiKey::CreatePartitions, v, 8, &partitions),
        );
    }

    let describe = m::DescribeConfigsRequest::default().with_resources(vec![
        m::describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configuration_keys(None),
    ]);
    for v in [1, 4] {
        write(
            dir,
            &format!("describe_configs_v{v}"),
            &frame(ApiKey::DescribeConfigs, v, 9, &describe),
        );
    }

    let alter = m::AlterConfigsRequest::default().with_resources(vec![
        m::alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![m::alter_configs_request::AlterableConfig::default()
                .with_name(s("retention.bytes"))
                .with_value(Some(s("1048576")))]),
    ]);
    for v in [0, 2] {
        write(
            dir,
            &format!("alter_configs_v{v}"),
            &frame(ApiKey::AlterConfigs, v, 10, &alter),
        );
    }

    let incremental = m::IncrementalAlterConfigsRequest::default().with_resources(vec![
        m::incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![
                m::incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(s("segment.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(s("1048576"))),
            ]),
    ]);
    for v in [0, 1] {
        write(
            dir,
            &format!("incremental_alter_configs_v{v}"),
            &frame(ApiKey::IncrementalAlterConfigs, v, 11, &incremental),
        );
    }

    // A version Ferry does not serve (ApiVersions v5 does not exist yet).
    let mut unsupported = frame(ApiKey::ApiVersions, 3, 12, &api_versions);
    unsupported[2..4].copy_from_slice(&5i16.to_be_bytes());
    write(dir, "api_versions_unsupported", &unsupported);
}

fn batch_seeds(dir: &Path) {
    write(dir, "one_record", &make_batch(0, &[b"a"]));
    write(dir, "three_records", &make_batch(7, &[b"a", b"bc", b""]));
    let mut two = make_batch(0, &[b"x"]);
    two.extend_from_slice(&make_batch(0, &[b"y", b"z"]));
    write(dir, "two_batches", &two);
    // Compressed (gzip attribute): the payload is opaque to Ferry.
    write(
        dir,
        "gzip",
        &batch_with_payload(
            0,
            2,
            1,
            1_700_000_000_000,
            b"\x1f\x8b\x08\x00not-really-gzip",
        ),
    );
    write(dir, "segment_of_3", &valid_segment(3));
}

fn log_seeds(dir: &Path) {
    let raw = |bytes: &[u8]| {
        let mut v = vec![0u8];
        v.extend_from_slice(bytes);
        v
    };
    let seg = valid_segment(3);
    write(dir, "raw_empty", &raw(&[]));
    write(dir, "raw_clean_3", &raw(&seg));
    write(dir, "raw_torn_tail", &raw(&seg[..seg.len() - 7]));
    let mut partial_header = seg.clone();
    partial_header.extend_from_slice(&make_batch(6, &[b"torn"])[..30]);
    write(dir, "raw_partial_header", &raw(&partial_header));
    let mut corrupt_middle = seg.clone();
    let second = make_batch(0, &[b"value-0-0"]).len() + 20;
    corrupt_middle[second] ^= 0xff;
    write(dir, "raw_corrupt_middle", &raw(&corrupt_middle));
    let mut wrong_base = seg.clone();
    wrong_base.extend_from_slice(&make_batch(99, &[b"gap"]));
    write(dir, "raw_offset_gap", &raw(&wrong_base));
    // Idempotent and transactional producers: an aborted transaction (data,
    // marker) and one left open, as the producer-state rebuild sees them.
    let mut txn = Vec::new();
    let mut b = make_batch(0, &[b"idempotent", b"x"]);
    ferry_fuzz::set_producer(&mut b, 0, 0, 0, false);
    txn.extend_from_slice(&b);
    let mut b = make_batch(2, &[b"in-txn"]);
    ferry_fuzz::set_producer(&mut b, 1, 0, 0, true);
    txn.extend_from_slice(&b);
    txn.extend_from_slice(&ferry_fuzz::control_batch(3, 1, 0, 0, 5));
    let mut b = make_batch(4, &[b"open-txn", b"y", b"z"]);
    ferry_fuzz::set_producer(&mut b, 1, 0, 1, true);
    txn.extend_from_slice(&b);
    write(dir, "raw_transactions", &raw(&txn));
    // Structured mode: any bytes work; these pick a few different paths.
    write(
        dir,
        "structured_a",
        &[1, 2, 3, 0, 4, b'a', b'b', b'c', b'd', 9, 0, 0, 0],
    );
    write(
        dir,
        "structured_b",
        &[
            1, 7, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ],
    );
    write(
        dir,
        "structured_c",
        &[
            3, 255, 0, 128, 64, 32, 16, 8, 4, 2, 1, 0, 255, 254, 253, 3, 1, 4, 1, 5, 9, 2, 6,
        ],
    );
}

/// The seeds must reach the code they are meant for: check them with the
/// same functions the fuzz targets call.
fn check_seeds(root: &Path) {
    use ferry_kafka::codec::{decode_request, Decoded};
    let mut covered = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root.join("request_decode")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let raw = std::fs::read(&path).unwrap();
        covered.insert(i16::from_be_bytes([raw[0], raw[1]]));
        let decoded = decode_request(Bytes::from(std::fs::read(&path).unwrap()));
        match decoded {
            Ok(Decoded::Request(..)) => assert!(!name.contains("unsupported"), "{name}"),
            Ok(Decoded::UnsupportedVersion(..)) => assert!(name.contains("unsupported"), "{name}"),
            Err(e) => panic!("seed {name} does not decode: {e}"),
        }
    }
    for &(api, _, _) in ferry_kafka::versions::SUPPORTED {
        assert!(
            covered.contains(&(api as i16)),
            "no request_decode seed for {api:?}"
        );
    }
    for entry in std::fs::read_dir(root.join("batch_validate")).unwrap() {
        let path = entry.unwrap().path();
        ferry_log::batch::split_and_validate(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for (name, expect_end) in [
        ("raw_transactions", Some(7)),
        ("raw_clean_3", Some(6)),
        ("raw_torn_tail", Some(3)),
        ("raw_partial_header", Some(6)),
        ("raw_corrupt_middle", None),
        ("raw_offset_gap", None),
    ] {
        let data = std::fs::read(root.join("log_recovery").join(name)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("00000000000000000000.log"),
            ferry_fuzz::log_recovery_segment(&data),
        )
        .unwrap();
        let log = ferry_log::DiskLog::open(
            dir.path(),
            std::sync::Arc::new(ferry_log::storage::FsStorage),
            ferry_log::LogConfig::default(),
        );
        match (log, expect_end) {
            (Ok(log), Some(end)) => assert_eq!(log.next_offset(), end, "{name}"),
            (Err(_), None) => {}
            (Ok(log), None) => panic!(
                "{name}: expected recovery to refuse, got end offset {}",
                log.next_offset()
            ),
            (Err(e), Some(_)) => panic!("{name}: {e}"),
        }
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, gen) in [
        ("request_decode", request_seeds as fn(&Path)),
        ("batch_validate", batch_seeds),
        ("log_recovery", log_seeds),
    ] {
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        gen(&dir);
        println!(
            "{}: {} seeds",
            dir.display(),
            std::fs::read_dir(&dir).unwrap().count()
        );
    }
    check_seeds(&root);
    println!("all seeds reach their targets");
}
