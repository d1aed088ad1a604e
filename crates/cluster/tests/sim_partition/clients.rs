//! Producers and admins: appends (acks=1 or acks=all) and DeleteRecords
//! at the broker believed to lead, and retries of what was not acknowledged.

use tokio::sync::oneshot;

use crate::mem_log::make_batch;

use super::{Ask, Sim, Waiting, BROKERS, PARTITIONS};

impl Sim {
    /// A producer (or an admin) at the broker it believes leads the
    /// partition, or now and then at any broker.
    pub(super) fn client(&mut self) {
        let retry = self.rng.chance(20) && !self.unknown.is_empty();
        self.stats.retries += u64::from(retry);
        let (p, ask) = if retry {
            self.unknown.swap_remove(self.rng.below(self.unknown.len() as u64) as usize)
        } else {
            (self.rng.below(PARTITIONS as u64) as usize, self.new_ask())
        };
        let leader = (0..BROKERS).find(|b| self.active(*b) && self.brokers[*b].replicas[p].group.as_ref().is_some_and(|g| g.status().is_leader));
        let b = match leader {
            Some(b) if !self.rng.chance(10) => b,
            _ => self.rng.below(BROKERS as u64) as usize,
        };
        let stalled = !self.active(b);
        let Some(g) = self.brokers[b].replicas[p].group.as_mut().filter(|_| !stalled) else {
            if let Ask::Append { .. } = ask {
                self.unknown.push((p, ask));
            }
            return;
        };
        let (reply, rx) = oneshot::channel();
        match &ask {
            Ask::Append { batch, acks, .. } => g.append(batch.clone(), *acks, reply),
            Ask::DeleteRecords => {
                let hw = g.status().high_watermark;
                let offset = if self.rng.chance(30) { -1 } else { self.rng.below(hw as u64 + 1) as i64 };
                g.delete_records(offset, reply);
            }
        }
        self.waiting.push(Waiting { partition: p, ask, rx });
    }

    fn new_ask(&mut self) -> Ask {
        if self.rng.chance(2) {
            return Ask::DeleteRecords;
        }
        self.next_id += 1;
        self.stats.appends += 1;
        let (id, records) = (self.next_id, 1 + self.rng.below(5) as i64);
        let acks = if self.rng.chance(25) { 1 } else { -1 };
        let batch = make_batch(id, records as i32, self.rng.below(300) as usize);
        Ask::Append { id, records, acks, batch }
    }
}
