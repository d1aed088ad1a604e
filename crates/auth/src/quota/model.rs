//! Kafka's client quota model: the entities a quota is set on (user,
//! client id, both, each possibly `<default>`), the quota keys with their
//! Kafka names and types, and the checks AlterClientQuotas makes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// At most this many entities carry quotas: the configuration is held in
/// memory and rewritten whole on every change.
pub const MAX_ENTITIES: usize = 10_000;
/// The longest user name or client id an entity may name, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;

/// Kafka's entity type names.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// One part of an entity: a name, or `<default>` (null on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// From the wire: null is the default entity.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityName::Default => f.write_str("<default>"),
            EntityName::Named(n) => f.write_str(n),
        }
    }
}

/// What a quota is set on: a user, a client id, or a user's client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    pub fn new(user: Option<EntityName>, client_id: Option<EntityName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    /// Kafka's `/config/users/<user>/clients/<client-id>` path, for messages.
    pub fn path(&self) -> String {
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => format!("users/{u}/clients/{c}"),
            (Some(u), None) => format!("users/{u}"),
            (None, Some(c)) => format!("clients/{c}"),
            (None, None) => "(empty)".to_string(),
        }
    }

    /// From the wire's (entity type, name) pairs, null names the default.
    pub fn from_parts<'a>(parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Result<QuotaEntity, QuotaError> {
        let mut e = QuotaEntity::new(None, None);
        let mut ip = false;
        for (kind, name) in parts {
            let slot = match kind {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                IP if !ip => {
                    ip = true;
                    continue;
                }
                IP => return Err(QuotaError::DuplicateEntityType(kind.to_string())),
                other => return Err(QuotaError::UnknownEntityType(other.to_string())),
            };
            if slot.replace(EntityName::from_wire(name)).is_some() {
                return Err(QuotaError::DuplicateEntityType(kind.to_string()));
            }
        }
        match (ip, &e.user, &e.client_id) {
            (true, None, None) => Err(QuotaError::IpEntity),
            (true, _, _) => Err(QuotaError::EmptyEntity),
            _ => e.validate().map(|()| e),
        }
    }

    /// The bounds a stored entity must keep.
    pub fn validate(&self) -> Result<(), QuotaError> {
        if self.user.is_none() && self.client_id.is_none() {
            return Err(QuotaError::EmptyEntity);
        }
        for (kind, part) in [(USER, &self.user), (CLIENT_ID, &self.client_id)] {
            match part {
                Some(EntityName::Named(n)) if n.is_empty() => return Err(QuotaError::EmptyName(kind)),
                Some(EntityName::Named(n)) if n.len() > MAX_NAME_BYTES => return Err(QuotaError::NameTooLong(kind, n.len())),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The quota keys Kafka defines for users and client ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuotaKey {
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
    #[serde(rename = "request_percentage")]
    RequestPercentage,
    /// Stored and described; not enforced (see the README).
    #[serde(rename = "controller_mutation_rate")]
    ControllerMutationRate,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 4] = [QuotaKey::ProducerByteRate, QuotaKey::ConsumerByteRate, QuotaKey::RequestPercentage, QuotaKey::ControllerMutationRate];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kafka declares the byte rates LONG (whole numbers) and the others DOUBLE.
    fn is_long(self) -> bool {
        matches!(self, QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate)
    }

    /// A value Kafka accepts for this key. Kafka also takes negative
    /// values; they make no sense as a rate, and NaN or infinity cannot be
    /// stored as JSON, so those are refused too.
    pub fn check_value(self, value: f64) -> Result<(), QuotaError> {
        if !value.is_finite() || value < 0.0 {
            return Err(QuotaError::BadValue { key: self.name(), value, reason: "must be a finite number of at least 0" });
        }
        // Kafka's own tolerance for "whole number".
        if self.is_long() && ((value + 1e-6).trunc() - value).abs() > 1e-6 {
            return Err(QuotaError::BadValue { key: self.name(), value, reason: "must be a Long value" });
        }
        Ok(())
    }
}

/// The quotas of one entity.
pub type Values = BTreeMap<QuotaKey, f64>;

/// Why a quota change or filter was refused. Every variant is Kafka's
/// INVALID_REQUEST except where noted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    #[error("Invalid empty client quota entity")]
    EmptyEntity,
    #[error("Invalid empty client quota entity, duplicate entity entry {0}")]
    DuplicateEntityType(String),
    #[error("Unhandled client quota entity type: {0}")]
    UnknownEntityType(String),
    /// Kafka's `ip` entities (connection_creation_rate) are not served.
    #[error("Ferry does not support client quotas on ip entities")]
    IpEntity,
    #[error("Empty {0} not supported")]
    EmptyName(&'static str),
    #[error("{0} name of {1} bytes is longer than {MAX_NAME_BYTES}")]
    NameTooLong(&'static str, usize),
    #[error("Invalid configuration key {0}")]
    UnknownKey(String),
    #[error("Duplicate quota key {0}")]
    DuplicateKey(String),
    #[error("Configuration {key} {reason}, got {value}")]
    BadValue { key: &'static str, value: f64, reason: &'static str },
    #[error("Ignoring duplicate entity {0}")]
    DuplicateEntity(String),
    /// POLICY_VIOLATION: the configuration is bounded.
    #[error("quotas are set on {MAX_ENTITIES} entities already, the most this broker keeps")]
    TooManyEntities,
    #[error("{0}")]
    BadFilter(String),
}
