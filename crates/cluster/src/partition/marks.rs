//! Entries that take no offset: a new leader's empty entry, and a move of
//! the log start (DeleteRecords). They live in a small file beside the
//! group's hard state, not in the partition's segments, so a topic's first
//! record is at offset 0 as in Kafka and leader changes leave no gaps.
//!
//! Records: `[u64 index][u64 term][u8 kind][i64 arg][u32 crc32c]`; a
//! membership change (kind 3) has `arg` = the length of the raft-rs
//! `ConfChangeV2` that follows, then `[u32 crc32c]` of those bytes. A mark
//! is appended and fsynced before any batch that follows it is written,
//! so after a crash the marks and the segments never disagree about which
//! entry is which: a torn last record is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RECORD_LEN: usize = 8 + 8 + 1 + 8 + 4;
/// Largest membership change kept (a few node ids in practice).
const MAX_CONF_CHANGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkKind {
    /// A leader's first, empty entry.
    LeaderChange,
    /// Everything below `arg` is deleted (DeleteRecords).
    LogStart(i64),
    /// A change of the group's replicas: raft-rs's `ConfChangeV2`, encoded
    /// (empty: leave a joint configuration).
    ConfChange(Arc<[u8]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub index: u64,
    pub term: u64,
    pub kind: MarkKind,
}

fn encode(m: &Mark) -> Vec<u8> {
    let mut b = vec![0u8; RECORD_LEN];
    b[0..8].copy_from_slice(&m.index.to_be_bytes());
    b[8..16].copy_from_slice(&m.term.to_be_bytes());
    let (kind, arg) = match &m.kind {
        MarkKind::LeaderChange => (1u8, 0i64),
        MarkKind::LogStart(offset) => (2u8, *offset),
        MarkKind::ConfChange(bytes) => (3u8, bytes.len() as i64),
    };
    b[16] = kind;
    b[17..25].copy_from_slice(&arg.to_be_bytes());
    let crc = crc32c::crc32c(&b[..25]);
    b[25..29].copy_from_slice(&crc.to_be_bytes());
    if let MarkKind::ConfChange(bytes) = &m.kind {
        b.extend_from_slice(bytes);
        b.extend_from_slice(&crc32c::crc32c(bytes).to_be_bytes());
    }
    b
}

/// The mark at the start of `b` and its length; None when it is damaged
/// or cut short.
fn decode(b: &[u8]) -> Option<(Mark, usize)> {
    let head = b.get(..RECORD_LEN)?;
    if crc32c::crc32c(&head[..25]).to_be_bytes() != head[25..29] {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (kind, len) = match head[16] {
        1 => (MarkKind::LeaderChange, RECORD_LEN),
        2 => (MarkKind::LogStart(word(17) as i64), RECORD_LEN),
        3 => {
            let n = usize::try_from(word(17)).ok().filter(|n| *n <= MAX_CONF_CHANGE_BYTES)?;
            let body = b.get(RECORD_LEN..RECORD_LEN + n + 4)?;
            if crc32c::crc32c(&body[..n]).to_be_bytes() != body[n..] {
                return None;
            }
            (MarkKind::ConfChange(Arc::from(&body[..n])), RECORD_LEN + n + 4)
        }
        _ => return None,
    };
    Some((Mark { index: word(0), term: word(8), kind }, len))
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
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match decode(rest) {
                Some((m, len)) if marks.last().is_none_or(|p: &Mark| p.index < m.index) => {
                    marks.push(m);
                    rest = &rest[len..];
                }
                // A torn record can only be the last one: what follows a
                // damaged record that is not at the end is damage too.
                _ if is_torn_tail(rest) => break,
                _ => return Err(format!("{} is damaged at record {}", self.path.display(), marks.len())),
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

/// Whether `rest`, which does not decode, can be the torn end of an
/// append: shorter than the record its header announces.
fn is_torn_tail(rest: &[u8]) -> bool {
    if rest.len() < RECORD_LEN {
        return true;
    }
    let announced = match rest[16] {
        3 => usize::try_from(u64::from_be_bytes(rest[17..25].try_into().expect("8 bytes"))).map_or(usize::MAX, |n| n.saturating_add(RECORD_LEN + 4)),
        _ => RECORD_LEN,
    };
    rest.len() <= announced
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
        let c = Mark { index: 6, term: 2, kind: MarkKind::ConfChange(Arc::from(&b"\x12\x02\x08\x04"[..])) };
        let d = Mark { index: 7, term: 2, kind: MarkKind::ConfChange(Arc::from(&b""[..])) };
        f.append(&[a.clone()]).unwrap();
        f.append(&[b.clone(), c.clone(), d.clone()]).unwrap();
        assert_eq!(f.load().unwrap(), vec![a.clone(), b.clone(), c.clone(), d]);
        let full = fs::read(&path).unwrap();
        // Cut inside the last membership change, then inside the one before it.
        for cut in [3, RECORD_LEN + 4 + 2] {
            fs::write(&path, &full[..full.len() - cut]).unwrap();
            let expect = if cut == 3 { vec![a.clone(), b.clone(), c.clone()] } else { vec![a.clone(), b.clone()] };
            assert_eq!(f.load().unwrap(), expect, "cut {cut}");
        }
        // Damage in a record that is not the last one is an error.
        let mut damaged = full.clone();
        damaged[RECORD_LEN + 3] ^= 1;
        fs::write(&path, &damaged).unwrap();
        assert!(f.load().is_err());
        fs::write(&path, &full[..RECORD_LEN + 10]).unwrap();
        assert_eq!(f.load().unwrap(), vec![a.clone()]);
        f.rewrite(&[]).unwrap();
        assert_eq!(f.load().unwrap(), vec![]);
    }
}
