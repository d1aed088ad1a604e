//! The decision matrix against Kafka's documented rules.

use super::*;
use Operation::*;
use PatternType::{Literal, Prefixed};
use Permission::{Allow, Deny};
use ResourceType::{Cluster, Group, Topic, TransactionalId};

fn acl(rt: ResourceType, pt: PatternType, name: &str, principal: &str, op: Operation, perm: Permission) -> AclBinding {
    AclBinding { resource_type: rt, pattern_type: pt, name: name.into(), principal: principal.into(), host: "*".into(), operation: op, permission: perm }
}

fn alice() -> Session {
    Session { principal: "User:alice".into(), host: "10.0.0.1".into() }
}

fn bob() -> Session {
    Session { principal: "User:bob".into(), host: "10.0.0.2".into() }
}

fn with(acls: Vec<AclBinding>, config: AuthorizerConfig) -> Authorizer {
    let a = Authorizer::in_memory(config);
    assert!(a.create(acls).expect("in memory").iter().all(Result::is_ok));
    a
}

#[test]
fn no_acl_denies_unless_allow_everyone_and_super_users_pass() {
    let strict = with(vec![], AuthorizerConfig { super_users: vec!["User:admin".into()], ..Default::default() });
    assert!(!strict.authorize(&alice(), Read, Topic, "t"));
    let admin = Session { principal: "User:admin".into(), host: "1.2.3.4".into() };
    assert!(strict.authorize(&admin, Alter, Cluster, CLUSTER_NAME));
    let open = with(vec![], AuthorizerConfig { allow_everyone_if_no_acl_found: true, ..Default::default() });
    assert!(open.authorize(&alice(), Write, Topic, "t"));
    // An ACL on the resource, even for someone else, ends the "no ACL" rule.
    let open = with(vec![acl(Topic, Literal, "t", "User:bob", Read, Allow)], AuthorizerConfig { allow_everyone_if_no_acl_found: true, ..Default::default() });
    assert!(!open.authorize(&alice(), Read, Topic, "t"));
    assert!(open.authorize(&alice(), Read, Topic, "other"));
}

