//! Client-side subcommands: they talk to a running broker over the Kafka
//! protocol (librdkafka), like Kafka's own tools.

pub mod acl;
pub mod bench;
pub mod consume;
pub mod group;
pub mod topic;
mod output;
mod progress;
pub mod records;
pub mod security;
pub mod txn;
pub mod user;
pub mod verify;
mod wire;

use clap::Args;

pub use output::{print_table, OutputFormat};
pub use security::SecurityArgs;

/// Options every client subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// Broker to connect to, as in Kafka's tools.
    #[arg(long, env = "FERRY_BOOTSTRAP_SERVER", default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap_server: String,
    /// Give up on the broker after this long (--timeout-ms is an older name).
    #[arg(long = "request-timeout-ms", alias = "timeout-ms", default_value_t = 10_000, global = true)]
    pub request_timeout_ms: u64,
    /// TLS and SASL settings for a listener other than PLAINTEXT.
    #[command(flatten, next_help_heading = "TLS and SASL")]
    pub security: SecurityArgs,
}

/// [`ConnectArgs`] for `ferry consume`, where --timeout-ms means what it
/// means in kafka-console-consumer.sh (exit when no message arrives).
#[derive(Debug, Args, Clone)]
pub struct ConsumeConnectArgs {
    /// Broker to connect to, as in Kafka's tools.
    #[arg(long, env = "FERRY_BOOTSTRAP_SERVER", default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    /// Give up on the broker after this long.
    #[arg(long = "request-timeout-ms", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    #[command(flatten, next_help_heading = "TLS and SASL")]
    pub security: SecurityArgs,
}

impl From<&ConsumeConnectArgs> for ConnectArgs {
    fn from(c: &ConsumeConnectArgs) -> ConnectArgs {
        ConnectArgs { bootstrap_server: c.bootstrap_server.clone(), request_timeout_ms: c.request_timeout_ms, security: c.security.clone() }
    }
}

impl ConnectArgs {
    /// librdkafka's settings: the broker, the timeout, TLS and SASL.
    pub fn client_config(&self) -> anyhow::Result<rdkafka::ClientConfig> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server)
            .set("socket.timeout.ms", self.request_timeout_ms.to_string())
            .set("log_level", "3");
        self.security.apply(&mut c)?;
        Ok(c)
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// Turns librdkafka's "all brokers down" into advice a person can act on.
    pub fn explain(&self, e: impl std::fmt::Display) -> anyhow::Error {
        let text = e.to_string();
        if text.contains("BrokerTransportFailure") || text.contains("AllBrokersDown") || text.contains("timed out") || text.contains("TimedOut") {
            // Over TLS or SASL a refused login or handshake also looks like
            // a broker that does not answer: ask librdkafka which it was.
            if let Some(refusal) = self.security_refusal() {
                return anyhow::anyhow!("the broker at {} refused the connection: {refusal}", self.bootstrap_server);
            }
            anyhow::anyhow!(
                "cannot reach a broker at {} ({text}). Is one running? Start one with `ferry serve --listen {}`",
                self.bootstrap_server,
                self.bootstrap_server
            )
        } else {
            anyhow::anyhow!(text)
        }
    }

    /// With TLS or SASL settings: why the broker refused the connection, if it did.
    fn security_refusal(&self) -> Option<String> {
        if self.security.protocol().ok()? == ferry_kafka::listener::SecurityProtocol::Plaintext {
            return None;
        }
        security_refusal(&self.client_config().ok()?)
    }
}

/// Connects with `config` once more and returns the authentication or TLS
/// error librdkafka reports, if any (within 3 s), with what to check.
pub fn security_refusal(config: &rdkafka::ClientConfig) -> Option<String> {
    use rdkafka::producer::{BaseProducer, Producer as _};
    use std::time::{Duration, Instant};
    let producer: BaseProducer<ErrorCapture> = config.create_with_context(ErrorCapture::default()).ok()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        producer.poll(Duration::from_millis(100));
        if let Some(found) = producer.context().0.lock().clone() {
            let hint = if found.contains("SASL") || found.contains("uthentication") {
                "check --sasl-mechanism, --sasl-username and --sasl-password"
            } else {
                "check --ssl-ca-location and the listener's protocol"
            };
            return Some(format!("{found} ({hint})"));
        }
        let _ = producer.client().fetch_metadata(None, Duration::from_millis(100));
    }
    None
}

/// Keeps the first authentication or TLS error librdkafka reports.
#[derive(Default)]
struct ErrorCapture(parking_lot::Mutex<Option<String>>);

impl rdkafka::ClientContext for ErrorCapture {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::SSL)) {
            self.0.lock().get_or_insert_with(|| reason.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for ErrorCapture {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}
