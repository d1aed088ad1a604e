//! A small durable record log for the broker's own state (committed
//! offsets, later the transaction log): length- and CRC-framed records,
//! appended and fsynced together, replayed at open, compacted by rewrite.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use crate::error::LogError;
use crate::storage::{Storage, StorageFile};

/// `len u32 | crc32c u32 | payload`.
const FRAME_HEADER_LEN: usize = 8;
/// Largest record accepted; larger lengths at open mean damage.
pub const META_RECORD_MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct MetaLog {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    file: Arc<dyn StorageFile>,
    size: u64,
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

impl MetaLog {
    /// Opens (or creates) the log and returns every record in it. A torn
    /// last record is truncated; a bad record followed by a good one is
    /// corruption.
    pub fn open(path: &Path, storage: Arc<dyn Storage>) -> Result<(MetaLog, Vec<Vec<u8>>), LogError> {
        if let Some(dir) = path.parent() {
            storage.create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        }
        let file = storage.open(path, true).map_err(|e| LogError::io(path, e))?;
        let len = file.len().map_err(|e| LogError::io(path, e))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(|e| LogError::io(path, e))?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        let mut problem = None;
        while pos < bytes.len() {
            match parse_frame(&bytes[pos..]) {
                Ok((payload, used)) => {
                    records.push(payload.to_vec());
                    pos += used;
                }
                Err(reason) => {
                    problem = Some(reason);
                    break;
                }
            }
        }
        if let Some(reason) = problem {
            // Anything parseable after the bad spot means this is not a torn tail.
            let later_valid = (pos + 1..bytes.len()).any(|p| parse_frame(&bytes[p..]).is_ok_and(|(payload, _)| !payload.is_empty()));
            if later_valid {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    expected_offset: records.len() as i64,
                    reason: format!("{reason}; a valid record follows"),
                });
            }
            warn!(file = %path.display(), position = pos, %reason, "truncating torn tail of metadata log");
            file.set_len(pos as u64).map_err(|e| LogError::io(path, e))?;
            file.sync().map_err(|e| LogError::io(path, e))?;
        }
        Ok((MetaLog { path: path.to_path_buf(), storage, file, size: pos as u64 }, records))
    }

    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Appends records and fsyncs: when this returns Ok they are durable.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), LogError> {
        let mut buf = Vec::new();
        for p in payloads {
            assert!(p.len() <= META_RECORD_MAX_BYTES, "metadata record over the limit");
            frame(p, &mut buf);
        }
        if let Err(e) = self.file.write_all_at(&buf, self.size) {
            let _ = self.file.set_len(self.size);
            return Err(LogError::io(&self.path, e));
        }
        self.file.sync().map_err(|e| LogError::io(&self.path, e))?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Replaces the whole log with `payloads` (compaction): written to a
    /// temporary file, fsynced, renamed over the log, directory fsynced.
    pub fn rewrite(&mut self, payloads: &[Vec<u8>]) -> Result<(), LogError> {
        let tmp = self.path.with_extension("compacting");
        let _ = self.storage.remove_file(&tmp);
        let file = self.storage.open(&tmp, true).map_err(|e| LogError::io(&tmp, e))?;
        let mut buf = Vec::new();
        for p in payloads {
            frame(p, &mut buf);
        }
        file.write_all_at(&buf, 0).map_err(|e| LogError::io(&tmp, e))?;
        file.sync().map_err(|e| LogError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| LogError::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            self.storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
        }
        self.file = file;
        self.size = buf.len() as u64;
        Ok(())
    }
}

fn parse_frame(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(format!("{} trailing bytes, less than a record header", bytes.len()));
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > META_RECORD_MAX_BYTES {
        return Err(format!("record length {len} is over the limit"));
    }
    if bytes.len() < FRAME_HEADER_LEN + len {
        return Err(format!("record of {len} bytes runs past the end of the file"));
    }
    let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    if crc32c::crc32c(payload) != crc {
        return Err("record CRC mismatch".into());
    }
    Ok((payload, FRAME_HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    #[test]
    fn append_reopen_torn_tail_and_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let (mut log, recs) = MetaLog::open(&path, Arc::new(FsStorage)).unwrap();
        assert!(recs.is_empty());
        log.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        log.append(&[b"three".to_vec()]).unwrap();
        drop(log);
        // Tear the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 2).unwrap();
        let (mut log, recs) = MetaLog::open(&path, Arc::new(FsStorage)).unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        log.rewrite(&[b"two".to_vec()]).unwrap();
        log.append(&[b"four".to_vec()]).unwrap();
        drop(log);
        let (_, recs) = MetaLog::open(&path, Arc::new(FsStorage)).unwrap();
        assert_eq!(recs, vec![b"two".to_vec(), b"four".to_vec()]);
    }

    #[test]
    fn corruption_before_valid_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let (mut log, _) = MetaLog::open(&path, Arc::new(FsStorage)).unwrap();
        log.append(&[b"aaaa".to_vec(), b"bbbb".to_vec()]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(MetaLog::open(&path, Arc::new(FsStorage)), Err(LogError::Corrupt { .. })));
    }
}
