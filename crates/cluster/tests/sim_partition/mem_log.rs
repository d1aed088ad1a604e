//! The partition log of one simulated replica: batches in memory, split
//! into what was fsynced and what was only written, so a crash can keep
//! any byte prefix of the unsynced tail (a torn last batch is dropped at
//! recovery, as the segment recovery does), and a producer state kept as
//! the broker's partition keeps it. It checks the promises the
//! group makes to a partition as they are made: offsets dense, truncation
//! never below the high watermark, the high watermark covering only
//! durable data and never going back, the log start never past it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ferry_cluster::partition::{BatchInfo, Prepared, ReplicaError, ReplicaLog};
use ferry_log::batch::{check_crc, leader_epoch, BatchHeader, BATCH_HEADER_LEN};

/// A producer batch of `records` records carrying `id` (after the header)
/// and `filler` bytes, so batches differ in size. The records are not
/// framed: the group reads batch headers only.
pub fn make_batch(id: u64, records: i32, filler: usize) -> Vec<u8> {
    let mut b = vec![0u8; BATCH_HEADER_LEN];
    b[16] = 2;
    b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&records.to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b.resize(b.len() + filler, id as u8);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The id `make_batch` put in a batch.
pub fn batch_id(batch: &[u8]) -> u64 {
    u64::from_be_bytes(batch[BATCH_HEADER_LEN..BATCH_HEADER_LEN + 8].try_into().expect("an id"))
}

/// One batch's place in the log.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub base: i64,
    pub last: i64,
    start: usize,
    end: usize,
}

#[derive(Default)]
struct Disk {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// `bytes[..durable]` survives a crash.
    durable: usize,
    /// The next fsync never returns: the broker dies in the middle of a Ready.
    die_at_sync: bool,
    /// As the broker's partition keeps them in memory (reset by a restart).
    high_watermark: i64,
    log_start: i64,
    /// The producer state: where each batch counted landed, by id (a retry
    /// is recognised by its id, as Kafka's idempotent producer recognises
    /// its sequence number). Counted at `prepare` on the leader, at
    /// `append` past `recorded_through`, rebuilt from the log after a
    /// truncation, a discard or a restart: the broker's partition does so.
    producers: BTreeMap<u64, (i64, i64)>,
    recorded_through: i64,
    /// Where the first batch starts (or the log end, with none): past 0
    /// once the head was dropped or a snapshot installed.
    base_offset: i64,
    /// Drop the head up to the log start (as retention would); off, the
    /// log keeps every batch.
    compacting: bool,
    /// Snapshots installed.
    resets: u64,
}

impl Disk {
    fn end_offset(&self) -> i64 {
        self.spans.last().map_or(self.base_offset, |s| s.last + 1)
    }

    fn durable_end_offset(&self) -> i64 {
        self.spans.iter().rev().find(|s| s.end <= self.durable).map_or(self.base_offset, |s| s.last + 1)
    }

    fn rebuild_producers(&mut self) {
        self.producers = self.spans.iter().map(|s| (batch_id(&self.bytes[s.start..s.end]), (s.base, s.last))).collect();
        self.recorded_through = self.end_offset();
    }

    /// Drops the batches before span `first`, durably.
    fn drop_head(&mut self, first: usize) {
        let Some(cut) = self.spans.get(first).map(|s| s.start).or((first == self.spans.len()).then_some(self.bytes.len())) else { return };
        self.base_offset = self.spans.get(first).map_or(self.end_offset(), |s| s.base);
        self.spans.drain(..first);
        for s in &mut self.spans {
            s.start -= cut;
            s.end -= cut;
        }
        self.bytes.drain(..cut);
        self.durable = self.durable.saturating_sub(cut);
    }

    fn cut(&mut self, keep_spans: usize) {
        self.spans.truncate(keep_spans);
        let len = self.spans.last().map_or(0, |s| s.end);
        self.bytes.truncate(len);
        self.durable = self.durable.min(len);
    }
}

pub struct MemLog {
    /// Who this is, for failure messages.
    name: String,
    disk: Mutex<Disk>,
}

impl MemLog {
    pub fn new(name: String) -> MemLog {
        MemLog { name, disk: Mutex::new(Disk::default()) }
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().expect("not poisoned")
    }

