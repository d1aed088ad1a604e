//! ferry-client's external backends against real servers:
//! `PostgresParticipant` (PREPARE TRANSACTION) and `RedisStore`.
//!
//! The servers come from `scripts/sdk-backends.sh`, which starts a
//! throwaway PostgreSQL (max_prepared_transactions > 0) and redis-server
//! and runs
//!
//!     FERRY_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/postgres \
//!     FERRY_TEST_REDIS_URL=redis://127.0.0.1:PORT/ \
//!     cargo test --release -p ferry-client --features postgres,redis --test backends
//!
//! Without those variables each test says loudly that it skipped and
//! passes, so `cargo test --workspace` needs no servers; with
//! `FERRY_TEST_BACKENDS_REQUIRED` set (the script sets it), a missing
//! variable fails instead. The file builds only with both features
//! (`required-features` in Cargo.toml).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_client::twophase::{DecisionLog, PartitionOffset, Record};
use ferry_client::{
    BatchOutcome, ClientError, IdempotentConsumer, Outcome, Participant, PostgresParticipant, Preset, ProcessedStore, RedisStore,
    Semantics, SqlSession, SqlStatement, SqlValue, TwoPhaseCommit, TwoPhaseConfig,
};
use ferry_tests::Ferry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn backend_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("FERRY_TEST_BACKENDS_REQUIRED").is_some() {
                panic!("{variable} is not set, but FERRY_TEST_BACKENDS_REQUIRED is");
            }
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: {variable} is not set; this test needs a real server.\n\
                 Run scripts/sdk-backends.sh to start one and run these tests.\n\
                 ********************************************************************\n"
            );
            None
        }
    }
}

