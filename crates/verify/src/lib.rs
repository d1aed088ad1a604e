//! Ferry's history checker: reads a produce/consume history (JSON lines,
//! see [`history`]) and counts lost writes, duplicates, inconsistent
//! offsets, aborted and precommitted reads, unseen records and reordering.

pub mod checker;
pub mod history;
pub mod netlab;
pub mod ports;

pub use checker::{check, Promise, Report};
pub use history::{parse_lines, Event, TxnOutcome};

#[cfg(test)]
mod tests;
