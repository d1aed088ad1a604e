//! Routing: one function per endpoint, each answering a whole body.

use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::Engine;
use ferry_metrics::{Metrics, CONTENT_TYPE};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tracing::warn;

use crate::{scrape, views};

/// What every request can reach.
#[derive(Debug, Clone)]
pub struct State {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
}

pub async fn route<B>(req: Request<B>, state: State) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    match req.uri().path() {
        "/metrics" => metrics(&state).await,
        "/api/topics" => json(&views::topics(&state.engine)),
        "/api/groups" => json(&views::groups(&state.engine)),
        "/api/transactions" => json(&views::transactions(&state.engine).await),
        "/" => body(StatusCode::OK, "text/html; charset=utf-8", Bytes::from_static(CONSOLE.as_bytes())),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint; see /api/topics, /api/groups, /api/transactions, /metrics"),
    }
}

/// The console: one static page that polls the JSON API (no build step,
/// nothing fetched from elsewhere, so it works on an isolated host).
const CONSOLE: &str = include_str!("console.html");

async fn metrics(state: &State) -> Response<Full<Bytes>> {
    match scrape::render(&state.engine, &state.metrics).await {
        Ok(text) => body(StatusCode::OK, CONTENT_TYPE, text.into()),
        Err(e) => {
            warn!(error = %e, "cannot encode metrics");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics")
        }
    }
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => body(StatusCode::OK, "application/json", bytes.into()),
        Err(e) => {
            warn!(error = %e, "cannot encode JSON answer");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the answer")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let text = serde_json::json!({ "error": message }).to_string();
    body(status, "application/json", text.into())
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    resp
}
