//! Routing: one function per endpoint, each answering a whole body.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::txn::AbortError;
use ferry_broker::Engine;
use ferry_cluster::Cluster;
use ferry_metrics::{Metrics, CONTENT_TYPE};
use http_body_util::Full;
use ferry_auth::acl::{Operation, ResourceType};
use hyper::header::{HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tracing::{info, warn};

use crate::login::{self, Access, ConsoleAuth, LoginRefused};
use crate::{scrape, views};

/// This broker as Kafka clients reach it (its advertised listener).
#[derive(Debug, Clone)]
pub struct Advertised {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// What every request can reach.
#[derive(Clone)]
pub struct State {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub advertised: Advertised,
    /// The metadata group, on a cluster (`--cluster-voters`).
    pub cluster: Option<Arc<Cluster>>,
    /// Set when ACLs are on: every path needs a login.
    pub auth: Option<ConsoleAuth>,
}

const ENDPOINTS: &str = "no such endpoint; see /api/topics, /api/groups, /api/transactions, /api/cluster, /api/fsync, /metrics";

pub async fn route<B>(req: Request<B>, state: State, peer: SocketAddr) -> Response<Full<Bytes>> {
    let access = match login::access(state.auth.as_ref(), &req, peer).await {
        Ok(access) => access,
        Err(refused) => return login_required(refused),
    };
    if let Some(tid) = abort_target(req.uri().path()) {
        return abort(&req, &state, &access, tid).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    let cluster_wide = matches!(req.uri().path(), "/metrics" | "/api/cluster" | "/api/fsync");
    if cluster_wide && !access.may_describe_cluster() {
        return error(StatusCode::FORBIDDEN, "DESCRIBE on the cluster is not allowed");
    }
    match req.uri().path() {
        "/metrics" => metrics(&state).await,
        "/api/topics" => {
            let mut topics = views::topics(&state.engine, &state.metrics);
            topics.retain(|t| access.may_describe(ResourceType::Topic, &t.name));
            json(&topics)
        }
        "/api/groups" => {
            let mut groups = views::groups(&state.engine);
            groups.retain(|g| access.may_describe(ResourceType::Group, &g.group_id));
            json(&groups)
        }
        "/api/transactions" => {
            let mut txns = views::transactions(&state.engine).await;
            txns.retain(|t| access.may_describe(ResourceType::TransactionalId, &t.transactional_id));
            json(&txns)
        }
        "/api/cluster" => json(&views::cluster(&state.engine, &state.advertised, state.cluster.as_deref())),
        "/api/fsync" => fsync(&state),
        "/" => body(StatusCode::OK, "text/html; charset=utf-8", Bytes::from_static(CONSOLE.as_bytes())),
        "/console.js" => body(StatusCode::OK, "text/javascript; charset=utf-8", Bytes::from_static(CONSOLE_JS.as_bytes())),
        "/console.css" => body(StatusCode::OK, "text/css; charset=utf-8", Bytes::from_static(CONSOLE_CSS.as_bytes())),
        _ => error(StatusCode::NOT_FOUND, ENDPOINTS),
    }
}

/// The console: static files built into the binary, polling the JSON API
/// (no build step, nothing fetched from elsewhere: it works on an isolated
/// host).
const CONSOLE: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// `/api/transactions/{id}/abort` → the still percent-encoded id.
fn abort_target(path: &str) -> Option<&str> {
    path.strip_prefix("/api/transactions/")?.strip_suffix("/abort").filter(|id| !id.is_empty())
}

/// Aborts an ongoing transaction as its timeout would: the producer is
/// fenced, ABORT markers are written, the LSO moves.
/// With ACLs on it takes WRITE on the transactional id: the right that lets
/// a producer fence the id's previous producer (InitProducerId).
async fn abort<B>(req: &Request<B>, state: &State, access: &Access, encoded_id: &str) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST to abort a transaction");
    }
    if !same_origin(req) {
        return error(StatusCode::FORBIDDEN, "cross-origin requests may not abort transactions");
    }
    let Some(tid) = percent_decode(encoded_id) else {
        return error(StatusCode::BAD_REQUEST, "the transactional id is not valid percent-encoded UTF-8");
    };
    if !access.may(Operation::Write, ResourceType::TransactionalId, &tid) {
        return error(StatusCode::FORBIDDEN, "WRITE on the transactional id is not allowed");
    }
    match state.engine.txns.abort(&state.engine, &tid).await {
        Ok(meta) => {
            info!(transactional_id = %tid, "transaction aborted over HTTP");
            json(&views::txn_view(&state.engine, meta, ferry_broker::now_ms()))
        }
        Err(e @ AbortError::Unknown(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ AbortError::NotOngoing(..)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ AbortError::Txn(_)) => {
            warn!(transactional_id = %tid, error = %e, "abort over HTTP failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// Without ACLs there is no login, and with them a browser resends Basic
/// credentials to this host on its own, so a page on another site must not
/// be able to make an operator's browser abort transactions: a browser
/// sends Origin on every cross-site POST, and it must name this host. curl
/// and scripts send none.
fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else { return true };
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok().and_then(|o| o.split_once("://")), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// `%2F` → `/` and so on; None on a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn fsync(state: &State) -> Response<Full<Bytes>> {
    match state.metrics.fsync_snapshot() {
        Ok(snapshot) => json(&snapshot),
        Err(e) => {
            warn!(error = %e, "cannot read the fsync histogram");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the fsync histogram")
        }
    }
}

async fn metrics(state: &State) -> Response<Full<Bytes>> {
    match scrape::render(&state.engine, &state.metrics, state.cluster.as_deref()).await {
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

/// 401 with a Basic challenge: the browser asks for a user and password.
fn login_required(refused: LoginRefused) -> Response<Full<Bytes>> {
    let message = match refused {
        LoginRefused::Missing => "log in with a user of the broker's SASL user store",
        LoginRefused::Invalid => "unknown user or wrong password",
    };
    let mut resp = error(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Ferry console\", charset=\"UTF-8\""));
    resp
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_paths_and_ids() {
        assert_eq!(abort_target("/api/transactions/pay%2F1/abort"), Some("pay%2F1"));
        assert_eq!(abort_target("/api/transactions//abort"), None);
        assert_eq!(abort_target("/api/transactions"), None);
        assert_eq!(percent_decode("pay%2F1%20x").as_deref(), Some("pay/1 x"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn cross_origin_posts_are_refused() {
        let req = |origin: Option<&str>| {
            let mut b = Request::post("/api/transactions/t/abort").header(HOST, "127.0.0.1:9644");
            if let Some(o) = origin {
                b = b.header(ORIGIN, o);
            }
            b.body(()).expect("request")
        };
        assert!(same_origin(&req(None)), "curl sends no Origin");
        assert!(same_origin(&req(Some("http://127.0.0.1:9644"))));
        assert!(!same_origin(&req(Some("https://evil.example"))));
        assert!(!same_origin(&req(Some("null"))));
    }
}
