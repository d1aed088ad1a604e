//! The authorizer: Kafka's decision for one principal, host, operation and
//! resource, over an index of the ACLs that is swapped whole on every
//! change, so a created or deleted ACL applies to the next check.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::filter::AclFilter;
use super::model::{AclBinding, AclError, Operation, PatternType, Permission, ResourceType, MAX_ACLS, WILDCARD, WILDCARD_PRINCIPAL};
use super::store::AclStore;
use crate::store::StoreError;

/// Kafka's `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerConfig {
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

/// Who asks: the connection's principal (`User:alice`, `User:ANONYMOUS`)
/// and the client's IP address as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: String,
    pub host: String,
}

/// A resource type's ACLs, by pattern type and name.
#[derive(Debug, Default)]
struct Patterns {
    literal: HashMap<String, Vec<AclBinding>>,
    prefixed: HashMap<String, Vec<AclBinding>>,
}

#[derive(Debug, Default)]
struct Index {
    by_type: HashMap<ResourceType, Patterns>,
}

impl Index {
    fn build(acls: &BTreeSet<AclBinding>) -> Index {
        let mut index = Index::default();
        for acl in acls {
            let patterns = index.by_type.entry(acl.resource_type).or_default();
            let map = match acl.pattern_type {
                PatternType::Prefixed => &mut patterns.prefixed,
                _ => &mut patterns.literal,
            };
            map.entry(acl.name.clone()).or_default().push(acl.clone());
        }
        index
    }

    /// Every ACL whose pattern covers the resource: LITERAL with its name
    /// or `*`, PREFIXED with any prefix of its name.
    fn covering<'a>(&'a self, rt: ResourceType, name: &str) -> Vec<&'a AclBinding> {
        let Some(p) = self.by_type.get(&rt) else { return Vec::new() };
        let mut out: Vec<&AclBinding> = Vec::new();
        out.extend(p.literal.get(name).into_iter().flatten());
        if name != WILDCARD {
            out.extend(p.literal.get(WILDCARD).into_iter().flatten());
        }
        if !p.prefixed.is_empty() {
            for (i, _) in name.char_indices().skip(1).chain(std::iter::once((name.len(), ' '))) {
                out.extend(p.prefixed.get(&name[..i]).into_iter().flatten());
            }
        }
        out
    }
}

fn applies_to(acl: &AclBinding, s: &Session) -> bool {
    (acl.principal == s.principal || acl.principal == WILDCARD_PRINCIPAL) && (acl.host == "*" || acl.host == s.host)
}

/// The ACLs, durable and indexed, and the decision rules.
#[derive(Debug)]
pub struct Authorizer {
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
    /// None: ACLs kept in memory only (tests).
    store: Option<AclStore>,
    /// The set as written; its lock serializes changes across the file write.
    acls: Mutex<BTreeSet<AclBinding>>,
    index: RwLock<Arc<Index>>,
}

impl Authorizer {
    /// Opens the store under `data_dir/security` and indexes what it holds.
    pub fn open(data_dir: &Path, config: AuthorizerConfig) -> Result<Authorizer, StoreError> {
        let (store, acls) = AclStore::open(data_dir)?;
        Ok(Authorizer::with(Some(store), acls, config))
    }

    /// An authorizer whose ACLs are not written anywhere.
    pub fn in_memory(config: AuthorizerConfig) -> Authorizer {
        Authorizer::with(None, BTreeSet::new(), config)
    }

    fn with(store: Option<AclStore>, acls: BTreeSet<AclBinding>, config: AuthorizerConfig) -> Authorizer {
        let index = RwLock::new(Arc::new(Index::build(&acls)));
        let super_users = config.super_users.into_iter().collect();
        Authorizer { super_users, allow_if_no_acl: config.allow_everyone_if_no_acl_found, store, acls: Mutex::new(acls), index }
    }

    pub fn is_super_user(&self, s: &Session) -> bool {
        self.super_users.contains(&s.principal)
    }

    /// Kafka's decision: super user; else no ACL on the resource at all →
    /// `allow.everyone.if.no.acl.found`; else a matching DENY refuses; else
    /// a matching ALLOW (with implied operations) allows.
    pub fn authorize(&self, s: &Session, op: Operation, rt: ResourceType, name: &str) -> bool {
        if self.is_super_user(s) {
            return true;
        }
        let index = self.index.read().clone();
        let covering = index.covering(rt, name);
        if covering.is_empty() {
            return self.allow_if_no_acl;
        }
        let mut allowed = false;
        for acl in covering.into_iter().filter(|a| applies_to(a, s)) {
            match acl.permission {
                Permission::Deny if acl.operation.denies(op) => return false,
                Permission::Allow if acl.operation.allows(op) => allowed = true,
                _ => {}
            }
        }
        allowed
    }

