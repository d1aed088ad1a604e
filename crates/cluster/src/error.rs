use thiserror::Error;

use crate::state::StateError;

#[derive(Debug, Error)]
pub enum ClusterError {
    /// The command was applied and refused by the state machine.
    #[error(transparent)]
    Refused(#[from] StateError),
    /// No leader is known, or the proposal was lost while leadership moved.
    #[error("no metadata leader is available: {0}")]
    NoLeader(String),
    #[error("the metadata change was not committed within {0} ms")]
    Timeout(u64),
    #[error("too many metadata changes in flight (limit {0})")]
    TooManyPending(usize),
    #[error("the cluster layer has stopped")]
    Stopped,
    #[error("metadata log: {0}")]
    Storage(String),
    #[error("cluster configuration: {0}")]
    Config(String),
}
