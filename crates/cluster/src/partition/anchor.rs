//! Where a partition group's Raft log starts once its head is gone: the
//! index and term of the last entry dropped, the offset the log starts at
//! after it, and the replicas as of that entry. It is the group's snapshot:
//! a follower that needs entries below it gets it and starts its own log,
//! empty, at that offset (the records below are gone by retention or
//! DeleteRecords on every replica, as in Kafka).
//!
//! `[u64 index][u64 term][i64 offset][u8 how][u32 len][ConfState][u32
//! crc32c of all before]`, replaced atomically. `how` says whether this
//! replica dropped its own head (1) or installed a leader's snapshot (2):
//! after a crash, the first may still hold batches below the offset that
//! are its own entries, the second batches that belong to no leader's log.

use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::ConfState;

const HEAD_LEN: usize = 8 + 8 + 8 + 1 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorKind {
    Compacted,
    Installed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    pub index: u64,
    pub term: u64,
    pub offset: i64,
    pub kind: AnchorKind,
    pub conf: ConfState,
}

#[derive(Debug)]
pub struct AnchorFile {
    path: PathBuf,
}

impl AnchorFile {
    pub fn new(path: PathBuf) -> AnchorFile {
        AnchorFile { path }
    }

    pub fn load(&self) -> Result<Option<Anchor>, String> {
        let Some(bytes) = super::files::read(&self.path)? else { return Ok(None) };
        let damaged = || format!("{} is damaged; refusing to guess where the partition's Raft log starts", self.path.display());
        if bytes.len() < HEAD_LEN + 4 {
            return Err(damaged());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(damaged());
        }
        let word = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let kind = match body[24] {
            1 => AnchorKind::Compacted,
            2 => AnchorKind::Installed,
            _ => return Err(damaged()),
        };
        let len = u32::from_be_bytes(body[25..29].try_into().expect("4 bytes")) as usize;
        if body.len() != HEAD_LEN + len {
            return Err(damaged());
        }
        let conf = ConfState::parse_from_bytes(&body[HEAD_LEN..]).map_err(|_| damaged())?;
        Ok(Some(Anchor { index: word(0), term: word(8), offset: word(16) as i64, kind, conf }))
    }

    pub fn save(&self, anchor: &Anchor) -> Result<(), String> {
        let conf = anchor.conf.write_to_bytes().map_err(|e| format!("cannot encode the replicas of {}: {e}", self.path.display()))?;
        let mut bytes = Vec::with_capacity(HEAD_LEN + conf.len() + 4);
        bytes.extend_from_slice(&anchor.index.to_be_bytes());
        bytes.extend_from_slice(&anchor.term.to_be_bytes());
        bytes.extend_from_slice(&anchor.offset.to_be_bytes());
        bytes.push(match anchor.kind {
            AnchorKind::Compacted => 1,
            AnchorKind::Installed => 2,
        });
        bytes.extend_from_slice(&(conf.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&conf);
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
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
        let f = AnchorFile::new(dir.path().join("7.snap"));
        assert_eq!(f.load().unwrap(), None);
        let anchor = Anchor { index: 40, term: 3, offset: 1_234, kind: AnchorKind::Installed, conf: ConfState::from((vec![1, 2, 3], vec![])) };
        f.save(&anchor).unwrap();
        assert_eq!(f.load().unwrap(), Some(anchor));
        let mut bytes = std::fs::read(dir.path().join("7.snap")).unwrap();
        bytes[17] ^= 1;
        std::fs::write(dir.path().join("7.snap"), bytes).unwrap();
        assert!(f.load().is_err());
    }
}
