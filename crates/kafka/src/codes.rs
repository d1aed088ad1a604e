//! Kafka error codes Ferry answers with, and the one place engine errors
//! become wire codes.

use ferry_broker::EngineError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const NOT_CONTROLLER: i16 = 41;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
/// Retriable: a new leader whose high watermark is not current yet.
pub const OFFSET_NOT_AVAILABLE: i16 = 78;
pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const POLICY_VIOLATION: i16 = 44;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
pub const PRODUCER_FENCED: i16 = 90;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const DUPLICATE_RESOURCE: i16 = 92;
pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const SECURITY_DISABLED: i16 = 54;

/// The Kafka error code for an engine error.
pub fn for_engine_error(e: &EngineError) -> i16 {
    match e {
        EngineError::UnknownTopicOrPartition(_) => UNKNOWN_TOPIC_OR_PARTITION,
        EngineError::TopicAlreadyExists(_) => TOPIC_ALREADY_EXISTS,
        EngineError::InvalidTopic { .. } => INVALID_TOPIC_EXCEPTION,
        EngineError::InvalidConfig { .. } => INVALID_CONFIG,
        EngineError::InvalidPartitions(_) => INVALID_PARTITIONS,
        EngineError::InvalidReplicationFactor(_) => INVALID_REPLICATION_FACTOR,
        EngineError::CorruptMessage(_) => CORRUPT_MESSAGE,
        EngineError::InvalidRecord(_) => INVALID_RECORD,
        EngineError::InvalidTimestamp(_) => INVALID_TIMESTAMP,
        EngineError::MessageTooLarge { .. } => MESSAGE_TOO_LARGE,
        EngineError::OffsetOutOfRange(_) => OFFSET_OUT_OF_RANGE,
        EngineError::Storage(_) | EngineError::ShuttingDown => KAFKA_STORAGE_ERROR,
        EngineError::Timeout => REQUEST_TIMED_OUT,
        EngineError::LimitReached(_) | EngineError::ReplicatedUnsupported(_) => POLICY_VIOLATION,
        EngineError::OutOfOrderSequence(_) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        EngineError::InvalidProducerEpoch(_) => INVALID_PRODUCER_EPOCH,
        EngineError::InvalidTxnState(_) => INVALID_TXN_STATE,
    }
}

pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const INVALID_TIMESTAMP: i16 = 32;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// The Kafka error code for a group protocol refusal.
pub fn for_group_error(e: &ferry_broker::group::GroupError) -> i16 {
    use ferry_broker::group::GroupError as G;
    match e {
        G::InvalidGroupId => INVALID_GROUP_ID,
        G::UnknownMemberId => UNKNOWN_MEMBER_ID,
        G::IllegalGeneration => ILLEGAL_GENERATION,
        G::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        G::MemberIdRequired => MEMBER_ID_REQUIRED,
        G::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
        G::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
        G::GroupMaxSizeReached => GROUP_MAX_SIZE_REACHED,
        G::FencedInstanceId => FENCED_INSTANCE_ID,
        G::GroupIdNotFound => GROUP_ID_NOT_FOUND,
        G::NonEmptyGroup => NON_EMPTY_GROUP,
        G::GroupSubscribedToTopic => GROUP_SUBSCRIBED_TO_TOPIC,
        G::OffsetMetadataTooLarge => OFFSET_METADATA_TOO_LARGE,
        G::UnknownTopicOrPartition => UNKNOWN_TOPIC_OR_PARTITION,
        G::CoordinatorNotAvailable => COORDINATOR_NOT_AVAILABLE,
        G::Storage(_) => COORDINATOR_NOT_AVAILABLE,
        G::LimitReached(_) => POLICY_VIOLATION,
    }
}

pub fn group_code(r: &Result<(), ferry_broker::group::GroupError>) -> i16 {
    r.as_ref().err().map_or(NONE, for_group_error)
}