#[test]
fn implied_operations_hold_for_allow_only() {
    let a = with(
        vec![
            acl(Topic, Literal, "w", "User:alice", Write, Allow),
            acl(Topic, Literal, "c", "User:alice", AlterConfigs, Allow),
            acl(Topic, Literal, "all", "User:alice", All, Allow),
            acl(Topic, Literal, "r", "User:alice", Read, Deny),
            acl(Topic, Literal, "r", "User:alice", Describe, Allow),
        ],
        AuthorizerConfig::default(),
    );
    let s = alice();
    assert!(a.authorize(&s, Describe, Topic, "w"), "WRITE implies DESCRIBE");
    assert!(!a.authorize(&s, Read, Topic, "w"));
    assert!(a.authorize(&s, DescribeConfigs, Topic, "c"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
    assert!(!a.authorize(&s, Describe, Topic, "c"));
    for op in [Read, Write, Create, Delete, Alter, Describe, DescribeConfigs, AlterConfigs] {
        assert!(a.authorize(&s, op, Topic, "all"), "ALL allows {op}");
    }
    assert!(a.authorize(&s, Describe, Topic, "r"), "DENY READ does not deny DESCRIBE");
    assert!(!a.authorize(&s, Read, Topic, "r"));
    for (granted, implied) in [(Read, Describe), (Delete, Describe), (Alter, Describe)] {
        assert!(granted.allows(implied) && !implied.allows(granted));
    }
}

#[test]
fn deny_wins_across_patterns_principals_and_hosts() {
    let mut host_deny = acl(Topic, Literal, "*", "User:*", Write, Deny);
    host_deny.host = "10.0.0.2".into();
    let a = with(
        vec![
            acl(Topic, Prefixed, "orders-", "User:alice", Write, Allow),
            acl(Topic, Literal, "orders-secret", "User:*", All, Deny),
            acl(Topic, Literal, "*", "User:bob", Write, Allow),
            host_deny,
        ],
        AuthorizerConfig::default(),
    );
    assert!(a.authorize(&alice(), Write, Topic, "orders-eu"));
    assert!(a.authorize(&alice(), Describe, Topic, "orders-eu"));
    assert!(!a.authorize(&alice(), Write, Topic, "orders-secret"), "DENY ALL on the literal wins");
    assert!(!a.authorize(&alice(), Write, Topic, "order"), "the prefix is longer than the name");
    assert!(!a.authorize(&bob(), Write, Topic, "anything"), "bob's host is denied");
    let bob_elsewhere = Session { host: "10.0.0.3".into(), ..bob() };
    assert!(a.authorize(&bob_elsewhere, Write, Topic, "anything"), "the wildcard literal");
    assert!(!a.authorize(&bob_elsewhere, Write, Group, "anything"), "other resource types are apart");
}

#[test]
fn groups_clusters_and_transactional_ids() {
    let a = with(
        vec![
            acl(Group, Prefixed, "app", "User:alice", Read, Allow),
            acl(Cluster, Literal, CLUSTER_NAME, "User:alice", IdempotentWrite, Allow),
            acl(TransactionalId, Literal, "tx-1", "User:alice", Write, Allow),
        ],
        AuthorizerConfig::default(),
    );
    assert!(a.authorize(&alice(), Read, Group, "app-1"));
    assert!(a.authorize(&alice(), Describe, Group, "app-1"));
    assert!(!a.authorize(&alice(), Delete, Group, "app-1"));
    assert!(a.authorize(&alice(), IdempotentWrite, Cluster, CLUSTER_NAME));
    assert!(!a.authorize(&alice(), Alter, Cluster, CLUSTER_NAME));
    assert!(a.authorize(&alice(), Describe, TransactionalId, "tx-1"));
    assert!(!a.authorize(&alice(), Write, TransactionalId, "tx-2"));
}

#[test]
fn authorize_any_follows_kafkas_resource_type_rule() {
    let a = with(vec![acl(Topic, Prefixed, "a", "User:alice", Write, Allow), acl(Topic, Prefixed, "a", "User:alice", Write, Deny)], AuthorizerConfig::default());
    assert!(!a.authorize_any(&alice(), Write, Topic), "the allow is dominated by a deny prefix");
    let a = with(vec![acl(Topic, Literal, "ab", "User:alice", Write, Allow), acl(Topic, Prefixed, "x", "User:alice", Write, Deny)], AuthorizerConfig::default());
    assert!(a.authorize_any(&alice(), Write, Topic));
    assert!(!a.authorize_any(&bob(), Write, Topic));
    assert!(!a.authorize_any(&alice(), Read, Topic), "no implied operations here");
    let a = with(vec![acl(Topic, Literal, "*", "User:*", Write, Deny), acl(Topic, Literal, "*", "User:alice", Write, Allow)], AuthorizerConfig::default());
    assert!(!a.authorize_any(&alice(), Write, Topic), "a wildcard deny wins");
}

#[test]
fn filters_select_as_kafkas_do() {
    let a = with(
        vec![
            acl(Topic, Literal, "t", "User:alice", Read, Allow),
            acl(Topic, Literal, "*", "User:bob", Read, Allow),
            acl(Topic, Prefixed, "t", "User:carol", Write, Allow),
            acl(Group, Literal, "t", "User:alice", Read, Allow),
        ],
        AuthorizerConfig::default(),
    );
    let named = |pattern| AclFilter { resource_type: Some(Topic), name: Some("t".into()), pattern, ..AclFilter::any() };
    assert_eq!(a.describe(&AclFilter::any()).len(), 4);
    assert_eq!(a.describe(&named(PatternFilter::Any)).len(), 2, "literal t and prefixed t");
    assert_eq!(a.describe(&named(PatternFilter::Match)).len(), 3, "and the wildcard");
    assert_eq!(a.describe(&named(PatternFilter::Exactly(Prefixed))).len(), 1);
    let removed = a.delete(&[AclFilter { principal: Some("User:alice".into()), ..AclFilter::any() }]).expect("memory");
    assert_eq!(removed[0].len(), 2);
    assert!(!a.authorize(&alice(), Read, Topic, "t"), "a deleted ACL applies at once");
}

#[test]
fn bad_acls_are_refused_and_the_store_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Authorizer::open(dir.path(), AuthorizerConfig::default()).expect("open");
    let out = a
        .create(vec![
            acl(Topic, Literal, "t", "User:alice", Write, Allow),
            acl(Topic, Literal, "t", "alice", Write, Allow),
            acl(Cluster, Literal, "c", "User:alice", Alter, Allow),
            acl(Topic, Literal, "", "User:alice", Write, Allow),
            acl(Topic, PatternType::Match, "t", "User:alice", Write, Allow),
            acl(ResourceType::User, Literal, "u", "User:alice", Write, Allow),
            AclBinding { host: "example.com".into(), ..acl(Topic, Literal, "t", "User:alice", Write, Allow) },
        ])
        .expect("written");
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err(AclError::Principal("alice".into())));
    assert_eq!(out[2], Err(AclError::ClusterName));
    assert_eq!(out[3], Err(AclError::EmptyName));
    assert!(out[4..].iter().all(Result::is_err));
    drop(a);
    let a = Authorizer::open(dir.path(), AuthorizerConfig::default()).expect("reopen");
    assert_eq!(a.describe(&AclFilter::any()).len(), 1);
    assert!(a.authorize(&alice(), Write, Topic, "t"));
    assert_eq!(Operation::from_code(1), Err(AclError::AnyInBinding("operation")));
    assert_eq!(Operation::from_filter_code(1), Ok(None));
    assert_eq!("IdempotentWrite".parse::<Operation>(), Ok(IdempotentWrite));
    assert_eq!("transactional-id".parse::<ResourceType>(), Ok(TransactionalId));
}
