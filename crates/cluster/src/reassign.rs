//! Moving a partition's replicas (Kafka's AlterPartitionReassignments),
//! as the metadata state records it. The metadata group only records the
//! target; the partition's leader carries the move out through its Raft
//! group's membership changes (`partition::PartitionGroup::reassign`) and
//! reports when the voters are the target (`ReassignmentDone`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::state::{Applied, ClusterState, StateError};

/// A move under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// Where the replicas go; the first is the preferred leader.
    pub target: Vec<u64>,
    /// The replicas when the move began (a cancel goes back to them).
    pub original: Vec<u64>,
}

impl Move {
    /// Replicas the move adds (Kafka's adding_replicas).
    pub fn adding(&self) -> Vec<u64> {
        self.target.iter().filter(|r| !self.original.contains(r)).copied().collect()
    }

    /// Replicas the move removes (Kafka's removing_replicas).
    pub fn removing(&self) -> Vec<u64> {
        self.original.iter().filter(|r| !self.target.contains(r)).copied().collect()
    }

    /// Every replica while the move runs, target first (Kafka's Metadata
    /// lists the union the same way).
    pub fn all(&self) -> Vec<u64> {
        self.target.iter().chain(self.removing().iter()).copied().collect()
    }
}

impl ClusterState {
    pub(crate) fn reassign(&mut self, name: &str, partition: i32, target: Option<&[u64]>) -> Result<Applied, StateError> {
        if let Some(target) = target {
            self.check_target(target)?;
        }
        let topic = self.topics.get_mut(name).ok_or_else(|| StateError::UnknownTopic(name.to_string()))?;
        let index = usize::try_from(partition).ok().filter(|i| *i < topic.replicas.len());
        let current = index.map(|i| topic.replicas[i].clone()).ok_or_else(|| StateError::UnknownPartition(format!("{name} has no partition {partition}")))?;
        let Some(target) = target else {
            let m = topic.moving.get_mut(&partition).ok_or_else(|| StateError::NoReassignmentInProgress(format!("{name}-{partition} is not being reassigned")))?;
            m.target = m.original.clone();
            return Ok(Applied::Done);
        };
        match topic.moving.get_mut(&partition) {
            Some(m) => m.target = target.to_vec(),
            None if target == current.as_slice() => {}
            None => {
                topic.first_replicas.entry(partition).or_insert_with(|| current.clone());
                topic.moving.insert(partition, Move { target: target.to_vec(), original: current });
            }
        }
        Ok(Applied::Done)
    }

    fn check_target(&self, target: &[u64]) -> Result<(), StateError> {
        let distinct: BTreeSet<u64> = target.iter().copied().collect();
        if target.is_empty() || distinct.len() != target.len() {
            return Err(StateError::InvalidReplicaAssignment(format!("replicas {target:?} must be distinct and at least one")));
        }
        if let Some(unknown) = target.iter().find(|id| !self.brokers.contains_key(id)) {
            return Err(StateError::InvalidReplicaAssignment(format!("broker {unknown} is not registered")));
        }
        Ok(())
    }

    /// The leader reports the group's voters are `replicas`: the move is
    /// over if they are its target (a report about an older target changes
    /// nothing).
    pub(crate) fn finish_reassignment(&mut self, group: u64, replicas: &[u64]) {
        for topic in self.topics.values_mut() {
            let Some(i) = topic.groups.iter().position(|g| *g == group) else { continue };
            let partition = i as i32;
            let same = |a: &[u64], b: &[u64]| a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>();
            if let Some(m) = topic.moving.get(&partition).filter(|m| same(&m.target, replicas)) {
                topic.replicas[i] = m.target.clone();
                topic.moving.remove(&partition);
            }
            return;
        }
    }

    /// The move of a partition group under way, if any.
    pub fn move_of(&self, group: u64) -> Option<&Move> {
        self.topics.values().find_map(|t| {
            let i = t.groups.iter().position(|g| *g == group)?;
            t.moving.get(&(i as i32))
        })
    }

