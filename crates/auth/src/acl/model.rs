//! The ACL model with Kafka's wire codes (`ResourceType`, `PatternType`,
//! `AclOperation`, `AclPermissionType` in Kafka's clients jar) and names.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Most ACLs a broker keeps (each request's check walks only the ACLs of
/// its resource, but the file is rewritten on every change).
pub const MAX_ACLS: usize = 10_000;
/// Longest principal, host or resource name accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;
/// The only name of the CLUSTER resource, as in Kafka.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL name that matches every resource of its type.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Why an ACL or a filter is refused (Kafka answers INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown {what} code {code}")]
    UnknownCode { what: &'static str, code: i8 },
    #[error("{0} may not be ANY in an ACL")]
    AnyInBinding(&'static str),
    #[error("resource type {0} is not supported by Ferry")]
    UnsupportedResource(&'static str),
    #[error("pattern type {0} is not valid here")]
    PatternType(&'static str),
    #[error("the resource name must not be empty")]
    EmptyName,
    #[error("the only valid name for the CLUSTER resource is {CLUSTER_NAME}")]
    ClusterName,
    #[error("principal `{0}` is not TYPE:NAME (e.g. User:alice)")]
    Principal(String),
    #[error("host `{0}` is neither * nor an IP address")]
    Host(String),
    #[error("a {0} is longer than {MAX_FIELD_BYTES} bytes")]
    TooLong(&'static str),
    #[error("the broker holds {MAX_ACLS} ACLs, the most it may")]
    TooMany,
    #[error("unknown {what} `{name}`")]
    UnknownName { what: &'static str, name: String },
}

/// Defines an enum of Kafka codes, with ANY (1) kept out of the enum:
/// filters hold `Option<T>`, None being ANY.
macro_rules! kafka_enum {
    ($name:ident, $what:literal, { $($variant:ident = $code:literal, $label:literal;)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }

            /// The code of a filter field: 1 is ANY (None).
            pub fn from_filter_code(code: i8) -> Result<Option<$name>, AclError> {
                if code == 1 {
                    return Ok(None);
                }
                Self::from_code(code).map(Some)
            }

            /// The code of an ACL field: ANY and unknown codes are refused.
            pub fn from_code(code: i8) -> Result<$name, AclError> {
                if code == 1 {
                    return Err(AclError::AnyInBinding($what));
                }
                Self::ALL_VALUES.iter().copied().find(|v| v.code() == code).ok_or(AclError::UnknownCode { what: $what, code })
            }
        }

        impl std::str::FromStr for $name {
            type Err = AclError;
            /// Kafka's names in any case, with or without underscores
            /// (`IDEMPOTENT_WRITE`, kafka-acls.sh's `IdempotentWrite`).
            fn from_str(s: &str) -> Result<$name, AclError> {
                let norm = |x: &str| x.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_uppercase();
                let want = norm(s);
                Self::ALL_VALUES.iter().copied().find(|v| norm(v.name()) == want)
                    .ok_or_else(|| AclError::UnknownName { what: $what, name: s.to_string() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(ResourceType, "resource type", {
    Topic = 2, "TOPIC";
    Group = 3, "GROUP";
    Cluster = 4, "CLUSTER";
    TransactionalId = 5, "TRANSACTIONAL_ID";
    DelegationToken = 6, "DELEGATION_TOKEN";
    User = 7, "USER";
});

kafka_enum!(PatternType, "pattern type", {
    Match = 2, "MATCH";
    Literal = 3, "LITERAL";
    Prefixed = 4, "PREFIXED";
});

kafka_enum!(Operation, "operation", {
    All = 2, "ALL";
    Read = 3, "READ";
    Write = 4, "WRITE";
    Create = 5, "CREATE";
    Delete = 6, "DELETE";
    Alter = 7, "ALTER";
    Describe = 8, "DESCRIBE";
    ClusterAction = 9, "CLUSTER_ACTION";
    DescribeConfigs = 10, "DESCRIBE_CONFIGS";
    AlterConfigs = 11, "ALTER_CONFIGS";
    IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    CreateTokens = 13, "CREATE_TOKENS";
    DescribeTokens = 14, "DESCRIBE_TOKENS";
});

kafka_enum!(Permission, "permission type", {
    Deny = 2, "DENY";
    Allow = 3, "ALLOW";
});

impl Operation {
    /// Whether an ALLOW of `self` allows `wanted` (Kafka's implied operations).
    pub fn allows(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY of `self` denies `wanted`: no implications.
    pub fn denies(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted
    }
}

/// One ACL: who (principal, host) may or may not do what (operation) to
/// which resources (type, pattern type, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Kafka's checks on a new ACL, plus Ferry's bounds.
    pub fn validate(&self) -> Result<(), AclError> {
        match self.resource_type {
            ResourceType::DelegationToken => return Err(AclError::UnsupportedResource("DELEGATION_TOKEN")),
            ResourceType::User => return Err(AclError::UnsupportedResource("USER")),
            _ => {}
        }
        if self.pattern_type == PatternType::Match {
            return Err(AclError::PatternType("MATCH"));
        }
        if self.name.is_empty() {
            return Err(AclError::EmptyName);
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(AclError::ClusterName);
        }
        check_principal(&self.principal)?;
        check_host(&self.host)?;
        check_len("resource name", &self.name)
    }

    /// Whether this ACL's resource pattern covers the resource `name`.
    pub fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
                PatternType::Match => false,
            }
    }
}

pub(crate) fn check_len(what: &'static str, s: &str) -> Result<(), AclError> {
    if s.len() > MAX_FIELD_BYTES {
        return Err(AclError::TooLong(what));
    }
    Ok(())
}

/// `TYPE:NAME` with a non-empty type, as Kafka's `SecurityUtils.parseKafkaPrincipal`.
pub(crate) fn check_principal(p: &str) -> Result<(), AclError> {
    check_len("principal", p)?;
    match p.split_once(':') {
        Some((kind, _)) if !kind.is_empty() => Ok(()),
        _ => Err(AclError::Principal(p.to_string())),
    }
}

pub(crate) fn check_host(h: &str) -> Result<(), AclError> {
    if h == "*" || h.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    Err(AclError::Host(h.chars().take(64).collect()))
}

impl fmt::Display for AclBinding {
    /// kafka-acls.sh's wording.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(resource={}:{}:{}, principal={}, host={}, operation={}, permission={})",
            self.resource_type, self.pattern_type, self.name, self.principal, self.host, self.operation, self.permission
        )
    }
}
