//! DescribeClientQuotas and AlterClientQuotas (KIP-546): `kafka-configs.sh
//! --entity-type users|clients`, every AdminClient. Entries are checked and
//! applied one by one, each whole or not at all; the file is written once.

use std::sync::Arc;

use ferry_auth::quota::{Alteration, ClientQuotas, FilterComponent, Op, QuotaEntity, QuotaError, Values, CLIENT_ID, USER};
use kafka_protocol::messages::alter_client_quotas_response::{EntityData as AlterEntity, EntryData as AlterEntry};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::str_bytes;
use crate::codes::{INVALID_REQUEST, KAFKA_STORAGE_ERROR, NONE, POLICY_VIOLATION, UNKNOWN_SERVER_ERROR, UNSUPPORTED_VERSION};
use crate::server::Context;

const NO_QUOTAS: &str = "this broker keeps no client quotas";

/// The Kafka code of a refused change or filter.
fn code_of(e: &QuotaError) -> i16 {
    match e {
        QuotaError::TooManyEntities => POLICY_VIOLATION,
        _ => INVALID_REQUEST,
    }
}

/// The entity's (type, name) pairs, user first, as Kafka lists them.
fn entity_parts(e: &QuotaEntity) -> Vec<(&'static str, Option<String>)> {
    let mut parts = Vec::with_capacity(2);
    if let Some(u) = &e.user {
        parts.push((USER, u.to_wire().map(String::from)));
    }
    if let Some(c) = &e.client_id {
        parts.push((CLIENT_ID, c.to_wire().map(String::from)));
    }
    parts
}

fn describe_entry(entity: &QuotaEntity, values: &Values) -> EntryData {
    let entity = entity_parts(entity).into_iter().map(|(t, n)| EntityData::default().with_entity_type(str_bytes(t)).with_entity_name(n.map(str_bytes)));
    let values = values.iter().map(|(k, v)| ValueData::default().with_key(str_bytes(k.name())).with_value(*v));
    EntryData::default().with_entity(entity.collect()).with_values(values.collect())
}

pub fn describe(ctx: &Context, r: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    let refused = |code: i16, message: String| DescribeClientQuotasResponse::default().with_error_code(code).with_error_message(Some(str_bytes(message)));
    let Some(quotas) = &ctx.quotas else { return refused(UNKNOWN_SERVER_ERROR, NO_QUOTAS.into()) };
    let components: Vec<FilterComponent> = r
        .components
        .iter()
        .map(|c| FilterComponent { entity_type: c.entity_type.to_string(), match_type: c.match_type, name: c._match.as_ref().map(|m| m.to_string()) })
        .collect();
    match quotas.describe(&components, r.strict) {
        Ok(found) => DescribeClientQuotasResponse::default().with_entries(Some(found.iter().map(|(e, v)| describe_entry(e, v)).collect())),
        // Kafka answers an entity type it does not know as an unsupported version.
        Err(e @ QuotaError::UnknownEntityType(_)) => refused(UNSUPPORTED_VERSION, format!("Unsupported entity type {e}")),
        Err(e) => refused(code_of(&e), e.to_string()),
    }
}

pub async fn alter(ctx: &Context, r: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    // Each answer entry names the entity as the request did.
    let wire_entities: Vec<Vec<AlterEntity>> = r
        .entries
        .iter()
        .map(|e| e.entity.iter().map(|p| AlterEntity::default().with_entity_type(p.entity_type.clone()).with_entity_name(p.entity_name.clone())).collect())
        .collect();
    let answer = |results: Vec<(i16, Option<String>)>| {
        let entries = wire_entities.iter().zip(results).map(|(entity, (code, message))| {
            AlterEntry::default().with_entity(entity.clone()).with_error_code(code).with_error_message(message.map(str_bytes))
        });
        AlterClientQuotasResponse::default().with_entries(entries.collect())
    };
    let Some(quotas) = ctx.quotas.clone() else {
        return answer(vec![(UNKNOWN_SERVER_ERROR, Some(NO_QUOTAS.into())); wire_entities.len()]);
    };
    let n = wire_entities.len();
    let results = match tokio::task::spawn_blocking(move || apply(&quotas, r)).await {
        Ok(results) => results,
        Err(e) => vec![(UNKNOWN_SERVER_ERROR, Some(format!("altering quotas failed: {e}"))); n],
    };
    answer(results)
}

/// Checks and applies the request: (code, message) per entry, in order.
fn apply(quotas: &Arc<ClientQuotas>, r: AlterClientQuotasRequest) -> Vec<(i16, Option<String>)> {
    let entries: Vec<Alteration> = r
        .entries
        .iter()
        .map(|e| Alteration {
            entity: QuotaEntity::from_parts(e.entity.iter().map(|p| (p.entity_type.as_str(), p.entity_name.as_ref().map(|n| n.as_str())))),
            ops: e.ops.iter().map(|o| Op { key: o.key.to_string(), value: o.value, remove: o.remove }).collect(),
        })
        .collect();
    let n = entries.len();
    match quotas.alter(entries, r.validate_only) {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(()) => (NONE, None),
                Err(e) => (code_of(&e), Some(e.to_string())),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the client quotas");
            vec![(KAFKA_STORAGE_ERROR, Some(e.to_string())); n]
        }
    }
}