    fn fail(&self, what: String) -> ! {
        panic!("{}: {what}", self.name)
    }

    /// Bytes written but not fsynced.
    pub fn volatile_len(&self) -> usize {
        let d = self.disk();
        d.bytes.len() - d.durable
    }

    pub fn die_at_next_sync(&self) {
        self.disk().die_at_sync = true;
    }

    /// Whether the broker dies at (or died in) the next fsync.
    pub fn dying(&self) -> bool {
        self.disk().die_at_sync
    }

    /// The broker survives after all (the faults stopped).
    pub fn spare(&self) {
        self.disk().die_at_sync = false;
    }

    /// A crash that kept `survive` bytes of the unsynced tail; what the
    /// broker held in memory is gone.
    pub fn crash(&self, survive: usize) {
        let mut d = self.disk();
        let len = d.durable + survive.min(d.bytes.len() - d.durable);
        let whole = d.spans.partition_point(|s| s.end <= len);
        d.cut(whole);
        d.durable = d.bytes.len();
        d.die_at_sync = false;
        d.high_watermark = 0;
        d.log_start = 0;
        d.rebuild_producers();
    }

    pub fn end_offset(&self) -> i64 {
        self.disk().end_offset()
    }

    pub fn log_start(&self) -> i64 {
        self.disk().log_start
    }

    /// Where the batches this replica holds start.
    pub fn base_offset(&self) -> i64 {
        self.disk().base_offset
    }

    pub fn resets(&self) -> u64 {
        self.disk().resets
    }

    /// Whether the head up to the log start is dropped (as retention would).
    pub fn set_compacting(&self, on: bool) {
        self.disk().compacting = on;
    }

    /// The batches from the one at `from` on, while they start below `below`.
    pub fn batches_from(&self, from: i64, below: i64) -> Vec<(Span, Vec<u8>)> {
        let d = self.disk();
        let first = d.spans.partition_point(|s| s.base < from);
        d.spans[first..].iter().take_while(|s| s.base < below).map(|s| (*s, d.bytes[s.start..s.end].to_vec())).collect()
    }

    /// A batch the producer state counts at offsets the log holds another
    /// one at: a retry of it would be called a duplicate, and the batches
    /// written there are not counted.
    pub fn producer_state_error(&self) -> Option<String> {
        let d = self.disk();
        let end = d.end_offset();
        d.producers.iter().filter(|(_, (base, _))| *base >= d.base_offset && *base < end).find_map(|(id, (base, last))| {
            let i = d.spans.partition_point(|s| s.base < *base);
            let there = d.spans.get(i).map(|s| (s.base, s.last, batch_id(&d.bytes[s.start..s.end])));
            (there != Some((*base, *last, *id))).then(|| format!("the producer state has batch {id} at {base}..={last}, the log {there:?}"))
        })
    }
}

fn storage(what: String) -> ReplicaError {
    ReplicaError::Storage(what)
}

impl ReplicaLog for MemLog {
    fn batches(&self, visit: &mut dyn FnMut(BatchInfo)) -> Result<(), ReplicaError> {
        let d = self.disk();
        for s in &d.spans {
            let leader_epoch = leader_epoch(&d.bytes[s.start..s.end]).expect("a header");
            visit(BatchInfo { base_offset: s.base, last_offset: s.last, leader_epoch });
        }
        Ok(())
    }

    fn prepare(&self, batch: &mut [u8], base_offset: i64, leader_epoch: i32) -> Result<Prepared, ReplicaError> {
        let header = BatchHeader::parse(batch).map_err(|e| storage(e.to_string()))?;
        let mut d = self.disk();
        if let Some(&(base_offset, last_offset)) = d.producers.get(&batch_id(batch)) {
            return Ok(Prepared::Duplicate { base_offset, last_offset });
        }
        batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
        batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        let last_offset = base_offset + header.last_offset_delta as i64;
        d.producers.insert(batch_id(batch), (base_offset, last_offset));
        d.recorded_through = last_offset + 1;
        Ok(Prepared::Append)
    }

    fn discard_prepared(&self) -> Result<(), ReplicaError> {
        self.disk().rebuild_producers();
        Ok(())
    }

