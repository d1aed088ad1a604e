//! One segment file: record batches back to back, plus an in-memory sparse
//! index (offset → byte position, with the newest timestamp before it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::storage::StorageFile;

/// One sparse index entry: the batch starting at `position` begins at
/// `offset`; every batch before it has timestamps up to `max_timestamp_before`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    pub offset: i64,
    pub position: u64,
    pub max_timestamp_before: i64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<dyn StorageFile>,
    /// Bytes of whole batches in the file; appends go here.
    pub size: u64,
    /// One past the last offset stored in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub index: Vec<IndexEntry>,
    pub bytes_since_index: u64,
    /// When the first batch was appended (wall clock ms), for `segment.ms`.
    pub first_append_ms: Option<i64>,
}

pub(crate) fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(path: &Path) -> Option<i64> {
    if path.extension()? != "log" {
        return None;
    }
    path.file_stem()?.to_str()?.parse::<i64>().ok().filter(|o| *o >= 0)
}

impl Segment {
    pub fn new(base_offset: i64, file: Arc<dyn StorageFile>) -> Segment {
        Segment {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            index: Vec::new(),
            bytes_since_index: 0,
            first_append_ms: None,
        }
    }

    /// Records that a batch with `header` now sits at `position`.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, interval_bytes: u64) {
        let len = header.total_len() as u64;
        if self.index.is_empty() || self.bytes_since_index >= interval_bytes {
            self.index.push(IndexEntry {
                offset: header.base_offset,
                position,
                max_timestamp_before: self.max_timestamp,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.last_offset() + 1;
        self.size = position + len;
    }

    /// Byte position from which to scan for `offset`.
    pub fn position_for_offset(&self, offset: i64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].position
        }
    }

    /// Byte position from which to scan for the first batch with a timestamp
    /// at or after `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let i = self.index.partition_point(|e| e.max_timestamp_before < timestamp);
        if i == 0 {
            0
        } else {
            self.index[i - 1].position
        }
    }

    /// Reads the batch header at `position`, if a whole one is there.
    /// The whole batch whose header is `header`, read at `position`.
    pub fn batch_at(&self, position: u64, header: &BatchHeader) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; header.total_len()];
        self.file.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }

    pub fn header_at(&self, position: u64) -> std::io::Result<BatchHeader> {
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.file.read_exact_at(&mut buf, position)?;
        BatchHeader::parse(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
}