/// A name no earlier run used (the servers may be reused between runs).
fn unique(stem: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{stem}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

fn start_broker() -> Ferry {
    Ferry::start_with(&["--group-initial-rebalance-delay-ms", "0"], &[])
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

fn participant(url: &str, prefix: &str) -> PostgresParticipant {
    let mut db = PostgresParticipant::connect(url).expect("connect to PostgreSQL").with_gid_prefix(prefix).expect("prefix");
    // A lock held by a forgotten prepared transaction fails the test instead of hanging it.
    db.client().unwrap().batch_execute("SET lock_timeout = '20s'").unwrap();
    db
}

fn count(p: &mut PostgresParticipant, sql: &str) -> i64 {
    p.client().unwrap().query_one(sql, &[]).unwrap().get::<_, i64>(0)
}

fn insert(table: &str, id: i32) -> SqlStatement {
    // An Integer bound to an int4 column, a Text to a text column.
    SqlStatement::new(&format!("INSERT INTO {table} (id, note) VALUES ($1, $2)"), vec![SqlValue::Integer(id as i64), "n".into()])
}

/// The Participant contract on a real server: prepare survives the
/// connection (the crash of this process), recovery finds the prepared
/// xids, commit is idempotent, abort of an unknown xid is fine.
#[test]
fn postgres_participant_recovery_contract() {
    let Some(url) = backend_url("FERRY_TEST_POSTGRES_URL") else { return };
    let table = unique("contract");
    let prefix = format!("{}-", unique("test-contract"));
    let mut db = participant(&url, &prefix);
    db.client().unwrap().batch_execute(&format!("CREATE TABLE {table} (id INT4 PRIMARY KEY, note TEXT)")).unwrap();

    // A batch sees its own statements; values come back typed.
    let mut batch = db.begin().unwrap();
    batch.execute(&insert(&table, 1)).unwrap();
    batch.execute(&insert(&table, 2)).unwrap();
    let rows = batch
        .query(
            &format!("SELECT SUM(id), COUNT(*), 1.5::numeric, 2.25::float8, 'x'::text, NULL::int4, true FROM {table} WHERE note = $1"),
            &["n".into()],
        )
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            SqlValue::Integer(3),
            SqlValue::Integer(2),
            SqlValue::Real(1.5),
            SqlValue::Real(2.25),
            SqlValue::Text("x".into()),
            SqlValue::Null,
            SqlValue::Integer(1)
        ]]
    );
    PostgresParticipant::prepare(batch, 1, &[]).unwrap();
    // Prepared is not committed: another session sees nothing.
    let mut other = participant(&url, "test-other-");
    assert_eq!(count(&mut other, &format!("SELECT COUNT(*) FROM {table}")), 0);

    // The process "crashes": its connection goes away; the prepared transaction stays.
    drop(db);
    let mut db = participant(&url, &prefix);
    assert_eq!(db.prepared().unwrap(), vec![1]);
    // Another prefix does not see it (one prefix per coordinator).
    assert_eq!(other.prepared().unwrap(), Vec::<u64>::new());

    assert!(db.commit(1).unwrap(), "first commit applies");
    assert!(!db.commit(1).unwrap(), "second commit finds it applied");
    assert_eq!(count(&mut db, &format!("SELECT COUNT(*) FROM {table}")), 2);
    assert_eq!(db.prepared().unwrap(), Vec::<u64>::new());

    // Abort: of an unknown xid, fine; of a prepared one, its effects are gone.
    db.abort(99).unwrap();
    let mut batch = db.begin().unwrap();
    batch.execute(&insert(&table, 3)).unwrap();
    PostgresParticipant::prepare(batch, 2, &[]).unwrap();
    drop(db);
    let mut db = participant(&url, &prefix);
    assert_eq!(db.prepared().unwrap(), vec![2]);
    db.abort(2).unwrap();
    db.abort(2).unwrap();
    assert_eq!(db.prepared().unwrap(), Vec::<u64>::new());
    assert_eq!(count(&mut db, &format!("SELECT COUNT(*) FROM {table} WHERE id = 3")), 0);
    // Aborted, then "committed" (a decision log that disagrees): never silently applied.
    assert!(matches!(db.commit(2), Err(ClientError::Heuristic { xid: 2, .. })), "{:?}", db.commit(2));

    // A batch dropped without prepare rolls back, and the connection goes on.
    let mut batch = db.begin().unwrap();
    batch.execute(&insert(&table, 4)).unwrap();
    drop(batch);
    assert_eq!(count(&mut db, &format!("SELECT COUNT(*) FROM {table} WHERE id = 4")), 0);

    // A failed statement fails the batch: it cannot be prepared.
    let mut batch = db.begin().unwrap();
    assert!(batch.execute(&insert(&table, 1)).is_err(), "duplicate key");
    assert!(PostgresParticipant::prepare(batch, 3, &[]).is_err());
    assert_eq!(db.prepared().unwrap(), Vec::<u64>::new());

    // forget_applied_below drops the applied marks below the xid, and only this prefix's.
    let applied = format!("SELECT COUNT(*) FROM ferry_2pc_applied WHERE gid_prefix = '{prefix}'");
    assert_eq!(count(&mut db, &applied), 1);
    db.forget_applied_below(1).unwrap();
    assert_eq!(count(&mut db, &applied), 1);
    db.forget_applied_below(2).unwrap();
    assert_eq!(count(&mut db, &applied), 0);
    assert!(matches!(db.commit(1), Err(ClientError::Heuristic { xid: 1, .. })));
}

#[test]
fn postgres_gid_prefix_is_validated() {
    let Some(url) = backend_url("FERRY_TEST_POSTGRES_URL") else { return };
    let db = PostgresParticipant::connect(&url).unwrap();
    assert_eq!(db.gid(7), "ferry-7");
    assert!(matches!(db.with_gid_prefix("x'; DROP TABLE y; --"), Err(ClientError::Config(_))));
}

