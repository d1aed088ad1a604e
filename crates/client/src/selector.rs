//! From use case to semantics: the selector the README's table is built from.
//!
//! | use case | semantics | why | with |
//! |---|---|---|---|
//! | telemetry | at-most-once | the next sample replaces a lost one; a duplicate skews counters | `acks=0`, memory topic if it may vanish on restart |
//! | logs | at-most-once | volume matters more than the rare lost line | `acks=0` |
//! | orders | at-least-once | an order must not vanish; a duplicate is caught by the order id | idempotent consumer |
//! | notifications | at-least-once | a lost message is a missed customer; a duplicate is filtered by id | idempotent consumer (TTL 7 days) |
//! | payments | exactly-once | money moves once, in the broker and in the database | two-phase commit with the database |
//! | ledger | exactly-once | every entry exactly once, in order | transactional processor or two-phase commit |
//! | stream processing | exactly-once | outputs and input offsets commit together | transactional processor (consume-transform-produce) |

use crate::semantics::Semantics;

/// A kind of workload, for choosing a semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseCase {
    Telemetry,
    Logs,
    Orders,
    Notifications,
    Payments,
    Ledger,
    StreamProcessing,
}

impl UseCase {
    pub const ALL: [UseCase; 7] = [
        UseCase::Telemetry,
        UseCase::Logs,
        UseCase::Orders,
        UseCase::Notifications,
        UseCase::Payments,
        UseCase::Ledger,
        UseCase::StreamProcessing,
    ];

    pub fn semantics(self) -> Semantics {
        match self {
            UseCase::Telemetry | UseCase::Logs => Semantics::AtMostOnce,
            UseCase::Orders | UseCase::Notifications => Semantics::AtLeastOnce,
            UseCase::Payments | UseCase::Ledger | UseCase::StreamProcessing => Semantics::ExactlyOnce,
        }
    }

    /// Why this semantics fits, in one line.
    pub fn rationale(self) -> &'static str {
        match self {
            UseCase::Telemetry => "the next sample replaces a lost one; throughput and latency matter most",
            UseCase::Logs => "volume matters more than the rare lost line",
            UseCase::Orders => "an order must never vanish; a duplicate is caught by its order id",
            UseCase::Notifications => "a lost message is a missed customer; duplicates are filtered by message id",
            UseCase::Payments => "money moves once, in the broker and in the database together",
            UseCase::Ledger => "every entry exactly once; offsets and entries commit atomically",
            UseCase::StreamProcessing => "outputs and consumed offsets commit in one transaction",
        }
    }

    /// The SDK piece that completes the promise past the broker, if any.
    pub fn helper(self) -> Option<&'static str> {
        match self {
            UseCase::Telemetry | UseCase::Logs => None,
            UseCase::Orders | UseCase::Notifications => Some("IdempotentConsumer"),
            UseCase::Payments => Some("TwoPhaseCommit"),
            UseCase::Ledger | UseCase::StreamProcessing => Some("TransactionalProcessor"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_use_case_has_a_choice_and_a_reason() {
        for use_case in UseCase::ALL {
            assert!(!use_case.rationale().is_empty());
            // Side-effect helpers only make sense above at-most-once.
            assert_eq!(use_case.helper().is_none(), use_case.semantics() == Semantics::AtMostOnce);
        }
        assert_eq!(UseCase::Payments.semantics(), Semantics::ExactlyOnce);
    }
}
