use super::*;

fn named(s: &str) -> Option<EntityName> {
    Some(EntityName::Named(s.to_string()))
}

fn set(entity: QuotaEntity, key: &str, value: f64) -> Alteration {
    Alteration { entity: Ok(entity), ops: vec![Op { key: key.into(), value, remove: false }] }
}

fn open() -> (tempfile::TempDir, ClientQuotas) {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = ClientQuotas::open(dir.path(), WindowConfig::default()).expect("open");
    (dir, q)
}

#[test]
fn precedence_follows_kafka_and_each_key_resolves_on_its_own() {
    let (_dir, q) = open();
    let d = || Some(EntityName::Default);
    let out = q
        .alter(
            vec![
                set(QuotaEntity::new(None, d()), "producer_byte_rate", 8.0),
                set(QuotaEntity::new(None, named("app")), "producer_byte_rate", 7.0),
                set(QuotaEntity::new(d(), None), "producer_byte_rate", 6.0),
                set(QuotaEntity::new(named("alice"), None), "producer_byte_rate", 3.0),
                set(QuotaEntity::new(named("alice"), named("app")), "consumer_byte_rate", 1.0),
            ],
            false,
        )
        .expect("written");
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    let config = q.snapshot();
    let p = |u: &str, c: &str| resolve::quota_for(&config, QuotaKey::ProducerByteRate, u, c);
    // alice/app sets only consumer_byte_rate: the producer quota is alice's, shared by her client ids.
    assert_eq!(p("alice", "app"), Some((3.0, ("alice".into(), String::new()))));
    // bob: users/<default> wins over clients/app, per user.
    assert_eq!(p("bob", "app"), Some((6.0, ("bob".into(), String::new()))));
    let c = resolve::quota_for(&config, QuotaKey::ConsumerByteRate, "alice", "app");
    assert_eq!(c, Some((1.0, ("alice".into(), "app".into()))));
    assert_eq!(resolve::quota_for(&config, QuotaKey::ConsumerByteRate, "bob", "app"), None);
    assert!(q.is_active(Enforced::Produce) && q.is_active(Enforced::Fetch) && !q.is_active(Enforced::Request));
}

#[test]
fn changes_are_durable_validated_and_removable() {
    let (dir, q) = open();
    let alice = QuotaEntity::new(named("alice"), None);
    let bad = vec![
        Alteration { entity: Ok(alice.clone()), ops: vec![Op { key: "producer_byte_rate".into(), value: 1.5, remove: false }] },
        Alteration { entity: Ok(QuotaEntity::new(named("bob"), None)), ops: vec![Op { key: "nope".into(), value: 1.0, remove: false }] },
        Alteration { entity: Ok(alice.clone()), ops: vec![] },
        Alteration { entity: QuotaEntity::from_parts([("user", Some("a")), ("user", Some("b"))]), ops: vec![] },
    ];
    let out = q.alter(bad, false).expect("answered");
    assert!(matches!(out[0], Err(QuotaError::BadValue { .. })));
    assert!(matches!(out[1], Err(QuotaError::UnknownKey(_))));
    assert!(matches!(out[2], Err(QuotaError::DuplicateEntity(_))));
    assert!(matches!(out[3], Err(QuotaError::DuplicateEntityType(_))));
    assert!(q.is_empty());
    q.alter(vec![set(alice.clone(), "request_percentage", 50.0)], true).expect("validated");
    assert!(q.is_empty(), "validate_only changes nothing");
    q.alter(vec![set(alice.clone(), "request_percentage", 50.0)], false).expect("written");
    drop(q);
    let q = ClientQuotas::open(dir.path(), WindowConfig::default()).expect("reopen");
    assert_eq!(q.snapshot().get(&alice).and_then(|v| v.get(&QuotaKey::RequestPercentage)), Some(&50.0));
    let remove = Alteration { entity: Ok(alice), ops: vec![Op { key: "request_percentage".into(), value: 0.0, remove: true }] };
    q.alter(vec![remove], false).expect("written");
    assert!(q.is_empty() && !q.is_active(Enforced::Request));
}

#[test]
fn filters_match_as_kafka_describes() {
    let (_dir, q) = open();
    let d = || Some(EntityName::Default);
    let entities = [QuotaEntity::new(named("alice"), None), QuotaEntity::new(named("alice"), named("app")), QuotaEntity::new(d(), None), QuotaEntity::new(None, named("app"))];
    q.alter(entities.iter().map(|e| set(e.clone(), "producer_byte_rate", 10.0)).collect(), false).expect("written");
    let c = |t: &str, m: i8, n: Option<&str>| FilterComponent { entity_type: t.into(), match_type: m, name: n.map(String::from) };
    assert_eq!(q.describe(&[], false).expect("all").len(), 4);
    assert_eq!(q.describe(&[], true).expect("none").len(), 0);
    assert_eq!(q.describe(&[c("user", 0, Some("alice"))], false).expect("alice").len(), 2);
    assert_eq!(q.describe(&[c("user", 0, Some("alice"))], true).expect("alice alone").len(), 1);
    assert_eq!(q.describe(&[c("user", 2, None)], true).expect("users").len(), 2, "alice and <default>");
    assert_eq!(q.describe(&[c("user", 1, None)], false).expect("default").len(), 1);
    assert_eq!(q.describe(&[c("client-id", 0, Some("app"))], false).expect("app").len(), 2);
    assert!(matches!(q.describe(&[c("user", 0, None)], false), Err(QuotaError::BadFilter(_))));
    assert!(matches!(q.describe(&[c("group", 2, None)], false), Err(QuotaError::UnknownEntityType(_))));
}

#[test]
fn a_producer_over_its_quota_is_told_to_wait_as_kafka_computes() {
    let (_dir, q) = open();
    q.alter(vec![set(QuotaEntity::new(named("alice"), None), "producer_byte_rate", 1000.0)], false).expect("written");
    assert_eq!(q.record_at(Enforced::Produce, "bob", "x", 1e9, 0), 0, "bob has no quota");
    // 10,000 bytes spread over 10 s: exactly the quota.
    assert_eq!(q.record_at(Enforced::Produce, "alice", "x", 10_000.0, 0), 0);
    // 10,000 more from another client id of alice's: 2,000/s, 10 s to wait.
    assert_eq!(q.record_at(Enforced::Produce, "alice", "y", 10_000.0, 0), 10_000);
    assert_eq!(q.max_in_window(Enforced::Produce, "alice", "x"), Some(10_000.0));
}

#[test]
fn entities_are_bounded() {
    let (_dir, q) = open();
    let many: Vec<Alteration> = (0..MAX_ENTITIES + 1).map(|i| set(QuotaEntity::new(None, named(&format!("c{i}"))), "producer_byte_rate", 1.0)).collect();
    let out = q.alter(many, false).expect("written");
    assert!(out[..MAX_ENTITIES].iter().all(|r| r.is_ok()));
    assert_eq!(out[MAX_ENTITIES], Err(QuotaError::TooManyEntities));
    assert_eq!(q.len(), MAX_ENTITIES);
}
