//! What a Raft replica of a partition needs of its log: appending batches
//! the leader already gave their offsets (written as they are, so every
//! replica holds the same bytes), and walking the batches to rebuild what
//! is derived from them (the entry index, producer state).

use crate::batch::BatchHeader;
use crate::disk::DiskLog;
use crate::error::LogError;
use crate::AppendInfo;

impl DiskLog {
    /// Appends batches whose base offsets are already set: the first starts
    /// at the log end and each of the others where the one before ended.
    /// Anything else is refused: a replica that accepted it would no longer
    /// hold the leader's offsets.
    pub fn append_verbatim(&mut self, payload: &[u8], headers: &[BatchHeader], now_ms: i64) -> Result<AppendInfo, LogError> {
        if self.poisoned.is_some() {
            return Err(self.poisoned_error());
        }
        let base_offset = self.next_offset();
        let mut next = base_offset;
        for h in headers {
            if h.base_offset != next {
                return Err(LogError::OffsetMismatch { expected: next, found: h.base_offset });
            }
            next = h.last_offset() + 1;
        }
        // A round's entries can be megabytes: the segment rolls between
        // batches, as a producer's appends would roll it.
        let mut written = 0;
        for (start, end) in self.chunks_by_segment(headers) {
            let bytes: usize = headers[start..end].iter().map(|h| h.total_len()).sum();
            let result = self.maybe_roll(bytes as u64, now_ms).and_then(|()| self.write_stamped(&payload[written..written + bytes], &headers[start..end], now_ms));
            if let Err(e) = result {
                // All or nothing: the batches written before go again.
                if written > 0 {
                    self.truncate_to(base_offset)?;
                }
                return Err(e);
            }
            written += bytes;
        }
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_start_offset: self.log_start_offset })
    }

    /// The batches split into runs that each fit the segment they go in
    /// (a run of one batch when a batch alone is larger).
    fn chunks_by_segment(&self, headers: &[BatchHeader]) -> Vec<(usize, usize)> {
        let limit = self.config.segment_bytes;
        let mut filled = self.active_size();
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (i, h) in headers.iter().enumerate() {
            let len = h.total_len() as u64;
            if i > start && filled + bytes + len > limit {
                chunks.push((start, i));
                (start, bytes, filled) = (i, 0, 0);
            }
            bytes += len;
        }
        if start < headers.len() {
            chunks.push((start, headers.len()));
        }
        chunks
    }

    /// Calls `visit` with every batch (header and whole bytes) that ends at
    /// or after `from_offset`, in order, until it returns false.
    pub fn for_each_batch(&self, from_offset: i64, visit: &mut dyn FnMut(&BatchHeader, &[u8]) -> bool) -> Result<(), LogError> {
        let first = self.segments.range(..=from_offset).next_back().map_or(i64::MIN, |(base, _)| *base);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            let mut position = segment.position_for_offset(from_offset);
            while position < segment.size {
                let path = segment.file.path();
                let header = segment.header_at(position).map_err(|e| LogError::io(path, e))?;
                if header.last_offset() >= from_offset {
                    let bytes = segment.batch_at(position, &header).map_err(|e| LogError::io(path, e))?;
                    if !visit(&header, &bytes) {
                        return Ok(());
                    }
                }
                position += header.total_len() as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::batch::{tests::make_batch, BatchHeader};
    use crate::storage::FsStorage;
    use crate::{DiskLog, LogConfig, LogError};

    fn header(bytes: &[u8]) -> BatchHeader {
        BatchHeader::parse(bytes).unwrap()
    }

    #[test]
    fn verbatim_appends_keep_offsets_and_refuse_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DiskLog::open(dir.path(), Arc::new(FsStorage), LogConfig::default()).unwrap();
        let first = make_batch(0, &[b"z"]);
        log.append_verbatim(&first, &[header(&first)], 0).unwrap();
        let data = make_batch(1, &[b"a", b"b"]);
        let info = log.append_verbatim(&data, &[header(&data)], 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (1, 2));
        let gap = make_batch(5, &[b"c"]);
        assert!(matches!(log.append_verbatim(&gap, &[header(&gap)], 0), Err(LogError::OffsetMismatch { expected: 3, found: 5 })));
        let mut seen = Vec::new();
        log.for_each_batch(1, &mut |h, b| {
            seen.push((h.base_offset, b.len()));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(1, data.len())]);
        drop(log);
        let reopened = DiskLog::open(dir.path(), Arc::new(FsStorage), LogConfig::default()).unwrap();
        assert_eq!(reopened.next_offset(), 3);
    }

    #[test]
    fn one_large_append_rolls_segments_between_its_batches() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 700, ..LogConfig::default() };
        let mut log = DiskLog::open(dir.path(), Arc::new(FsStorage), config.clone()).unwrap();
        let (mut payload, mut headers) = (Vec::new(), Vec::new());
        for i in 0..50 {
            let b = make_batch(i, &[format!("value {i}").as_bytes()]);
            headers.push(header(&b));
            payload.extend_from_slice(&b);
        }
        log.append_verbatim(&payload, &headers, 0).unwrap();
        assert!(log.segments.len() >= payload.len() / 700, "{} segments for {} bytes", log.segments.len(), payload.len());
        assert!(log.segments.values().all(|s| s.size <= 700), "every segment within segment.bytes");
        drop(log);
        let reopened = DiskLog::open(dir.path(), Arc::new(FsStorage), config).unwrap();
        assert_eq!(reopened.next_offset(), 50);
    }
}