/// A bank transfer's effect: the handler reads the balance (seeing the
/// batch's earlier transfers) and debits, credits and records, or rejects.
fn transfer_effect(tables: &(String, String), payload: &[u8], db: &mut dyn SqlSession) -> Result<Vec<SqlStatement>, String> {
    let (accounts, transfers) = tables;
    let text = String::from_utf8_lossy(payload);
    let parts: Vec<&str> = text.split(',').collect();
    let [id, from, to, amount] = parts[..] else { return Err(format!("bad transfer {text}")) };
    let amount: i64 = amount.parse().map_err(|e| format!("bad amount: {e}"))?;
    let balance = db.query_i64(&format!("SELECT balance FROM {accounts} WHERE id = $1"), &[from.into()])?;
    let record = |status: &str| {
        SqlStatement::new(
            &format!("INSERT INTO {transfers} (id, from_account, to_account, amount, status) VALUES ($1, $2, $3, $4, $5)"),
            vec![id.into(), from.into(), to.into(), amount.into(), status.into()],
        )
    };
    if balance.unwrap_or(0) < amount {
        return Ok(vec![record("rejected")]);
    }
    Ok(vec![
        SqlStatement::new(&format!("UPDATE {accounts} SET balance = balance - $1 WHERE id = $2"), vec![amount.into(), from.into()]),
        SqlStatement::new(&format!("UPDATE {accounts} SET balance = balance + $1 WHERE id = $2"), vec![amount.into(), to.into()]),
        record("applied"),
    ])
}

