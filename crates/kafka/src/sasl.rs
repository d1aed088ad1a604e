//! SASL on a connection of a SASL_PLAINTEXT or SASL_SSL listener (KIP-43,
//! KIP-152). Until the client authenticated, only ApiVersions, then
//! SaslHandshake, then SaslAuthenticate are served; anything else closes
//! the connection, as Kafka does. SaslHandshake v0 means the client sends
//! bare length-prefixed SASL tokens instead of SaslAuthenticate requests.
//!
//! Bounds while unauthenticated: frames of at most
//! [`MAX_RECEIVE_BYTES`] (Kafka's `sasl.server.max.receive.size`) and
//! [`AUTHENTICATION_TIMEOUT`] to finish. A failed authentication is
//! answered after `connection.failed.authentication.delay.ms`, then closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ferry_auth::{AuthError, Authenticator, SaslExchange, Step};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use tracing::{info, warn};

use crate::codec::encode_response;
use crate::codes::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};
use crate::handlers::{str_bytes, Reply};

/// Kafka's `sasl.server.max.receive.size` default: the largest frame read
/// before a client authenticated.
pub const MAX_RECEIVE_BYTES: usize = 524_288;
/// How long a client has from connecting to finishing authentication.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);


/// A SASL listener's settings, shared by its connections.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    pub authenticator: Arc<Authenticator>,
    /// Kafka's `connection.failed.authentication.delay.ms`.
    pub failed_authentication_delay: Duration,
}

enum State {
    /// Waiting for SaslHandshake (ApiVersions allowed).
    Handshake,
    /// After SaslHandshake v1: SaslAuthenticate requests carry the tokens.
    Authenticate(SaslExchange),
    /// After SaslHandshake v0: bare tokens, no Kafka header.
    RawTokens(SaslExchange),
    Done,
}

/// What the connection does with a frame while the client authenticates.
pub enum Screened {
    /// Not a SASL request, and allowed now: handle it as usual.
    Pass(RequestHeader, Box<RequestKind>),
    /// Send this; go on reading.
    Answer(Reply),
    /// Authenticated as `principal` with `mechanism`; send the answer.
    Authenticated { reply: Reply, principal: String, mechanism: String },
    /// Send the answer (if any), then close after the delay: an answer goes
    /// out at once and the close waits, as in Kafka
    /// (`connection.failed.authentication.delay.ms` delays the close), so a
    /// client reads the error before the connection ends.
    Refuse(Option<Reply>, String, Duration),
}

/// One connection's authentication.
pub struct SaslGate {
    config: SaslConfig,
    state: State,
    deadline: Instant,
    /// The mechanism the client chose (for the log).
    mechanism: String,
}

