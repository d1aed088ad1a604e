//! A partition group's replicas after each membership change it applied
//! (raft-rs's `ConfState`) with the change's entry index, oldest first:
//! records of `[u64 index][u32 len][ConfState protobuf][u32 crc32c of the
//! record before it]`, the file replaced atomically. Absent until the
//! group's replicas first change. The history, not just the last change,
//! because a snapshot at an earlier index carries the replicas as of that
//! index; compacting the log drops the records it covers.

use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::ConfState;

/// Changes kept at most: more means the file is not ours (a group
/// changes its replicas a few times between compactions).
const MAX_RECORDS: usize = 10_000;

#[derive(Debug)]
pub struct ConfFile {
    path: PathBuf,
}

pub type ConfHistory = Vec<(u64, ConfState)>;

impl ConfFile {
    pub fn new(path: PathBuf) -> ConfFile {
        ConfFile { path }
    }

    /// Every saved membership with the index of the entry that made it.
    pub fn load(&self) -> Result<ConfHistory, String> {
        let Some(bytes) = super::files::read(&self.path)? else { return Ok(Vec::new()) };
        let damaged = || format!("{} is damaged; refusing to guess the partition's replicas", self.path.display());
        let mut history = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let head = rest.get(..12).ok_or_else(damaged)?;
            let index = u64::from_be_bytes(head[0..8].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
            let record = rest.get(..12 + len + 4).ok_or_else(damaged)?;
            let (body, crc) = record.split_at(12 + len);
            if crc32c::crc32c(body).to_be_bytes() != crc || history.len() >= MAX_RECORDS {
                return Err(damaged());
            }
            history.push((index, ConfState::parse_from_bytes(&body[12..]).map_err(|_| damaged())?));
            rest = &rest[record.len()..];
        }
        Ok(history)
    }

    pub fn save(&self, history: &[(u64, ConfState)]) -> Result<(), String> {
        if history.is_empty() {
            self.remove();
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (index, conf) in history {
            let encoded = conf.write_to_bytes().map_err(|e| format!("cannot encode the replicas of {}: {e}", self.path.display()))?;
            let start = bytes.len();
            bytes.extend_from_slice(&index.to_be_bytes());
            bytes.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&encoded);
            let crc = crc32c::crc32c(&bytes[start..]);
            bytes.extend_from_slice(&crc.to_be_bytes());
        }
        super::files::replace(&self.path, &bytes)
    }

    pub fn remove(&self) {
        super::files::remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7.conf");
        let f = ConfFile::new(path.clone());
        assert_eq!(f.load().unwrap(), vec![]);
        let history = vec![(12, ConfState::from((vec![2, 3], vec![4]))), (15, ConfState::from((vec![2, 3, 4], vec![])))];
        f.save(&history).unwrap();
        assert_eq!(f.load().unwrap(), history);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(f.load().is_err());
        bytes[9] ^= 1;
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        assert!(f.load().is_err(), "cut short");
        f.save(&[]).unwrap();
        assert!(!path.exists());
    }
}