fn produce(bootstrap: &str, topic: &str, payloads: &[String]) {
    let producer: ThreadedProducer<_> =
        Preset::new(Semantics::AtLeastOnce, bootstrap).producer_config().create().expect("producer");
    for payload in payloads {
        producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload(payload)).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer =
        Preset::new(Semantics::ExactlyOnce, bootstrap).consumer_config(group).create().expect("consumer");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition(topic, 0).unwrap().offset();
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn transfers(range: std::ops::Range<usize>, from: &str, to: &str, amount: i64) -> Vec<String> {
    range.map(|i| format!("t-{i},{from},{to},{amount}")).collect()
}

/// Runs batches until `inputs` inputs committed (or a minute passed).
fn process(coordinator: &mut TwoPhaseCommit<PostgresParticipant>, tables: &(String, String), inputs: usize) -> usize {
    let started = Instant::now();
    let mut committed = 0;
    while committed < inputs && started.elapsed() < Duration::from_secs(60) {
        match coordinator.process_batch(|message, db| transfer_effect(tables, message.payload().unwrap_or_default(), db)).unwrap() {
            BatchOutcome::Committed { inputs, .. } => committed += inputs,
            BatchOutcome::Aborted { reason, .. } => eprintln!("batch aborted: {reason}"),
            BatchOutcome::Idle => {}
        }
    }
    committed
}

/// TwoPhaseCommit<PostgresParticipant> over a real broker: batches commit
/// rows and offsets together; then a crashed instance's decided
/// transaction is committed at the next open, its undecided one and an
/// orphan prepared transaction rolled back, and every transfer ends up
/// applied exactly once.
#[test]
fn two_phase_commit_with_postgres_over_the_broker() {
    let Some(url) = backend_url("FERRY_TEST_POSTGRES_URL") else { return };
    let ferry = start_broker();
    let bootstrap = ferry.bootstrap();
    let name = unique("bank");
    let topic = format!("transfers-{name}");
    let prefix = format!("{name}-");
    let tables = (format!("{name}_accounts"), format!("{name}_transfers"));
    let dir = tempfile::tempdir().unwrap();
    let decision_log = dir.path().join("decisions.log");

    let mut db = participant(&url, &prefix);
    db.client()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE {a} (id TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0));
             CREATE TABLE {t} (id TEXT PRIMARY KEY, from_account TEXT NOT NULL, to_account TEXT NOT NULL,
                               amount BIGINT NOT NULL, status TEXT NOT NULL);
             INSERT INTO {a} VALUES ('A', 100), ('B', 0), ('C', 0), ('D', 0);",
            a = tables.0,
            t = tables.1
        ))
        .unwrap();
    ferry_tests::raw::ensure_topic(&bootstrap, &topic);
    // A→B 40 three times: the third is rejected only if the handler's read
    // sees the first two. Then B→C 5, 27 times: 16 fit in B's 80.
    let mut first = transfers(0..3, "A", "B", 40);
    first.extend(transfers(3..30, "B", "C", 5));
    produce(&bootstrap, &topic, &first);

    let config = || {
        let preset = Preset::new(Semantics::ExactlyOnce, &bootstrap).transactional_id(format!("{name}-txn"));
        let mut config = TwoPhaseConfig::new(preset, &name, &[&topic], decision_log.clone());
        config.commit_interval = Duration::from_millis(200);
        config.max_batch = 8;
        config
    };
    let mut coordinator = TwoPhaseCommit::open(config(), db).expect("open the coordinator");
    assert_eq!(process(&mut coordinator, &tables, 30), 30);
    drop(coordinator);

    let mut db = participant(&url, &prefix);
    let query = |db: &mut PostgresParticipant, sql: &str| count(db, &sql.replace("{a}", &tables.0).replace("{t}", &tables.1));
    assert_eq!(query(&mut db, "SELECT COUNT(*) FROM {t} WHERE status = 'applied'"), 18);
    assert_eq!(query(&mut db, "SELECT COUNT(*) FROM {t} WHERE status = 'rejected'"), 12);
    assert_eq!(query(&mut db, "SELECT balance FROM {a} WHERE id = 'A'"), 20);
    assert_eq!(query(&mut db, "SELECT balance FROM {a} WHERE id = 'C'"), 80);
    assert_eq!(db.prepared().unwrap(), Vec::<u64>::new(), "nothing left prepared");
    assert!(count(&mut db, &format!("SELECT COUNT(*) FROM ferry_2pc_applied WHERE gid_prefix = '{prefix}'")) >= 4, "30 inputs, batches of at most 8");
    assert_eq!(committed_offset(&bootstrap, &name, &topic), Some(30), "offsets committed with the rows");

    // A crashed instance, twice. Each time it left its batch prepared in
    // PostgreSQL, and the decision log's last word on it is `Commit` (the
    // first time) or `Begin` (the second); an orphan prepared transaction
    // that the log does not name is there too. The next open must commit
    // the decided batch, with its broker offsets, roll back the undecided
    // one and the orphan, and the transfers must end up applied once.
    let crash = |db: &mut PostgresParticipant, range: std::ops::Range<usize>, decided: bool| -> (u64, u64) {
        let (mut log, pending) = DecisionLog::open(&decision_log).unwrap();
        assert!(pending.is_empty());
        let xid = log.allocate_xid();
        let offsets = vec![PartitionOffset { topic: topic.clone(), partition: 0, offset: range.end as i64 }];
        log.append(&Record::Begin { xid, offsets }).unwrap();
        let mut batch = db.begin().unwrap();
        for payload in transfers(range, "C", "A", 10) {
            for statement in transfer_effect(&tables, payload.as_bytes(), &mut batch).unwrap() {
                batch.execute(&statement).unwrap();
            }
        }
        PostgresParticipant::prepare(batch, xid, &[]).unwrap();
        if decided {
            log.append(&Record::Commit { xid }).unwrap();
        }
        // The orphan touches another row: a prepared transaction keeps its locks.
        let orphan = xid + 1000;
        let mut batch = db.begin().unwrap();
        batch.execute(&SqlStatement::new(&format!("UPDATE {} SET balance = balance + 1000 WHERE id = 'D'", tables.0), vec![])).unwrap();
        PostgresParticipant::prepare(batch, orphan, &[]).unwrap();
        (xid, orphan)
    };
    let reopen = || TwoPhaseCommit::open(config(), participant(&url, &prefix)).expect("reopen the coordinator");

    produce(&bootstrap, &topic, &transfers(30..34, "C", "A", 10));
    let (decided, orphan) = crash(&mut db, 30..32, true);
    drop(db);
    let coordinator = reopen();
    let recovery = coordinator.recovery().clone();
    assert_eq!(recovery.committed, vec![decided], "{recovery:?}");
    assert_eq!(recovery.broker_redone, vec![decided], "the broker commit of the decided xid is redone: {recovery:?}");
    assert_eq!(recovery.aborted, vec![orphan], "{recovery:?}");
    assert_eq!(committed_offset(&bootstrap, &name, &topic), Some(32));
    drop(coordinator);

    let mut db = participant(&url, &prefix);
    let (undecided, orphan) = crash(&mut db, 32..34, false);
    drop(db);
    let mut coordinator = reopen();
    let recovery = coordinator.recovery().clone();
    assert_eq!(recovery.committed, Vec::<u64>::new(), "{recovery:?}");
    assert_eq!(recovery.aborted, vec![undecided, orphan], "{recovery:?}");
    assert_eq!(committed_offset(&bootstrap, &name, &topic), Some(32));
    // 32 and 33 come again (their transaction was rolled back) and apply now.
    assert_eq!(process(&mut coordinator, &tables, 2), 2);
    drop(coordinator);

    let mut db = participant(&url, &prefix);
    assert_eq!(query(&mut db, "SELECT COUNT(*) FROM {t}"), 34, "each transfer recorded once");
    assert_eq!(query(&mut db, "SELECT COUNT(*) FROM {t} WHERE status = 'applied'"), 22);
    assert_eq!(query(&mut db, "SELECT balance FROM {a} WHERE id = 'A'"), 60);
    assert_eq!(query(&mut db, "SELECT balance FROM {a} WHERE id = 'D'"), 0, "the orphans were rolled back");
    assert_eq!(query(&mut db, "SELECT SUM(balance)::bigint FROM {a}"), 100, "money is conserved");
    assert_eq!(db.prepared().unwrap(), Vec::<u64>::new());
    assert_eq!(committed_offset(&bootstrap, &name, &topic), Some(34));
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

