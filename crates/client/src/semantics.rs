//! Delivery-semantics presets: one choice configures producer and consumer
//! coherently (DESIGN §1), and every setting stays overridable.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

/// The delivery promise a producer/consumer pair keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Semantics {
    /// Nothing is sent twice or processed twice; a message may be lost.
    /// Producer: `acks=0`, no retries (the broker sends no response).
    /// Consumer: commits an offset before processing the message.
    AtMostOnce,
    /// Nothing acknowledged is lost; a message may be processed twice.
    /// Producer: `acks=all` (the broker answers after fsync), retries.
    /// Consumer: processes, then commits.
    AtLeastOnce,
    /// Each message's effect happens once. Producer: idempotent and
    /// transactional (`transactional.id`). Consumer: `read_committed`,
    /// offsets committed inside the producer's transaction.
    ExactlyOnce,
}

/// When a consumer commits its offsets relative to processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTiming {
    BeforeProcessing,
    AfterProcessing,
    /// With the output, in the producer's transaction (`send_offsets_to_transaction`).
    InTransaction,
}

impl Semantics {
    pub fn commit_timing(self) -> CommitTiming {
        match self {
            Semantics::AtMostOnce => CommitTiming::BeforeProcessing,
            Semantics::AtLeastOnce => CommitTiming::AfterProcessing,
            Semantics::ExactlyOnce => CommitTiming::InTransaction,
        }
    }

    /// The name used by the CLI (`--semantics`), `ferry verify` and the docs.
    pub fn name(self) -> &'static str {
        match self {
            Semantics::AtMostOnce => "at-most-once",
            Semantics::AtLeastOnce => "at-least-once",
            Semantics::ExactlyOnce => "exactly-once",
        }
    }

    /// The producer settings this semantics stands for (librdkafka names).
    pub fn producer_settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Semantics::AtMostOnce => &[
                ("acks", "0"),
                ("message.send.max.retries", "0"),
                ("enable.idempotence", "false"),
            ],
            Semantics::AtLeastOnce => &[
                ("acks", "all"),
                ("message.send.max.retries", "2147483647"),
                ("retry.backoff.ms", "100"),
                // Retries may duplicate; that is this promise. Idempotence
                // (which removes them) is the exactly-once preset's.
                ("enable.idempotence", "false"),
            ],
            Semantics::ExactlyOnce => &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("max.in.flight.requests.per.connection", "5"),
            ],
        }
    }

    /// The consumer settings this semantics stands for (librdkafka names).
    /// Commits are never automatic: the preset's [`CommitTiming`] decides them.
    pub fn consumer_settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Semantics::AtMostOnce | Semantics::AtLeastOnce => &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_uncommitted"),
            ],
            Semantics::ExactlyOnce => &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
            ],
        }
    }
}

impl fmt::Display for Semantics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Semantics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at-most-once" => Ok(Semantics::AtMostOnce),
            "at-least-once" => Ok(Semantics::AtLeastOnce),
            "exactly-once" => Ok(Semantics::ExactlyOnce),
            other => Err(format!("unknown semantics '{other}' (at-most-once, at-least-once, exactly-once)")),
        }
    }
}

/// A semantics plus the settings that are the user's: the bootstrap address,
/// the transactional.id, and overrides. Overrides win over the preset.
#[derive(Debug, Clone)]
pub struct Preset {
    semantics: Semantics,
    bootstrap_servers: String,
    transactional_id: Option<String>,
    common: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
    consumer: BTreeMap<String, String>,
}

impl Preset {
    pub fn new(semantics: Semantics, bootstrap_servers: impl Into<String>) -> Preset {
        Preset {
            semantics,
            bootstrap_servers: bootstrap_servers.into(),
            transactional_id: None,
            common: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }

    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    /// Required for [`Semantics::ExactlyOnce`] producers: one id per logical
    /// producer instance, stable across restarts (a restart fences the old one).
    pub fn transactional_id(mut self, id: impl Into<String>) -> Preset {
        self.transactional_id = Some(id.into());
        self
    }

    /// Overrides a setting for both producer and consumer.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Preset {
        self.common.insert(key.to_string(), value.into());
        self
    }

    pub fn producer_set(mut self, key: &str, value: impl Into<String>) -> Preset {
        self.producer.insert(key.to_string(), value.into());
        self
    }

    pub fn consumer_set(mut self, key: &str, value: impl Into<String>) -> Preset {
        self.consumer.insert(key.to_string(), value.into());
        self
    }

    /// The producer's configuration. An exactly-once preset without a
    /// transactional.id gives an idempotent (not transactional) producer.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in self.semantics.producer_settings() {
            config.set(*key, *value);
        }
        if let (Semantics::ExactlyOnce, Some(id)) = (self.semantics, &self.transactional_id) {
            config.set("transactional.id", id);
        }
        for (key, value) in self.common.iter().chain(&self.producer) {
            config.set(key, value);
        }
        config
    }

    /// The consumer's configuration for group `group_id`; a new group starts
    /// at the earliest offset.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("group.id", group_id);
        config.set("auto.offset.reset", "earliest");
        for (key, value) in self.semantics.consumer_settings() {
            config.set(*key, *value);
        }
        for (key, value) in self.common.iter().chain(&self.consumer) {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_coherent_and_overridable() {
        let amo = Preset::new(Semantics::AtMostOnce, "h:1");
        assert_eq!(amo.producer_config().get("acks"), Some("0"));
        assert_eq!(amo.producer_config().get("message.send.max.retries"), Some("0"));
        assert_eq!(Semantics::AtMostOnce.commit_timing(), CommitTiming::BeforeProcessing);

        let alo = Preset::new(Semantics::AtLeastOnce, "h:1").producer_set("linger.ms", "20");
        let producer = alo.producer_config();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(alo.consumer_config("g").get("enable.auto.commit"), Some("false"));
        assert_eq!(alo.consumer_config("g").get("linger.ms"), None);

        let eos = Preset::new(Semantics::ExactlyOnce, "h:1").transactional_id("t1").set("client.id", "c");
        let producer = eos.producer_config();
        assert_eq!(producer.get("transactional.id"), Some("t1"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("client.id"), Some("c"));
        let consumer = eos.consumer_config("g");
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("transactional.id"), None);
        // A transactional.id only means something to exactly-once producers.
        let alo_with_id = Preset::new(Semantics::AtLeastOnce, "h:1").transactional_id("t1");
        assert_eq!(alo_with_id.producer_config().get("transactional.id"), None);
    }

    #[test]
    fn names_round_trip() {
        for s in [Semantics::AtMostOnce, Semantics::AtLeastOnce, Semantics::ExactlyOnce] {
            assert_eq!(s.name().parse::<Semantics>(), Ok(s));
        }
        assert!("exactly_once".parse::<Semantics>().is_err());
    }
}