    /// Whether `op` is allowed on at least one resource of the type (Kafka's
    /// `authorizeByResourceType`, used for idempotent producers): an ALLOW
    /// of `op` (or ALL) whose pattern no DENY of it covers. As in Kafka,
    /// implied operations do not count here, and with no ACL of the type at
    /// all the answer is `allow.everyone.if.no.acl.found`.
    pub fn authorize_any(&self, s: &Session, op: Operation, rt: ResourceType) -> bool {
        if self.is_super_user(s) {
            return true;
        }
        let index = self.index.read().clone();
        let Some(p) = index.by_type.get(&rt) else { return self.allow_if_no_acl };
        let matching = |acl: &&AclBinding| applies_to(acl, s) && acl.operation.denies(op);
        let all = || p.literal.values().chain(p.prefixed.values()).flatten().filter(matching);
        let denied_literal: HashSet<&str> = all().filter(|a| a.permission == Permission::Deny && a.pattern_type == PatternType::Literal).map(|a| a.name.as_str()).collect();
        if denied_literal.contains(WILDCARD) {
            return false;
        }
        let denied_prefixes: Vec<&str> = all().filter(|a| a.permission == Permission::Deny && a.pattern_type == PatternType::Prefixed).map(|a| a.name.as_str()).collect();
        all().filter(|a| a.permission == Permission::Allow).any(|a| {
            let dominated = denied_prefixes.iter().any(|d| a.name.starts_with(d));
            let literal_denied = a.pattern_type == PatternType::Literal && denied_literal.contains(a.name.as_str());
            a.name == WILDCARD || !(dominated || literal_denied)
        })
    }

    /// The ACLs a filter matches.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.acls.lock().iter().filter(|a| filter.matches(a)).cloned().collect()
    }

    /// Adds ACLs (an existing one is kept, as Kafka does), one write for
    /// all; each gets its own outcome. The outer error is a failed write,
    /// after which nothing changed.
    pub fn create(&self, acls: Vec<AclBinding>) -> Result<Vec<Result<(), AclError>>, StoreError> {
        let mut current = self.acls.lock();
        let mut next = current.clone();
        let outcomes: Vec<Result<(), AclError>> = acls
            .into_iter()
            .map(|acl| {
                acl.validate()?;
                if !next.contains(&acl) && next.len() >= MAX_ACLS {
                    return Err(AclError::TooMany);
                }
                next.insert(acl);
                Ok(())
            })
            .collect();
        if next != *current {
            self.commit(&mut current, next)?;
        }
        Ok(outcomes)
    }

    /// Removes what each filter matches; per filter, the ACLs it removed.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, StoreError> {
        let mut current = self.acls.lock();
        let mut next = current.clone();
        let removed: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|f| {
                let gone: Vec<AclBinding> = current.iter().filter(|a| f.matches(a)).cloned().collect();
                gone.iter().for_each(|a| {
                    next.remove(a);
                });
                gone
            })
            .collect();
        if next != *current {
            self.commit(&mut current, next)?;
        }
        Ok(removed)
    }

    /// Every ACL as the store's file holds them (what a cluster replicates).
    pub fn export(&self) -> Result<String, StoreError> {
        let bytes = super::store::encode(self.replicated_path(), &self.acls.lock())?;
        String::from_utf8(bytes).map_err(|e| StoreError::Corrupt { path: self.replicated_path().to_path_buf(), reason: e.to_string() })
    }

    /// Replaces every ACL with what `content` (an export) holds. Empty
    /// content is no ACLs.
    pub fn import(&self, content: &str) -> Result<(), StoreError> {
        let next = if content.trim().is_empty() { BTreeSet::new() } else { super::store::decode(self.replicated_path(), content.as_bytes())? };
        let mut current = self.acls.lock();
        self.commit(&mut current, next)
    }

    pub fn is_empty(&self) -> bool {
        self.acls.lock().is_empty()
    }

    /// Named in errors about replicated content.
    fn replicated_path(&self) -> &Path {
        self.store.as_ref().map_or(Path::new("replicated ACLs"), |s| s.path())
    }

    /// Writes the new set through, then swaps the index checks read.
    fn commit(&self, current: &mut BTreeSet<AclBinding>, next: BTreeSet<AclBinding>) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.save(&next)?;
        }
        *self.index.write() = Arc::new(Index::build(&next));
        *current = next;
        Ok(())
    }
}