fn redis_store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::open(url).expect("connect to Redis").with_key_prefix(prefix)
}

#[test]
fn redis_store_filters_duplicates_and_forgets_after_the_ttl() {
    let Some(url) = backend_url("FERRY_TEST_REDIS_URL") else { return };
    let prefix = format!("{}:", unique("ids"));
    let mut store = redis_store(&url, &prefix);
    let mut runs: BTreeMap<&str, u32> = BTreeMap::new();
    let mut run = |store: &mut RedisStore, id: &'static str| {
        store.process_once(id, |_| -> Result<(), String> {
            *runs.entry(id).or_default() += 1;
            Ok(())
        })
    };
    assert_eq!(run(&mut store, "a").unwrap(), Outcome::Processed(()));
    assert_eq!(run(&mut store, "a").unwrap(), Outcome::Duplicate);
    assert!(store.is_processed("a").unwrap());
    // The mark expires by Redis's own TTL (7 days by default).
    let key = store.key("a");
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(store.connection()).unwrap();
    assert!(pttl > 6 * 24 * 3600 * 1000 && pttl <= 7 * 24 * 3600 * 1000, "PTTL {pttl}");

    // A failing handler leaves no mark: the next delivery runs it.
    let failed = store.process_once("b", |_| -> Result<(), String> { Err("refused".into()) });
    assert!(matches!(failed, Err(ClientError::Handler(_))), "{failed:?}");
    assert!(!store.is_processed("b").unwrap());
    assert_eq!(run(&mut store, "b").unwrap(), Outcome::Processed(()));

    // Marked outside a handler: a duplicate.
    store.mark("c").unwrap();
    assert_eq!(run(&mut store, "c").unwrap(), Outcome::Duplicate);

    // A short TTL: processable again once Redis expired the mark.
    let mut short = redis_store(&url, &prefix).with_ttl(Duration::from_millis(300));
    assert_eq!(run(&mut short, "d").unwrap(), Outcome::Processed(()));
    assert_eq!(run(&mut short, "d").unwrap(), Outcome::Duplicate);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!short.is_processed("d").unwrap(), "expired");
    assert_eq!(run(&mut short, "d").unwrap(), Outcome::Processed(()));
    assert_eq!(short.purge_expired().unwrap(), 0, "nothing to purge: Redis expires marks");

    // The server drops the connection: the store reconnects.
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(store.connection()).unwrap();
    let mut admin = redis_store(&url, &prefix);
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(admin.connection()).unwrap();
    assert_eq!(killed, 1);
    assert!(store.is_processed("a").unwrap());

    assert_eq!(runs, BTreeMap::from([("a", 1), ("b", 1), ("d", 2)]));
}

