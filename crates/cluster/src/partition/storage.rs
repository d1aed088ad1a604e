//! raft-rs's view of a partition's log: entries are read back from the
//! segments, terms and offsets come from the entry index.

use std::sync::Arc;

use bytes::Bytes;
use ferry_log::batch::BatchHeader;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::index::EntryIndex;
use super::ReplicaLog;

/// Entries read for one call at most, in bytes (raft-rs asks again for more).
const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

pub struct ReplicaStorage {
    pub index: EntryIndex,
    pub log: Arc<dyn ReplicaLog>,
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

/// Whether a stored batch is a leader's empty entry (see `leader_change_batch`).
pub fn is_blank(header: &BatchHeader, bytes: &[u8]) -> bool {
    header.is_control()
        && header.producer_id < 0
        && ferry_log::batch::control_type(bytes) == Some(ferry_log::batch::ControlType::Other(ferry_log::batch::CONTROL_LEADER_CHANGE))
}

fn storage_error(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl raft::Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low < 1 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.index.last_index() + 1, "entries past the last index asked for");
        let max_size = max_size.into();
        let budget = max_size.unwrap_or(u64::MAX).min(MAX_READ_BYTES) as usize;
        let mut out = Vec::new();
        let mut next = low;
        while next < high {
            let bytes = self.log.read(self.index.base_offset(next), budget).map_err(storage_error)?;
            let before = out.len();
            let mut rest = &bytes[..];
            while next < high && !rest.is_empty() {
                let header = BatchHeader::parse(rest).map_err(storage_error)?;
                let len = header.total_len();
                let batch = rest.get(..len).ok_or_else(|| storage_error("a batch read back is cut short"))?;
                if header.base_offset != self.index.base_offset(next) {
                    return Err(storage_error(format!("entry {next} should start at offset {} but the log has {}", self.index.base_offset(next), header.base_offset)));
                }
                let mut e = Entry::default();
                e.index = next;
                e.term = self.index.term(next).expect("below last index");
                if !is_blank(&header, batch) {
                    e.data = Bytes::copy_from_slice(batch);
                }
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
        self.index.term(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.index.last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The log is never compacted below what Raft needs yet.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}
