//! Log compaction with Kafka's cleaner rules. A pass keeps the last record
//! of every key, removes aborted transactional data, and removes tombstones
//! and transaction markers once `delete.retention.ms` has passed since a
//! pass first saw them (the horizon is stored in the batch, KIP-534).
//! Offsets are never renumbered: a surviving batch keeps its offsets, its
//! last offset delta and its producer fields, and the gaps stay.
//!
//! Producers never wait for a pass. [`DiskLog::plan_clean`] takes a snapshot
//! under the partition's lock; [`clean`] reads the old segments and writes
//! each cleaned one aside (`.cleaned`, fsynced) with no lock held; each is
//! swapped in under the lock by [`DiskLog::install_cleaned`]: rename to
//! `.swap`, fsync the directory, remove the old segments, rename over the
//! first one, fsync the directory. [`recover_interrupted_clean`] finishes or
//! discards an interrupted swap at open, so a crash at any step leaves
//! either the old segments or the cleaned one, never a mix.

mod pass;
mod state;

pub use pass::{clean, AbortedRange, CleanInputs, CleanOutcome, CleanedSegment, CleanerLimits, Throttle};
pub(crate) use state::{recover_interrupted_clean, CleanState};

use std::sync::Arc;

use tracing::info;

use crate::disk::DiskLog;
use crate::error::LogError;
use crate::segment::{segment_path, Segment};
use crate::storage::StorageFile;

/// A sealed segment as the plan saw it.
#[derive(Debug, Clone)]
pub(crate) struct SourceSegment {
    pub base_offset: i64,
    pub file: Arc<dyn StorageFile>,
    pub size: u64,
}

/// What one pass cleans, snapshotted under the partition's lock.
#[derive(Debug)]
pub struct CleanPlan {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) storage: Arc<dyn crate::storage::Storage>,
    pub(crate) config: crate::LogConfig,
    /// Sealed segments from the log start below `clean_end_offset`.
    pub(crate) sources: Vec<SourceSegment>,
    pub(crate) first_dirty_offset: i64,
    /// Nothing at or past this is cleaned: the active segment, the last
    /// stable offset, what is not yet fsynced, `min.compaction.lag.ms`.
    pub(crate) clean_end_offset: i64,
}

