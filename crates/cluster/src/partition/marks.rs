//! Entries that take no offset: a new leader's empty entry, and a move of
//! the log start (DeleteRecords). They live in a small file beside the
//! group's hard state, not in the partition's segments, so a topic's first
//! record is at offset 0 as in Kafka and leader changes leave no gaps.
//!
//! Records: `[u64 index][u64 term][u8 kind][i64 arg][u32 crc32c]`. A mark
//! is appended and fsynced before any batch that follows it is written,
//! so after a crash the marks and the segments never disagree about which
//! entry is which: a torn last record is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const RECORD_LEN: usize = 8 + 8 + 1 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A leader's first, empty entry.
    LeaderChange,
    /// Everything below `arg` is deleted (DeleteRecords).
    LogStart(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub index: u64,
    pub term: u64,
    pub kind: MarkKind,
}

fn encode(m: &Mark) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0..8].copy_from_slice(&m.index.to_be_bytes());
    b[8..16].copy_from_slice(&m.term.to_be_bytes());
    let (kind, arg) = match m.kind {
        MarkKind::LeaderChange => (1u8, 0i64),
        MarkKind::LogStart(offset) => (2u8, offset),
    };
    b[16] = kind;
    b[17..25].copy_from_slice(&arg.to_be_bytes());
    let crc = crc32c::crc32c(&b[..25]);
    b[25..29].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Mark> {
    if crc32c::crc32c(&b[..25]).to_be_bytes() != b[25..29] {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let kind = match b[16] {
        1 => MarkKind::LeaderChange,
        2 => MarkKind::LogStart(word(17) as i64),
        _ => return None,
    };
    Some(Mark { index: word(0), term: word(8), kind })
}

#[derive(Debug)]
pub struct MarkFile {
    path: PathBuf,
}

impl MarkFile {
    pub fn new(path: PathBuf) -> MarkFile {
        MarkFile { path }
    }

    /// The marks, in index order; a torn or damaged last record is dropped.
    pub fn load(&self) -> Result<Vec<Mark>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let mut marks = Vec::new();
        for (i, chunk) in bytes.chunks(RECORD_LEN).enumerate() {
            let last = (i + 1) * RECORD_LEN >= bytes.len();
            match (chunk.len() == RECORD_LEN).then(|| decode(chunk)).flatten() {
                Some(m) if marks.last().is_none_or(|p: &Mark| p.index < m.index) => marks.push(m),
                _ if last => break,
                _ => return Err(format!("{} is damaged at record {i}", self.path.display())),
            }
        }
        Ok(marks)
    }

    /// Appends marks durably.
    pub fn append(&self, marks: &[Mark]) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let created = !self.path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        let bytes: Vec<u8> = marks.iter().flat_map(encode).collect();
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        if created {
            sync_dir(&self.path).map_err(io)?;
        }
        Ok(())
    }

    /// Keeps only `marks` (after a truncation), replacing the file atomically.
    pub fn rewrite(&self, marks: &[Mark]) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot rewrite {}: {e}", self.path.display());
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        let bytes: Vec<u8> = marks.iter().flat_map(encode).collect();
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        sync_dir(&self.path).map_err(io)
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rewrites_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.marks");
        let f = MarkFile::new(path.clone());
        let a = Mark { index: 1, term: 1, kind: MarkKind::LeaderChange };
        let b = Mark { index: 5, term: 2, kind: MarkKind::LogStart(40) };
        f.append(&[a]).unwrap();
        f.append(&[b]).unwrap();
        assert_eq!(f.load().unwrap(), vec![a, b]);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(f.load().unwrap(), vec![a]);
        f.rewrite(&[]).unwrap();
        assert_eq!(f.load().unwrap(), vec![]);
    }
}
