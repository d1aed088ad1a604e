//! Planted histories: every anomaly is caught, and a clean history passes.

use crate::history::{Event, TxnOutcome};
use crate::{check, Promise};

fn send(p: u32, seq: u64, v: &str) -> Event {
    Event::Send { producer: p, seq, partition: 0, value: v.into(), time_ms: 0 }
}
fn ack(v: &str, offset: i64) -> Event {
    Event::Ack { producer: 0, partition: 0, value: v.into(), offset, latency_us: 10 }
}
fn deliver(v: &str, offset: i64) -> Event {
    Event::Deliver { consumer: 0, partition: 0, offset, value: v.into(), time_ms: 5000 }
}
fn fin(v: &str, offset: i64) -> Event {
    Event::Final { partition: 0, offset, value: v.into(), committed: true }
}

fn clean() -> Vec<Event> {
    vec![send(0, 0, "a"), send(0, 1, "b"), ack("a", 0), ack("b", 1), deliver("a", 0), deliver("b", 1), fin("a", 0), fin("b", 1)]
}

#[test]
fn clean_history_keeps_every_promise() {
    let r = check(&clean());
    assert_eq!((r.sent, r.acknowledged, r.delivered), (2, 2, 2));
    for p in [Promise::AtMostOnce, Promise::AtLeastOnce, Promise::ExactlyOnce] {
        assert!(r.promise_held(p), "{p:?}: {r:?}");
    }
}

#[test]
fn lost_write_is_caught() {
    let h = vec![send(0, 0, "a"), ack("a", 0), fin("x", 1)];
    let r = check(&h);
    assert_eq!(r.lost, 1);
    assert!(!r.promise_held(Promise::AtLeastOnce));
    assert!(r.promise_held(Promise::AtMostOnce));
}

#[test]
fn unseen_is_caught() {
    let h = vec![send(0, 0, "a"), ack("a", 0), fin("a", 0)];
    let r = check(&h);
    assert_eq!(r.unseen, 1);
    assert!(!r.promise_held(Promise::AtLeastOnce));
}

#[test]
fn duplicate_delivery_is_caught() {
    let mut h = clean();
    h.push(deliver("a", 0));
    let r = check(&h);
    assert_eq!(r.duplicated, 1);
    assert!(!r.promise_held(Promise::AtMostOnce));
    assert!(r.promise_held(Promise::AtLeastOnce));
    assert!(!r.promise_held(Promise::ExactlyOnce));
}

#[test]
fn log_duplicate_and_inconsistent_offset_are_caught() {
    let mut h = clean();
    h.push(fin("a", 5));
    let r = check(&h);
    assert_eq!(r.log_duplicates, 1);
    assert!(!r.promise_held(Promise::ExactlyOnce));
    let mut h = clean();
    h.push(Event::Final { partition: 0, offset: 1, value: "zzz".into(), committed: true });
    let r = check(&h);
    assert_eq!(r.inconsistent_offsets, 1);
    assert!(!r.promise_held(Promise::AtMostOnce));
}

#[test]
fn aborted_and_precommitted_reads_are_caught() {
    let h = vec![
        send(0, 0, "a"),
        send(0, 1, "b"),
        Event::Txn { producer: 0, txn: 1, values: vec!["a".into()], outcome: TxnOutcome::Abort, time_ms: 100 },
        Event::Txn { producer: 0, txn: 2, values: vec!["b".into()], outcome: TxnOutcome::Commit, time_ms: 9000 },
        deliver("a", 0),
        deliver("b", 1),
        fin("a", 0),
        fin("b", 1),
    ];
    let r = check(&h);
    assert_eq!(r.aborted_reads, 1);
    assert_eq!(r.precommitted_reads, 1, "b delivered at 5000 ms, committed at 9000 ms");
    assert!(!r.promise_held(Promise::ExactlyOnce));
}

#[test]
fn reordering_is_caught() {
    let h = vec![send(0, 0, "a"), send(0, 1, "b"), ack("a", 1), ack("b", 0), deliver("a", 1), deliver("b", 0), fin("a", 1), fin("b", 0)];
    let r = check(&h);
    assert_eq!(r.reordered, 1);
}

#[test]
fn history_lines_roundtrip() {
    let text: String = clean().iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    assert_eq!(crate::parse_lines(&text).unwrap(), clean());
}
