//! Three metadata-group members in one process over real loopback TCP and
//! real files: election, proposals from a follower, failover, and a member
//! restarted from its log catching up.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_cluster::{Cluster, ClusterConfig, ClusterError, Command, StateError, Voter};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn voters(ports: &[u16]) -> Vec<Voter> {
    ports.iter().enumerate().map(|(i, p)| Voter { id: i as u64 + 1, addr: format!("127.0.0.1:{p}") }).collect()
}

async fn start(id: u64, ports: &[u16], root: &Path) -> Arc<Cluster> {
    let listen = format!("127.0.0.1:{}", ports[id as usize - 1]).parse().unwrap();
    let config = ClusterConfig::new(id, listen, voters(ports), root.join(format!("n{id}")));
    Cluster::start(config).await.expect("cluster starts")
}

async fn leader(nodes: &[Option<Arc<Cluster>>]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for n in nodes.iter().flatten() {
            let s = n.status();
            if s.is_leader {
                return s.node_id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn create(name: &str) -> Command {
    Command::CreateTopic { name: name.into(), id: Uuid::new_v4(), partitions: 3, replication_factor: 3, configs: BTreeMap::new() }
}

async fn propose_retrying(node: &Cluster, command: Command) -> Result<ferry_cluster::Applied, ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match node.propose(command.clone()).await {
            Err(ClusterError::NoLeader(_) | ClusterError::Timeout(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_replicates_fails_over_and_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = vec![
        Some(start(1, &ports, root.path()).await),
        Some(start(2, &ports, root.path()).await),
        Some(start(3, &ports, root.path()).await),
    ];
    let first = leader(&nodes).await;
    for id in 1..=3u64 {
        let node = nodes[id as usize - 1].as_ref().unwrap();
        propose_retrying(node, Command::RegisterBroker { node_id: id, host: "127.0.0.1".into(), port: 9000 + id as i32, cluster_addr: None }).await.unwrap();
    }
    // Proposed on a follower, applied everywhere.
    let follower = (1..=3).find(|id| *id != first).unwrap();
    propose_retrying(nodes[follower as usize - 1].as_ref().unwrap(), create("a")).await.unwrap();
    for n in nodes.iter().flatten() {
        assert!(n.wait_for(Duration::from_secs(5), |s| s.topics.contains_key("a") && s.brokers.len() == 3).await);
    }
    // The state machine's refusal reaches the proposer.
    let again = propose_retrying(nodes[0].as_ref().unwrap(), create("a")).await;
    assert!(matches!(again, Err(ClusterError::Refused(StateError::TopicAlreadyExists(_)))), "{again:?}");

    // The leader stops: the other two elect one and keep committing.
    let stopped_at = Instant::now();
    nodes[first as usize - 1].take().unwrap().stop();
    let second = leader(&nodes).await;
    assert_ne!(second, first);
    let failover = stopped_at.elapsed();
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    let survivor = nodes.iter().flatten().next().unwrap().clone();
    propose_retrying(&survivor, create("b")).await.unwrap();

    // The stopped member comes back from its own log and catches up.
    nodes[first as usize - 1] = Some(start(first, &ports, root.path()).await);
    let back = nodes[first as usize - 1].as_ref().unwrap();
    assert!(back.wait_for(Duration::from_secs(10), |s| s.topics.contains_key("a") && s.topics.contains_key("b")).await);
    let states: Vec<_> = nodes.iter().flatten().map(|n| n.state()).collect();
    assert_eq!(states[0].topics, states[1].topics);
    assert_eq!(states[1].topics, states[2].topics);
    for n in nodes.iter().flatten() {
        n.stop();
    }
}