    /// Where a partition's Raft group runs and how it starts: (group, first
    /// voters, replicas now including a move's target, preferred replica).
    pub fn replica_set(&self, topic: &str, partition: i32) -> Option<ReplicaSet> {
        let t = self.topics.get(topic)?;
        let i = usize::try_from(partition).ok()?;
        let current = t.replicas.get(i)?;
        let moving = t.moving.get(&partition);
        Some(ReplicaSet {
            group: *t.groups.get(i)?,
            first_voters: t.first_replicas.get(&partition).unwrap_or(current).clone(),
            replicas: moving.map_or_else(|| current.clone(), Move::all),
            preferred: moving.map_or(current.first(), |m| m.target.first()).copied().unwrap_or(0),
        })
    }
}

/// See `ClusterState::replica_set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    pub group: u64,
    pub first_voters: Vec<u64>,
    pub replicas: Vec<u64>,
    pub preferred: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use crate::state::Command;

    use super::*;

    fn cluster_with_topic() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(id, &Command::RegisterBroker { node_id: id, host: "h".into(), port: 9000 + id as i32, cluster_addr: None }).unwrap();
        }
        let create = Command::CreateTopic { name: "t".into(), id: Uuid::nil(), partitions: 1, replication_factor: 2, configs: BTreeMap::new() };
        s.apply(4, &create).unwrap();
        s
    }

    fn reassign(name: &str, partition: i32, target: Option<Vec<u64>>) -> Command {
        Command::ReassignPartition { name: name.into(), partition, target }
    }

    #[test]
    fn a_move_is_recorded_until_the_leader_reports_it_done() {
        let mut s = cluster_with_topic();
        let original = s.topics["t"].replicas[0].clone();
        let group = s.topics["t"].groups[0];
        let target: Vec<u64> = (1..=3).filter(|id| *id != original[0]).collect();
        s.apply(5, &reassign("t", 0, Some(target.clone()))).unwrap();
        let set = s.replica_set("t", 0).unwrap();
        assert_eq!((set.first_voters, set.preferred), (original.clone(), target[0]));
        assert_eq!(set.replicas.len(), 3, "target and the replica leaving: {:?}", set.replicas);
        assert_eq!(s.move_of(group).unwrap().removing(), vec![original[0]]);
        // A report about other voters changes nothing; the target's does.
        s.apply(6, &Command::ReassignmentDone { group, replicas: original.clone() }).unwrap();
        assert!(s.move_of(group).is_some());
        s.apply(7, &Command::ReassignmentDone { group, replicas: target.iter().rev().copied().collect() }).unwrap();
        assert_eq!((s.move_of(group), &s.topics["t"].replicas[0]), (None, &target));
        // The group still starts from its first voters.
        assert_eq!(s.replica_set("t", 0).unwrap().first_voters, original);
    }

    #[test]
    fn refuses_what_kafka_refuses_and_cancels_back() {
        let mut s = cluster_with_topic();
        let refused = |s: &mut ClusterState, c: Command| s.apply(s.applied_index + 1, &c).unwrap_err();
        assert!(matches!(refused(&mut s, reassign("t", 0, Some(vec![1, 1]))), StateError::InvalidReplicaAssignment(_)));
        assert!(matches!(refused(&mut s, reassign("t", 0, Some(vec![9]))), StateError::InvalidReplicaAssignment(_)));
        assert!(matches!(refused(&mut s, reassign("t", 0, Some(vec![]))), StateError::InvalidReplicaAssignment(_)));
        assert!(matches!(refused(&mut s, reassign("t", 5, Some(vec![1]))), StateError::UnknownPartition(_)));
        assert!(matches!(refused(&mut s, reassign("u", 0, Some(vec![1]))), StateError::UnknownTopic(_)));
        assert!(matches!(refused(&mut s, reassign("t", 0, None)), StateError::NoReassignmentInProgress(_)));
        let original = s.topics["t"].replicas[0].clone();
        s.apply(10, &reassign("t", 0, Some(vec![3, 2, 1]))).unwrap();
        s.apply(11, &reassign("t", 0, None)).unwrap();
        let group = s.topics["t"].groups[0];
        assert_eq!(s.move_of(group).unwrap().target, original);
    }
}
