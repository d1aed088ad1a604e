//! The invariants, checked after every round and once the groups settle.

use tokio::sync::oneshot::error::TryRecvError;

use crate::mem_log::{batch_id, Span};

use super::{Ask, Sim, Waiting, BROKERS, PARTITIONS, SETTLE_STEPS};

impl Sim {
    /// After every round: leaders, high watermarks, committed bytes, answers.
    pub(super) fn check(&mut self) {
        for b in 0..BROKERS {
            for p in 0..PARTITIONS {
                if let Err(e) = self.check_replica(b, p) {
                    self.fail(format!("broker {} partition {p}: {e}", b + 1));
                }
            }
        }
        for w in std::mem::take(&mut self.waiting) {
            // A producer's request timing out: it stops waiting.
            if self.faults && matches!(w.ask, Ask::Append { .. }) && self.rng.below(1000) < 3 {
                self.unknown.push((w.partition, w.ask));
                continue;
            }
            self.answered(w);
        }
    }

    fn check_replica(&mut self, b: usize, p: usize) -> Result<(), String> {
        let id = b as u64 + 1;
        let r = &mut self.brokers[b].replicas[p];
        let Some(g) = r.group.as_ref() else { return Ok(()) };
        let status = g.status();
        if status.is_leader {
            match self.leaders.insert((p, status.term), id) {
                Some(other) if other != id => return Err(format!("two leaders in term {}: {other} and {id}", status.term)),
                Some(_) => {}
                None => self.stats.leaders += 1,
            }
            if !g.in_sync.is_empty() && !g.in_sync.contains(&id) {
                return Err(format!("the leader is not in its own ISR {:?}", g.in_sync));
            }
        }
        if status.high_watermark < r.hw_seen {
            return Err(format!("high watermark went back from {} to {}", r.hw_seen, status.high_watermark));
        }
        r.hw_seen = status.high_watermark;
        r.checked_to = self.records[p].check_committed(&r.log, r.checked_to, status.high_watermark)?;
        // Looked at now and then: it walks the whole producer state.
        if self.step.is_multiple_of(10) {
            if let Some(e) = r.log.producer_state_error() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn answered(&mut self, mut w: Waiting) {
        let placed = match w.rx.try_recv() {
            Err(TryRecvError::Empty) => return self.waiting.push(w),
            // Refused, or the broker died with it: the producer does not know.
            Ok(Err(_)) | Err(TryRecvError::Closed) => {
                if let Ask::Append { .. } = w.ask {
                    self.unknown.push((w.partition, w.ask));
                }
                return;
            }
            Ok(Ok(placed)) => placed,
        };
        let record = &mut self.records[w.partition];
        let outcome = match w.ask {
            Ask::DeleteRecords => {
                self.stats.deletes += 1;
                record.log_start = record.log_start.max(placed.base_offset);
                Ok(())
            }
            Ask::Append { id, records, .. } if placed.last_offset - placed.base_offset + 1 != records => {
                Err(format!("batch {id} of {records} records acknowledged at {placed:?}"))
            }
            Ask::Append { id, acks: 1, .. } => {
                self.stats.acked_one += 1;
                record.acked_one(id, placed);
                Ok(())
            }
            Ask::Append { id, .. } => {
                self.stats.acked_all += 1;
                record.acked_all(id, placed)
            }
        };
        if let Err(e) = outcome {
            self.fail(format!("partition {}: {e}", w.partition));
        }
    }

    /// The faults stop; every group must converge on one log holding every
    /// acknowledged batch, all committed, every replica in sync.
    pub(super) fn settle(&mut self) {
        self.faults = false;
        self.cut = None;
        for broker in &mut self.brokers {
            broker.stalled_until = 0;
            broker.replicas.iter().for_each(|r| r.log.spare());
        }
        for _ in 0..SETTLE_STEPS {
            self.run_step();
        }
        for p in 0..PARTITIONS {
            self.stats.snapshots += self.brokers.iter().map(|b| b.replicas[p].log.resets()).sum::<u64>();
            // Each replica drops its own head: compare from where all hold.
            let from = self.brokers.iter().map(|b| b.replicas[p].log.base_offset()).max().unwrap_or(0);
            let reference = self.brokers[0].replicas[p].log.batches_from(from, i64::MAX);
            for b in 0..BROKERS {
                if let Err(e) = self.check_settled(b, p, from, &reference) {
                    self.fail(format!("after settling, broker {} partition {p}: {e}", b + 1));
                }
            }
        }
    }

    fn check_settled(&mut self, b: usize, p: usize, from: i64, theirs: &[(Span, Vec<u8>)]) -> Result<(), String> {
        let r = &self.brokers[b].replicas[p];
        let g = r.group.as_ref().ok_or("down")?;
        let status = g.status();
        let mine = r.log.batches_from(from, i64::MAX);
        let same = mine.len() == theirs.len() && mine.iter().zip(theirs).all(|(a, b)| a.1 == b.1 && (a.0.base, a.0.last) == (b.0.base, b.0.last));
        if !same {
            let at = mine.iter().zip(theirs).position(|(a, b)| a.1 != b.1).unwrap_or(mine.len().min(theirs.len()));
            let show = |l: &[(Span, Vec<u8>)]| l.get(at).map(|(s, b)| format!("batch {} at {}..={}", batch_id(b), s.base, s.last));
            return Err(format!("its log differs from broker 1's from offset {from}, batch #{at}: {:?} there, {:?} here", show(theirs), show(&mine)));
        }
        if status.high_watermark != r.log.end_offset() {
            return Err(format!("high watermark {} below the log end {}", status.high_watermark, r.log.end_offset()));
        }
        if status.is_leader && g.in_sync.len() != BROKERS {
            return Err(format!("the leader's ISR is {:?}", g.in_sync));
        }
        let lost = self.records[p].check_final(&r.log)?;
        if b == 0 {
            self.stats.lost_one += lost as u64;
        }
        Ok(())
    }
}
