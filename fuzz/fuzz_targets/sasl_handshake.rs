//! A SASL exchange (`ferry_auth::SaslExchange`, what SaslAuthenticate and
//! v0 bare tokens feed) on arbitrary client tokens, for PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512 against a store holding one user.
//!
//! Input: one byte choosing the mechanism, then tokens, each a big-endian
//! u16 length and its bytes (a short tail is the last token). A step must
//! answer or refuse, never panic out: rsasl's SCRAM parser panics on short
//! attributes, which `SaslExchange::step` catches (counted, not a crash).
//! A SCRAM exchange can never finish: fuzzed input holds no valid proof.
#![no_main]

use std::sync::{Arc, OnceLock};

use ferry_auth::{AuthError, Authenticator, Change, SaslMechanism, ScramCredential, ScramMechanism, Step, UserStore};
use libfuzzer_sys::fuzz_target;

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<(tempfile::TempDir, Authenticator)> = OnceLock::new();
    &AUTH
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = UserStore::open(dir.path()).expect("store");
            let changes = ScramMechanism::ALL
                .iter()
                .map(|m| Change::Upsert {
                    user: "user".into(),
                    mechanism: *m,
                    credential: ScramCredential::from_password(*m, b"pencil", b"fuzz-salt", 4096),
                })
                .collect();
            store.apply(changes).expect("written");
            let all = vec![SaslMechanism::Plain, SaslMechanism::Scram(ScramMechanism::Sha256), SaslMechanism::Scram(ScramMechanism::Sha512)];
            let auth = Authenticator::new(Arc::new(store), all).expect("authenticator");
            (dir, auth)
        })
        .1
}

fn tokens(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 4 {
        let (len, rest) = match data {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (data.len(), &[][..]),
        };
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(
    init: ferry_fuzz::install_panic_hook(),
    |data: &[u8]| ferry_fuzz::guarded("sasl_handshake checks", || check(data))
);

fn check(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let mechanism = MECHANISMS[usize::from(which) % MECHANISMS.len()];
    let mut exchange = authenticator().start(mechanism).expect("enabled mechanism");
    for token in tokens(rest) {
        match ferry_fuzz::guarded("SaslExchange::step", || exchange.step(token)) {
            Ok(Step::Continue(_)) => continue,
            Ok(Step::Done { user, .. }) => {
                // Only PLAIN can finish on fuzzed input: SCRAM needs a proof of the password.
                assert_eq!(mechanism, "PLAIN", "a SCRAM exchange finished without the password");
                assert_eq!(user, "user");
                return;
            }
            Err(AuthError::Malformed { reason, .. }) if reason.contains("panicked") => {
                ferry_fuzz::note_caught_panic("rsasl's SASL parser (caught by SaslExchange::step)");
                return;
            }
            Err(_) => return,
        }
    }
}
