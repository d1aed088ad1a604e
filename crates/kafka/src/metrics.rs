//! The front end's metric handles: resolved once when the server starts,
//! so a request costs an atomic add (and a produce one histogram sample),
//! never a label lookup.

use std::sync::Arc;

use ferry_metrics::{Counter, Gauge, Histogram, Metrics};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};

use crate::versions::SUPPORTED;

#[derive(Debug)]
pub struct WireMetrics {
    metrics: Arc<Metrics>,
    /// `ferry_requests_total{api}` per served API, indexed by API key.
    requests: Vec<Option<Counter>>,
    connections: Gauge,
    /// `ferry_produce_latency_seconds{acks}` for acks 0, 1 and all.
    produce_latency: [Histogram; 3],
}

impl WireMetrics {
    pub fn new(metrics: Arc<Metrics>) -> WireMetrics {
        let max_key = SUPPORTED.iter().map(|(k, _, _)| *k as i16).max().unwrap_or(0);
        let mut requests = vec![None; max_key as usize + 1];
        for (key, _, _) in SUPPORTED {
            requests[*key as i16 as usize] = Some(metrics.requests(&format!("{key:?}")));
        }
        WireMetrics {
            requests,
            connections: metrics.connections(),
            produce_latency: [metrics.produce_latency("0"), metrics.produce_latency("1"), metrics.produce_latency("all")],
            metrics,
        }
    }

    pub fn count_request(&self, api: ApiKey) {
        if let Some(Some(c)) = self.requests.get(api as i16 as usize) {
            c.inc();
        }
    }

    /// The latency histogram of a produce with these acks (None for an
    /// invalid acks value, which is answered with an error anyway).
    pub fn produce_latency(&self, acks: i16) -> Option<&Histogram> {
        match acks {
            0 => Some(&self.produce_latency[0]),
            1 => Some(&self.produce_latency[1]),
            -1 => Some(&self.produce_latency[2]),
            _ => None,
        }
    }

    /// Marks a connection open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// Counts every error code an answer carries, as Kafka's
    /// `ErrorsPerSec{request,error}` does (one per partition or resource).
    pub fn count_errors(&self, api: ApiKey, body: &ResponseKind) {
        let mut codes: Vec<i16> = Vec::new();
        crate::error_codes::collect(body, &mut |code| {
            if code != 0 {
                codes.push(code);
            }
        });
        if codes.is_empty() {
            return;
        }
        codes.sort_unstable();
        let api = format!("{api:?}");
        for run in codes.chunk_by(|a, b| a == b) {
            self.metrics.count_request_error(&api, error_name(run[0]), run.len() as u64);
        }
    }
}

/// Decrements `ferry_connections` when the connection ends, however it ends.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), as its
/// own metrics and tools print it.
pub fn error_name(code: i16) -> String {
    let Some(e) = ResponseError::try_from_code(code) else { return "NONE".into() };
    if let ResponseError::Unknown(c) = e {
        return format!("UNKNOWN_CODE_{c}");
    }
    let camel = e.to_string();
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-9999), "UNKNOWN_CODE_-9999");
    }
}