fn same_file(a: &Arc<dyn StorageFile>, b: &Arc<dyn StorageFile>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

impl DiskLog {
    /// The next pass to run, or None when the log needs none: not compacted,
    /// nothing sealed to clean, or not dirty enough (`min.cleanable.dirty.ratio`)
    /// with no dirty record past `max.compaction.lag.ms` and no delete horizon due.
    pub fn plan_clean(&self, now_ms: i64, stable_offset: i64) -> Option<CleanPlan> {
        if !self.config.compact || self.poisoned.is_some() || self.cleaner_failed.is_some() || self.segments.len() < 2 {
            return None;
        }
        let active_base = *self.segments.keys().next_back()?;
        let mut clean_end = active_base.min(stable_offset).min(self.durable_offset);
        if self.config.min_compaction_lag_ms > 0 {
            let young_after = now_ms.saturating_sub(self.config.min_compaction_lag_ms);
            if let Some(young) = self.segments.values().find(|s| s.max_timestamp > young_after) {
                clean_end = clean_end.min(young.base_offset);
            }
        }
        let sources: Vec<SourceSegment> = self
            .segments
            .values()
            .filter(|s| s.base_offset < clean_end && s.base_offset != active_base)
            .map(|s| SourceSegment { base_offset: s.base_offset, file: s.file.clone(), size: s.size })
            .collect();
        if sources.is_empty() {
            return None;
        }
        let first_dirty = self.clean_state.first_dirty_offset.clamp(self.log_start_offset(), clean_end);
        let total_bytes: u64 = sources.iter().map(|s| s.size).sum();
        let dirty: Vec<&Segment> = if first_dirty < clean_end {
            self.segments.values().filter(|s| s.base_offset < clean_end && s.next_offset > first_dirty).collect()
        } else {
            Vec::new()
        };
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        let ratio = if total_bytes == 0 { 0.0 } else { dirty_bytes as f64 / total_bytes as f64 };
        let overdue = dirty.first().is_some_and(|s| {
            s.max_timestamp >= 0 && now_ms.saturating_sub(s.max_timestamp) > self.config.max_compaction_lag_ms
        });
        let horizon_due = self.clean_state.next_horizon_ms.is_some_and(|h| h <= now_ms);
        let dirty_enough = dirty_bytes > 0 && (ratio >= self.config.min_cleanable_dirty_ratio || overdue);
        if !(dirty_enough || horizon_due) {
            return None;
        }
        Some(CleanPlan {
            dir: self.dir.clone(),
            storage: self.storage.clone(),
            config: self.config.clone(),
            sources,
            first_dirty_offset: first_dirty,
            clean_end_offset: clean_end,
        })
    }

    /// Swaps a cleaned segment in for the segments it replaces. Returns
    /// false (and discards it) if any of them changed meanwhile, as when
    /// retention deleted one.
    pub fn install_cleaned(&mut self, cleaned: CleanedSegment) -> Result<bool, LogError> {
        let unchanged = cleaned.sources.iter().all(|src| {
            self.segments.get(&src.base_offset).is_some_and(|s| same_file(&s.file, &src.file) && s.size == src.size)
        });
        let last_base = cleaned.sources.last().map(|s| s.base_offset);
        let end = last_base.and_then(|b| self.segments.range(b + 1..).next().map(|(k, _)| *k));
        let (true, Some(end)) = (unchanged && self.poisoned.is_none(), end) else {
            self.storage.remove_file(&cleaned.path).map_err(|e| LogError::io(&cleaned.path, e))?;
            return Ok(false);
        };
        let base = cleaned.base_offset;
        let swap = state::swap_path(&self.dir, base, end);
        self.storage.rename(&cleaned.path, &swap).map_err(|e| LogError::io(&swap, e))?;
        // From here on a crash completes the swap at open; so does a restart
        // after a failure, and until then this log is not cleaned again.
        let target = segment_path(&self.dir, base);
        let committed = self
            .commit_swap(&cleaned, &swap, &target)
            .and_then(|()| self.storage.open(&target, false).map_err(|e| LogError::io(&target, e)));
        let file = committed.inspect_err(|e| self.cleaner_failed = Some(e.to_string()))?;
        let mut segment = Segment::new(base, file);
        for (header, position) in &cleaned.batches {
            segment.note_batch(header, *position, self.config.index_interval_bytes);
        }
        segment.size = cleaned.size;
        for src in &cleaned.sources {
            self.segments.remove(&src.base_offset);
        }
        self.segments.insert(base, segment);
        Ok(true)
    }

    /// The swap after its commit point: the old segments go, the cleaned
    /// one takes the first one's name.
    fn commit_swap(&self, cleaned: &CleanedSegment, swap: &std::path::Path, target: &std::path::Path) -> Result<(), LogError> {
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        for src in &cleaned.sources[1..] {
            let path = segment_path(&self.dir, src.base_offset);
            self.storage.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
        self.storage.rename(swap, target).map_err(|e| LogError::io(target, e))?;
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))
    }

    /// Records where a finished pass left off, durably.
    pub fn finish_clean(&mut self, outcome: &CleanOutcome) -> Result<(), LogError> {
        if !outcome.complete {
            return Ok(());
        }
        self.clean_state = CleanState { first_dirty_offset: outcome.first_dirty_offset, next_horizon_ms: outcome.next_horizon_ms };
        self.clean_state.save(&self.dir, self.storage.as_ref())?;
        info!(
            dir = %self.dir.display(),
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            records_removed = outcome.records_removed,
            first_dirty_offset = outcome.first_dirty_offset,
            "log cleaned"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
