//! The metadata group's state machine: brokers, topics, replica placement
//! and topic configs. Every broker applies the same committed commands in
//! the same order, so `apply` must be deterministic: no clocks, no
//! randomness, no local configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Where Kafka clients reach this broker (its advertised listener).
    pub host: String,
    pub port: i32,
    /// Where the other brokers reach it (its `--cluster-listen`).
    #[serde(default)]
    pub cluster_addr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPlacement {
    pub id: Uuid,
    /// Per partition, its replicas' node ids; the first is the preferred leader.
    pub replicas: Vec<Vec<u64>>,
    /// Per partition, the id of its Raft group (unique in the cluster, never reused).
    #[serde(default)]
    pub groups: Vec<u64>,
    pub configs: BTreeMap<String, String>,
    /// Partitions whose replicas are moving, and where to (see `reassign.rs`).
    #[serde(default)]
    pub moving: BTreeMap<i32, crate::reassign::Move>,
    /// Per partition whose replicas ever moved: the replicas it was created
    /// with, its Raft group's first voters.
    #[serde(default)]
    pub first_replicas: BTreeMap<i32, Vec<u64>>,
}

/// Who leads a partition's Raft group, as its leader reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLeader {
    pub leader: u64,
    /// The group's Raft term: Kafka's leader epoch.
    pub epoch: u64,
    /// The replicas that have every committed entry (Kafka's ISR).
    #[serde(default)]
    pub in_sync: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<u64, BrokerInfo>,
    pub topics: BTreeMap<String, TopicPlacement>,
    /// The last Raft group id handed to a partition (0 is the metadata group).
    #[serde(default)]
    pub last_group_id: u64,
    /// Partition group → its leader as last reported.
    #[serde(default)]
    pub partition_leaders: BTreeMap<u64, PartitionLeader>,
    /// Brokers outside `--cluster-voters` that joined as learners of the
    /// metadata group (Kafka's observers).
    #[serde(default)]
    pub observers: std::collections::BTreeSet<u64>,
    /// The brokers' security stores (`users`, `acls`), each whole as the
    /// file a broker keeps, so every broker holds the same users and ACLs.
    #[serde(default)]
    pub security: BTreeMap<String, SecurityStore>,
    /// The last applied entry of the metadata log.
    pub applied_index: u64,
}

/// One security store's content and how many times it was replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityStore {
    pub version: u64,
    pub content: String,
}

/// The largest security store the metadata log takes (each change carries
/// the whole store).
pub const MAX_SECURITY_STORE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    RegisterBroker {
        node_id: u64,
        host: String,
        port: i32,
        #[serde(default)]
        cluster_addr: Option<String>,
    },
    CreateTopic { name: String, id: Uuid, partitions: i32, replication_factor: i16, configs: BTreeMap<String, String> },
    DeleteTopic { name: String },
    CreatePartitions { name: String, count: i32 },
    SetTopicConfigs { name: String, configs: BTreeMap<String, String> },
    /// A partition group's new leader announces itself (Kafka: the leader
    /// and epoch in the partition's metadata).
    /// Sent again by the same leader when its in-sync replicas change
    /// (Kafka's AlterPartition).
    PartitionLeader {
        group: u64,
        leader: u64,
        epoch: u64,
        #[serde(default)]
        in_sync: Vec<u64>,
    },
    /// Moves a partition's replicas to `target` (Kafka's
    /// AlterPartitionReassignments); None cancels a move under way, back to
    /// the replicas it started from.
    ReassignPartition { name: String, partition: i32, target: Option<Vec<u64>> },
    /// The partition's leader: the group's voters are now `replicas`.
    ReassignmentDone { group: u64, replicas: Vec<u64> },
    /// A broker changed a security store (users, ACLs): its whole new
    /// content, taken only if the store is still at `base_version`, so two
    /// brokers changing it at once never lose each other's change (the one
    /// refused redoes its change on the newer content).
    PutSecurityStore { store: String, base_version: u64, content: String },
}

/// Why the state machine refused a command; every broker refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum StateError {
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    UnknownPartition(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    NoReassignmentInProgress(String),
    #[error("security store {store} changed meanwhile (now version {version})")]
    SecurityStoreChanged { store: String, version: u64 },
    #[error("{0}")]
    SecurityStoreTooLarge(String),
}

/// What a command did, for the broker that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    TopicCreated(TopicPlacement),
}

