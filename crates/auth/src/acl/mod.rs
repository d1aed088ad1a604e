//! Kafka's ACLs, with no Kafka dependency: the model (resource types,
//! pattern types, operations, permissions, with Kafka's wire codes and
//! names), filters as DescribeAcls and DeleteAcls use them, the durable
//! store (`store.rs`) and the authorizer (`authorizer.rs`).
//!
//! The rules are those of Kafka's StandardAuthorizer (and AclAuthorizer
//! before it): super users may do everything; a resource no ACL matches is
//! allowed only with `allow.everyone.if.no.acl.found`; otherwise a matching
//! DENY wins over any ALLOW; an ALLOW of READ, WRITE, DELETE or ALTER also
//! allows DESCRIBE, ALTER_CONFIGS allows DESCRIBE_CONFIGS, ALL allows every
//! operation (implications hold for ALLOW only: DENY READ does not deny
//! DESCRIBE).

mod authorizer;
mod filter;
mod model;
mod store;

pub use authorizer::{Authorizer, AuthorizerConfig, Session};
pub use filter::{AclFilter, PatternFilter};
pub use model::{AclBinding, AclError, Operation, PatternType, Permission, ResourceType, CLUSTER_NAME, MAX_ACLS, MAX_FIELD_BYTES};
pub use store::AclStore;

#[cfg(test)]
mod tests;
