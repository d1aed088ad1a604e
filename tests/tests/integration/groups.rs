//! Consumer groups through librdkafka: rebalances, durable commits, static
//! membership, and the at-most-once / at-least-once commit patterns with a
//! crash in the middle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ferry_tests::kafka::{produce_all, producer};
use ferry_tests::Ferry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const FAST_GROUPS: &[&str] = &["--group-initial-rebalance-delay-ms", "200"];

async fn create_topic(ferry: &Ferry, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().unwrap();
    let r = admin.create_topics([&NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

/// Produces `n` records spread over all partitions (keyed).
async fn fill(ferry: &Ferry, topic: &str, n: usize) -> HashSet<String> {
    let p = producer(&ferry.bootstrap(), &[("acks", "all")]);
    let values: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
    let futures: Vec<_> = values
        .iter()
        .map(|v| p.send_result(rdkafka::producer::FutureRecord::to(topic).key(v).payload(v)).expect("enqueue"))
        .collect();
    for f in futures {
        f.await.unwrap().unwrap();
    }
    values.into_iter().collect()
}

fn consumer(ferry: &Ferry, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", ferry.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

fn committed(ferry: &Ferry, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c = consumer(ferry, group, &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let r = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    r.elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 }))
        .collect()
}

/// Polls, processing (recording) each value and committing after every
/// message, until `deadline` or `stop` says so.
fn consume_commit_after(c: &BaseConsumer, seen: &mut Vec<String>, until: impl Fn(&[String]) -> bool, max: Duration) {
    let start = Instant::now();
    while start.elapsed() < max && !until(seen) {
        if let Some(r) = c.poll(Duration::from_millis(100)) {
            let m = match r {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("poll error (retried): {e}");
                    continue;
                }
            };
            seen.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            let _ = c.commit_message(&m, CommitMode::Sync);
        }
    }
}

#[tokio::test]
async fn three_members_with_leave_and_join_process_everything() {
    let ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "six", 6).await;
    let all = fill(&ferry, "six", 3000).await;
    let topic = "six".to_string();
    let bootstrap = ferry.bootstrap();
    // Three members in threads; member 0 leaves early, member 3 joins late.
    let mut handles = Vec::new();
    for i in 0..4 {
        let bootstrap = bootstrap.clone();
        let topic = topic.clone();
        handles.push(std::thread::spawn(move || {
            if i == 3 {
                std::thread::sleep(Duration::from_secs(2));
            }
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "trio")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .set("max.partition.fetch.bytes", "500")
                .create()
                .unwrap();
            c.subscribe(&[&topic]).unwrap();
            let mut seen = Vec::new();
            let run_for = if i == 0 { Duration::from_secs(2) } else { Duration::from_secs(8) };
            consume_commit_after(&c, &mut seen, |_| false, run_for);
            drop(c); // close: LeaveGroup
            seen
        }));
    }
    let mut processed: HashSet<String> = HashSet::new();
    for h in handles {
        processed.extend(h.join().unwrap());
    }
    assert_eq!(processed.len(), all.len(), "every record processed at least once");
    assert!(processed.is_superset(&all));
    let offsets = committed(&ferry, "trio", "six", 6);
    let total: i64 = offsets.values().sum();
    assert_eq!(total, 3000, "committed offsets reach the end of every partition: {offsets:?}");
    assert!(ferry.log().contains("member left"), "a member left and the group rebalanced");
}

#[tokio::test]
async fn committed_offsets_survive_sigkill_and_group_resumes() {
    let mut ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "resume", 3).await;
    let all = fill(&ferry, "resume", 900).await;
    let c = consumer(&ferry, "resumers", &[]);
    c.subscribe(&["resume"]).unwrap();
    let mut first = Vec::new();
    consume_commit_after(&c, &mut first, |s| s.len() >= 400, Duration::from_secs(20));
    let before = committed(&ferry, "resumers", "resume", 3);
    drop(c);
    ferry.kill9();
    ferry.spawn_and_wait();
    assert_eq!(committed(&ferry, "resumers", "resume", 3), before, "commits survive SIGKILL");
    let c = consumer(&ferry, "resumers", &[]);
    c.subscribe(&["resume"]).unwrap();
    let mut second = Vec::new();
    let expected_rest = 900 - before.values().sum::<i64>() as usize;
    consume_commit_after(&c, &mut second, |s| s.len() >= expected_rest, Duration::from_secs(20));
    let first_set: HashSet<_> = first.iter().cloned().collect();
    let second_set: HashSet<_> = second.iter().cloned().collect();
    assert!(first_set.is_disjoint(&second_set), "resumed after the committed offsets, no repeats");
    let union: HashSet<_> = first_set.union(&second_set).cloned().collect();
    assert_eq!(union, all);
}

