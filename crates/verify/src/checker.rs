//! Counts what a history shows: Jepsen's anomalies for Kafka-like logs.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Event, TxnOutcome};

/// The delivery promise a run is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Promise {
    /// No value delivered twice.
    AtMostOnce,
    /// No acknowledged value lost.
    AtLeastOnce,
    /// Neither, and no aborted value delivered.
    ExactlyOnce,
}

/// Up to this many examples of each anomaly are kept.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub sent: usize,
    pub acknowledged: usize,
    pub delivered: usize,
    /// Acknowledged, and absent from the final full read of the log.
    pub lost: usize,
    /// Acknowledged, present in the log, never delivered to processing.
    pub unseen: usize,
    /// Values delivered to processing more than once.
    pub duplicated: usize,
    /// Values stored at two offsets of the log.
    pub log_duplicates: usize,
    /// One offset seen with two values.
    pub inconsistent_offsets: usize,
    /// Delivered values whose transaction aborted.
    pub aborted_reads: usize,
    /// Delivered before their transaction committed.
    pub precommitted_reads: usize,
    /// Acknowledged offsets out of send order within one producer's partition.
    pub reordered: usize,
    pub faults_injected: usize,
    /// Faults injected, per kind (`kill`, `torn-tail`, ...).
    pub faults_by_kind: BTreeMap<String, usize>,
    pub examples: BTreeMap<String, Vec<String>>,
}

impl Report {
    fn example(&mut self, kind: &str, text: String) {
        let v = self.examples.entry(kind.to_string()).or_default();
        if v.len() < EXAMPLES {
            v.push(text);
        }
    }

    /// The requested fault kinds that were never injected: a run missing
    /// one proves nothing about it.
    pub fn missing_fault_kinds(&self, requested: &[String]) -> Vec<String> {
        requested.iter().filter(|k| !self.faults_by_kind.contains_key(k.as_str())).cloned().collect()
    }

    /// Whether the promise held.
    pub fn promise_held(&self, promise: Promise) -> bool {
        let consistent = self.inconsistent_offsets == 0;
        match promise {
            Promise::AtMostOnce => consistent && self.duplicated == 0,
            Promise::AtLeastOnce => consistent && self.lost == 0 && self.unseen == 0,
            Promise::ExactlyOnce => {
                consistent
                    && self.lost == 0
                    && self.unseen == 0
                    && self.duplicated == 0
                    && self.log_duplicates == 0
                    && self.aborted_reads == 0
                    && self.precommitted_reads == 0
            }
        }
    }
}

/// Records that `value` was seen at an offset; a second, different value
/// there is an inconsistency.
fn note_offset(r: &mut Report, at_offset: &mut HashMap<(i32, i64), String>, partition: i32, offset: i64, value: &str) {
    if offset < 0 {
        return;
    }
    match at_offset.get(&(partition, offset)) {
        Some(v) if v != value => {
            let text = format!("partition {partition} offset {offset}: {v} and {value}");
            r.inconsistent_offsets += 1;
            r.example("inconsistent_offsets", text);
        }
        Some(_) => {}
        None => {
            at_offset.insert((partition, offset), value.to_string());
        }
    }
}

