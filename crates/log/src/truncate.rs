//! Removing a log's suffix: what a Raft follower does when the leader's log
//! disagrees with entries it holds but that were never committed. Kafka's
//! followers do the same on a leader epoch change (`truncateTo`).

use crate::disk::DiskLog;
use crate::error::LogError;
use crate::segment::{segment_path, Segment};

impl DiskLog {
    /// Removes every batch at or after `offset`, which must be where a batch
    /// starts (or the log end). Fsynced before it returns: a truncation that
    /// a crash undid would bring back entries Raft has replaced. Refuses to
    /// cut below the log start.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if self.poisoned.is_some() {
            return Err(LogError::Poisoned { path: self.dir.clone(), reason: self.poisoned.clone().unwrap_or_default() });
        }
        let end = self.next_offset();
        if offset >= end {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: end });
        }
        // The segment holding `offset` keeps its head; later ones go whole.
        let (&keep_base, _) = self.segments.range(..=offset).next_back().expect("a segment at or below the log start");
        let doomed: Vec<i64> = self.segments.range(keep_base + 1..).map(|(b, _)| *b).collect();
        let position = self.batch_position(keep_base, offset)?;
        for base in doomed {
            let path = segment_path(&self.dir, base);
            self.segments.remove(&base);
            self.storage.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
        let interval = self.config.index_interval_bytes;
        let segment = self.segments.get_mut(&keep_base).expect("kept above");
        segment.file.set_len(position).map_err(|e| LogError::io(segment.file.path(), e))?;
        segment.file.sync().map_err(|e| LogError::io(segment.file.path(), e))?;
        *segment = rescan(segment, position, interval)?;
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        let kept: Vec<_> = self.segments.values().map(|s| s.file.path().to_path_buf()).collect();
        self.retain_unsynced(|path| kept.iter().any(|k| k == path));
        self.durable_offset = self.durable_offset.min(offset);
        self.clean_state.first_dirty_offset = self.clean_state.first_dirty_offset.min(offset);
        debug_assert_eq!(self.next_offset(), offset);
        Ok(())
    }

    /// Byte position of the batch that starts at `offset` in the segment
    /// based at `base`, or its end when `offset` is where it ends.
    fn batch_position(&self, base: i64, offset: i64) -> Result<u64, LogError> {
        let segment = &self.segments[&base];
        let mut position = segment.position_for_offset(offset);
        while position < segment.size {
            let header = segment.header_at(position).map_err(|e| LogError::io(segment.file.path(), e))?;
            if header.base_offset == offset {
                return Ok(position);
            }
            if header.base_offset > offset {
                break;
            }
            position += header.total_len() as u64;
        }
        if position == segment.size && segment.next_offset == offset {
            return Ok(position);
        }
        Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: self.next_offset() })
    }
}

/// The segment's in-memory state (index, next offset, newest timestamp)
/// rebuilt from its first `size` bytes.
fn rescan(segment: &Segment, size: u64, interval_bytes: u64) -> Result<Segment, LogError> {
    let mut fresh = Segment::new(segment.base_offset, segment.file.clone());
    fresh.first_append_ms = segment.first_append_ms.filter(|_| size > 0);
    let mut position = 0;
    while position < size {
        let header = segment.header_at(position).map_err(|e| LogError::io(segment.file.path(), e))?;
        fresh.note_batch(&header, position, interval_bytes);
        position += header.total_len() as u64;
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests;
