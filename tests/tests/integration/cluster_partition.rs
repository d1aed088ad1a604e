//! A real network partition: three brokers, each in its own network
//! namespace, joined by veth pairs to a bridge. The metadata leader's link
//! is cut: the other two elect a leader and keep taking changes, the cut-off
//! broker commits nothing, and once the link is back it catches up and keeps
//! nothing the majority did not commit. Needs root (CI runs as root).

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::netns::NetLab;
use ferry_tests::{ferry_bin, raw, Ferry};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const KAFKA_PORT: u16 = 9092;
const RAFT_PORT: u16 = 9192;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin")
}

/// The topics `bootstrap` lists; a failed request (logged) lists none.
fn topics(bootstrap: &str) -> Vec<String> {
    match admin(bootstrap).inner().fetch_metadata(None, Duration::from_secs(5)) {
        Ok(md) => md.topics().iter().map(|t| t.name().to_string()).collect(),
        Err(e) => {
            eprintln!("metadata from {bootstrap} failed: {e}");
            Vec::new()
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cut_off_leader_commits_nothing_and_catches_up_when_healed() {
    cut_the_leader_for(Duration::from_secs(12)).await;
}

/// A cut long enough that TCP's retransmit backoff would keep a healed
/// link silent for tens of seconds; the cluster transport's user timeout
/// redials instead (it failed about 1 run in 6 before that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_cut_also_catches_up_when_healed() {
    cut_the_leader_for(Duration::from_secs(30)).await;
}

/// Cuts the metadata leader off for `cut_for`: the cut-off broker's own
/// CreateTopics must fail meanwhile, and it catches up once healed.
async fn cut_the_leader_for(cut_for: Duration) {
    let lab = NetLab::new(3).expect("network namespaces (run as root)");
    let voters = (1..=3).map(|i| format!("{i}@{}:{RAFT_PORT}", lab.addr(i))).collect::<Vec<_>>().join(",");
    let mut brokers: Vec<Ferry> = (1..=3)
        .map(|i| {
            let (node, raft) = (i.to_string(), format!("{}:{RAFT_PORT}", lab.addr(i)));
            let mut b = Ferry::unstarted(KAFKA_PORT, &["--node-id", &node, "--cluster-listen", &raft, "--cluster-voters", &voters], &[]);
            b.host = lab.addr(i);
            b.netns = Some(lab.ns(i));
            b
        })
        .collect();
    for b in &mut brokers {
        b.spawn();
    }
    let boots: Vec<String> = brokers.iter().map(|b| b.bootstrap()).collect();
    wait_until("every broker registered", Duration::from_secs(30), || {
        admin(&boots[0]).inner().fetch_metadata(None, Duration::from_secs(5)).is_ok_and(|md| md.brokers().len() == 3)
    });

    let leader = raw::controller_id(&boots[0]);
    assert!((1..=3).contains(&leader), "controller {leader}");
    let cut = leader as usize;
    let majority: Vec<usize> = (1..=3).filter(|i| *i != cut).collect();
    lab.cut(cut).expect("cut the link");
    let cut_at = Instant::now();
    let took = wait_until("the majority elects another leader", Duration::from_secs(15), || {
        let c = raw::controller_id(&boots[majority[0] - 1]);
        c > 0 && c != leader
    });
    eprintln!("metadata leader {leader} cut off; another elected after {took:?}");

    // The majority takes changes.
    let created = admin(&boots[majority[1] - 1])
        .create_topics([&NewTopic::new("during-partition", 2, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("admin answer");
    assert!(created[0].is_ok(), "{created:?}");

    // The cut-off broker, asked from inside its namespace, commits nothing.
    let refused = Command::new("ip")
        .args(["netns", "exec", &lab.ns(cut)])
        .arg(ferry_bin())
        .args(["topic", "--bootstrap-server", &boots[cut - 1], "--request-timeout-ms", &cut_for.as_millis().to_string(), "create", "cut-off"])
        .output()
        .expect("run ferry topic create");
    assert!(!refused.status.success(), "the cut-off broker created a topic: {}", String::from_utf8_lossy(&refused.stdout));
    eprintln!("cut-off broker refused: {}", String::from_utf8_lossy(&refused.stderr).trim());

    // The refusal comes as soon as the cut-off broker steps down; keep the
    // link down for the whole `cut_for`, long enough for TCP's backoff.
    std::thread::sleep(cut_for.saturating_sub(cut_at.elapsed()));
    lab.heal(cut).expect("heal the link");
    wait_until("the healed broker catches up", Duration::from_secs(30), || topics(&boots[cut - 1]).contains(&"during-partition".to_string()));
    for b in &boots {
        let mut seen = Vec::new();
        wait_until("every broker lists the topic", Duration::from_secs(15), || {
            seen = topics(b);
            seen.contains(&"during-partition".to_string())
        });
        assert!(!seen.contains(&"cut-off".to_string()), "{b} kept a change the majority never committed: {seen:?}");
    }
    for b in &mut brokers {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}
