//! Per-partition producer state: idempotence (the last five batches of
//! each producer with their offsets), open transactions (for the last
//! stable offset) and the aborted-transaction index (for read_committed).
//! Rebuilt at open from the log itself.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ferry_log::batch::{BatchHeader, ControlType};

use crate::error::{EngineError, EngineResult};

/// Batches remembered per producer, as Kafka does.
const BATCHES_KEPT: usize = 5;

#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// First offset of this producer's open transaction here.
    txn_first_offset: Option<i64>,
    /// Set when the coordinator added this partition to the producer's
    /// transaction (AddPartitionsToTxn), cleared by its marker: the
    /// server-side check that a transactional write belongs to an ongoing
    /// transaction (KIP-890 part 1).
    txn_allowed_epoch: Option<i16>,
    last_update_ms: i64,
}

/// An aborted transaction's range, for read_committed fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What the idempotence check decided for an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// A retry of a batch already in the log: answer with its offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// A producer's state here, as DescribeProducers shows it.
#[derive(Debug, Clone)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_update_ms: i64,
    pub txn_first_offset: Option<i64>,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// first offset → producer id, for every open transaction.
    open_txns: BTreeMap<i64, i64>,
    /// marker offset → first offset of the transaction it closed, while the
    /// marker may still be above the high watermark (a replicated leader
    /// counts a marker when it proposes it): the last stable offset stays
    /// at the transaction's start until the marker is committed, so it
    /// never goes back if a new leader truncates the marker away.
    closing: BTreeMap<i64, i64>,
    aborted: Vec<AbortedTxn>,
    max_producers: usize,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateTable {
    pub fn new(max_producers: usize) -> ProducerStateTable {
        ProducerStateTable { max_producers, ..Default::default() }
    }

    /// Decides whether an idempotent/transactional batch is appended, is a
    /// retry of one already appended, or is refused.
    pub fn check(&self, h: &BatchHeader) -> EngineResult<SequenceCheck> {
        let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta);
        // A fenced epoch is refused as such before anything else (Kafka answers
        // INVALID_PRODUCER_EPOCH, which clients turn into "fenced").
        if let Some(entry) = self.producers.get(&h.producer_id) {
            if h.producer_epoch < entry.epoch {
                return Err(EngineError::InvalidProducerEpoch(format!(
                    "producer {} epoch {} is older than the current epoch {}",
                    h.producer_id, h.producer_epoch, entry.epoch
                )));
            }
        }
        if h.is_transactional() {
            let allowed = self.producers.get(&h.producer_id).and_then(|e| e.txn_allowed_epoch);
            if allowed != Some(h.producer_epoch) {
                return Err(EngineError::InvalidTxnState(format!(
                    "producer {} epoch {} wrote transactional data to a partition not added to an ongoing transaction",
                    h.producer_id, h.producer_epoch
                )));
            }
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            if self.producers.len() >= self.max_producers {
                return Err(EngineError::LimitReached(format!(
                    "this partition already tracks {} producers (max producer ids per partition)",
                    self.max_producers
                )));
            }
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(EngineError::OutOfOrderSequence(format!(
                    "producer {} is unknown here and its first batch has sequence {} instead of 0",
                    h.producer_id, h.base_sequence
                )))
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(EngineError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than the current epoch {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        if h.producer_epoch > entry.epoch || entry.batches.is_empty() {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(EngineError::OutOfOrderSequence(format!(
                    "producer {} starts epoch {} at sequence {} instead of 0",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )))
            };
        }
        if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq) {
            return Ok(SequenceCheck::Duplicate { base_offset: dup.base_offset, last_offset: dup.last_offset });
        }
        let expected = next_seq(entry.batches.back().expect("non-empty").last_seq);
        if h.base_sequence != expected {
            return Err(EngineError::OutOfOrderSequence(format!(
                "producer {} sent sequence {} but {} was expected",
                h.producer_id, h.base_sequence, expected
            )));
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch now in the log (offsets assigned). Also used when
    /// rebuilding from the log, so it must not refuse anything.
    pub fn record_batch(&mut self, h: &BatchHeader, now_ms: i64) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_insert(ProducerEntry {
            epoch: h.producer_epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            txn_allowed_epoch: None,
            last_update_ms: now_ms,
        });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.last_update_ms = now_ms;
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
            self.open_txns.insert(h.base_offset, h.producer_id);
        }
    }

    /// Records a transaction marker now in the log at `marker_offset`.
    pub fn record_marker(&mut self, producer_id: i64, epoch: i16, kind: ControlType, marker_offset: i64, now_ms: i64) {
        let entry = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            txn_allowed_epoch: None,
            last_update_ms: now_ms,
        });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.txn_allowed_epoch = None;
        entry.last_update_ms = now_ms;
        if let Some(first) = entry.txn_first_offset.take() {
            self.open_txns.remove(&first);
            self.closing.insert(marker_offset, first);
            if kind == ControlType::Abort {
                self.aborted.push(AbortedTxn { producer_id, first_offset: first, last_offset: marker_offset });
            }
        }
    }

    /// Checks that a marker from `epoch` may be written (not from a fenced epoch).
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> EngineResult<()> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(EngineError::InvalidProducerEpoch(format!(
                "marker from producer {producer_id} epoch {epoch} is older than epoch {}",
                e.epoch
            ))),
            _ => Ok(()),
        }
    }

    /// The coordinator added this partition to the producer's transaction.
    pub fn allow_txn(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> EngineResult<()> {
        if self.producers.len() >= self.max_producers && !self.producers.contains_key(&producer_id) {
            return Err(EngineError::LimitReached(format!("this partition already tracks {} producers", self.max_producers)));
        }
        let entry = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            txn_allowed_epoch: None,
            last_update_ms: now_ms,
        });
        if epoch < entry.epoch {
            return Err(EngineError::InvalidProducerEpoch(format!("epoch {epoch} is older than {}", entry.epoch)));
        }
        entry.txn_allowed_epoch = Some(epoch);
        entry.last_update_ms = now_ms;
        Ok(())
    }

    /// Whether the coordinator's word that this partition is in the
    /// producer's ongoing transaction is already here.
    pub fn txn_allowed(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|e| e.txn_allowed_epoch == Some(epoch))
    }

    /// First offset of the oldest transaction not yet closed by a marker
    /// below `high_watermark`: the last stable offset is this, or the high
    /// watermark when there is none.
    pub fn first_unstable_offset(&mut self, high_watermark: i64) -> Option<i64> {
        self.closing = self.closing.split_off(&high_watermark);
        let closing = self.closing.values().min().copied();
        match (self.open_txns.keys().next().copied(), closing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The producer's current epoch here, if it is known.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Every producer AddPartitionsToTxn (or a leader's verification) let
    /// write transactional data here, with the epoch it was let in for.
    pub fn allowances(&self) -> Vec<(i64, i16)> {
        self.producers.iter().filter_map(|(id, e)| e.txn_allowed_epoch.map(|epoch| (*id, epoch))).collect()
    }

    /// Aborted transactions overlapping `[from, to]`.
    pub fn aborted_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted.iter().filter(|a| a.last_offset >= from && a.first_offset <= to).copied().collect()
    }

    /// Each producer's last data batch's last offset: the cleaner keeps
    /// that batch (empty if need be) so the producer's sequence survives a
    /// restart, which rebuilds this table from the log.
    pub fn last_data_offsets(&self) -> HashMap<i64, i64> {
        self.producers.iter().filter_map(|(id, e)| e.batches.back().map(|b| (*id, b.last_offset))).collect()
    }

    /// The aborted-transaction index, as the cleaner takes it: their data goes.
    pub fn aborted_ranges(&self) -> Vec<ferry_log::AbortedRange> {
        self.aborted
            .iter()
            .map(|a| ferry_log::AbortedRange { producer_id: a.producer_id, first_offset: a.first_offset, last_offset: a.last_offset })
            .collect()
    }

    /// Forgets what lies wholly below the log start, and idle producers.
    pub fn expire(&mut self, log_start_offset: i64, now_ms: i64, producer_expiration_ms: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
        self.producers.retain(|_, e| e.txn_first_offset.is_some() || e.txn_allowed_epoch.is_some() || now_ms - e.last_update_ms < producer_expiration_ms);
    }

    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut v: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_update_ms: e.last_update_ms,
                txn_first_offset: e.txn_first_offset,
            })
            .collect();
        v.sort_by_key(|s| s.producer_id);
        v
    }

    /// Rebuilds from one batch read back from the log at open.
    pub fn replay(&mut self, h: &BatchHeader, bytes: &[u8], now_ms: i64) {
        if h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            if let Some(kind) = ferry_log::batch::control_type(bytes) {
                self.record_marker(h.producer_id, h.producer_epoch, kind, h.base_offset, now_ms);
            }
        } else {
            self.record_batch(h, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base: i64, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            magic: 2,
            crc: 0,
            attributes: if txn { 0x10 } else { 0 },
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut t = ProducerStateTable::new(10);
        let b0 = header(1, 0, 0, 3, 0, false);
        assert_eq!(t.check(&b0).unwrap(), SequenceCheck::Append);
        t.record_batch(&b0, 0);
        assert_eq!(t.check(&b0).unwrap(), SequenceCheck::Duplicate { base_offset: 0, last_offset: 2 });
        assert!(matches!(t.check(&header(1, 0, 5, 1, 0, false)), Err(EngineError::OutOfOrderSequence(_))));
        let b1 = header(1, 0, 3, 2, 3, false);
        assert_eq!(t.check(&b1).unwrap(), SequenceCheck::Append);
        t.record_batch(&b1, 0);
        let bumped = header(1, 1, 0, 1, 5, false);
        assert_eq!(t.check(&bumped).unwrap(), SequenceCheck::Append);
        t.record_batch(&bumped, 0);
        assert!(matches!(t.check(&header(1, 0, 5, 1, 0, false)), Err(EngineError::InvalidProducerEpoch(_))));
        assert!(matches!(t.check(&header(2, 0, 4, 1, 0, false)), Err(EngineError::OutOfOrderSequence(_))));
    }

    #[test]
    fn transactions_need_allowance_and_track_lso_and_aborts() {
        let mut t = ProducerStateTable::new(10);
        let b = header(9, 0, 0, 2, 10, true);
        assert!(matches!(t.check(&b), Err(EngineError::InvalidTxnState(_))));
        t.allow_txn(9, 0, 0).unwrap();
        assert_eq!(t.check(&b).unwrap(), SequenceCheck::Append);
        t.record_batch(&b, 0);
        assert_eq!(t.first_unstable_offset(12), Some(10));
        t.record_marker(9, 0, ControlType::Abort, 12, 0);
        assert_eq!(t.first_unstable_offset(12), Some(10), "the marker is not below the high watermark yet");
        assert_eq!(t.first_unstable_offset(13), None);
        assert_eq!(t.aborted_in(0, 100), vec![AbortedTxn { producer_id: 9, first_offset: 10, last_offset: 12 }]);
        // After the marker, more transactional data needs a new AddPartitions.
        assert!(matches!(t.check(&header(9, 0, 2, 1, 13, true)), Err(EngineError::InvalidTxnState(_))));
    }
}
