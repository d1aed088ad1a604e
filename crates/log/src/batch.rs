//! RecordBatch (magic v2) header parsing and validation. The log stores
//! batches verbatim; it only reads and checks the header, the CRC and, for
//! uncompressed batches, the record framing.

use thiserror::Error;

/// Bytes before the records in a v2 batch.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the part not counted in batchLength.
pub const LOG_OVERHEAD: usize = 12;
pub(crate) const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported magic {0} (only v2 record batches are accepted)")]
    BadMagic(i8),
    #[error("batch length {0} is invalid")]
    BadLength(i32),
    #[error("CRC mismatch: header says {expected:#010x}, data gives {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("malformed records: {0}")]
    BadRecords(&'static str),
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
    #[error("{0}")]
    Codec(crate::codec::CodecError),
}

/// The fields of a v2 batch header the broker acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

impl BatchHeader {
    /// Parses the fixed header. Checks only what is needed to know the
    /// batch's extent: length and magic.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_LEN, available: bytes.len() });
        }
        let batch_length = be_i32(bytes, 8);
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        let magic = bytes[16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length,
            magic,
            crc: u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]),
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            record_count: be_i32(bytes, 57),
        })
    }

    /// Size of the whole batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Checks the CRC-32C of a complete batch (`bytes` is exactly one batch).
pub fn check_crc(bytes: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let actual = crc32c::crc32c(&bytes[CRC_START..]);
    if actual != header.crc {
        return Err(BatchError::BadCrc { expected: header.crc, actual });
    }
    Ok(())
}

/// Full validation of one complete incoming batch: framing, magic, CRC,
/// count against last offset delta, and for uncompressed batches that the
/// records' own length prefixes tile the payload exactly.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_len() != bytes.len() {
        return Err(BatchError::BadLength(header.batch_length));
    }
    check_crc(bytes, &header)?;
    if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::CountMismatch { count: header.record_count, last_offset_delta: header.last_offset_delta });
    }
    match header.compression() {
        0 => check_record_framing(&bytes[BATCH_HEADER_LEN..], header.record_count)?,
        1..=4 => {}
        other => return Err(BatchError::BadCompression(other)),
    }
    Ok(header)
}

/// Splits a produce payload (one or more concatenated batches) into whole
/// batches, validating each. Returns byte ranges into `bytes`.
pub fn split_and_validate(bytes: &[u8]) -> Result<Vec<(std::ops::Range<usize>, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let header = BatchHeader::parse(rest)?;
        let len = header.total_len();
        if len > rest.len() {
            return Err(BatchError::Truncated { needed: len, available: rest.len() });
        }
        let header = validate_batch(&rest[..len])?;
        out.push((pos..pos + len, header));
        pos += len;
    }
    if out.is_empty() {
        return Err(BatchError::BadRecords("no record batch in the request"));
    }
    Ok(out)
}

/// Reads a zigzag varint; returns (value, bytes used).
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((value >> 1) as i64) ^ -((value & 1) as i64), i + 1));
        }
    }
    None
}

fn check_record_framing(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    for _ in 0..count {
        let (len, used) = read_varint(records).ok_or(BatchError::BadRecords("bad record length varint"))?;
        if len < 0 || (len as usize) > records.len() - used {
            return Err(BatchError::BadRecords("record length runs past the batch"));
        }
        records = &records[used + len as usize..];
    }
    if !records.is_empty() {
        return Err(BatchError::BadRecords("bytes left after the last record"));
    }
    Ok(())
}

/// The timestamp-type bit of a batch's attributes: set, the batch's max
/// timestamp is the broker's append time and applies to every record.
pub const LOG_APPEND_TIME_FLAG: i16 = 0x08;

/// Stamps a batch with the broker's append time, as Kafka does for
/// `message.timestamp.type=LogAppendTime`: the timestamp-type bit and the
/// max timestamp change (the records' own deltas stay), so the CRC, which
/// covers both, is computed again. `header` is kept in step.
pub fn set_log_append_time(bytes: &mut [u8], header: &mut BatchHeader, now_ms: i64) {
    let end = header.total_len();
    assert!(bytes.len() >= end && end >= BATCH_HEADER_LEN, "a validated batch holds its whole length");
    header.attributes |= LOG_APPEND_TIME_FLAG;
    header.max_timestamp = now_ms;
    bytes[21..23].copy_from_slice(&header.attributes.to_be_bytes());
    bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
    header.crc = crc32c::crc32c(&bytes[CRC_START..end]);
    bytes[17..21].copy_from_slice(&header.crc.to_be_bytes());
}