impl SaslGate {
    pub fn new(config: SaslConfig) -> SaslGate {
        SaslGate { config, state: State::Handshake, deadline: Instant::now() + AUTHENTICATION_TIMEOUT, mechanism: String::new() }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::RawTokens(_))
    }

    /// The largest frame to read now.
    pub fn max_frame(&self, configured: usize) -> usize {
        if self.is_done() { configured } else { configured.min(MAX_RECEIVE_BYTES) }
    }

    /// How long to wait for the next frame: the idle limit, or less while
    /// authentication's deadline runs.
    pub fn read_limit(&self, idle: Duration) -> Duration {
        if self.is_done() { idle } else { idle.min(self.deadline.saturating_duration_since(Instant::now())) }
    }

    /// A decoded request while not yet authenticated.
    pub async fn screen(&mut self, header: RequestHeader, body: RequestKind) -> Screened {
        let api = ApiKey::try_from(header.request_api_key).ok();
        match (&self.state, body) {
            (State::Handshake, RequestKind::ApiVersions(r)) => Screened::Pass(header, Box::new(RequestKind::ApiVersions(r))),
            (State::Handshake, RequestKind::SaslHandshake(r)) => self.handshake(&header, r.mechanism.as_str()),
            (State::Authenticate(_), RequestKind::SaslAuthenticate(r)) => self.authenticate(&header, r.auth_bytes).await,
            _ => Screened::Refuse(None, format!("{api:?} is not expected at this point of SASL authentication"), Duration::ZERO),
        }
    }

    fn handshake(&mut self, header: &RequestHeader, mechanism: &str) -> Screened {
        let enabled = self.config.authenticator.enabled().iter().map(|m| str_bytes(m.name())).collect();
        let answer = |code| {
            let body = SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(enabled);
            encode(ApiKey::SaslHandshake, header, body.into())
        };
        match self.config.authenticator.start(mechanism) {
            Ok(exchange) => {
                self.mechanism = mechanism.to_string();
                self.state = if header.request_api_version == 0 { State::RawTokens(exchange) } else { State::Authenticate(exchange) };
                Screened::Answer(answer(0))
            }
            Err(e) => Screened::Refuse(Some(answer(UNSUPPORTED_SASL_MECHANISM)), e.to_string(), Duration::ZERO),
        }
    }

    /// Runs one step off the runtime (PLAIN costs a PBKDF2). The exchange
    /// goes back in the state only if it continues.
    async fn step(&mut self, token: Bytes) -> Result<Step, AuthError> {
        let raw = self.expects_raw_token();
        let (State::Authenticate(mut exchange) | State::RawTokens(mut exchange)) = std::mem::replace(&mut self.state, State::Done) else {
            return Err(AuthError::Setup("no SASL exchange under way".into()));
        };
        let joined = tokio::task::spawn_blocking(move || {
            let step = exchange.step(&token);
            (exchange, step)
        })
        .await;
        let (exchange, step) = joined.map_err(|e| AuthError::Setup(format!("SASL step failed: {e}")))?;
        if let Ok(Step::Continue(_)) = step {
            self.state = if raw { State::RawTokens(exchange) } else { State::Authenticate(exchange) };
        }
        step
    }

    async fn authenticate(&mut self, header: &RequestHeader, token: Bytes) -> Screened {
        let answer = |code: i16, message: Option<String>, bytes: Vec<u8>| {
            let body = SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
                .with_auth_bytes(Bytes::from(bytes))
                .with_session_lifetime_ms(0);
            encode(ApiKey::SaslAuthenticate, header, body.into())
        };
        match self.step(token).await {
            Ok(Step::Continue(challenge)) => Screened::Answer(answer(0, None, challenge)),
            Ok(Step::Done { user, reply }) => self.authenticated(answer(0, None, reply), &user),
            Err(e) => {
                let code = if matches!(e, AuthError::Setup(_)) { ILLEGAL_SASL_STATE } else { SASL_AUTHENTICATION_FAILED };
                self.log_refusal(&e);
                Screened::Refuse(Some(answer(code, Some(e.to_string()), Vec::new())), e.to_string(), self.config.failed_authentication_delay)
            }
        }
    }

    fn authenticated(&self, reply: Reply, user: &str) -> Screened {
        Screened::Authenticated { reply, principal: format!("User:{user}"), mechanism: self.mechanism.clone() }
    }

    /// A bare token after SaslHandshake v0; the answer is a bare token too.
    pub async fn raw_token(&mut self, token: Bytes) -> Screened {
        let frame = |bytes: &[u8]| {
            let mut buf = BytesMut::with_capacity(4 + bytes.len());
            buf.put_u32(bytes.len() as u32);
            buf.put_slice(bytes);
            Reply::Send(buf.freeze())
        };
        match self.step(token).await {
            Ok(Step::Continue(challenge)) => Screened::Answer(frame(&challenge)),
            Ok(Step::Done { user, reply }) => self.authenticated(frame(&reply), &user),
            // v0 has no way to say why: Kafka closes the connection too.
            Err(e) => {
                self.log_refusal(&e);
                Screened::Refuse(None, e.to_string(), self.config.failed_authentication_delay)
            }
        }
    }

    fn log_refusal(&self, e: &AuthError) {
        match e {
            AuthError::Failed { mechanism, refusal } => info!(%mechanism, ?refusal, "SASL authentication failed"),
            other => warn!(error = %other, "SASL authentication failed"),
        }
    }
}

fn encode(api: ApiKey, header: &RequestHeader, body: ResponseKind) -> Reply {
    match encode_response(api, header.request_api_version, header.correlation_id, &body) {
        Ok(bytes) => Reply::Send(bytes),
        Err(e) => Reply::Close(format!("cannot encode {api:?}: {e}")),
    }
}

/// SaslHandshake or SaslAuthenticate on a connection that needs none (a
/// PLAINTEXT or SSL listener) or already authenticated: ILLEGAL_SASL_STATE,
/// as Kafka answers.
pub fn illegal_state(api: ApiKey) -> ResponseKind {
    match api {
        ApiKey::SaslHandshake => SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE).into(),
        _ => SaslAuthenticateResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .with_error_message(Some(str_bytes("SaslAuthenticate is not expected on this connection now")))
            .into(),
    }
}