#[tokio::test]
async fn static_member_restart_keeps_assignment_without_rebalance() {
    let ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "static", 2).await;
    fill(&ferry, "static", 10).await;
    let settings = [("group.instance.id", "instance-a"), ("session.timeout.ms", "10000")];
    let a = consumer(&ferry, "statics", &settings);
    a.subscribe(&["static"]).unwrap();
    let start = Instant::now();
    while a.assignment().unwrap().count() == 0 && start.elapsed() < Duration::from_secs(15) {
        let _ = a.poll(Duration::from_millis(100));
    }
    let before = a.assignment().unwrap().count();
    assert_eq!(before, 2);
    drop(a); // a static member's close does not leave the group
    let b = consumer(&ferry, "statics", &settings);
    b.subscribe(&["static"]).unwrap();
    let start = Instant::now();
    while b.assignment().unwrap().count() == 0 && start.elapsed() < Duration::from_secs(15) {
        let _ = b.poll(Duration::from_millis(100));
    }
    assert_eq!(b.assignment().unwrap().count(), 2, "{}", ferry.log());
    let log = ferry.log();
    assert!(log.contains("static member rejoined; assignment kept without a rebalance"), "{log}");
    assert_eq!(log.matches("join phase complete").count(), 1, "only the first join rebalanced:\n{log}");
}

/// The seed's at-most-once consumer: commit, then process. A crash after
/// the commit loses the in-flight records and never repeats one.
#[tokio::test]
async fn at_most_once_commit_before_process_loses_but_never_repeats() {
    let ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "amo", 1).await;
    let all = fill(&ferry, "amo", 500).await;
    let mut processed: Vec<String> = Vec::new();
    {
        let c = consumer(&ferry, "amo-group", &[]);
        c.subscribe(&["amo"]).unwrap();
        let start = Instant::now();
        let mut received = 0;
        'outer: while start.elapsed() < Duration::from_secs(20) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                c.commit_message(&m, CommitMode::Sync).unwrap(); // commit first
                received += 1;
                if received == 200 {
                    break 'outer; // crash: committed, never processed
                }
                processed.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            }
        }
        // The consumer "crashes": dropped without any further commit.
    }
    let c = consumer(&ferry, "amo-group", &[]);
    c.subscribe(&["amo"]).unwrap();
    consume_commit_after(&c, &mut processed, |s| s.len() >= 499, Duration::from_secs(20));
    let unique: HashSet<_> = processed.iter().cloned().collect();
    assert_eq!(unique.len(), processed.len(), "at-most-once never repeats a record");
    assert_eq!(processed.len(), 499, "exactly the in-flight record was lost");
    assert_eq!(all.difference(&unique).count(), 1);
}

/// The seed's at-least-once consumer: process, then commit. A crash
/// (consumer and broker both killed) repeats records and never loses one.
#[tokio::test]
async fn at_least_once_process_then_commit_repeats_but_never_loses() {
    let mut ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "alo", 2).await;
    let all = fill(&ferry, "alo", 600).await;
    let mut processed: Vec<String> = Vec::new();
    {
        let c = consumer(&ferry, "alo-group", &[]);
        c.subscribe(&["alo"]).unwrap();
        let start = Instant::now();
        let mut since_commit = 0;
        while start.elapsed() < Duration::from_secs(20) && processed.len() < 250 {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                processed.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned()); // process first
                since_commit += 1;
                if since_commit == 50 {
                    c.commit_consumer_state(CommitMode::Sync).unwrap();
                    since_commit = 0;
                }
            }
        }
    }
    ferry.kill9();
    ferry.spawn_and_wait();
    let c = consumer(&ferry, "alo-group", &[]);
    c.subscribe(&["alo"]).unwrap();
    consume_commit_after(&c, &mut processed, |s| s.iter().collect::<HashSet<_>>().len() >= 600, Duration::from_secs(30));
    let unique: HashSet<String> = processed.iter().cloned().collect();
    assert_eq!(unique, all, "at-least-once never loses a record");
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for v in &processed {
        *counts.entry(v).or_default() += 1;
    }
    eprintln!("at-least-once: {} processed, {} unique, {} repeated", processed.len(), unique.len(), processed.len() - unique.len());
}

