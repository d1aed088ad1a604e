//! Exchanges between rsasl's client and the store-backed server.

use std::sync::Arc;

use rsasl::prelude::{Mechname, SASLClient, SASLConfig};

use super::*;
use crate::credential::ScramCredential;
use crate::store::Change;

fn store_with(dir: &std::path::Path, user: &str, password: &str, mechanisms: &[ScramMechanism]) -> Arc<UserStore> {
    let store = UserStore::open(dir).expect("open");
    let changes = mechanisms
        .iter()
        .map(|m| Change::Upsert {
            user: user.into(),
            mechanism: *m,
            credential: ScramCredential::generate(*m, password.as_bytes(), 4096).expect("random"),
        })
        .collect();
    assert!(store.apply(changes).expect("written").iter().all(Result::is_ok));
    Arc::new(store)
}

/// Runs a whole exchange; the server's outcome.
fn login(auth: &Authenticator, mechanism: &str, user: &str, password: &str) -> Result<String, AuthError> {
    let mut server = auth.start(mechanism)?;
    let config = SASLConfig::with_credentials(None, user.into(), password.into()).expect("client config");
    let mechname = Mechname::parse(mechanism.as_bytes()).expect("name");
    let mut client = SASLClient::new(config).start_suggested(&[mechname]).expect("client session");
    let mut to_server = Vec::new();
    client.step(None, &mut to_server).expect("client first");
    loop {
        match server.step(&to_server)? {
            Step::Done { user, reply } => {
                if !reply.is_empty() {
                    // The client checks the server's signature (SCRAM's mutual authentication).
                    client.step(Some(&reply), &mut Vec::new()).expect("server signature verifies");
                }
                return Ok(user);
            }
            Step::Continue(challenge) => {
                to_server.clear();
                client.step(Some(&challenge), &mut to_server).expect("client step");
            }
        }
    }
}

#[test]
fn scram_and_plain_log_in_against_the_same_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), "alice", "alice-pw", &[ScramMechanism::Sha512]);
    let all = vec![SaslMechanism::Plain, SaslMechanism::Scram(ScramMechanism::Sha256), SaslMechanism::Scram(ScramMechanism::Sha512)];
    let auth = Authenticator::new(store, all).expect("authenticator");
    assert_eq!(login(&auth, "SCRAM-SHA-512", "alice", "alice-pw").expect("scram"), "alice");
    assert_eq!(login(&auth, "PLAIN", "alice", "alice-pw").expect("plain"), "alice");
    assert!(matches!(login(&auth, "SCRAM-SHA-256", "alice", "alice-pw"), Err(AuthError::Failed { .. })), "no SHA-256 credential");
}

#[test]
fn wrong_passwords_and_unknown_users_fail_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), "bob", "bob-pw", &[ScramMechanism::Sha256, ScramMechanism::Sha512]);
    let all = vec![SaslMechanism::Plain, SaslMechanism::Scram(ScramMechanism::Sha256), SaslMechanism::Scram(ScramMechanism::Sha512)];
    let auth = Authenticator::new(store, all).expect("authenticator");
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        assert_eq!(login(&auth, mechanism, "bob", "bob-pw").expect("right password"), "bob");
        for (user, password) in [("bob", "nope"), ("mallory", "bob-pw")] {
            let err = login(&auth, mechanism, user, password).expect_err("refused");
            assert!(matches!(err, AuthError::Failed { .. }), "{mechanism} {user}: {err:?}");
            assert!(err.to_string().contains("invalid credentials"), "{err}");
        }
    }
}

#[test]
fn only_enabled_mechanisms_start_and_garbage_is_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), "carol", "pw", &[ScramMechanism::Sha512]);
    let auth = Authenticator::new(store, vec![SaslMechanism::Scram(ScramMechanism::Sha512)]).expect("authenticator");
    assert!(matches!(auth.start("PLAIN"), Err(AuthError::Unsupported(_))));
    assert!(matches!(auth.start("GSSAPI"), Err(AuthError::Unsupported(_))));
    let mut ex = auth.start("SCRAM-SHA-512").expect("starts");
    assert!(matches!(ex.step(b"\xff\x00garbage"), Err(AuthError::Malformed { .. })));
    // A one-byte attribute makes rsasl's parser slice past its end.
    let mut ex = auth.start("SCRAM-SHA-512").expect("starts");
    assert!(matches!(ex.step(b"n,,n"), Err(AuthError::Malformed { .. })));
}

#[test]
fn saslnames_unescape() {
    assert_eq!(unescape_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
    assert_eq!(unescape_saslname("plain").as_deref(), Some("plain"));
    assert_eq!(unescape_saslname("bad=2"), None);
    assert_eq!(unescape_saslname("bad=41"), None);
}
