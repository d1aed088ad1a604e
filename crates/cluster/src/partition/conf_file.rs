//! A partition group's replicas as of its last applied membership change
//! (raft-rs's `ConfState`), with that change's entry index:
//! `[u64 index][u32 len][ConfState protobuf][u32 crc32c of all before]`,
//! replaced atomically. Absent until the group's replicas first change.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::ConfState;

#[derive(Debug)]
pub struct ConfFile {
    path: PathBuf,
}

impl ConfFile {
    pub fn new(path: PathBuf) -> ConfFile {
        ConfFile { path }
    }

    /// The last saved membership and the index of the entry that made it.
    pub fn load(&self) -> Result<Option<(u64, ConfState)>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let damaged = || format!("{} is damaged; refusing to guess the partition's replicas", self.path.display());
        if bytes.len() < 16 {
            return Err(damaged());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(damaged());
        }
        let index = u64::from_be_bytes(body[0..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        if body.len() != 12 + len {
            return Err(damaged());
        }
        let conf = ConfState::parse_from_bytes(&body[12..]).map_err(|_| damaged())?;
        Ok(Some((index, conf)))
    }

    pub fn save(&self, index: u64, conf: &ConfState) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot save {}: {e}", self.path.display());
        let encoded = conf.write_to_bytes().map_err(|e| format!("cannot encode the replicas of {}: {e}", self.path.display()))?;
        let mut bytes = Vec::with_capacity(16 + encoded.len());
        bytes.extend_from_slice(&index.to_be_bytes());
        bytes.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&encoded);
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
        let tmp = self.path.with_extension("conf.tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        fs::File::open(self.path.parent().unwrap_or(Path::new("."))).and_then(|d| d.sync_all()).map_err(io)
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
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
        assert_eq!(f.load().unwrap(), None);
        let conf = ConfState::from((vec![2, 3], vec![4]));
        f.save(12, &conf).unwrap();
        assert_eq!(f.load().unwrap(), Some((12, conf)));
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(f.load().is_err());
    }
}
