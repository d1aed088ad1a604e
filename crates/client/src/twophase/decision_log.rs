//! The coordinator's durable decision log: one line per record,
//! `<crc32c as 8 hex digits> <json>\n`, each appended with an fsync before
//! the coordinator acts on it. A torn last line (a crash mid-append) is cut
//! off at open; a bad line before the last one is corruption and refused,
//! naming the file and byte position.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ClientError, Result};

/// A partition's next offset to consume, as committed with a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A transaction started; what the broker side will commit.
    Begin { xid: u64, offsets: Vec<PartitionOffset> },
    /// The decision: both participants prepared, so both will commit.
    Commit { xid: u64 },
    Abort { xid: u64 },
    /// Both participants applied the decision; the entry may be forgotten.
    Done { xid: u64 },
    /// Written first by a rewrite: xids below this were all done.
    Checkpoint { next_xid: u64 },
}

/// An unfinished transaction found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub xid: u64,
    pub offsets: Vec<PartitionOffset>,
    /// Some(true): decided commit; Some(false): decided abort; None: no
    /// decision, which means abort (presumed abort).
    pub decision: Option<bool>,
}

pub struct DecisionLog {
    path: PathBuf,
    file: File,
    next_xid: u64,
    records: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io { path: path.to_path_buf(), source }
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

fn encode(record: &Record) -> String {
    let json = serde_json::to_string(record).expect("decision records serialize");
    format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes()))
}

fn decode(line: &str) -> Option<Record> {
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    if crc != crc32c::crc32c(json.as_bytes()) {
        return None;
    }
    serde_json::from_str(json).ok()
}

impl DecisionLog {
    /// Opens (or creates) the log and returns it with its unfinished
    /// transactions, oldest first.
    pub fn open(path: impl AsRef<Path>) -> Result<(DecisionLog, Vec<Pending>)> {
        let path = path.as_ref().to_path_buf();
        let created = !path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_error(&path))?;
        if created {
            sync_dir(&path)?;
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_error(&path))?;

        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut next_xid = 1u64;
        let mut records = 0u64;
        let mut position = 0usize;
        while position < text.len() {
            let end = text[position..].iter().position(|&b| b == b'\n').map(|i| position + i);
            let record = end.and_then(|end| std::str::from_utf8(&text[position..end]).ok()).and_then(decode);
            let record = match (record, end) {
                (Some(record), Some(_)) => record,
                // The last line is torn: it was never acknowledged. Cut it off.
                (_, end) if end.map_or(true, |end| end + 1 == text.len()) => {
                    tracing::warn!(path = %path.display(), position, "decision log: torn last record cut off");
                    file.set_len(position as u64).map_err(io_error(&path))?;
                    file.sync_all().map_err(io_error(&path))?;
                    break;
                }
                _ => {
                    return Err(ClientError::CorruptDecisionLog {
                        path,
                        position: position as u64,
                        reason: "a record's checksum or format is wrong".to_string(),
                    })
                }
            };
            records += 1;
            match record {
                Record::Begin { xid, offsets } => {
                    next_xid = next_xid.max(xid + 1);
                    pending.insert(xid, Pending { xid, offsets, decision: None });
                }
                Record::Commit { xid } | Record::Abort { xid } => {
                    let commit = matches!(record, Record::Commit { .. });
                    if let Some(p) = pending.get_mut(&xid) {
                        p.decision = Some(commit);
                    }
                }
                Record::Done { xid } => {
                    pending.remove(&xid);
                }
                Record::Checkpoint { next_xid: n } => next_xid = next_xid.max(n),
            }
            position = end.map_or(text.len(), |end| end + 1);
        }
        let log = DecisionLog { path, file, next_xid, records };
        Ok((log, pending.into_values().collect()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands out the next transaction id (never reused, across rewrites too).
    pub fn allocate_xid(&mut self) -> u64 {
        let xid = self.next_xid;
        self.next_xid += 1;
        xid
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends `record` and makes it durable before returning.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.file.write_all(encode(record).as_bytes()).map_err(io_error(&self.path))?;
        self.file.sync_data().map_err(io_error(&self.path))?;
        self.records += 1;
        Ok(())
    }

    /// Replaces the log by a single checkpoint; only when nothing is
    /// pending. Written to a temporary file, fsynced, renamed over the log.
    pub fn rewrite_empty(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("rewrite");
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(encode(&Record::Checkpoint { next_xid: self.next_xid }).as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_error(&self.path))?;
        sync_dir(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io_error(&self.path))?;
        self.records = 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(offset: i64) -> Vec<PartitionOffset> {
        vec![PartitionOffset { topic: "t".into(), partition: 0, offset }]
    }

    #[test]
    fn pending_decisions_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        {
            let (mut log, pending) = DecisionLog::open(&path).unwrap();
            assert!(pending.is_empty());
            for xid in 1..=3 {
                assert_eq!(log.allocate_xid(), xid);
                log.append(&Record::Begin { xid, offsets: offsets(xid as i64 * 10) }).unwrap();
            }
            log.append(&Record::Commit { xid: 1 }).unwrap();
            log.append(&Record::Done { xid: 1 }).unwrap();
            log.append(&Record::Commit { xid: 2 }).unwrap();
        }
        // A crash in the middle of an append.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"1234abcd {\"kind\":\"comm").unwrap();
        drop(file);

        let (mut log, pending) = DecisionLog::open(&path).unwrap();
        assert_eq!(
            pending,
            vec![
                Pending { xid: 2, offsets: offsets(20), decision: Some(true) },
                Pending { xid: 3, offsets: offsets(30), decision: None },
            ]
        );
        assert_eq!(log.allocate_xid(), 4);
        log.rewrite_empty().unwrap();
        drop(log);
        let (mut log, pending) = DecisionLog::open(&path).unwrap();
        assert!(pending.is_empty());
        assert_eq!(log.allocate_xid(), 5, "xids are not reused after a rewrite");
    }

    #[test]
    fn a_bad_record_before_the_tail_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        {
            let (mut log, _) = DecisionLog::open(&path).unwrap();
            log.append(&Record::Begin { xid: 1, offsets: offsets(1) }).unwrap();
            log.append(&Record::Commit { xid: 1 }).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0x20; // inside the first record's JSON
        std::fs::write(&path, &bytes).unwrap();
        match DecisionLog::open(&path) {
            Err(ClientError::CorruptDecisionLog { position, .. }) => assert_eq!(position, 0),
            other => panic!("expected corruption, got {:?}", other.map(|(_, p)| p)),
        }
    }
}