/// Checks a history. For transactional runs, a value is acknowledged when
/// its transaction committed; values of aborted transactions must never be
/// delivered; values of unknown outcome may appear at most once.
pub fn check(events: &[Event]) -> Report {
    let mut r = Report::default();
    let transactional = events.iter().any(|e| matches!(e, Event::Txn { .. }));
    let mut acked: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut send_seq: HashMap<&str, (u32, u64)> = HashMap::new();
    let mut txn_outcome: HashMap<&str, (TxnOutcome, u64)> = HashMap::new();
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    let mut final_values: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut at_offset: HashMap<(i32, i64), String> = HashMap::new();
    let mut any_final = false;
    for e in events {
        match e {
            Event::Send { producer, seq, value, .. } => {
                r.sent += 1;
                send_seq.insert(value, (*producer, *seq));
            }
            Event::Ack { partition, value, offset, .. } => {
                if !transactional {
                    acked.insert(value, (*partition, *offset));
                }
                note_offset(&mut r, &mut at_offset, *partition, *offset, value);
            }
            Event::Txn { values, outcome, time_ms, .. } => {
                for v in values {
                    txn_outcome.insert(v, (*outcome, *time_ms));
                    if *outcome == TxnOutcome::Commit {
                        acked.insert(v, (-1, -1));
                    }
                }
            }
            Event::Deliver { partition, offset, value, .. } => {
                *delivered.entry(value).or_default() += 1;
                note_offset(&mut r, &mut at_offset, *partition, *offset, value);
            }
            Event::Final { partition, offset, value, .. } => {
                any_final = true;
                final_values.entry(value).or_default().push((*partition, *offset));
                note_offset(&mut r, &mut at_offset, *partition, *offset, value);
            }
            Event::Fault { kind, .. } => {
                r.faults_injected += 1;
                *r.faults_by_kind.entry(kind.clone()).or_default() += 1;
            }
            Event::SendFailed { .. } => {}
        }
    }
    r.acknowledged = acked.len();
    r.delivered = delivered.len();
    let mut sorted: Vec<(&&str, &usize)> = delivered.iter().collect();
    sorted.sort();
    for (value, count) in sorted {
        if *count > 1 {
            r.duplicated += 1;
            r.example("duplicated", format!("{value} delivered {count} times"));
        }
        if let Some((TxnOutcome::Abort, _)) = txn_outcome.get(*value) {
            r.aborted_reads += 1;
            r.example("aborted_reads", format!("{value} delivered from an aborted transaction"));
        }
    }
    let mut sorted: Vec<(&&str, &Vec<(i32, i64)>)> = final_values.iter().collect();
    sorted.sort();
    for (value, places) in sorted {
        if places.len() > 1 {
            r.log_duplicates += 1;
            r.example("log_duplicates", format!("{value} stored at {places:?}"));
        }
    }
    let mut sorted: Vec<(&&str, &(i32, i64))> = acked.iter().collect();
    sorted.sort();
    for (value, (partition, offset)) in sorted {
        if any_final && !final_values.contains_key(*value) {
            r.lost += 1;
            r.example("lost", format!("{value} acknowledged at partition {partition} offset {offset}, not in the log"));
        } else if !delivered.contains_key(*value) {
            r.unseen += 1;
            r.example("unseen", format!("{value} acknowledged, never delivered"));
        }
    }
    // Precommitted reads: delivered before the commit was decided (a
    // second of slack covers the clocks of client threads).
    for e in events {
        if let Event::Deliver { value, time_ms, .. } = e {
            if let Some((TxnOutcome::Commit, commit_ms)) = txn_outcome.get(value.as_str()) {
                if *time_ms + 1000 < *commit_ms {
                    r.precommitted_reads += 1;
                    r.example("precommitted_reads", format!("{value} delivered at {time_ms} ms, committed at {commit_ms} ms"));
                }
            }
        }
    }
    // Reordering: within one producer's partition, send order = offset order.
    let mut per: BTreeMap<(u32, i32), Vec<(u64, i64)>> = BTreeMap::new();
    for (value, (partition, offset)) in &acked {
        if *offset < 0 {
            continue;
        }
        if let Some((producer, seq)) = send_seq.get(value) {
            per.entry((*producer, *partition)).or_default().push((*seq, *offset));
        }
    }
    for ((producer, partition), mut v) in per {
        v.sort();
        for w in v.windows(2) {
            if w[1].1 < w[0].1 {
                r.reordered += 1;
                r.example(
                    "reordered",
                    format!("producer {producer} partition {partition}: seq {} at offset {} after seq {} at offset {}", w[1].0, w[1].1, w[0].0, w[0].1),
                );
            }
        }
    }
    r
}
