//! Ferry's HTTP endpoint, served by `ferry serve --http-listen HOST:PORT`:
//! `/metrics` (Prometheus), `/api/topics`, `/api/groups`,
//! `/api/transactions` (with `POST /api/transactions/{id}/abort`),
//! `/api/cluster`, `/api/fsync` (JSON, documented in the README), and the
//! console at `/`. With ACLs on, every path needs a login (`login.rs`).

mod api;
mod login;
mod scrape;
mod server;
mod views;

pub use api::Advertised;
pub use login::ConsoleAuth;
pub use server::{bind, serve, HttpError, HttpListen};
