//! `ferry_kafka::codec::decode_request` on arbitrary frames (a request frame
//! without its 4-byte length prefix, exactly what the connection reader
//! passes). It must never panic: Ferry runs the kafka-protocol decoder under
//! `catch_unwind`, and a panic caught there is reported as
//! `Malformed { reason: "decoder panicked" }`. Only a panic escaping
//! `decode_request` is a crash (see `ferry_fuzz::install_panic_hook`).
#![no_main]

use bytes::Bytes;
use ferry_kafka::codec::{decode_request, peek_header, DecodeError, Decoded};
use ferry_kafka::versions;
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;

/// The broker's allocator, so untrusted array counts behave as in production.
#[global_allocator]
static ALLOCATOR: ferry_kafka::alloc::NoReserveLargeAlloc = ferry_kafka::alloc::NoReserveLargeAlloc;

fuzz_target!(
    init: ferry_fuzz::install_panic_hook(),
    |data: &[u8]| ferry_fuzz::guarded("request_decode checks", || check(data))
);

fn check(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let result = ferry_fuzz::guarded("codec::decode_request", || decode_request(frame));
    match result {
        Ok(Decoded::Request(header, _body)) => {
            // What the handlers see must agree with the raw header bytes.
            let prefix = peek_header(data).expect("decoded a frame too short for a header");
            assert_eq!(header.request_api_key, prefix.api_key);
            assert_eq!(header.request_api_version, prefix.api_version);
            assert_eq!(header.correlation_id, prefix.correlation_id);
            let api = ApiKey::try_from(prefix.api_key).expect("decoded an unknown API key");
            assert!(
                versions::is_supported(api, prefix.api_version),
                "decoded an unsupported version"
            );
        }
        Ok(Decoded::UnsupportedVersion(prefix, api)) => {
            assert_eq!(api as i16, prefix.api_key);
            assert!(!versions::is_supported(api, prefix.api_version));
        }
        Err(DecodeError::TooShort(n)) => assert!(n < 8 && n == data.len()),
        Err(DecodeError::UnknownApiKey(key)) => assert!(ApiKey::try_from(key).is_err()),
        Err(DecodeError::Malformed { reason, .. }) => {
            if reason == "decoder panicked" {
                ferry_fuzz::note_caught_panic(
                    "the kafka-protocol decoder (caught by decode_request's catch_unwind)",
                );
            }
        }
    }
}
