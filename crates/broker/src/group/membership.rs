//! Group membership made durable, as Kafka keeps it in __consumer_offsets:
//! each time a group settles (Stable with a new plan, or Empty) its whole
//! state (generation, protocol, leader, members with their subscriptions
//! and assignments) is appended to `<data-dir>/internal/group-metadata.log`
//! and fsynced. After a restart the members carry on with their member ids
//! and generation instead of rejoining, and generations keep growing, which
//! KIP-447's zombie check on TxnOffsetCommit relies on.
//!
//! A state reached mid-rebalance is not written: after a crash there the
//! group comes back as it last settled and its members rejoin.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_log::meta::MetaLog;
use ferry_log::storage::Storage;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::state::{Group, GroupState, Member};
use crate::error::{EngineError, EngineResult};

/// Rewrite the log to the live snapshots once it holds this many records
/// more than there are groups.
const COMPACT_SLACK_RECORDS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct MemberRecord {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    /// Wall-clock ms since which the member has not been heard from: set
    /// for every member when the broker restores the group, cleared when the
    /// member is next heard from. A member silent across several restarts
    /// keeps its first value, so its session keeps running down instead of
    /// starting over at each restart (a consumer that gave its id up, e.g.
    /// librdkafka after its own session timeout, must not stay a member for
    /// as long as the broker restarts more often than the session timeout).
    #[serde(default)]
    silent_since_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum GroupRecord {
    Snapshot {
        group: String,
        generation: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        leader: Option<String>,
        members: Vec<MemberRecord>,
    },
    Delete {
        group: String,
    },
}

fn snapshot(group: &Group) -> GroupRecord {
    GroupRecord::Snapshot {
        group: group.id.clone(),
        generation: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id.clone(),
        members: group
            .members
            .values()
            .map(|m| MemberRecord {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: m.protocol_type.clone(),
                protocols: m.protocols.iter().map(|(n, b)| (n.clone(), b.to_vec())).collect(),
                assignment: m.assignment.to_vec(),
                silent_since_ms: m.silent_since_ms,
            })
            .collect(),
    }
}

fn restore(record: GroupRecord, now: Instant, now_ms: i64) -> Option<Group> {
    let GroupRecord::Snapshot { group, generation, protocol_type, protocol_name, leader, members } = record else {
        return None;
    };
    let mut restored = Group::new(group);
    restored.generation_id = generation;
    restored.protocol_type = protocol_type;
    restored.protocol_name = protocol_name;
    restored.leader_id = leader;
    // The leader first, so it keeps leading if the group rebalances.
    let mut members = members;
    members.sort_by_key(|m| Some(&m.id) != restored.leader_id.as_ref());
    for m in members {
        // The session runs from when the member was last known alive: a
        // member silent since an earlier restart has less of it left.
        let silent_since = m.silent_since_ms.unwrap_or(now_ms);
        let silent_for = (now_ms - silent_since).clamp(0, i64::from(m.session_timeout_ms.max(0)));
        let last_heartbeat = now.checked_sub(std::time::Duration::from_millis(silent_for as u64)).unwrap_or(now);
        restored.add_member(Member {
            id: m.id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            session_timeout_ms: m.session_timeout_ms,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            protocol_type: m.protocol_type,
            protocols: m.protocols.into_iter().map(|(n, b)| (n, Bytes::from(b))).collect(),
            assignment: Bytes::from(m.assignment),
            // A member heard from before the crash gets a full session
            // timeout to find the restarted broker; one already silent at
            // an earlier restart only what is left of it.
            last_heartbeat,
            silent_since_ms: Some(silent_since),
            join_waiter: None,
            sync_waiter: None,
            join_order: super::join_order(),
        });
    }
    restored.state = if restored.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
    Some(restored)
}

#[derive(Debug)]
struct Inner {
    log: MetaLog,
    /// Each group's last saved snapshot: what a compaction writes.
    saved: BTreeMap<String, Vec<u8>>,
    records_in_log: usize,
}

#[derive(Debug)]
pub(super) struct MembershipStore {
    inner: Mutex<Inner>,
}

fn storage_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(e.to_string())
}