#[tokio::test]
async fn limits_and_errors() {
    let ferry = Ferry::start_with(&["--group-initial-rebalance-delay-ms", "0", "--group-max-size", "1"], &[]);
    create_topic(&ferry, "lim", 1).await;
    // Session timeout below group.min.session.timeout.ms.
    let c = consumer(&ferry, "short", &[("session.timeout.ms", "1000")]);
    c.subscribe(&["lim"]).unwrap();
    let mut saw_invalid = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && !saw_invalid {
        if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
            saw_invalid = e.to_string().to_lowercase().contains("session timeout");
        }
    }
    assert!(saw_invalid, "INVALID_SESSION_TIMEOUT reported to the client");
    // group.max.size=1: the second member is refused.
    let a = consumer(&ferry, "full", &[]);
    a.subscribe(&["lim"]).unwrap();
    let start = Instant::now();
    while a.assignment().unwrap().count() == 0 && start.elapsed() < Duration::from_secs(10) {
        let _ = a.poll(Duration::from_millis(100));
    }
    let b = consumer(&ferry, "full", &[]);
    b.subscribe(&["lim"]).unwrap();
    let mut saw_full = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && !saw_full {
        let _ = a.poll(Duration::from_millis(50));
        if let Some(Err(e)) = b.poll(Duration::from_millis(50)) {
            saw_full = e.to_string().to_lowercase().contains("max");
        }
    }
    assert!(saw_full, "GROUP_MAX_SIZE_REACHED reported to the client");
    // A commit for a partition that does not exist.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lim", 7, Offset::Offset(3)).unwrap();
    let standalone = consumer(&ferry, "standalone", &[]);
    let r = standalone.commit(&tpl, CommitMode::Sync);
    assert!(r.is_err(), "commit to unknown partition refused: {r:?}");
    let _ = produce_all(&producer(&ferry.bootstrap(), &[]), "lim", &["x".into()]).await;
}

/// Membership is durable, as in Kafka: after a broker SIGKILL the members
/// carry on with their member ids and generation (no rebalance, commits
/// accepted), and the next rebalance continues the generation count.
#[tokio::test]
async fn membership_and_generation_survive_sigkill() {
    let mut ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "members", 2).await;
    let all = fill(&ferry, "members", 600).await;
    let c = consumer(&ferry, "keepers", &[("session.timeout.ms", "30000")]);
    c.subscribe(&["members"]).unwrap();
    let mut seen = Vec::new();
    consume_commit_after(&c, &mut seen, |s| s.len() >= 200, Duration::from_secs(20));
    ferry.kill9();
    let restart_mark = ferry.log().len();
    ferry.spawn_and_wait();
    // The log as plain text (tracing may color it), from the restart on.
    let after_restart = |ferry: &Ferry| {
        let text = ferry.log()[restart_mark..].to_string();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(ch);
            }
        }
        plain
    };
    assert!(after_restart(&ferry).contains("group membership loaded"), "{}", after_restart(&ferry));

    // The same consumer goes on: heartbeats and commits with its old
    // generation are accepted, so it reads the rest without rejoining.
    // A few heartbeats first (heartbeat.interval.ms=500): an unknown member
    // would be told to rejoin now.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) && seen.len() < 600 {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            c.commit_message(&m, CommitMode::Sync).expect("a commit with the restored generation is accepted");
        }
    }
    consume_commit_after(&c, &mut seen, |s| s.len() >= 600, Duration::from_secs(30));
    assert_eq!(committed(&ferry, "keepers", "members", 2).values().sum::<i64>(), 600, "commits accepted to the end");
    let seen_set: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen_set, all, "every record read");
    assert_eq!(seen.len(), 600, "no record read twice: the commits after the restart were accepted");
    let log = after_restart(&ferry);
    assert!(!log.contains("join phase complete"), "no rebalance after the restart:\n{log}");

    // A second member joins: the generation goes on from the restored one.
    let d = consumer(&ferry, "keepers", &[]);
    d.subscribe(&["members"]).unwrap();
    let start = Instant::now();
    while d.assignment().unwrap().count() == 0 && start.elapsed() < Duration::from_secs(30) {
        let _ = d.poll(Duration::from_millis(100));
        let _ = c.poll(Duration::from_millis(100));
    }
    let log = after_restart(&ferry);
    let joined = log.lines().filter(|l| l.contains("join phase complete")).collect::<Vec<_>>();
    assert!(!joined.is_empty() && joined.iter().all(|l| !l.contains("generation=1 ")), "the generation continues past the restored 1:\n{log}");
}

