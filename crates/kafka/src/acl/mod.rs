//! Authorization on the Kafka front end: the checks handlers make (each
//! one call per request or resource), with Kafka's error codes. Without
//! `--acls-enable` (`Context::acls` is None) every check allows, so
//! nothing changes for a broker without ACLs.

pub mod apis;
pub mod checks;
pub mod metadata;

use ferry_auth::acl::{Operation, ResourceType, CLUSTER_NAME};

use crate::server::Context;

pub use ferry_auth::acl::Operation as Op;

/// Whether the connection's principal may do `op` to the resource.
pub fn allowed(ctx: &Context, op: Operation, rt: ResourceType, name: &str) -> bool {
    ctx.acls.as_ref().is_none_or(|a| a.authorize(&ctx.session, op, rt, name))
}

pub fn topic(ctx: &Context, op: Operation, name: &str) -> bool {
    allowed(ctx, op, ResourceType::Topic, name)
}

pub fn group(ctx: &Context, op: Operation, name: &str) -> bool {
    allowed(ctx, op, ResourceType::Group, name)
}

pub fn cluster(ctx: &Context, op: Operation) -> bool {
    allowed(ctx, op, ResourceType::Cluster, CLUSTER_NAME)
}

pub fn transactional_id(ctx: &Context, op: Operation, name: &str) -> bool {
    allowed(ctx, op, ResourceType::TransactionalId, name)
}

/// An idempotent (non-transactional) producer's right to a producer id:
/// IDEMPOTENT_WRITE on the cluster, or, as Kafka 3+ allows, WRITE on any topic.
pub fn idempotent_write(ctx: &Context) -> bool {
    let Some(a) = &ctx.acls else { return true };
    a.authorize(&ctx.session, Operation::IdempotentWrite, ResourceType::Cluster, CLUSTER_NAME)
        || a.authorize_any(&ctx.session, Operation::Write, ResourceType::Topic)
}

/// Topic creation: CREATE on the cluster or on the topic, as Kafka checks.
pub fn create_topic(ctx: &Context, name: &str) -> bool {
    cluster(ctx, Operation::Create) || topic(ctx, Operation::Create, name)
}

/// Whether any ACL check can refuse: lets handlers skip work.
pub fn enabled(ctx: &Context) -> bool {
    ctx.acls.is_some()
}
