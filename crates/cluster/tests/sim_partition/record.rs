//! What the simulation knows to be true of one partition, whoever is up:
//! the batches some replica holds below its high watermark (committed, so
//! every replica must hold the same bytes there) and what producers were
//! told. Each check returns what went wrong, for the caller to report with
//! the seed.

use std::collections::BTreeMap;

use ferry_cluster::partition::Placed;

use crate::mem_log::{batch_id, MemLog};

#[derive(Default)]
pub struct PartitionRecord {
    /// Committed batches by base offset, dense from 0.
    committed: BTreeMap<i64, Vec<u8>>,
    committed_end: i64,
    /// acks=all acknowledgements: base offset -> (last offset, batch id).
    acked_all: BTreeMap<i64, (i64, u64)>,
    /// acks=1 acknowledgements: (batch id, where it landed).
    acked_one: Vec<(u64, Placed)>,
    /// The highest log start a DeleteRecords was answered with.
    pub log_start: i64,
}

impl PartitionRecord {
    /// Compares a replica's batches in `[from, high_watermark)` with the
    /// committed ones, recording those nobody showed yet. Returns where the
    /// replica is checked up to.
    pub fn check_committed(&mut self, log: &MemLog, from: i64, high_watermark: i64) -> Result<i64, String> {
        let mut checked = from;
        for (span, bytes) in log.batches_from(from, high_watermark) {
            if span.last >= high_watermark {
                return Err(format!("high watermark {high_watermark} inside the batch at {}..={}", span.base, span.last));
            }
            match self.committed.get(&span.base) {
                Some(c) if *c != bytes => {
                    return Err(format!("batch {} at offset {} differs from the committed batch {} there", batch_id(&bytes), span.base, batch_id(c)));
                }
                Some(_) => {}
                None if span.base == self.committed_end => {
                    self.committed.insert(span.base, bytes);
                    self.committed_end = span.last + 1;
                }
                None => return Err(format!("batch at offset {} does not line up with the committed batches (up to {})", span.base, self.committed_end)),
            }
            checked = span.last + 1;
        }
        Ok(checked)
    }

    /// An acks=all acknowledgement: committed, so never at offsets another
    /// acknowledged batch has, and (when a replica showed it) the batch there.
    pub fn acked_all(&mut self, id: u64, placed: Placed) -> Result<(), String> {
        if let Some((base, (last, other))) = self.acked_all.range(..=placed.last_offset).next_back() {
            if *last >= placed.base_offset {
                return Err(format!("batches {other} ({base}..={last}) and {id} ({placed:?}) were both acknowledged (acks=all) at these offsets"));
            }
        }
        self.acked_all.insert(placed.base_offset, (placed.last_offset, id));
        match self.committed.get(&placed.base_offset) {
            Some(c) if batch_id(c) != id => Err(format!("batch {id} acknowledged at {placed:?}, but batch {} is committed there", batch_id(c))),
            _ => Ok(()),
        }
    }

    pub fn acked_one(&mut self, id: u64, placed: Placed) {
        self.acked_one.push((id, placed));
    }

    /// After settling: every acks=all batch where it was acknowledged, an
    /// acks=1 batch there or gone (Kafka's acks=1 may lose it), no batch
    /// twice. Returns how many acks=1 batches were lost.
    pub fn check_final(&self, log: &MemLog) -> Result<usize, String> {
        // Below its base the replica dropped the head (retention, or a
        // snapshot): never past what readers may still see.
        let base = log.base_offset();
        if base > log.log_start().max(self.log_start) {
            return Err(format!("the log's head was dropped up to {base}, past the log start {}", log.log_start()));
        }
        let mut at: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
        for (span, bytes) in log.batches_from(0, i64::MAX) {
            if let Some(before) = at.insert(batch_id(&bytes), (span.base, span.last)) {
                return Err(format!("batch {} is in the log twice: at {before:?} and at {}..={}", batch_id(&bytes), span.base, span.last));
            }
        }
        for (first, (last, id)) in &self.acked_all {
            if *last < base {
                continue;
            }
            if at.get(id) != Some(&(*first, *last)) {
                return Err(format!("batch {id} acknowledged (acks=all) at {first}..={last} is at {:?}", at.get(id)));
            }
        }
        let mut lost = 0;
        for (id, placed) in &self.acked_one {
            match at.get(id) {
                None if placed.last_offset < base => {}
                None => lost += 1,
                Some(&(base, last)) if (base, last) == (placed.base_offset, placed.last_offset) => {}
                Some(other) => return Err(format!("batch {id} acknowledged (acks=1) at {placed:?} is at {other:?}")),
            }
        }
        if log.log_start() < self.log_start {
            return Err(format!("log start {} below the acknowledged DeleteRecords {}", log.log_start(), self.log_start));
        }
        Ok(lost)
    }
}
