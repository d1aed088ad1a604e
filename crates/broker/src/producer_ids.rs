//! Durable producer id allocation: ids are handed out from blocks whose
//! upper bound is fsynced before any id in them is used, so no id is ever
//! given twice, across crashes included.

use std::path::Path;
use std::sync::Arc;

use ferry_log::meta::MetaLog;
use ferry_log::storage::Storage;
use parking_lot::Mutex;

use crate::error::{EngineError, EngineResult};

const BLOCK_SIZE: i64 = 1000;

#[derive(Debug)]
struct State {
    log: MetaLog,
    next: i64,
    block_end: i64,
}

#[derive(Debug)]
pub struct ProducerIdManager {
    state: Mutex<State>,
    space: IdSpace,
}

/// Which ids this broker may hand out: `n * stride + offset`. On a cluster
/// each broker takes its own residue (its node id), so two brokers never
/// give the same id, until producer-id blocks come from the metadata group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSpace {
    pub stride: i64,
    pub offset: i64,
}

impl Default for IdSpace {
    fn default() -> IdSpace {
        IdSpace { stride: 1, offset: 0 }
    }
}

impl ProducerIdManager {
    pub fn open(data_dir: &Path, storage: Arc<dyn Storage>, space: IdSpace) -> EngineResult<ProducerIdManager> {
        assert!(space.stride >= 1 && (0..space.stride).contains(&space.offset), "producer id space {space:?}");
        let path = data_dir.join("internal").join("producer-ids.log");
        let (log, records) = MetaLog::open(&path, storage).map_err(|e| EngineError::Storage(e.to_string()))?;
        let block_end = records
            .iter()
            .filter_map(|r| r.get(..8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes"))))
            .max()
            .unwrap_or(0);
        // Ids of a block that was reserved but maybe partly used are skipped.
        Ok(ProducerIdManager { state: Mutex::new(State { log, next: block_end, block_end }), space })
    }

    pub fn allocate(&self) -> EngineResult<i64> {
        let mut s = self.state.lock();
        if s.next >= s.block_end {
            let end = s.block_end + BLOCK_SIZE;
            s.log.append(&[end.to_be_bytes().to_vec()]).map_err(|e| EngineError::Storage(e.to_string()))?;
            s.block_end = end;
        }
        let id = s.next;
        s.next += 1;
        Ok(id * self.space.stride + self.space.offset)
    }
}
