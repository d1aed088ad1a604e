//! Ferry's partition log.
//!
//! A partition is a directory of segments holding Kafka v2 record batches
//! verbatim, with broker-assigned offsets written into each batch header.
//! All file access goes through [`storage::Storage`], the seam tests use to
//! inject failed writes and fsyncs.

pub mod batch;
mod cleaner;
pub mod codec;
mod config;
mod disk;
mod error;
mod log_start;
mod memory;
pub mod meta;
pub mod records;
mod replica;
mod segment;
pub mod storage;
mod truncate;

use std::sync::Arc;

pub use cleaner::{clean, AbortedRange, CleanInputs, CleanOutcome, CleanPlan, CleanedSegment, CleanerLimits, Throttle};
pub use config::{LogConfig, MEMORY_LOG_DEFAULT_BYTES};
pub use disk::{read_slice, DiskLog, SyncJob};
pub use error::LogError;
pub use memory::MemoryLog;

use bytes::Bytes;
use storage::StorageFile;

/// A record found by its timestamp: its offset and its timestamp
/// (ListOffsets answers both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// A part of a segment file to read outside the log's lock. The bytes below
/// `end_position` never change while the file exists, and an unlinked file
/// stays readable through the open handle.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    pub file: Arc<dyn StorageFile>,
    pub start_position: u64,
    pub end_position: u64,
    pub target_offset: i64,
}

/// How to get the bytes of a read.
#[derive(Debug, Clone)]
pub enum ReadPlan {
    Disk(ReadSlice),
    Ready(Bytes),
}