impl MembershipStore {
    /// Opens the log and returns the groups as they last settled. The log
    /// is rewritten to those snapshots at once.
    pub fn open(data_dir: &Path, storage: Arc<dyn Storage>) -> EngineResult<(MembershipStore, Vec<Group>)> {
        let path = data_dir.join("internal").join("group-metadata.log");
        let (mut log, raw) = MetaLog::open(&path, storage).map_err(storage_error)?;
        let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for bytes in raw.iter() {
            let record: GroupRecord = serde_json::from_slice(bytes)
                .map_err(|e| EngineError::Storage(format!("{}: unreadable record: {e}", path.display())))?;
            match record {
                GroupRecord::Delete { group } => {
                    latest.remove(&group);
                }
                GroupRecord::Snapshot { group, .. } => {
                    latest.insert(group, bytes.clone());
                }
            }
        }
        // Every restored member is silent until heard from again: stamp
        // those not yet stamped with now, durably, so the next start still
        // knows (see `MemberRecord::silent_since_ms`).
        let now = Instant::now();
        let now_ms = crate::now_ms();
        let mut stamped = false;
        for bytes in latest.values_mut() {
            let mut record: GroupRecord = serde_json::from_slice(bytes).map_err(storage_error)?;
            if let GroupRecord::Snapshot { members, .. } = &mut record {
                for m in members.iter_mut().filter(|m| m.silent_since_ms.is_none()) {
                    m.silent_since_ms = Some(now_ms);
                    stamped = true;
                }
            }
            *bytes = serde_json::to_vec(&record).expect("group records serialize");
        }
        let payloads: Vec<Vec<u8>> = latest.values().cloned().collect();
        if stamped || payloads.len() != raw.len() {
            log.rewrite(&payloads).map_err(storage_error)?;
        }
        let mut groups = Vec::new();
        for bytes in latest.values() {
            let record: GroupRecord = serde_json::from_slice(bytes).map_err(storage_error)?;
            groups.extend(restore(record, now, now_ms));
        }
        let members: usize = groups.iter().map(|g| g.members.len()).sum();
        info!(groups = groups.len(), members, "group membership loaded");
        let inner = Inner { log, saved: latest, records_in_log: payloads.len() };
        Ok((MembershipStore { inner: Mutex::new(inner) }, groups))
    }

    /// Appends and fsyncs `group`'s current state.
    pub fn save(&self, group: &Group) -> EngineResult<()> {
        let payload = serde_json::to_vec(&snapshot(group)).expect("group records serialize");
        let mut inner = self.inner.lock();
        inner.log.append(std::slice::from_ref(&payload)).map_err(storage_error)?;
        inner.saved.insert(group.id.clone(), payload);
        inner.records_in_log += 1;
        Self::maybe_compact(&mut inner)
    }

    /// A restored member was heard from: clear its silence in the group's
    /// last saved snapshot (not the live state, which may be mid-rebalance)
    /// and append that. Once per member and restart.
    pub fn mark_heard(&self, group_id: &str, member_id: &str) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        let Some(bytes) = inner.saved.get(group_id) else {
            return Ok(());
        };
        let mut record: GroupRecord = serde_json::from_slice(bytes).map_err(storage_error)?;
        let GroupRecord::Snapshot { members, .. } = &mut record else {
            return Ok(());
        };
        let Some(m) = members.iter_mut().find(|m| m.id == member_id && m.silent_since_ms.is_some()) else {
            return Ok(());
        };
        m.silent_since_ms = None;
        let payload = serde_json::to_vec(&record).expect("group records serialize");
        inner.log.append(std::slice::from_ref(&payload)).map_err(storage_error)?;
        inner.saved.insert(group_id.to_string(), payload);
        inner.records_in_log += 1;
        Self::maybe_compact(&mut inner)
    }

    pub fn delete(&self, group_id: &str) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        if inner.saved.remove(group_id).is_none() {
            return Ok(());
        }
        let payload = serde_json::to_vec(&GroupRecord::Delete { group: group_id.to_string() }).expect("serialize");
        inner.log.append(&[payload]).map_err(storage_error)?;
        inner.records_in_log += 1;
        Self::maybe_compact(&mut inner)
    }

    fn maybe_compact(inner: &mut Inner) -> EngineResult<()> {
        if inner.records_in_log > inner.saved.len() + COMPACT_SLACK_RECORDS {
            let payloads: Vec<Vec<u8>> = inner.saved.values().cloned().collect();
            inner.log.rewrite(&payloads).map_err(storage_error)?;
            inner.records_in_log = payloads.len();
        }
        Ok(())
    }
}
