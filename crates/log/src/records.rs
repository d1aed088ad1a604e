//! The records inside a v2 batch: decoding them (through the codec) and
//! building a batch from a chosen subset, keeping offsets. The append path
//! never needs this (batches are stored verbatim); the cleaner, the
//! compacted-topic key check and the lookup by timestamp do.

use crate::batch::{put_varint, read_varint, BatchError, BatchHeader, BATCH_HEADER_LEN, CRC_START, LOG_APPEND_TIME_FLAG, LOG_OVERHEAD};
use crate::codec;
use crate::TimestampOffset;

/// The most a batch's records may decompress to.
pub const MAX_DECOMPRESSED_BYTES: usize = 128 * 1024 * 1024;

/// Attribute bit: the batch's base timestamp is its delete horizon (KIP-534).
pub const ATTR_DELETE_HORIZON: i16 = 0x40;
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// One record, borrowing its key, value and headers from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: u8,
    /// Absolute: the batch's base timestamp plus the record's delta.
    pub timestamp: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The header count and headers, encoded, as they were.
    pub headers: &'a [u8],
}

/// The records section of `batch` (one whole batch), decompressed.
pub fn records_section(batch: &[u8], header: &BatchHeader) -> Result<Vec<u8>, BatchError> {
    let data = batch.get(BATCH_HEADER_LEN..).ok_or(BatchError::BadRecords("batch shorter than its header"))?;
    codec::decompress(header.compression(), data, MAX_DECOMPRESSED_BYTES).map_err(BatchError::Codec)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn varint(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let (v, used) = read_varint(self.0).ok_or(BatchError::BadRecords(what))?;
        self.0 = &self.0[used..];
        Ok(v)
    }
    fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], BatchError> {
        if len > self.0.len() {
            return Err(BatchError::BadRecords(what));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    /// A length-prefixed field where -1 is null.
    fn nullable(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint(what)? {
            -1 => Ok(None),
            len if len < 0 => Err(BatchError::BadRecords(what)),
            len => self.bytes(len as usize, what).map(Some),
        }
    }
}

/// Decodes the `header.record_count` records of a decompressed section.
pub fn decode_records<'a>(header: &BatchHeader, section: &'a [u8]) -> Result<Vec<Record<'a>>, BatchError> {
    let count = usize::try_from(header.record_count).map_err(|_| BatchError::BadRecords("negative record count"))?;
    let mut out = Vec::with_capacity(count.min(section.len()));
    let mut cursor = Cursor(section);
    for _ in 0..count {
        let len = cursor.varint("bad record length")?;
        let len = usize::try_from(len).map_err(|_| BatchError::BadRecords("negative record length"))?;
        let mut rec = Cursor(cursor.bytes(len, "record runs past the batch")?);
        let attributes = *rec.bytes(1, "record without attributes")?.first().unwrap_or(&0);
        let timestamp_delta = rec.varint("bad timestamp delta")?;
        let offset_delta = rec.varint("bad offset delta")?;
        let offset_delta = i32::try_from(offset_delta).map_err(|_| BatchError::BadRecords("offset delta out of range"))?;
        let key = rec.nullable("bad key")?;
        let value = rec.nullable("bad value")?;
        let timestamp = if header.attributes & LOG_APPEND_TIME_FLAG != 0 {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        out.push(Record { attributes, timestamp, offset_delta, key, value, headers: rec.0 });
    }
    if !cursor.0.is_empty() {
        return Err(BatchError::BadRecords("bytes left after the last record"));
    }
    Ok(out)
}

/// The first record of one whole batch at or after `min_offset` whose
/// timestamp is at least `timestamp` (Kafka's ListOffsets by timestamp
/// answers that record, not its batch).
pub fn first_record_at_or_after(batch: &[u8], header: &BatchHeader, timestamp: i64, min_offset: i64) -> Result<Option<TimestampOffset>, BatchError> {
    let section = records_section(batch, header)?;
    Ok(decode_records(header, &section)?
        .iter()
        .map(|r| TimestampOffset { offset: header.base_offset + i64::from(r.offset_delta), timestamp: r.timestamp })
        .find(|r| r.timestamp >= timestamp && r.offset >= min_offset))
}

/// Whether any record of a data batch has a null key (a compacted topic
/// refuses those, as Kafka does).
pub fn has_keyless_record(batch: &[u8], header: &BatchHeader) -> Result<bool, BatchError> {
    let section = records_section(batch, header)?;
    Ok(decode_records(header, &section)?.iter().any(|r| r.key.is_none()))
}

