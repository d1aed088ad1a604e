//! The in-memory log behind `ferry.storage=memory` topics: for at-most-once
//! use. Bounded by bytes (oldest batches dropped first), never on disk,
//! empty after a restart.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::batch::{set_base_offset, BatchHeader};
use crate::error::LogError;
use crate::records::first_record_at_or_after;
use crate::{AppendInfo, TimestampOffset};

#[derive(Debug)]
struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

#[derive(Debug)]
pub struct MemoryLog {
    batches: VecDeque<StoredBatch>,
    held_bytes: u64,
    max_bytes: u64,
    next_offset: i64,
    log_start_offset: i64,
}

impl MemoryLog {
    pub fn new(max_bytes: u64) -> MemoryLog {
        MemoryLog { batches: VecDeque::new(), held_bytes: 0, max_bytes, next_offset: 0, log_start_offset: 0 }
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.held_bytes
    }
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
        self.evict();
    }

    pub fn append(&mut self, payload: &mut [u8], headers: &[BatchHeader]) -> AppendInfo {
        let base_offset = self.next_offset;
        let mut pos = 0usize;
        for h in headers {
            let len = h.total_len();
            let batch = &mut payload[pos..pos + len];
            set_base_offset(batch, self.next_offset);
            let last = self.next_offset + h.last_offset_delta as i64;
            self.batches.push_back(StoredBatch {
                base_offset: self.next_offset,
                last_offset: last,
                max_timestamp: h.max_timestamp,
                bytes: Bytes::copy_from_slice(batch),
            });
            self.held_bytes += len as u64;
            self.next_offset = last + 1;
            pos += len;
        }
        self.evict();
        AppendInfo { base_offset, last_offset: self.next_offset - 1, log_start_offset: self.log_start_offset }
    }

    /// Drops the oldest batches past the bound, always keeping the newest.
    fn evict(&mut self) {
        while self.held_bytes > self.max_bytes && self.batches.len() > 1 {
            let old = self.batches.pop_front().expect("non-empty");
            self.held_bytes -= old.bytes.len() as u64;
            self.log_start_offset = self.log_start_offset.max(old.last_offset + 1);
        }
    }

    /// DeleteRecords: moves the log start up to `offset` (never back) and
    /// drops the batches wholly below it; returns the log start afterwards.
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.next_offset,
            });
        }
        self.log_start_offset = self.log_start_offset.max(offset);
        while self.batches.front().is_some_and(|b| b.last_offset < self.log_start_offset) {
            let old = self.batches.pop_front().expect("non-empty");
            self.held_bytes -= old.bytes.len() as u64;
        }
        Ok(self.log_start_offset)
    }

    /// Whole batches from `offset`, as [`crate::read_slice`] reads them.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset_exclusive: i64, min_one_batch: bool) -> Result<Bytes, LogError> {
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.next_offset,
            });
        }
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out: Vec<u8> = Vec::new();
        for b in self.batches.iter().skip(start) {
            let may_exceed = out.is_empty() && min_one_batch;
            if b.base_offset >= max_offset_exclusive || (!may_exceed && out.len() + b.bytes.len() > max_bytes) {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        Ok(Bytes::from(out))
    }

    /// The first record whose timestamp is at least `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        for b in self.batches.iter().filter(|b| b.max_timestamp >= timestamp) {
            let header = BatchHeader::parse(&b.bytes)?;
            if let Some(found) = first_record_at_or_after(&b.bytes, &header, timestamp, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The first record with the largest timestamp held.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, LogError> {
        match self.batches.iter().map(|b| b.max_timestamp).max() {
            Some(max) if max >= 0 => self.offset_for_timestamp(max),
            _ => Ok(None),
        }
    }
}
