//! Ferry's Prometheus metrics.
//!
//! One [`Metrics`] per broker holds every series counted on the hot path.
//! Callers resolve a handle once (per topic's partition, per API, per acks
//! level) and keep it: a handle is an `Arc` around an atomic, so counting
//! is one atomic add, never a label lookup. Series that describe state
//! (consumer lag, open transactions) are not kept here: the HTTP server
//! computes them from the engine at scrape time into a [`Registry`] of its
//! own and passes it to [`Metrics::encode`].

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;
pub use prometheus_client::registry::{Registry, Unit};

/// Every series name starts with this (`ferry_records_in_total`, ...).
pub const PREFIX: &str = "ferry";

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcksLabels {
    pub acks: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub api: String,
    pub error: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Latency buckets from 100 µs to about 6.5 s (doubling): an fsync or an
/// `acks=all` produce on a fast disk takes well under a millisecond, on a
/// busy cloud volume tens of milliseconds, and anything past seconds is an
/// outage whichever bucket it lands in.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The counters of one topic, shared by its partitions.
#[derive(Clone, Debug)]
pub struct TopicMetrics {
    pub records_in: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Not per topic: every partition's fsyncs land in the one histogram.
    pub fsync_duration: Histogram,
}

/// The broker's registry and the families behind the hot-path handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    records_in: Family<TopicLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    fsync_duration: Histogram,
    produce_latency: HistogramFamily<AcksLabels>,
    connections: Gauge,
    requests: Family<ApiLabels, Counter>,
    request_errors: Family<ApiErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            records_in: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            fsync_duration: latency_histogram(),
            produce_latency: Family::new_with_constructor(latency_histogram),
            connections: Gauge::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("records_in", "Records appended, by topic (retries answered from producer state not counted)", m.records_in.clone());
        registry.register("bytes_in", "Record batch bytes appended, by topic", m.bytes_in.clone());
        registry.register("bytes_out", "Record batch bytes sent to fetching clients, by topic", m.bytes_out.clone());
        registry.register_with_unit("fsync_duration", "Time one log fsync (a group commit) took", Unit::Seconds, m.fsync_duration.clone());
        registry.register_with_unit(
            "produce_latency",
            "Produce request to answer (acks=0: to the end of handling), by acks",
            Unit::Seconds,
            m.produce_latency.clone(),
        );
        registry.register("connections", "Open Kafka client connections", m.connections.clone());
        registry.register("requests", "Kafka requests handled, by API", m.requests.clone());
        registry.register("request_errors", "Error codes in Kafka answers, by API and error (one per partition or resource)", m.request_errors.clone());
        Metrics { registry, ..m }
    }

    /// The handles of one topic's counters; call once per partition.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        let labels = TopicLabels { topic: topic.to_string() };
        TopicMetrics {
            records_in: self.records_in.get_or_create_owned(&labels),
            bytes_in: self.bytes_in.get_or_create_owned(&labels),
            bytes_out: self.bytes_out.get_or_create_owned(&labels),
            fsync_duration: self.fsync_duration.clone(),
        }
    }

    /// Drops a deleted topic's series (a topic created again under the
    /// name starts from zero, which Prometheus reads as a counter reset).
    pub fn remove_topic(&self, topic: &str) {
        let labels = TopicLabels { topic: topic.to_string() };
        self.records_in.remove(&labels);
        self.bytes_in.remove(&labels);
        self.bytes_out.remove(&labels);
    }

    /// `acks` is "0", "1" or "all".
    pub fn produce_latency(&self, acks: &'static str) -> Histogram {
        self.produce_latency.get_or_create_owned(&AcksLabels { acks })
    }

    pub fn connections(&self) -> Gauge {
        self.connections.clone()
    }

    /// `api` is Kafka's name of the API (`Produce`, `OffsetCommit`).
    pub fn requests(&self, api: &str) -> Counter {
        self.requests.get_or_create_owned(&ApiLabels { api: api.to_string() })
    }

    /// Errors are rare: a family lookup per error is fine.
    pub fn count_request_error(&self, api: &str, error: String, count: u64) {
        self.request_errors.get_or_create(&ApiErrorLabels { api: api.to_string(), error }).inc_by(count);
    }

    /// A topic's counters so far (the console computes rates from two of
    /// these); None before the topic counted anything.
    pub fn topic_counts(&self, topic: &str) -> Option<TopicCounts> {
        let labels = TopicLabels { topic: topic.to_string() };
        Some(TopicCounts {
            records_in: self.records_in.get(&labels)?.get(),
            bytes_in: self.bytes_in.get(&labels).map_or(0, |c| c.get()),
            bytes_out: self.bytes_out.get(&labels).map_or(0, |c| c.get()),
        })
    }

    /// The fsync histogram's cumulative buckets, count and sum.
    pub fn fsync_snapshot(&self) -> Result<HistogramSnapshot, fmt::Error> {
        histogram_snapshot(&self.fsync_duration)
    }

    /// The exposition: this registry, then `scraped` (series computed at
    /// scrape time, registered under [`PREFIX`] by the caller), then EOF.
    pub fn encode(&self, scraped: &Registry) -> Result<String, fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(8 * 1024);
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, scraped)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Counter values of one topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TopicCounts {
    pub records_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One histogram at one instant, Prometheus-style: `buckets` are
/// cumulative (`count` observations were at most `le` seconds), the last
/// one `le: null` (+Inf).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    pub buckets: Vec<Bucket>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Upper bound in seconds; None is +Inf.
    pub le: Option<f64>,
    pub count: u64,
}