/// Builds a batch that keeps `original`'s offsets, producer fields and
/// last offset delta (so a producer's last sequence survives) but holds only
/// `records`, compressed with the same codec. With `delete_horizon_ms` the
/// base timestamp is that horizon and the batch says so (KIP-534).
pub fn rebuild_batch(original: &BatchHeader, records: &[Record<'_>], delete_horizon_ms: Option<i64>) -> Result<Vec<u8>, BatchError> {
    let log_append_time = original.attributes & LOG_APPEND_TIME_FLAG != 0;
    let mut attributes = original.attributes & !ATTR_DELETE_HORIZON;
    let base_timestamp = match (delete_horizon_ms, records.first()) {
        (Some(horizon), _) => {
            attributes |= ATTR_DELETE_HORIZON;
            horizon
        }
        (None, Some(first)) if !log_append_time => first.timestamp,
        _ => original.max_timestamp,
    };
    let max_timestamp = if log_append_time {
        original.max_timestamp
    } else {
        records.iter().map(|r| r.timestamp).max().unwrap_or(original.max_timestamp)
    };
    let mut section = Vec::new();
    for r in records {
        let mut body = vec![r.attributes];
        put_varint(&mut body, if log_append_time { 0 } else { r.timestamp.wrapping_sub(base_timestamp) });
        put_varint(&mut body, r.offset_delta as i64);
        for field in [r.key, r.value] {
            match field {
                Some(bytes) => {
                    put_varint(&mut body, bytes.len() as i64);
                    body.extend_from_slice(bytes);
                }
                None => put_varint(&mut body, -1),
            }
        }
        body.extend_from_slice(r.headers);
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    if records.is_empty() {
        // An empty batch is never compressed: it carries the header only.
        attributes &= !ATTR_COMPRESSION_MASK;
    }
    let section = codec::compress(attributes & ATTR_COMPRESSION_MASK, &section).map_err(BatchError::Codec)?;
    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    b.extend_from_slice(&original.base_offset.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&original.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&max_timestamp.to_be_bytes());
    b.extend_from_slice(&original.producer_id.to_be_bytes());
    b.extend_from_slice(&original.producer_epoch.to_be_bytes());
    b.extend_from_slice(&original.base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&section);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

/// The same batch with its records compressed by `codec` (a topic's
/// `compression.type` other than `producer`, as Kafka recompresses):
/// offsets, timestamps, producer fields and records stay as they were.
pub fn recompress_batch(batch: &[u8], header: &BatchHeader, codec: i16) -> Result<Vec<u8>, BatchError> {
    let section = records_section(batch, header)?;
    let records = decode_records(header, &section)?;
    let mut target = header.clone();
    target.attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | (codec & ATTR_COMPRESSION_MASK);
    rebuild_batch(&target, &records, delete_horizon_ms(header))
}

/// The delete horizon a batch carries, if any.
pub fn delete_horizon_ms(header: &BatchHeader) -> Option<i64> {
    (header.attributes & ATTR_DELETE_HORIZON != 0).then_some(header.base_timestamp)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::{check_crc, BatchHeader};

    /// A batch of (key, value) records at offsets base.., compressed with `codec`.
    pub(crate) fn keyed_batch(base: i64, codec: i16, kvs: &[(Option<&[u8]>, Option<&[u8]>)], ts: i64) -> Vec<u8> {
        let template = BatchHeader {
            base_offset: base,
            batch_length: 0,
            magic: 2,
            crc: 0,
            attributes: codec,
            last_offset_delta: kvs.len() as i32 - 1,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: kvs.len() as i32,
        };
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record { attributes: 0, timestamp: ts + i as i64, offset_delta: i as i32, key: *k, value: *v, headers: &[0] })
            .collect();
        rebuild_batch(&template, &records, None).unwrap()
    }

    #[test]
    fn rebuild_keeps_offsets_and_round_trips_every_codec() {
        for codec in 0..=4 {
            let b = keyed_batch(100, codec, &[(Some(b"a"), Some(b"1")), (Some(b"b"), None), (Some(b"a"), Some(b"3"))], 5000);
            let h = BatchHeader::parse(&b).unwrap();
            check_crc(&b, &h).unwrap();
            let section = records_section(&b, &h).unwrap();
            let recs = decode_records(&h, &section).unwrap();
            assert_eq!(recs.len(), 3);
            assert_eq!(recs[1].value, None);
            assert_eq!(recs[2].timestamp, 5002);
            // Keep only the last record, with a delete horizon.
            let kept = rebuild_batch(&h, &recs[2..], Some(9_000_000)).unwrap();
            let kh = BatchHeader::parse(&kept).unwrap();
            check_crc(&kept, &kh).unwrap();
            assert_eq!((kh.base_offset, kh.last_offset_delta, kh.record_count), (100, 2, 1));
            assert_eq!(delete_horizon_ms(&kh), Some(9_000_000));
            let ks = records_section(&kept, &kh).unwrap();
            let kr = decode_records(&kh, &ks).unwrap();
            assert_eq!((kr[0].offset_delta, kr[0].timestamp, kr[0].key), (2, 5002, Some(&b"a"[..])));
            assert_eq!(kh.max_timestamp, 5002);
            assert!(has_keyless_record(&b, &h).is_ok_and(|k| !k));
        }
    }

    #[test]
    fn keyless_records_are_found() {
        let b = keyed_batch(0, 3, &[(Some(b"a"), Some(b"1")), (None, Some(b"2"))], 1);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(has_keyless_record(&b, &h).unwrap());
    }

    #[test]
    fn an_empty_rebuild_is_an_uncompressed_header() {
        let b = keyed_batch(7, 4, &[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"2"))], 1);
        let h = BatchHeader::parse(&b).unwrap();
        let empty = rebuild_batch(&h, &[], None).unwrap();
        let eh = BatchHeader::parse(&empty).unwrap();
        assert_eq!((empty.len(), eh.record_count, eh.last_offset(), eh.compression()), (BATCH_HEADER_LEN, 0, 8, 0));
    }

    #[test]
    fn truncated_records_are_an_error() {
        let b = keyed_batch(0, 0, &[(Some(b"key"), Some(b"value"))], 1);
        let h = BatchHeader::parse(&b).unwrap();
        let section = records_section(&b, &h).unwrap();
        for cut in 0..section.len() {
            assert!(decode_records(&h, &section[..cut]).is_err(), "cut at {cut}");
        }
    }
}
