//! The metadata group's durable Raft log: one append-only file of records
//! `[u32 length][u32 crc32c][u8 kind][protobuf]`, each an entry or a hard
//! state. Replay keeps the last hard state, and an entry at an index already
//! seen truncates everything from there (Raft overwrote it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};
use tracing::warn;

use crate::error::ClusterError;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const HEADER_BYTES: usize = 8;
/// A metadata record is small; anything this large is damage.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

pub struct Wal {
    file: File,
    path: PathBuf,
}

#[derive(Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
}

fn storage_err(path: &Path, what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(format!("{what} {}: {e}", path.display()))
}

impl Wal {
    pub fn open(dir: &Path) -> Result<(Wal, Recovered), ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| storage_err(dir, "cannot create", e))?;
        let path = dir.join("metadata.wal");
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(|e| storage_err(&path, "cannot open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| storage_err(&path, "cannot read", e))?;
        let (recovered, valid_len) = replay(&path, &bytes)?;
        if valid_len < bytes.len() {
            warn!(path = %path.display(), kept = valid_len, dropped = bytes.len() - valid_len, "metadata log had a torn tail; truncating it");
            file.set_len(valid_len as u64).map_err(|e| storage_err(&path, "cannot truncate", e))?;
            file.sync_all().map_err(|e| storage_err(&path, "cannot fsync", e))?;
        }
        Ok((Wal { file, path }, recovered))
    }

    /// Appends entries then the hard state; fsyncs when `sync` (Raft's
    /// `must_sync`: a vote, a term or entries must be durable before the
    /// messages that depend on them go out).
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), ClusterError> {
        let mut buf = Vec::new();
        for e in entries {
            push_record(&mut buf, KIND_ENTRY, &e.write_to_bytes().map_err(|e| storage_err(&self.path, "cannot encode entry for", e))?);
        }
        if let Some(hs) = hard_state {
            push_record(&mut buf, KIND_HARD_STATE, &hs.write_to_bytes().map_err(|e| storage_err(&self.path, "cannot encode hard state for", e))?);
        }
        if !buf.is_empty() {
            self.file.write_all(&buf).map_err(|e| storage_err(&self.path, "cannot write", e))?;
        }
        if sync {
            self.file.sync_data().map_err(|e| storage_err(&self.path, "cannot fsync", e))?;
        }
        Ok(())
    }
}

fn push_record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut body = Vec::with_capacity(1 + payload.len());
    body.push(kind);
    body.extend_from_slice(payload);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    buf.extend_from_slice(&body);
}

/// Replays records; returns the state and how many bytes were valid. A bad
/// record is a torn tail only if it is the last thing in the file;
/// anything else is corruption and stops the broker.
fn replay(path: &Path, bytes: &[u8]) -> Result<(Recovered, usize), ClusterError> {
    let mut out = Recovered::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_BYTES {
            return Ok((out, pos));
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        let end = HEADER_BYTES + len;
        if len == 0 || len > MAX_RECORD_BYTES || end > rest.len() {
            return Ok((out, pos));
        }
        let body = &rest[HEADER_BYTES..end];
        if crc32c::crc32c(body) != crc {
            if end == rest.len() {
                return Ok((out, pos));
            }
            return Err(ClusterError::Storage(format!("{} is corrupt at byte {pos}: checksum mismatch", path.display())));
        }
        let corrupt = |e: protobuf::ProtobufError| ClusterError::Storage(format!("{} is corrupt at byte {pos}: {e}", path.display()));
        match body[0] {
            KIND_ENTRY => {
                let entry = Entry::parse_from_bytes(&body[1..]).map_err(corrupt)?;
                let keep = out.entries.partition_point(|e| e.index < entry.index);
                out.entries.truncate(keep);
                if let Some(last) = out.entries.last() {
                    if last.index + 1 != entry.index {
                        return Err(ClusterError::Storage(format!("{}: entry {} follows {}", path.display(), entry.index, last.index)));
                    }
                }
                out.entries.push(entry);
            }
            KIND_HARD_STATE => out.hard_state = HardState::parse_from_bytes(&body[1..]).map_err(corrupt)?,
            other => return Err(ClusterError::Storage(format!("{} is corrupt at byte {pos}: record kind {other}", path.display()))),
        }
        pos += end;
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("e{index}t{term}").into_bytes().into();
        e
    }

    #[test]
    fn replays_overwrites_and_the_last_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, rec) = Wal::open(dir.path()).unwrap();
            assert!(rec.entries.is_empty());
            let mut hs = HardState::default();
            hs.term = 1;
            wal.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs), true).unwrap();
            hs.term = 2;
            hs.commit = 2;
            wal.append(&[entry(3, 2)], Some(&hs), true).unwrap();
        }
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 1), (2, 1), (3, 2)]);
        assert_eq!((rec.hard_state.term, rec.hard_state.commit), (2, 2));
    }

    #[test]
    fn torn_tail_is_truncated_but_inner_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&[entry(1, 1), entry(2, 1)], None, true).unwrap();
        }
        let path = dir.path().join("metadata.wal");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 1);

        let mut damaged = full.clone();
        damaged[HEADER_BYTES + 2] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(Wal::open(dir.path()), Err(ClusterError::Storage(_))));
    }
}