    fn append(&self, batches: &[u8]) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        let mut rest = batches;
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).map_err(|e| storage(e.to_string()))?;
            let bytes = rest.get(..header.total_len()).ok_or_else(|| storage("a batch cut short".into()))?;
            check_crc(bytes, &header).map_err(|e| storage(e.to_string()))?;
            // The real log refuses a gap or an overlap the same way.
            if header.base_offset != d.end_offset() {
                self.fail(format!("append at offset {} but the log ends at {}", header.base_offset, d.end_offset()));
            }
            let start = d.bytes.len();
            d.bytes.extend_from_slice(bytes);
            let span = Span { base: header.base_offset, last: header.last_offset(), start, end: d.bytes.len() };
            d.spans.push(span);
            if span.base >= d.recorded_through {
                d.producers.insert(batch_id(bytes), (span.base, span.last));
                d.recorded_through = span.last + 1;
            }
            rest = &rest[bytes.len()..];
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        if d.die_at_sync {
            return Err(storage("the broker died during this fsync".into()));
        }
        d.durable = d.bytes.len();
        Ok(())
    }

    fn clear(&self) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        *d = Disk { compacting: d.compacting, resets: d.resets, ..Disk::default() };
        Ok(())
    }

    fn truncate(&self, offset: i64) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        if offset < d.high_watermark {
            self.fail(format!("truncation to {offset}, below the high watermark {}", d.high_watermark));
        }
        let keep = d.spans.partition_point(|s| s.base < offset);
        if keep < d.spans.len() && d.spans[keep].base != offset {
            self.fail(format!("truncation to {offset}, inside a batch"));
        }
        d.cut(keep);
        d.rebuild_producers();
        Ok(())
    }

    fn read(&self, from_offset: i64, max_bytes: usize) -> Result<Vec<u8>, ReplicaError> {
        let d = self.disk();
        let first = d.spans.partition_point(|s| s.last < from_offset);
        let Some(start) = d.spans.get(first).map(|s| s.start) else { return Ok(Vec::new()) };
        let mut end = start;
        for s in &d.spans[first..] {
            if end > start && s.end - start > max_bytes {
                break;
            }
            end = s.end;
        }
        Ok(d.bytes[start..end].to_vec())
    }

    fn commit(&self, high_watermark: i64) {
        let mut d = self.disk();
        if high_watermark < d.high_watermark {
            self.fail(format!("the high watermark went back from {} to {high_watermark}", d.high_watermark));
        }
        // Committed and not durable here: a crash would lose what readers saw.
        if high_watermark > d.durable_end_offset() {
            self.fail(format!("high watermark {high_watermark} past the durable log end {}", d.durable_end_offset()));
        }
        d.high_watermark = high_watermark;
    }

    fn start_offset(&self) -> Result<i64, ReplicaError> {
        Ok(self.disk().base_offset)
    }

    fn retention_target(&self) -> Result<Option<i64>, ReplicaError> {
        let d = self.disk();
        let target = d.log_start.min(d.high_watermark);
        Ok((d.compacting && target > d.base_offset).then_some(target))
    }

    fn compact(&self, offset: i64) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        if offset > d.high_watermark {
            self.fail(format!("compacting to {offset}, past the high watermark {}", d.high_watermark));
        }
        let first = d.spans.partition_point(|s| s.base < offset);
        let at_a_start = d.spans.get(first).map_or(offset == d.end_offset(), |s| s.base == offset);
        if !at_a_start {
            self.fail(format!("compacting to {offset}, not a batch start"));
        }
        d.drop_head(first);
        d.base_offset = d.base_offset.max(offset);
        Ok(())
    }

    fn reset(&self, offset: i64) -> Result<(), ReplicaError> {
        let mut d = self.disk();
        if offset < d.high_watermark {
            self.fail(format!("a snapshot at {offset}, below the high watermark {}", d.high_watermark));
        }
        let n = d.spans.len();
        d.drop_head(n);
        d.base_offset = offset;
        d.high_watermark = offset;
        d.log_start = d.log_start.max(offset);
        d.resets += 1;
        d.rebuild_producers();
        Ok(())
    }

    fn set_log_start(&self, offset: i64) {
        let mut d = self.disk();
        if offset > d.high_watermark {
            self.fail(format!("log start {offset} past the high watermark {}", d.high_watermark));
        }
        d.log_start = d.log_start.max(offset);
    }
}
