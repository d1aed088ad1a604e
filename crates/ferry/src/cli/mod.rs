//! Client-side subcommands: they talk to a running broker over the Kafka
//! protocol (librdkafka), like Kafka's own tools.

pub mod bench;
pub mod group;
pub mod topic;
mod output;
mod progress;
pub mod records;
pub mod txn;
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
    /// Give up on the broker after this long.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
}

impl ConnectArgs {
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server)
            .set("socket.timeout.ms", self.timeout_ms.to_string())
            .set("log_level", "3");
        c
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
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