/// Writes the broker-assigned base offset into a batch. The CRC does not
/// cover the first 21 bytes, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    // partitionLeaderEpoch: single node, always 0.
    bytes[12..16].copy_from_slice(&0i32.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid uncompressed batch with `values.len()` records.
    pub fn make_batch(base_offset: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0); // attributes
            put_varint(&mut r, 0); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_varint(&mut r, -1); // null key
            put_varint(&mut r, v.len() as i64);
            r.extend_from_slice(v);
            put_varint(&mut r, 0); // headers
            put_varint(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&((values.len() as i32) - 1).to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(values.len() as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn valid_batch_passes() {
        let b = make_batch(0, &[b"a", b"bc"]);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
    }

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let mut b = make_batch(0, &[b"a", b"b"]);
        let mut header = validate_batch(&b).unwrap();
        set_log_append_time(&mut b, &mut header, 1_234_567);
        let reread = validate_batch(&b).expect("the CRC was computed again");
        assert_eq!(reread.max_timestamp, 1_234_567);
        assert_ne!(reread.attributes & LOG_APPEND_TIME_FLAG, 0);
        assert_eq!((reread.crc, reread.attributes, reread.max_timestamp), (header.crc, header.attributes, header.max_timestamp));
        assert_eq!(reread.record_count, 2);
    }

    #[test]
    fn bad_crc_is_rejected() {
        let mut b = make_batch(0, &[b"a"]);
        let last = b.len() - 2;
        b[last] ^= 0xff;
        assert!(matches!(validate_batch(&b), Err(BatchError::BadCrc { .. })));
    }

    #[test]
    fn base_offset_is_outside_crc() {
        let mut b = make_batch(0, &[b"a"]);
        set_base_offset(&mut b, 42);
        assert_eq!(validate_batch(&b).unwrap().base_offset, 42);
    }

    #[test]
    fn truncated_and_trailing_garbage_rejected() {
        let b = make_batch(0, &[b"a"]);
        assert!(split_and_validate(&b[..b.len() - 1]).is_err());
        let mut two = b.clone();
        two.extend_from_slice(&[1, 2, 3]);
        assert!(split_and_validate(&two).is_err());
        let mut ok = b.clone();
        ok.extend_from_slice(&b);
        assert_eq!(split_and_validate(&ok).unwrap().len(), 2);
    }
}

/// The kind of a control batch's record (its key's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    Other(i16),
}

/// Reads the control record type of a control batch (`bytes` is the whole
/// batch). Control batches are never compressed.
pub fn control_type(bytes: &[u8]) -> Option<ControlType> {
    let mut rest = bytes.get(BATCH_HEADER_LEN..)?;
    let (_len, used) = read_varint(rest)?;
    rest = rest.get(used..)?;
    rest = rest.get(1..)?; // attributes
    let (_, used) = read_varint(rest)?; // timestamp delta
    rest = rest.get(used..)?;
    let (_, used) = read_varint(rest)?; // offset delta
    rest = rest.get(used..)?;
    let (key_len, used) = read_varint(rest)?;
    rest = rest.get(used..)?;
    if key_len < 4 {
        return None;
    }
    let kind = i16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]);
    Some(match kind {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        other => ControlType::Other(other),
    })
}

/// Appends a zigzag varint (the record format's integer encoding).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// Writes the Raft term into the batch's partition leader epoch (outside
/// the CRC, like the base offset).
pub fn set_leader_epoch(bytes: &mut [u8], epoch: i32) {
    bytes[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// The partition leader epoch a batch carries (on a cluster: the Raft term
/// of the entry it is).
pub fn leader_epoch(bytes: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(12..16)?.try_into().ok()?))
}

/// Builds a transaction marker: a control batch with one record whose key
/// is (version 0, type 0 abort / 1 commit) and value (version 0,
/// coordinator epoch). The base offset is filled in at append.
pub fn control_batch(producer_id: i64, producer_epoch: i16, commit: bool, coordinator_epoch: i32, timestamp_ms: i64) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let kind = if commit { 1i16 } else { 0i16 };
    one_control_record_batch(producer_id, producer_epoch, kind, &value, timestamp_ms, ATTR_TRANSACTIONAL | ATTR_CONTROL)
}

/// A control batch of one record whose key is (version 0, `kind`).
fn one_control_record_batch(producer_id: i64, producer_epoch: i16, kind: i16, value: &[u8], timestamp_ms: i64, attributes: i16) -> Vec<u8> {
    let mut key = Vec::new();
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut record = vec![0u8];
    put_varint(&mut record, 0);
    put_varint(&mut record, 0);
    put_varint(&mut record, key.len() as i64);
    record.extend_from_slice(&key);
    put_varint(&mut record, value.len() as i64);
    record.extend_from_slice(value);
    put_varint(&mut record, 0);
    let mut records = Vec::new();
    put_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);

    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod control_tests {
    use super::*;

    #[test]
    fn control_batch_roundtrip() {
        for commit in [true, false] {
            let b = control_batch(7, 3, commit, 0, 1234);
            let h = validate_batch(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (7, 3));
            assert_eq!(control_type(&b), Some(if commit { ControlType::Commit } else { ControlType::Abort }));
        }
    }
}
