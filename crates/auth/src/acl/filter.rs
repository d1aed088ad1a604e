//! ACL filters, as DescribeAcls and DeleteAcls carry them (Kafka's
//! `AclBindingFilter`): every field may be ANY (None here), and the
//! pattern type MATCH selects the ACLs that would apply to one resource.

use super::model::{check_len, AclBinding, AclError, Operation, PatternType, Permission, ResourceType, WILDCARD};

/// How a filter's name is compared with an ACL's pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type, the name compared as is.
    Any,
    /// The ACLs that apply to the named resource: LITERAL with that name
    /// or `*`, PREFIXED with a prefix of it.
    Match,
    /// Exactly this pattern type, the name compared as is.
    Exactly(PatternType),
}

impl PatternFilter {
    pub fn from_code(code: i8) -> Result<PatternFilter, AclError> {
        Ok(match PatternType::from_filter_code(code)? {
            None => PatternFilter::Any,
            Some(PatternType::Match) => PatternFilter::Match,
            Some(p) => PatternFilter::Exactly(p),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Matches every ACL.
    pub fn any() -> AclFilter {
        AclFilter { resource_type: None, name: None, pattern: PatternFilter::Any, principal: None, host: None, operation: None, permission: None }
    }

    /// Ferry's bounds on what a client sends.
    pub fn validate(&self) -> Result<(), AclError> {
        for (what, field) in [("resource name", &self.name), ("principal", &self.principal), ("host", &self.host)] {
            if let Some(s) = field {
                check_len(what, s)?;
            }
        }
        Ok(())
    }

    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.matches_name(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }

    fn matches_name(&self, acl: &AclBinding) -> bool {
        match self.pattern {
            PatternFilter::Exactly(p) if p != acl.pattern_type => return false,
            _ => {}
        }
        let Some(name) = &self.name else { return true };
        match self.pattern {
            PatternFilter::Any | PatternFilter::Exactly(_) => *name == acl.name,
            PatternFilter::Match => match acl.pattern_type {
                PatternType::Literal => *name == acl.name || acl.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&acl.name),
                PatternType::Match => false,
            },
        }
    }
}
