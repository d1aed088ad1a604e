use std::io;
use std::path::PathBuf;
use thiserror::Error;

use crate::batch::BatchError;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Bad bytes followed by valid data: not a torn tail, so recovery must not
    /// truncate. The operator decides.
    #[error("corrupt log segment {path} at byte position {position} (expected offset {expected_offset}): {reason}; valid data follows, so this is not a torn tail and nothing was truncated")]
    Corrupt { path: PathBuf, position: u64, expected_offset: i64, reason: String },
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    /// A write or fsync failed earlier; what is durable is unknown until the
    /// log is recovered by a restart.
    #[error("log {path} takes no writes after a storage failure ({reason}); restart the broker to recover it")]
    Poisoned { path: PathBuf, reason: String },
    /// A replica was handed a batch that does not continue its log.
    #[error("batch starts at offset {found} but the log continues at {expected}")]
    OffsetMismatch { expected: i64, found: i64 },
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io { path: path.into(), source }
    }
}
