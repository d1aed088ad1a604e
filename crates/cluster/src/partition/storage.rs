//! raft-rs's view of a partition's log: entries are read back from the
//! segments, terms and offsets come from the entry index.

use std::sync::Arc;

use bytes::Bytes;
use ferry_log::batch::BatchHeader;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::anchor::Anchor;
use super::index::EntryIndex;
use super::marks::MarkKind;
use super::ReplicaLog;

/// Entries read for one call at most, in bytes (raft-rs asks again for more).
const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

pub struct ReplicaStorage {
    pub index: EntryIndex,
    pub log: Arc<dyn ReplicaLog>,
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Where the log starts once its head was dropped: the snapshot a
    /// follower that needs older entries gets.
    pub anchor: Option<Anchor>,
}

impl ReplicaStorage {
    /// A zero-width entry as raft-rs knows it: empty for a leader change,
    /// the new log start in `context` + `data` for DeleteRecords, a
    /// membership change as raft-rs wrote it.
    fn mark_entry(&self, index: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = self.index.term(index).expect("a mark is below the last index");
        match self.index.mark(index) {
            Some(MarkKind::LogStart(offset)) => {
                e.context = Bytes::from_static(LOG_START_CONTEXT);
                e.data = Bytes::copy_from_slice(&offset.to_be_bytes());
            }
            Some(MarkKind::ConfChange(change)) => {
                e.set_entry_type(EntryType::EntryConfChangeV2);
                e.data = Bytes::copy_from_slice(&change);
            }
            Some(MarkKind::LeaderChange) | None => {}
        }
        e
    }
}

/// The `context` of an entry that moves the log start (DeleteRecords).
pub const LOG_START_CONTEXT: &[u8] = b"ferry-log-start";

fn storage_error(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl raft::Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low < self.index.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.index.last_index() + 1, "entries past the last index asked for");
        let max_size = max_size.into();
        let budget = max_size.unwrap_or(u64::MAX).min(MAX_READ_BYTES) as usize;
        let mut out = Vec::new();
        let mut next = low;
        while next < high {
            if self.index.mark(next).is_some() {
                out.push(self.mark_entry(next));
                next += 1;
                continue;
            }
            let bytes = self.log.read(self.index.base_offset(next), budget).map_err(storage_error)?;
            let before = out.len();
            let mut rest = &bytes[..];
            while next < high && !rest.is_empty() {
                if self.index.mark(next).is_some() {
                    out.push(self.mark_entry(next));
                    next += 1;
                    continue;
                }
                let header = BatchHeader::parse(rest).map_err(storage_error)?;
                let len = header.total_len();
                let batch = rest.get(..len).ok_or_else(|| storage_error("a batch read back is cut short"))?;
                if header.base_offset != self.index.base_offset(next) {
                    return Err(storage_error(format!("entry {next} should start at offset {} but the log has {}", self.index.base_offset(next), header.base_offset)));
                }
                let mut e = Entry::default();
                e.index = next;
                e.term = self.index.term(next).expect("below last index");
                e.data = Bytes::copy_from_slice(batch);
                out.push(e);
                next += 1;
                rest = &rest[len..];
            }
            if out.len() == before {
                return Err(storage_error(format!("entry {next} could not be read back")));
            }
            // One read's worth; raft-rs asks again for the rest.
            if max_size.is_some() || out.len() >= 1024 {
                break;
            }
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx + 1 < self.index.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.index.term(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.index.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.index.last_index())
    }

    /// The anchor: the records below its offset are gone on every replica
    /// that has it, so the snapshot is where to start, not data.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let Some(anchor) = &self.anchor else {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        };
        let mut snapshot = Snapshot::default();
        snapshot.data = Bytes::copy_from_slice(&anchor.offset.to_be_bytes());
        let meta = snapshot.mut_metadata();
        meta.index = anchor.index;
        meta.term = anchor.term;
        meta.set_conf_state(anchor.conf.clone());
        Ok(snapshot)
    }
}

/// The offset a snapshot's log starts at.
pub fn snapshot_offset(snapshot: &Snapshot) -> Option<i64> {
    snapshot.data.as_ref().try_into().ok().map(i64::from_be_bytes).filter(|o| *o >= 0)
}
