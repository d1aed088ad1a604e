//! Request decoding and response encoding. Pure functions over bytes, so
//! the fuzz targets call exactly what the server calls.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

use crate::versions;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// The first fields of every request header, readable in any version.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek_header(frame: &[u8]) -> Result<HeaderPrefix, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    Request(RequestHeader, RequestKind),
    /// A known API at a version Ferry does not serve.
    UnsupportedVersion(HeaderPrefix, ApiKey),
}

/// Decodes one request frame (without its length prefix). Never panics:
/// the library's decoder runs under `catch_unwind` as a second line of
/// defence, and a panic there is reported as a malformed request.
pub fn decode_request(frame: Bytes) -> Result<Decoded, DecodeError> {
    let prefix = peek_header(&frame)?;
    let api = ApiKey::try_from(prefix.api_key).map_err(|_| DecodeError::UnknownApiKey(prefix.api_key))?;
    if !versions::is_supported(api, prefix.api_version) {
        return Ok(Decoded::UnsupportedVersion(prefix, api));
    }
    let version = prefix.api_version;
    let malformed = |reason: String| DecodeError::Malformed { api, version, reason };
    let result = std::panic::catch_unwind(move || -> Result<(RequestHeader, RequestKind), String> {
        let mut buf = frame;
        let header_version = api.request_header_version(version);
        let header = RequestHeader::decode(&mut buf, header_version).map_err(|e| e.to_string())?;
        let body = RequestKind::decode(api, &mut buf, version).map_err(|e| e.to_string())?;
        // Trailing bytes are tolerated, as Kafka does: librdkafka 2.12 sends
        // Metadata v12 requests with three of them.
        if buf.has_remaining() {
            tracing::debug!(api = ?api, version, trailing = buf.remaining(), "bytes left after the request body");
        }
        Ok((header, body))
    });
    match result {
        Ok(Ok((header, body))) => Ok(Decoded::Request(header, body)),
        Ok(Err(reason)) => Err(malformed(reason)),
        Err(_) => Err(malformed("decoder panicked".into())),
    }
}

/// Encodes a response frame, length prefix included.
/// The encoded size of a large response, so its buffer is allocated once
/// instead of doubling (a fetch response carries up to fetch.max.bytes of
/// records; the doubling and its copies were 6% of the broker's CPU).
fn body_size_hint(body: &ResponseKind, version: i16) -> usize {
    use kafka_protocol::protocol::Encodable as _;
    match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(64),
        _ => 64,
    }
}

pub fn encode_response(api: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(4 + 8 + body_size_hint(body, version));
    buf.extend_from_slice(&[0, 0, 0, 0]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}
