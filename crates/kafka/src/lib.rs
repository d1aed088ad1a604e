//! The Kafka wire protocol front end: framing, version negotiation, and one
//! handler module per API family, translating requests into engine calls and
//! engine errors into Kafka error codes.

pub mod alloc;
pub mod acl;
mod authorized;
pub mod client;
pub mod codec;
mod cluster;
pub mod codes;
mod connection;
mod error_codes;
mod handlers;
pub mod ip_limit;
pub mod listener;
pub mod metrics;
pub mod quota;
pub mod sasl;
pub mod security_replica;
mod server;
pub mod tls;
pub mod versions;

pub use handlers::markers::route_markers;
pub use server::{serve, serve_listeners, Context, Listener, ServerConfig, Transport};
