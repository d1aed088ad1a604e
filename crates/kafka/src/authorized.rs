//! Authorized operations, as Kafka reports them when a client asks
//! (Metadata, DescribeCluster, DescribeGroups): a bit field of ACL
//! operation codes. Without ACLs every principal may do everything a
//! resource type supports; with them, [`narrow`] keeps the operations the
//! authorizer allows the connection's principal.

use ferry_auth::acl::{Operation, ResourceType, CLUSTER_NAME};

use crate::server::Context;

/// Kafka's AclOperation codes.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

/// What a request gets when it did not ask for authorized operations.
pub const NOT_REQUESTED: i32 = i32::MIN;

fn bits(ops: &[u8]) -> i32 {
    ops.iter().fold(0, |acc, op| acc | (1 << op))
}

/// The operations a topic supports (Kafka's AclEntry for TOPIC).
pub fn topic() -> i32 {
    bits(&[READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS])
}

/// The operations a consumer group supports (no group configs yet).
pub fn group() -> i32 {
    bits(&[READ, DESCRIBE, DELETE])
}

/// The operations the cluster resource supports.
pub fn cluster() -> i32 {
    bits(&[CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE])
}

/// `value()` when `requested`, else [`NOT_REQUESTED`].
pub fn if_requested(requested: bool, value: fn() -> i32) -> i32 {
    if requested {
        value()
    } else {
        NOT_REQUESTED
    }
}

/// Of the operations in `field`, those the principal may do to the resource.
pub fn narrow(ctx: &Context, rt: ResourceType, name: &str, field: i32) -> i32 {
    let Some(acls) = &ctx.acls else { return field };
    if field == NOT_REQUESTED {
        return field;
    }
    Operation::ALL_VALUES
        .iter()
        .filter(|op| op.code() >= 0 && field & (1 << op.code()) != 0)
        .filter(|op| acls.authorize(&ctx.session, **op, rt, name))
        .fold(0, |acc, op| acc | (1 << op.code()))
}

pub fn narrow_topic(ctx: &Context, name: &str, field: i32) -> i32 {
    narrow(ctx, ResourceType::Topic, name, field)
}

pub fn narrow_group(ctx: &Context, name: &str, field: i32) -> i32 {
    narrow(ctx, ResourceType::Group, name, field)
}

pub fn narrow_cluster(ctx: &Context, field: i32) -> i32 {
    narrow(ctx, ResourceType::Cluster, CLUSTER_NAME, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_hold_kafkas_codes() {
        // READ(3) | WRITE(4) | CREATE(5) | DELETE(6) | ALTER(7) | DESCRIBE(8) | DESCRIBE_CONFIGS(10) | ALTER_CONFIGS(11)
        assert_eq!(topic(), 0b1101_1111_1000);
        assert_eq!(group(), (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(if_requested(false, cluster), NOT_REQUESTED);
        assert_ne!(cluster() & (1 << 12), 0, "idempotent write");
        let codes = [(Operation::Read, READ), (Operation::Write, WRITE), (Operation::Describe, DESCRIBE), (Operation::IdempotentWrite, IDEMPOTENT_WRITE)];
        assert!(codes.iter().all(|(op, code)| op.code() as u8 == *code), "the authorizer and these fields share Kafka's codes");
    }
}
