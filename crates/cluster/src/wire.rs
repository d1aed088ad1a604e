//! Frames between brokers: `[u32 length][u8 kind][payload]`, big-endian.
//! A Raft frame carries messages of many groups, so two brokers need one
//! connection however many partitions they share.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::Message;

/// Larger frames close the connection: a peer sending one is broken.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// A `host:port` longer than this is refused (DNS names end at 253).
pub const MAX_ADDR_BYTES: usize = 300;

const KIND_HELLO: u8 = 1;
const KIND_RAFT: u8 = 2;
const KIND_CHALLENGE: u8 = 3;

/// Bytes of a challenge's nonce and of a hello's proof (HMAC-SHA-256).
pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;

#[derive(Debug)]
pub enum Frame {
    /// First frame on a connection: who is calling, and where it listens
    /// for the others' connections (how a broker joining learns nothing
    /// else is needed: the others reach it there). With a cluster secret,
    /// `proof` answers the challenge (see `secret.rs`); else it is empty.
    Hello { node_id: u64, addr: String, proof: Vec<u8> },
    Raft(Vec<(u64, Message)>),
    /// Sent by the accepting broker when the cluster has a secret: the
    /// caller's hello must prove it knows the secret for this nonce.
    Challenge { nonce: [u8; NONCE_BYTES] },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

pub fn encode(frame: &Frame) -> Bytes {
    let mut body = BytesMut::new();
    match frame {
        Frame::Hello { node_id, addr, proof } => {
            body.put_u8(KIND_HELLO);
            body.put_u64(*node_id);
            let addr = &addr.as_bytes()[..addr.len().min(MAX_ADDR_BYTES)];
            body.put_u16(addr.len() as u16);
            body.put_slice(addr);
            // Absent when empty: a hello without a secret is as before.
            if !proof.is_empty() {
                body.put_slice(&proof[..proof.len().min(PROOF_BYTES)]);
            }
        }
        Frame::Challenge { nonce } => {
            body.put_u8(KIND_CHALLENGE);
            body.put_slice(nonce);
        }
        Frame::Raft(messages) => {
            body.put_u8(KIND_RAFT);
            body.put_u32(messages.len() as u32);
            for (group, msg) in messages {
                // A protobuf message of our own making always serialises.
                let bytes = msg.write_to_bytes().unwrap_or_default();
                body.put_u64(*group);
                body.put_u32(bytes.len() as u32);
                body.put_slice(&bytes);
            }
        }
    }
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

/// The body length announced by a frame header, checked against the limit.
pub fn body_len(header: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    if len == 0 {
        return Err(WireError::Malformed("empty frame".into()));
    }
    Ok(len)
}

pub fn decode(mut body: &[u8]) -> Result<Frame, WireError> {
    let short = || WireError::Malformed("frame ends early".into());
    if body.is_empty() {
        return Err(short());
    }
    match body.get_u8() {
        KIND_HELLO => {
            if body.remaining() < 10 {
                return Err(WireError::Malformed("hello frame must carry a node id and an address".into()));
            }
            let node_id = body.get_u64();
            let len = body.get_u16() as usize;
            let proof_len = body.remaining().wrapping_sub(len);
            if len > MAX_ADDR_BYTES || body.remaining() < len || (proof_len != 0 && proof_len != PROOF_BYTES) {
                return Err(WireError::Malformed(format!("hello frame's address of {len} bytes does not fit the frame")));
            }
            let addr = std::str::from_utf8(&body[..len]).map_err(|_| WireError::Malformed("hello frame's address is not UTF-8".into()))?;
            Ok(Frame::Hello { node_id, addr: addr.to_string(), proof: body[len..].to_vec() })
        }
        KIND_CHALLENGE => {
            let nonce = body.try_into().map_err(|_| WireError::Malformed(format!("challenge frame must carry a {NONCE_BYTES}-byte nonce")))?;
            Ok(Frame::Challenge { nonce })
        }
        KIND_RAFT => {
            if body.remaining() < 4 {
                return Err(short());
            }
            let count = body.get_u32() as usize;
            // Each message needs at least 12 header bytes: bound the allocation by what is there.
            let mut messages = Vec::with_capacity(count.min(body.remaining() / 12));
            for _ in 0..count {
                if body.remaining() < 12 {
                    return Err(short());
                }
                let group = body.get_u64();
                let len = body.get_u32() as usize;
                if body.remaining() < len {
                    return Err(short());
                }
                let msg = Message::parse_from_bytes(&body[..len]).map_err(|e| WireError::Malformed(format!("raft message: {e}")))?;
                body.advance(len);
                messages.push((group, msg));
            }
            if body.has_remaining() {
                return Err(WireError::Malformed("bytes after the last message".into()));
            }
            Ok(Frame::Raft(messages))
        }
        other => Err(WireError::Malformed(format!("unknown frame kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    #[test]
    fn round_trip() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        let bytes = encode(&Frame::Raft(vec![(0, m.clone()), (5, m.clone())]));
        let len = body_len(bytes[..4].try_into().unwrap()).unwrap();
        match decode(&bytes[4..4 + len]).unwrap() {
            Frame::Raft(ms) => {
                assert_eq!(ms.len(), 2);
                assert_eq!(ms[1].0, 5);
                assert_eq!(ms[1].1, m);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(body_len([0xff; 4]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[KIND_RAFT, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[KIND_RAFT, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1]).is_err());
        assert!(decode(&[KIND_HELLO, 1]).is_err());
        assert!(decode(&[KIND_HELLO, 0, 0, 0, 0, 0, 0, 0, 4, 0, 9, b'h']).is_err(), "address longer than the frame");
    }

    #[test]
    fn hello_carries_the_address() {
        let bytes = encode(&Frame::Hello { node_id: 4, addr: "10.0.0.4:9195".into(), proof: Vec::new() });
        match decode(&bytes[4..]).unwrap() {
            Frame::Hello { node_id, addr, proof } => assert_eq!((node_id, addr.as_str(), proof.len()), (4, "10.0.0.4:9195", 0)),
            other => panic!("{other:?}"),
        }
        let bytes = encode(&Frame::Hello { node_id: 4, addr: "h:1".into(), proof: vec![7; PROOF_BYTES] });
        match decode(&bytes[4..]).unwrap() {
            Frame::Hello { addr, proof, .. } => assert_eq!((addr.as_str(), proof), ("h:1", vec![7; PROOF_BYTES])),
            other => panic!("{other:?}"),
        }
        let mut cut = bytes[4..].to_vec();
        cut.pop();
        assert!(decode(&cut).is_err(), "a proof cut short");
        let bytes = encode(&Frame::Challenge { nonce: [9; NONCE_BYTES] });
        assert!(matches!(decode(&bytes[4..]).unwrap(), Frame::Challenge { nonce } if nonce == [9; NONCE_BYTES]));
        assert!(decode(&bytes[4..bytes.len() - 1]).is_err(), "a nonce cut short");
    }
}
