//! Authentication for Ferry, with no Kafka dependency: the SASL mechanisms
//! Kafka clients use (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), run by the
//! `rsasl` crate's server state machines, over a durable store of salted,
//! iterated SCRAM credentials (no password is ever kept).
//!
//! - [`mechanism`]: mechanism names, Kafka's SCRAM type codes, the bounds.
//! - [`credential`]: a SCRAM credential and how it is derived and checked.
//! - [`store`]: the user store, `<data-dir>/security/users.json`.
//! - [`exchange`]: one connection's SASL exchange against the store.
//! - [`acl`]: Kafka's ACLs, their store and the authorizer.
//! - [`quota`]: Kafka's client quotas, their store and their sensors.

pub mod acl;
pub mod credential;
pub mod exchange;
pub mod mechanism;
pub mod quota;
pub mod store;

pub use credential::ScramCredential;
pub use exchange::{AuthError, Authenticator, SaslExchange, Step};
pub use mechanism::{SaslMechanism, ScramMechanism};
pub use store::{Change, StoreError, UserStore};
