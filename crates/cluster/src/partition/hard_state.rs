//! A partition group's Raft hard state (term, vote, commit) in a small file
//! of its own: `[u64 term][u64 vote][u64 commit][u32 crc32c]`, replaced
//! atomically (written beside, fsynced, renamed, directory fsynced).

use std::path::PathBuf;

use raft::eraftpb::HardState;

const LEN: usize = 28;

#[derive(Debug)]
pub struct HardStateFile {
    path: PathBuf,
}

impl HardStateFile {
    pub fn new(path: PathBuf) -> HardStateFile {
        HardStateFile { path }
    }

    /// The saved hard state; the default when none was saved yet. A file
    /// that fails its check is an error: guessing a term or a vote could
    /// let this replica vote twice in one term.
    pub fn load(&self) -> Result<HardState, String> {
        let Some(bytes) = super::files::read(&self.path)? else { return Ok(HardState::default()) };
        if bytes.len() != LEN || crc32c::crc32c(&bytes[..24]).to_be_bytes() != bytes[24..] {
            return Err(format!("{} is damaged ({} bytes); refusing to guess the Raft term and vote", self.path.display(), bytes.len()));
        }
        let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut hs = HardState::default();
        hs.term = word(0);
        hs.vote = word(1);
        hs.commit = word(2);
        Ok(hs)
    }

    pub fn save(&self, hs: &HardState) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(LEN);
        for w in [hs.term, hs.vote, hs.commit] {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
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
    use std::fs;

    #[test]
    fn saves_loads_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let f = HardStateFile::new(dir.path().join("7.raft"));
        assert_eq!(f.load().unwrap(), HardState::default());
        let mut hs = HardState::default();
        hs.term = 3;
        hs.vote = 2;
        hs.commit = 40;
        f.save(&hs).unwrap();
        assert_eq!(f.load().unwrap(), hs);
        let mut bytes = fs::read(dir.path().join("7.raft")).unwrap();
        bytes[3] ^= 1;
        fs::write(dir.path().join("7.raft"), bytes).unwrap();
        assert!(f.load().is_err());
    }
}
