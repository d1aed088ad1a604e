//! Which configured quota applies to a client, in Kafka's order of
//! precedence, and which entities a DescribeClientQuotas filter matches.

use super::model::{EntityName, QuotaEntity, QuotaError, QuotaKey, CLIENT_ID, IP, USER};
use super::store::Config;
use super::FilterComponent;

/// Sensor tags (user, client id): clients sharing them share one quota.
pub type Tags = (String, String);

/// The quota `key` that applies to (user, client id) and the tags of its
/// sensor, or None: unlimited. Each key is resolved on its own, as Kafka
/// keeps one quota manager per quota type. Order (Kafka's ClientQuotaManager):
/// users/U/clients/C, users/U/clients/<default>, users/U,
/// users/<default>/clients/C, users/<default>/clients/<default>,
/// users/<default>, clients/C, clients/<default>. A quota set on a user
/// alone is shared by all that user's client ids (client tag empty); one
/// set on a default entity applies to each user or client id separately.
pub fn quota_for(config: &Config, key: QuotaKey, user: &str, client_id: &str) -> Option<(f64, Tags)> {
    let named = |s: &str| Some(EntityName::Named(s.to_string()));
    let default = || Some(EntityName::Default);
    let (u, c) = (user.to_string(), client_id.to_string());
    let levels: [(Option<EntityName>, Option<EntityName>, bool, bool); 8] = [
        (named(user), named(client_id), true, true),
        (named(user), default(), true, true),
        (named(user), None, true, false),
        (default(), named(client_id), true, true),
        (default(), default(), true, true),
        (default(), None, true, false),
        (None, named(client_id), false, true),
        (None, default(), false, true),
    ];
    for (user_part, client_part, tag_user, tag_client) in levels {
        let entity = QuotaEntity::new(user_part, client_part);
        if let Some(value) = config.get(&entity).and_then(|v| v.get(&key)) {
            let tags = (if tag_user { u } else { String::new() }, if tag_client { c } else { String::new() });
            return Some((*value, tags));
        }
    }
    None
}

/// What a component asks of one entity type.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Exact(EntityName),
    Any,
}

/// A parsed DescribeClientQuotas filter.
#[derive(Debug, Default)]
pub struct Filter {
    user: Option<Want>,
    client_id: Option<Want>,
    ip: Option<Want>,
}

impl Filter {
    /// Kafka's checks (ClientQuotasImage.describe): each type once, a name
    /// exactly when matching exactly, ip never beside user or client-id.
    pub fn parse(components: &[FilterComponent]) -> Result<Filter, QuotaError> {
        let mut f = Filter::default();
        for c in components {
            let want = match (c.match_type, &c.name) {
                (0, Some(n)) => Want::Exact(EntityName::Named(n.clone())),
                (0, None) => return Err(QuotaError::BadFilter("Request specified MATCH_TYPE_EXACT, but set match string to null.".into())),
                (1, None) => Want::Exact(EntityName::Default),
                (2, None) => Want::Any,
                (1 | 2, Some(_)) => return Err(QuotaError::BadFilter(format!("Request specified match type {}, but also specified a match string.", c.match_type))),
                (other, _) => return Err(QuotaError::BadFilter(format!("Unknown match type {other}"))),
            };
            let slot = match c.entity_type.as_str() {
                "" => return Err(QuotaError::BadFilter("Invalid empty entity type.".into())),
                USER => &mut f.user,
                CLIENT_ID => &mut f.client_id,
                IP => &mut f.ip,
                other => return Err(QuotaError::UnknownEntityType(other.to_string())),
            };
            if slot.replace(want).is_some() {
                return Err(QuotaError::BadFilter(format!("Entity type {} cannot appear more than once in the filter.", c.entity_type)));
            }
        }
        if f.ip.is_some() && (f.user.is_some() || f.client_id.is_some()) {
            return Err(QuotaError::BadFilter(
                "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
            ));
        }
        Ok(f)
    }

    /// With no component: every entity, or none when strict (as Kafka).
    /// `strict`: the entity has no type the filter does not name.
    pub fn matches(&self, e: &QuotaEntity, strict: bool) -> bool {
        if self.ip.is_some() {
            // Ferry keeps no ip entities.
            return false;
        }
        if self.user.is_none() && self.client_id.is_none() {
            return !strict;
        }
        part_matches(&self.user, &e.user, strict) && part_matches(&self.client_id, &e.client_id, strict)
    }
}

fn part_matches(want: &Option<Want>, have: &Option<EntityName>, strict: bool) -> bool {
    match (want, have) {
        (None, None) => true,
        (None, Some(_)) => !strict,
        (Some(_), None) => false,
        (Some(Want::Any), Some(_)) => true,
        (Some(Want::Exact(w)), Some(h)) => w == h,
    }
}
