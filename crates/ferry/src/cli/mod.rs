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
pub mod txn;
pub mod user;
pub mod verify;
mod wire;

use clap::Args;

pub use output::{print_table, OutputFormat};

/// Options every client subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// Broker to connect to, as in Kafka's tools.
    #[arg(long, env = "FERRY_BOOTSTRAP_SERVER", default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap_server: String,
    /// Give up on the broker after this long (--timeout-ms is an older name).
    #[arg(long = "request-timeout-ms", alias = "timeout-ms", default_value_t = 10_000, global = true)]
    pub request_timeout_ms: u64,
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
}

impl From<&ConsumeConnectArgs> for ConnectArgs {
    fn from(c: &ConsumeConnectArgs) -> ConnectArgs {
        ConnectArgs { bootstrap_server: c.bootstrap_server.clone(), request_timeout_ms: c.request_timeout_ms }
    }
}

impl ConnectArgs {
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server)
            .set("socket.timeout.ms", self.request_timeout_ms.to_string())
            .set("log_level", "3");
        c
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// Turns librdkafka's "all brokers down" into advice a person can act on.
    pub fn explain(&self, e: impl std::fmt::Display) -> anyhow::Error {
        let text = e.to_string();
        if text.contains("BrokerTransportFailure") || text.contains("AllBrokersDown") || text.contains("timed out") || text.contains("TimedOut") {
            anyhow::anyhow!(
                "cannot reach a broker at {} ({text}). Is one running? Start one with `ferry serve --listen {}`",
                self.bootstrap_server,
                self.bootstrap_server
            )
        } else {
            anyhow::anyhow!(text)
        }
    }
}