/// prometheus-client keeps bucket counts private: encode the histogram
/// alone and read its `_bucket` lines back (a few hundred bytes, on a
/// console poll, never on the hot path).
fn histogram_snapshot(h: &Histogram) -> Result<HistogramSnapshot, fmt::Error> {
    let mut registry = Registry::default();
    registry.register("h", "", h.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode_registry(&mut text, &registry)?;
    let buckets = text.lines().filter_map(bucket_line).collect();
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse::<f64>().ok());
    let count = value("h_count").unwrap_or(0.0) as u64;
    Ok(HistogramSnapshot { buckets, count, sum: value("h_sum").unwrap_or(0.0) })
}

/// `h_bucket{le="0.0002"} 7` → Bucket; anything else → None.
fn bucket_line(line: &str) -> Option<Bucket> {
    let rest = line.strip_prefix("h_bucket{le=\"")?;
    let (le, rest) = rest.split_once("\"} ")?;
    let count = rest.split_whitespace().next()?.parse().ok()?;
    let le = if le == "+Inf" { None } else { Some(le.parse().ok()?) };
    Some(Bucket { le, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_the_registered_series() {
        let m = Metrics::new();
        let a = m.topic("orders");
        let b = m.topic("orders");
        a.records_in.inc_by(3);
        b.records_in.inc_by(2);
        a.bytes_in.inc_by(100);
        m.requests("Produce").inc();
        m.produce_latency("all").observe(0.002);
        m.count_request_error("Produce", "NOT_LEADER_OR_FOLLOWER".into(), 2);
        let text = m.encode(&Registry::with_prefix(PREFIX)).expect("encode");
        assert!(text.contains("ferry_records_in_total{topic=\"orders\"} 5\n"), "{text}");
        assert!(text.contains("ferry_bytes_in_total{topic=\"orders\"} 100\n"), "{text}");
        assert!(text.contains("ferry_requests_total{api=\"Produce\"} 1\n"), "{text}");
        assert!(text.contains("ferry_produce_latency_seconds_count{acks=\"all\"} 1\n"), "{text}");
        assert!(text.contains("ferry_request_errors_total{api=\"Produce\",error=\"NOT_LEADER_OR_FOLLOWER\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE ferry_fsync_duration_seconds histogram\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(m.topic_counts("orders"), Some(TopicCounts { records_in: 5, bytes_in: 100, bytes_out: 0 }));
        assert_eq!(m.topic_counts("other"), None);
        m.remove_topic("orders");
        let text = m.encode(&Registry::default()).expect("encode");
        assert!(!text.contains("topic=\"orders\""), "{text}");
    }

    #[test]
    fn fsync_snapshot_reads_the_buckets() {
        let m = Metrics::new();
        let h = m.topic("t").fsync_duration;
        h.observe(0.00015);
        h.observe(0.003);
        h.observe(100.0);
        let s = m.fsync_snapshot().expect("snapshot");
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), 18, "17 bounds and +Inf");
        assert_eq!(s.buckets[0], Bucket { le: Some(0.0001), count: 0 });
        assert_eq!(s.buckets[1], Bucket { le: Some(0.0002), count: 1 });
        assert_eq!(s.buckets[16].count, 2);
        assert_eq!(s.buckets[17], Bucket { le: None, count: 3 });
    }
}
