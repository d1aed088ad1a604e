//! Ferry's HTTP endpoint, served by `ferry serve --http-listen HOST:PORT`:
//! `/metrics` (Prometheus), `/api/topics`, `/api/groups`,
//! `/api/transactions` (JSON, documented in the README), and `/`.

mod api;
mod scrape;
mod server;
mod views;

pub use server::{bind, serve, HttpError, HttpListen};
