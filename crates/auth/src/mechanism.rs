//! The SASL mechanisms Ferry serves, with Kafka's names and type codes.

use std::fmt;
use std::str::FromStr;

/// Kafka's bounds on SCRAM iterations (`ScramMechanism` min and max).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// A SCRAM hash, as in `kafka-configs.sh --add-config 'SCRAM-SHA-512=[...]'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The `mechanism` byte of Alter/DescribeUserScramCredentials.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// Bytes of the hash, hence of the salted password and both keys.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SASL mechanism `{0}` (expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")]
pub struct UnknownMechanism(pub String);

impl FromStr for ScramMechanism {
    type Err = UnknownMechanism;

    fn from_str(s: &str) -> Result<Self, UnknownMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMechanism(s.to_string()))
    }
}

/// A mechanism a SASL listener can offer (Kafka: `sasl.enabled.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// The password in the clear (use it over SASL_SSL only), checked
    /// against the user's SCRAM credential.
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = UnknownMechanism;

    /// Exact names, as Kafka matches them (mechanism names are case-sensitive).
    fn from_str(s: &str) -> Result<Self, UnknownMechanism> {
        if s == "PLAIN" {
            return Ok(SaslMechanism::Plain);
        }
        s.parse().map(SaslMechanism::Scram)
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a comma-separated list such as `PLAIN,SCRAM-SHA-512`; duplicates are dropped.
pub fn parse_mechanisms(list: &str) -> Result<Vec<SaslMechanism>, UnknownMechanism> {
    let mut out: Vec<SaslMechanism> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let m = name.parse()?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_type_codes_are_kafkas() {
        assert_eq!(parse_mechanisms(" PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,PLAIN").expect("parses").len(), 3);
        assert!(parse_mechanisms("GSSAPI").is_err());
        assert!(parse_mechanisms("scram-sha-512").is_err(), "case-sensitive, as Kafka");
        assert_eq!(ScramMechanism::from_kafka_type(2), Some(ScramMechanism::Sha512));
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
    }
}
