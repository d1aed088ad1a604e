//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! `kafka-configs.sh --entity-type users`, every AdminClient. Results are
//! per user, and a user's changes apply together or not at all, as in Kafka.

use std::collections::HashSet;
use std::sync::Arc;

use ferry_auth::store::{check_upsert, StoreError};
use ferry_auth::{Change, ScramCredential, ScramMechanism, UserStore};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};

use super::str_bytes;
use crate::codes::{
    DUPLICATE_RESOURCE, KAFKA_STORAGE_ERROR, NONE, POLICY_VIOLATION, RESOURCE_NOT_FOUND, UNACCEPTABLE_CREDENTIAL, UNKNOWN_SERVER_ERROR,
    UNSUPPORTED_SASL_MECHANISM,
};
use crate::server::Context;

/// The Kafka code of a store error.
pub fn store_error_code(e: &StoreError) -> i16 {
    match e {
        StoreError::EmptyName
        | StoreError::NameTooLong(_)
        | StoreError::Iterations(_)
        | StoreError::Salt(_)
        | StoreError::EmptySaltedPassword => UNACCEPTABLE_CREDENTIAL,
        StoreError::NotFound { .. } => RESOURCE_NOT_FOUND,
        StoreError::TooManyUsers => POLICY_VIOLATION,
        StoreError::Locked { .. } | StoreError::Io { .. } | StoreError::Corrupt { .. } => KAFKA_STORAGE_ERROR,
    }
}

const NO_STORE: &str = "this broker keeps no user store";