/// A member that is gone for good (SIGKILLed, or a client that gave its id
/// up after its own session timeout) must expire after its session timeout
/// even while the broker keeps restarting: the restored membership must not
/// give it a fresh session at every start, or its partitions are never
/// handed on (issue 11: a group that stopped delivering for good).
#[tokio::test]
async fn a_member_gone_for_good_expires_while_the_broker_keeps_restarting() {
    let mut ferry = Ferry::start_with(FAST_GROUPS, &[]);
    create_topic(&ferry, "ghosts", 2).await;
    fill(&ferry, "ghosts", 100).await;
    // The member that will vanish: a separate process, SIGKILLed (no LeaveGroup).
    let mut ghost = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["consume", "--topic", "ghosts", "--group", "ghosts", "--from-beginning", "--bootstrap-server", &ferry.bootstrap()])
        .args(["--consumer-property", "session.timeout.ms=6000", "--consumer-property", "heartbeat.interval.ms=500"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the ghost consumer");
    let survivor = consumer(&ferry, "ghosts", &[]);
    survivor.subscribe(&["ghosts"]).unwrap();
    let start = Instant::now();
    while survivor.assignment().unwrap().count() != 1 && start.elapsed() < Duration::from_secs(30) {
        let _ = survivor.poll(Duration::from_millis(100));
    }
    let owned = survivor.assignment().unwrap();
    assert_eq!(owned.count(), 1, "the two members share the two partitions");
    let ghost_partition = 1 - owned.elements()[0].partition();
    // Let both settle and commit, then the ghost dies without a word.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = survivor.poll(Duration::from_millis(100)) {
            let _ = survivor.commit_message(&m, CommitMode::Async);
        }
    }
    let _ = ghost.kill();
    let _ = ghost.wait();

    // Restart the broker every ~2.7 s (more often than the 6 s session
    // timeout, with time for a rebalance in between) until the live member
    // takes the ghost's partition over, for up to ~55 s; a record goes to the
    // ghost's partition each time. Before
    // the fix the ghost's session started over at every restart, so this
    // never happened while the restarts went on.
    let p = producer(&ferry.bootstrap(), &[("acks", "all"), ("message.timeout.ms", "2000")]);
    let faults_started = Instant::now();
    let mut taken_over_after: Option<Duration> = None;
    for i in 0..20 {
        if taken_over_after.is_some() {
            break;
        }
        ferry.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        ferry.spawn_and_wait();
        let value = format!("after-{i}");
        let sent = p.send_result(rdkafka::producer::FutureRecord::<str, str>::to("ghosts").partition(ghost_partition).payload(&value));
        let polled = Instant::now();
        while polled.elapsed() < Duration::from_millis(2500) {
            if let Some(Ok(m)) = survivor.poll(Duration::from_millis(100)) {
                if m.partition() == ghost_partition && taken_over_after.is_none() {
                    taken_over_after = Some(faults_started.elapsed());
                }
                let _ = survivor.commit_message(&m, CommitMode::Async);
            }
        }
        drop(sent);
    }
    let faults_lasted = faults_started.elapsed();
    assert!(
        taken_over_after.is_some(),
        "the ghost's partition was never handed to the live member during {faults_lasted:?} of restarts (session timeout 6 s)"
    );
}
