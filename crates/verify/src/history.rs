//! The history format: one JSON object per line, tagged by `type`.
//!
//! Values are unique strings (the runner writes `p<producer>-<seq>`); the
//! checker needs nothing else. Any tool that records these events can be
//! checked with `ferry verify check FILE`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnOutcome {
    Commit,
    Abort,
    /// The client does not know (the commit call failed).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer handed a value to its client.
    Send { producer: u32, seq: u64, partition: i32, value: String, time_ms: u64 },
    /// The broker acknowledged the value at `offset` (-1 when the acks level
    /// gives no offset).
    Ack { producer: u32, partition: i32, value: String, offset: i64, latency_us: u64 },
    /// The client gave up on the value.
    SendFailed { producer: u32, value: String, error: String },
    /// A transaction ended: its values are acknowledged only on `commit`.
    Txn { producer: u32, txn: u64, values: Vec<String>, outcome: TxnOutcome, time_ms: u64 },
    /// A consumer handed a value to processing.
    Deliver { consumer: u32, partition: i32, offset: i64, value: String, time_ms: u64 },
    /// What a final full read of the log found at an offset.
    Final { partition: i32, offset: i64, value: String, committed: bool },
    /// A fault was injected.
    Fault { kind: String, time_ms: u64 },
}

pub fn parse_lines(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