pub fn describe(ctx: &Context, r: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    let Some(store) = &ctx.users else {
        return DescribeUserScramCredentialsResponse::default().with_error_code(UNKNOWN_SERVER_ERROR).with_error_message(Some(str_bytes(NO_STORE)));
    };
    let info = |creds: Vec<(ScramMechanism, u32)>| {
        creds.into_iter().map(|(m, i)| CredentialInfo::default().with_mechanism(m.kafka_type()).with_iterations(i as i32)).collect()
    };
    let results = match r.users.filter(|u| !u.is_empty()) {
        // Null or empty: every user.
        None => store
            .list()
            .into_iter()
            .map(|(user, creds)| DescribeUserScramCredentialsResult::default().with_user(str_bytes(user)).with_credential_infos(info(creds)))
            .collect(),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            let mut seen = HashSet::new();
            let twice: HashSet<&String> = names.iter().filter(|n| !seen.insert(*n)).collect();
            let mut reported = HashSet::new();
            names
                .iter()
                .filter(|n| reported.insert(*n))
                .map(|name| {
                    let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(name.clone()));
                    let (code, message) = if twice.contains(name) {
                        (DUPLICATE_RESOURCE, format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}"))
                    } else if let Some(creds) = store.describe(name) {
                        return result.with_credential_infos(info(creds));
                    } else {
                        (RESOURCE_NOT_FOUND, format!("Attempt to describe a user credential that does not exist: {name}"))
                    };
                    result.with_error_code(code).with_error_message(Some(str_bytes(message)))
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One user's part of an Alter request, checked.
struct UserChanges {
    user: String,
    outcome: Result<Vec<Change>, (i16, String)>,
}

fn user_entry<'a>(users: &'a mut Vec<UserChanges>, user: &str) -> &'a mut UserChanges {
    match users.iter().position(|u| u.user == user) {
        Some(i) => &mut users[i],
        None => {
            users.push(UserChanges { user: user.to_string(), outcome: Ok(Vec::new()) });
            users.last_mut().expect("just pushed")
        }
    }
}

/// Checks every change of the request and groups them per user; the
/// first error of a user is that user's result.
fn check(store: &UserStore, r: AlterUserScramCredentialsRequest) -> Vec<UserChanges> {
    let mut users: Vec<UserChanges> = Vec::new();
    let mut pairs = HashSet::new();
    let deletions = r.deletions.into_iter().map(|d| (d.name.to_string(), d.mechanism, None));
    let upsertions = r.upsertions.into_iter().map(|u| (u.name.to_string(), u.mechanism, Some((u.iterations, u.salt, u.salted_password))));
    for (user, mechanism, upsert) in deletions.chain(upsertions) {
        let checked = check_one(store, &user, mechanism, upsert, &mut pairs);
        let entry = user_entry(&mut users, &user);
        match (&mut entry.outcome, checked) {
            (Ok(changes), Ok(change)) => changes.push(change),
            (outcome @ Ok(_), Err(e)) => *outcome = Err(e),
            (Err(_), _) => {}
        }
    }
    users
}

type Upsert = Option<(i32, bytes::Bytes, bytes::Bytes)>;

fn check_one(store: &UserStore, user: &str, mechanism: i8, upsert: Upsert, pairs: &mut HashSet<(String, i8)>) -> Result<Change, (i16, String)> {
    let unacceptable = |e: StoreError| (store_error_code(&e), e.to_string());
    if user.is_empty() {
        return Err(unacceptable(StoreError::EmptyName));
    }
    if !pairs.insert((user.to_string(), mechanism)) {
        return Err((DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request".into()));
    }
    let Some(m) = ScramMechanism::from_kafka_type(mechanism) else {
        return Err((UNSUPPORTED_SASL_MECHANISM, format!("Unknown SCRAM mechanism {mechanism}")));
    };
    match upsert {
        None if store.credential(user, m).is_none() => {
            Err((RESOURCE_NOT_FOUND, format!("Attempt to delete a user credential that does not exist: {user} {m}")))
        }
        None => Ok(Change::Delete { user: user.to_string(), mechanism: m }),
        Some((iterations, salt, salted)) => {
            check_upsert(user, i64::from(iterations), &salt, &salted).map_err(unacceptable)?;
            let credential = ScramCredential::from_salted_password(m, &salt, iterations as u32, &salted);
            Ok(Change::Upsert { user: user.to_string(), mechanism: m, credential })
        }
    }
}

pub async fn alter(ctx: &Context, r: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let result = |user: &str, code: i16, message: Option<String>| {
        AlterUserScramCredentialsResult::default().with_user(str_bytes(user)).with_error_code(code).with_error_message(message.map(str_bytes))
    };
    let Some(store) = ctx.users.clone() else {
        let users: HashSet<String> = r.deletions.iter().map(|d| d.name.to_string()).chain(r.upsertions.iter().map(|u| u.name.to_string())).collect();
        return AlterUserScramCredentialsResponse::default()
            .with_results(users.iter().map(|u| result(u, UNKNOWN_SERVER_ERROR, Some(NO_STORE.into()))).collect());
    };
    let users: Vec<String> = r.deletions.iter().map(|d| d.name.to_string()).chain(r.upsertions.iter().map(|u| u.name.to_string())).collect();
    let work = std::sync::Arc::new(move || apply(&store, r.clone()));
    let results = match crate::security_replica::change(ctx, crate::security_replica::USERS, work).await {
        Ok(rs) => rs.into_iter().map(|(user, code, message)| result(&user, code, message)).collect(),
        Err((code, message)) => {
            let unique: std::collections::BTreeSet<&String> = users.iter().collect();
            unique.into_iter().map(|u| result(u, code, Some(message.clone()))).collect()
        }
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Writes every valid user's changes in one store write: (user, code, message) per user.
fn apply(store: &Arc<UserStore>, r: AlterUserScramCredentialsRequest) -> Vec<(String, i16, Option<String>)> {
    let users = check(store, r);
    let mut owners = Vec::new();
    let mut changes = Vec::new();
    for u in &users {
        if let Ok(cs) = &u.outcome {
            owners.extend(std::iter::repeat_n(u.user.clone(), cs.len()));
            changes.extend(cs.iter().cloned());
        }
    }
    let written = store.apply(changes);
    users
        .into_iter()
        .map(|u| {
            let failure = match (&u.outcome, &written) {
                (Err((code, message)), _) => Some((*code, message.clone())),
                (Ok(_), Err(e)) => Some((store_error_code(e), e.to_string())),
                (Ok(_), Ok(outcomes)) => owners.iter().zip(outcomes).find_map(|(owner, o)| match o {
                    Err(e) if *owner == u.user => Some((store_error_code(e), e.to_string())),
                    _ => None,
                }),
            };
            match failure {
                Some((code, message)) => (u.user, code, Some(message)),
                None => (u.user, NONE, None),
            }
        })
        .collect()
}
