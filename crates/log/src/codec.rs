//! The record-batch compression codecs Kafka uses, by attribute number:
//! 1 gzip, 2 snappy, 3 lz4, 4 zstd. Decompression is bounded, so a small
//! batch cannot expand into unbounded memory.

use std::io::Read;

use thiserror::Error;

/// xerial snappy-java's stream header, which the Java client writes.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Block size the Java client's snappy stream uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(i16),
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("records decompress to more than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
}

fn codec_name(codec: i16) -> &'static str {
    match codec {
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

fn corrupt(codec: i16, e: impl std::fmt::Display) -> CodecError {
    CodecError::Corrupt { codec: codec_name(codec), reason: e.to_string() }
}

/// Reads `reader` to the end, failing past `limit_bytes`.
fn read_bounded(codec: i16, reader: impl Read, limit_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader.take(limit_bytes as u64 + 1).read_to_end(&mut out).map_err(|e| corrupt(codec, e))?;
    if out.len() > limit_bytes {
        return Err(CodecError::TooLarge { limit_bytes });
    }
    Ok(out)
}

/// Decompresses a batch's records section. Codec 0 is returned as is.
pub fn decompress(codec: i16, data: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), limit_bytes),
        2 => snappy_decompress(data, limit_bytes),
        3 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), limit_bytes),
        4 => read_bounded(codec, zstd::stream::read::Decoder::new(data).map_err(|e| corrupt(codec, e))?, limit_bytes),
        other => Err(CodecError::Unknown(other)),
    }
}

/// Kafka's snappy is either xerial-framed (Java) or one raw block (others).
fn snappy_decompress(data: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CodecError> {
    if !data.starts_with(&XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(data, limit_bytes, &mut out)?;
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut rest = data.get(XERIAL_HEADER_LEN..).ok_or_else(|| corrupt(2, "truncated xerial header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt(2, "truncated block length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest.get(4..4 + len).ok_or_else(|| corrupt(2, "block runs past the data"))?;
        snappy_block(block, limit_bytes.saturating_sub(out.len()), &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Decompresses one raw snappy block, appending to `out`.
fn snappy_block(block: &[u8], limit_bytes: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(2, e))?;
    if len > limit_bytes {
        return Err(CodecError::TooLarge { limit_bytes });
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|e| corrupt(2, e))?;
    Ok(())
}

/// Compresses a records section with `codec`, in the framing Kafka's own
/// clients write (snappy xerial-framed, lz4 as an LZ4 frame).
pub fn compress(codec: i16, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    use std::io::Write;
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| corrupt(codec, e))?;
            enc.finish().map_err(|e| corrupt(codec, e))
        }
        2 => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
                let block = encoder.compress_vec(chunk).map_err(|e| corrupt(codec, e))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        3 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(|e| corrupt(codec, e))?;
            enc.finish().map_err(|e| corrupt(codec, e))
        }
        4 => zstd::bulk::compress(data, 3).map_err(|e| corrupt(codec, e)),
        other => Err(CodecError::Unknown(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in 0..=4 {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data, "codec {codec}");
            if codec != 0 {
                assert!(matches!(decompress(codec, &packed, data.len() - 1), Err(CodecError::TooLarge { .. })), "codec {codec}");
            }
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let data = b"raw snappy as librdkafka writes it".repeat(50);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(2, &raw, 1 << 20).unwrap(), data);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in 1..=4 {
            assert!(decompress(codec, b"\x82SNAPPY\x00garbage that is not compressed", 1 << 20).is_err(), "codec {codec}");
        }
        assert_eq!(decompress(9, b"", 10), Err(CodecError::Unknown(9)));
    }
}