impl ClusterState {
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied, StateError> {
        debug_assert!(index > self.applied_index, "metadata entries applied out of order");
        self.applied_index = index;
        match command {
            Command::RegisterBroker { node_id, host, port, cluster_addr } => {
                self.brokers.insert(*node_id, BrokerInfo { host: host.clone(), port: *port, cluster_addr: cluster_addr.clone() });
                Ok(Applied::Done)
            }
            Command::CreateTopic { name, id, partitions, replication_factor, configs } => {
                if self.topics.contains_key(name) {
                    return Err(StateError::TopicAlreadyExists(name.clone()));
                }
                let replicas = self.place(*partitions, *replication_factor)?;
                let groups = self.new_group_ids(replicas.len());
                let placement = TopicPlacement { id: *id, replicas, groups, configs: configs.clone(), moving: BTreeMap::new(), first_replicas: BTreeMap::new() };
                self.topics.insert(name.clone(), placement.clone());
                Ok(Applied::TopicCreated(placement))
            }
            Command::PutSecurityStore { store, base_version, content } => {
                if content.len() > MAX_SECURITY_STORE_BYTES {
                    return Err(StateError::SecurityStoreTooLarge(format!(
                        "security store {store} of {} bytes is over the {MAX_SECURITY_STORE_BYTES} allowed",
                        content.len()
                    )));
                }
                let current = self.security.entry(store.clone()).or_default();
                if current.version != *base_version {
                    return Err(StateError::SecurityStoreChanged { store: store.clone(), version: current.version });
                }
                *current = SecurityStore { version: base_version + 1, content: content.clone() };
                Ok(Applied::Done)
            }
            Command::DeleteTopic { name } => {
                let topic = self.topics.remove(name).ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                for g in &topic.groups {
                    self.partition_leaders.remove(g);
                }
                Ok(Applied::Done)
            }
            Command::CreatePartitions { name, count } => {
                let topic = self.topics.get(name).ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                let have = topic.replicas.len() as i32;
                if *count <= have {
                    return Err(StateError::InvalidPartitions(format!("topic {name} has {have} partitions; asked for {count}")));
                }
                let factor = topic.replicas.first().map(|r| r.len() as i16).unwrap_or(1);
                let extra = self.place(count - have, factor)?;
                let groups = self.new_group_ids(extra.len());
                let topic = self.topics.get_mut(name).expect("checked above");
                topic.replicas.extend(extra);
                topic.groups.extend(groups);
                Ok(Applied::Done)
            }
            Command::SetTopicConfigs { name, configs } => {
                let topic = self.topics.get_mut(name).ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                topic.configs = configs.clone();
                Ok(Applied::Done)
            }
            Command::PartitionLeader { group, leader, epoch, in_sync } => {
                // A report from an older term arriving late changes nothing.
                let known = self.topics.values().any(|t| t.groups.contains(group));
                let newer = self.partition_leaders.get(group).is_none_or(|l| *epoch > l.epoch || (*epoch == l.epoch && *leader == l.leader));
                if known && newer {
                    self.partition_leaders.insert(*group, PartitionLeader { leader: *leader, epoch: *epoch, in_sync: in_sync.clone() });
                }
                Ok(Applied::Done)
            }
            Command::ReassignPartition { name, partition, target } => self.reassign(name, *partition, target.as_deref()),
            Command::ReassignmentDone { group, replicas } => {
                self.finish_reassignment(*group, replicas);
                Ok(Applied::Done)
            }
        }
    }

    fn new_group_ids(&mut self, count: usize) -> Vec<u64> {
        (0..count)
            .map(|_| {
                self.last_group_id += 1;
                self.last_group_id
            })
            .collect()
    }

    /// A partition's Raft group id and replicas.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<(u64, &[u64])> {
        let t = self.topics.get(topic)?;
        let i = usize::try_from(partition).ok()?;
        Some((*t.groups.get(i)?, t.replicas.get(i)?.as_slice()))
    }

    /// Round-robin over the registered brokers from a start that moves with
    /// every partition placed, so leaders spread evenly across topics.
    fn place(&self, count: i32, factor: i16) -> Result<Vec<Vec<u64>>, StateError> {
        let brokers: Vec<u64> = self.brokers.keys().copied().collect();
        if factor < 1 || factor as usize > brokers.len() {
            return Err(StateError::InvalidReplicationFactor(format!(
                "replication factor {factor} is not within 1..={} (registered brokers)",
                brokers.len()
            )));
        }
        if count < 1 {
            return Err(StateError::InvalidPartitions(format!("{count} partitions requested")));
        }
        let placed: usize = self.topics.values().map(|t| t.replicas.len()).sum();
        let n = brokers.len();
        Ok((0..count as usize)
            .map(|p| (0..factor as usize).map(|j| brokers[(placed + p + j) % n]).collect())
            .collect())
    }

    /// The preferred leader of a partition, if the topic and partition exist.
    pub fn preferred_leader(&self, topic: &str, partition: i32) -> Option<u64> {
        let t = self.topics.get(topic)?;
        t.replicas.get(usize::try_from(partition).ok()?)?.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_brokers() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(id, &Command::RegisterBroker { node_id: id, host: "h".into(), port: 9000 + id as i32, cluster_addr: None }).unwrap();
        }
        s
    }

    fn create(name: &str, partitions: i32, rf: i16) -> Command {
        Command::CreateTopic { name: name.into(), id: Uuid::nil(), partitions, replication_factor: rf, configs: BTreeMap::new() }
    }

    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let mut s = three_brokers();
        s.apply(4, &create("a", 6, 3)).unwrap();
        let t = &s.topics["a"];
        let mut leaders = [0; 4];
        for r in &t.replicas {
            let mut d = r.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3);
            leaders[r[0] as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
    }

    #[test]
    fn refuses_what_kafka_refuses() {
        let mut s = three_brokers();
        assert!(matches!(s.apply(4, &create("a", 1, 4)), Err(StateError::InvalidReplicationFactor(_))));
        s.apply(5, &create("a", 1, 1)).unwrap();
        assert!(matches!(s.apply(6, &create("a", 1, 1)), Err(StateError::TopicAlreadyExists(_))));
        assert!(matches!(s.apply(7, &Command::CreatePartitions { name: "a".into(), count: 1 }), Err(StateError::InvalidPartitions(_))));
        s.apply(8, &Command::CreatePartitions { name: "a".into(), count: 3 }).unwrap();
        assert_eq!(s.topics["a"].replicas.len(), 3);
        assert!(matches!(s.apply(9, &Command::DeleteTopic { name: "b".into() }), Err(StateError::UnknownTopic(_))));
    }
}