/// IdempotentConsumer<RedisStore> over a real broker: a topic where ids
/// repeat is processed once per id, and a second group sharing the store
/// finds every id processed.
#[test]
fn idempotent_consumer_with_redis_processes_each_id_once() {
    let Some(url) = backend_url("FERRY_TEST_REDIS_URL") else { return };
    let ferry = start_broker();
    let bootstrap = ferry.bootstrap();
    let name = unique("orders");
    let topic = format!("orders-{name}");
    ferry_tests::raw::ensure_topic(&bootstrap, &topic);
    // 50 ids; every id twice, every fifth three times: 110 messages.
    let producer: ThreadedProducer<_> =
        Preset::new(Semantics::AtLeastOnce, &bootstrap).producer_config().create().expect("producer");
    let mut sent = 0;
    for round in 0..3 {
        for i in 0..50 {
            if round == 2 && i % 5 != 0 {
                continue;
            }
            let id = format!("order-{i}");
            let headers = OwnedHeaders::new().insert(Header { key: "message-id", value: Some(id.as_str()) });
            let body = format!("{id} round {round}");
            producer.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&body).headers(headers)).map_err(|(e, _)| e).unwrap();
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(sent, 110);

    let prefix = format!("{name}:");
    let consume = |group: &str| {
        let preset = Preset::new(Semantics::AtLeastOnce, &bootstrap);
        let store = redis_store(&url, &prefix);
        let mut consumer = IdempotentConsumer::new(&preset, group, &[&topic], store).unwrap().commit_every(10);
        let mut effects: BTreeMap<String, u32> = BTreeMap::new();
        let (mut processed, mut duplicates) = (0, 0);
        let started = Instant::now();
        while processed + duplicates < sent && started.elapsed() < Duration::from_secs(60) {
            let outcome = consumer
                .poll_process(Duration::from_millis(100), |message, _: &()| -> Result<(), String> {
                    let body = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                    let id = body.split(' ').next().unwrap().to_string();
                    *effects.entry(id).or_default() += 1;
                    Ok(())
                })
                .unwrap();
            match outcome {
                Some(Outcome::Processed(())) => processed += 1,
                Some(Outcome::Duplicate) => duplicates += 1,
                None => {}
            }
        }
        assert!(consumer.store_mut().is_processed("order-49").unwrap());
        consumer.close().unwrap();
        (processed, duplicates, effects)
    };

    let (processed, duplicates, effects) = consume(&format!("{name}-1"));
    assert_eq!((processed, duplicates), (50, 60));
    assert_eq!(effects.len(), 50);
    assert!(effects.values().all(|&n| n == 1), "each id's effect once: {effects:?}");
    assert_eq!(committed_offset(&bootstrap, &format!("{name}-1"), &topic), Some(110));

    // Another group, the same store: everything was processed already.
    let (processed, duplicates, effects) = consume(&format!("{name}-2"));
    assert_eq!((processed, duplicates), (0, 110));
    assert!(effects.is_empty());
}
