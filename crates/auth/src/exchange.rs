//! One connection's SASL exchange: rsasl's server state machines (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) asking the [`UserStore`] for credentials.
//!
//! rsasl runs the protocol (message parsing, nonces, proofs, signatures);
//! the callback here only answers its two questions: "what is this user's
//! stored SCRAM credential" and "is this exchange's outcome acceptable".

use std::sync::Arc;

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::plain::PLAIN;
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::scram::{SCRAM_SHA256, SCRAM_SHA512};
use rsasl::prelude::{Mechanism, Mechname, Registry, SASLConfig, SASLServer, Session, SessionError};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};

use crate::mechanism::{SaslMechanism, ScramMechanism};
use crate::store::UserStore;

/// Only the mechanisms Ferry serves; the -PLUS (channel binding) variants
/// are left out, so a client's `y` flag is not taken as a downgrade.
static MECHANISMS: &[Mechanism] = &[PLAIN, SCRAM_SHA256, SCRAM_SHA512];

/// Why an exchange did not authenticate: logged, never told the client
/// (which hears only "invalid credentials", as from Kafka).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    WrongPassword,
    /// SCRAM: the client's proof did not verify (wrong password, or an
    /// unknown user, which SCRAM answers the same way).
    BadProof,
    /// An authorization id other than the user (Kafka refuses it too).
    AuthzidMismatch,
    /// A user name with a bad `=2C`/`=3D` escape.
    BadUserName,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("SASL mechanism `{0}` is not enabled")]
    Unsupported(String),
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}")]
    Failed { mechanism: SaslMechanism, refusal: Refusal },
    #[error("Authentication failed: malformed {mechanism} message ({reason})")]
    Malformed { mechanism: SaslMechanism, reason: String },
    #[error("cannot set up SASL: {0}")]
    Setup(String),
}

/// The outcome of one client token.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the client's next token.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply` (SCRAM's server-final message, empty for PLAIN).
    Done { user: String, reply: Vec<u8> },
}

/// What rsasl hands back once an exchange finished.
struct Outcome;
impl Validation for Outcome {
    type Value = Result<String, Refusal>;
}

/// The mechanisms a listener offers, over one store. Shared by every connection.
pub struct Authenticator {
    enabled: Vec<SaslMechanism>,
    config: Arc<SASLConfig>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(store: Arc<UserStore>, enabled: Vec<SaslMechanism>) -> Result<Authenticator, AuthError> {
        let config = SASLConfig::builder()
            .with_registry(Registry::with_mechanisms(MECHANISMS))
            .with_callback(StoreCallback { store })
            .map_err(|e| AuthError::Setup(e.to_string()))?;
        Ok(Authenticator { enabled, config })
    }

    /// Names for SaslHandshake's answer, in configuration order.
    pub fn enabled(&self) -> &[SaslMechanism] {
        &self.enabled
    }

    /// Starts an exchange with the mechanism the client named.
    pub fn start(&self, name: &str) -> Result<SaslExchange, AuthError> {
        let unsupported = || AuthError::Unsupported(name.chars().take(64).collect());
        let mechanism: SaslMechanism = name.parse().map_err(|_| unsupported())?;
        if !self.enabled.contains(&mechanism) {
            return Err(unsupported());
        }
        let mechname = Mechname::parse(mechanism.name().as_bytes()).map_err(|e| AuthError::Setup(e.to_string()))?;
        let session = SASLServer::<Outcome>::new(self.config.clone())
            .start_suggested(mechname)
            .map_err(|e| AuthError::Setup(e.to_string()))?;
        Ok(SaslExchange { mechanism, session })
    }
}

/// One client's exchange, from the mechanism's first token to its outcome.
pub struct SaslExchange {
    mechanism: SaslMechanism,
    session: Session<Outcome>,
}

impl std::fmt::Debug for SaslExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslExchange").field("mechanism", &self.mechanism).finish_non_exhaustive()
    }
}

impl SaslExchange {
    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// Feeds one client token. PLAIN costs a PBKDF2 here: call it off the
    /// async runtime's workers.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, AuthError> {
        let mechanism = self.mechanism;
        let mut out = Vec::new();
        // rsasl 2.3's SCRAM parser slices attributes without checking their
        // length, so a short one panics: contained here, like the request
        // decoder's panics, and the connection is closed.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.session.step(Some(token), &mut out)));
        let state = match stepped {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => return Err(AuthError::Malformed { mechanism, reason: e.to_string() }),
            Err(_) => return Err(AuthError::Malformed { mechanism, reason: "the SASL parser panicked".into() }),
        };
        if state.is_running() {
            return Ok(Step::Continue(out));
        }
        match self.session.validation() {
            Some(Ok(user)) => Ok(Step::Done { user, reply: out }),
            Some(Err(refusal)) => Err(AuthError::Failed { mechanism, refusal }),
            // SCRAM wrote `e=invalid-proof` or `e=unknown-user`: its
            // validation only runs on a proof that verified.
            None => Err(AuthError::Failed { mechanism, refusal: Refusal::BadProof }),
        }
    }
}

/// Kafka's SCRAM user names escape `,` as `=2C` and `=` as `=3D` (RFC 5802 saslname).
fn unescape_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

struct StoreCallback {
    store: Arc<UserStore>,
}

impl StoreCallback {
    fn scram_mechanism(session: &SessionData) -> Option<ScramMechanism> {
        session.mechanism().mechanism.as_str().parse().ok()
    }

    /// The outcome of a finished exchange: who the client is, or why not.
    fn outcome(&self, session: &SessionData, context: &Context) -> Result<String, Refusal> {
        let authid = context.get_ref::<AuthId>().ok_or(Refusal::UnknownUser)?;
        let scram = Self::scram_mechanism(session);
        let user = match scram {
            Some(_) => unescape_saslname(authid).ok_or(Refusal::BadUserName)?,
            None => authid.to_string(),
        };
        if context.get_ref::<AuthzId>().is_some_and(|z| !z.is_empty() && z != user) {
            return Err(Refusal::AuthzidMismatch);
        }
        if scram.is_some() {
            // rsasl validates only after the client's proof verified.
            return Ok(user);
        }
        let password = context.get_ref::<Password>().ok_or(Refusal::WrongPassword)?;
        let credential = [ScramMechanism::Sha512, ScramMechanism::Sha256]
            .into_iter()
            .find_map(|m| self.store.credential(&user, m).map(|c| (m, c)));
        match credential {
            None => Err(Refusal::UnknownUser),
            Some((m, c)) if c.matches_password(m, password) => Ok(user),
            Some(_) => Err(Refusal::WrongPassword),
        }
    }
}

impl SessionCallback for StoreCallback {
    /// SCRAM asks for the user's stored credential; an unknown user gets
    /// none, and rsasl carries on with a made-up salt so the answer does
    /// not tell whether the user exists until the proof fails.
    fn callback(&self, session: &SessionData, context: &Context, request: &mut Request<'_>) -> Result<(), SessionError> {
        let (Some(mechanism), Some(authid)) = (Self::scram_mechanism(session), context.get_ref::<AuthId>()) else {
            return Ok(());
        };
        let Some(user) = unescape_saslname(authid) else { return Ok(()) };
        if let Some(c) = self.store.credential(&user, mechanism) {
            request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(c.iterations, &c.salt, &c.stored_key, &c.server_key))?;
        }
        Ok(())
    }

    fn validate(&self, session: &SessionData, context: &Context, validate: &mut Validate<'_>) -> Result<(), ValidationError> {
        validate.with::<Outcome, _>(|| Ok(self.outcome(session, context)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
