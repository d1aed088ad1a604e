//! Users and ACLs on a cluster. Each is a security store that the metadata
//! group replicates whole (`Command::PutSecurityStore`), as KRaft keeps
//! SCRAM credentials and ACLs in its metadata log. A broker changing one
//! (AlterUserScramCredentials, CreateAcls, DeleteAcls) applies the change to
//! its own store, then proposes the result with the version it started
//! from; when another broker's change got in first, it takes the newer
//! content and redoes its change on it. Every broker follows the applied
//! state and imports a newer store. Users added offline (`ferry user add`)
//! before a cluster's first start seed the cluster's store once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_cluster::{ClusterError, Command, StateError, MAX_SECURITY_STORE_BYTES};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::codes;
use crate::server::Context;

pub const USERS: &str = "users";
pub const ACLS: &str = "acls";

/// A change refused in a row this many times (other brokers' changes kept
/// getting in first) is answered as failed.
const MAX_TRIES: usize = 5;
/// How often a broker looks for a newer replicated store.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

type Refusal = (i16, String);

/// This broker's side of the replicated stores.
#[derive(Debug, Default)]
pub struct SecurityReplica {
    /// One change (or import) at a time on this broker.
    changing: tokio::sync::Mutex<()>,
    /// Per store, the replicated version this broker's store holds.
    imported: Mutex<HashMap<&'static str, u64>>,
    /// Stores whose offline content this broker offered as the first version.
    seeded: Mutex<Vec<&'static str>>,
}

/// Runs `work` (a change to this broker's `store`, returning the answer) and,
/// on a cluster, makes its result the cluster's.
pub async fn change<R: Send + 'static>(ctx: &Context, store: &'static str, work: Arc<dyn Fn() -> R + Send + Sync>) -> Result<R, Refusal> {
    let run = |work: Arc<dyn Fn() -> R + Send + Sync>| async move {
        tokio::task::spawn_blocking(move || work()).await.map_err(|e| (codes::UNKNOWN_SERVER_ERROR, format!("changing {store} failed: {e}")))
    };
    let (Some(cluster), Some(replica)) = (&ctx.cluster, &ctx.security) else { return run(work).await };
    let _one_at_a_time = replica.changing.lock().await;
    for _ in 0..MAX_TRIES {
        let base = catch_up(ctx, replica, store)?;
        let before = export(ctx, store)?;
        let answer = run(work.clone()).await?;
        let content = export(ctx, store)?;
        if content == before {
            return Ok(answer);
        }
        if content.len() > MAX_SECURITY_STORE_BYTES {
            import(ctx, store, &before)?;
            return Err((codes::POLICY_VIOLATION, format!("the {store} store would be {} bytes, over the {MAX_SECURITY_STORE_BYTES} a cluster replicates", content.len())));
        }
        let proposal = Command::PutSecurityStore { store: store.to_string(), base_version: base, content };
        match cluster.propose(proposal).await {
            Ok(_) => {
                replica.imported.lock().insert(store, base + 1);
                return Ok(answer);
            }
            Err(ClusterError::Refused(StateError::SecurityStoreChanged { version, .. })) => {
                // Another change got in first: wait until it is visible here,
                // take it, and redo this one on it.
                import(ctx, store, &before)?;
                let mut states = cluster.watch_state();
                let visible = states.wait_for(|s| s.security.get(store).is_some_and(|b| b.version >= version));
                let _ = tokio::time::timeout(Duration::from_secs(5), visible).await;
            }
            Err(e) => {
                // The change did not happen: back to what this broker had.
                import(ctx, store, &before)?;
                return Err((crate::cluster::error_code(&e), format!("the {store} change was not replicated: {e}")));
            }
        }
    }
    Err((codes::REQUEST_TIMED_OUT, format!("other brokers kept changing {store}; try again")))
}

/// Imports the cluster's store when it is newer than this broker's; the
/// version this broker's store is at afterwards.
fn catch_up(ctx: &Context, replica: &SecurityReplica, store: &'static str) -> Result<u64, Refusal> {
    let Some(cluster) = &ctx.cluster else { return Ok(0) };
    let state = cluster.state();
    let replicated_version = state.security.get(store).map_or(0, |b| b.version);
    let imported = replica.imported.lock().get(store).copied().unwrap_or(0);
    if replicated_version > imported {
        let content = state.security.get(store).map(|b| b.content.as_str()).unwrap_or_default();
        import(ctx, store, content)?;
        replica.imported.lock().insert(store, replicated_version);
        info!(store, version = replicated_version, "security store taken from the cluster");
    }
    Ok(replicated_version.max(imported))
}

fn export(ctx: &Context, store: &str) -> Result<String, Refusal> {
    let failed = |e: ferry_auth::StoreError| (codes::KAFKA_STORAGE_ERROR, e.to_string());
    match store {
        USERS => ctx.users.as_ref().map_or(Ok(String::new()), |u| u.export().map_err(failed)),
        _ => ctx.acls.as_ref().map_or(Ok(String::new()), |a| a.export().map_err(failed)),
    }
}

fn import(ctx: &Context, store: &str, content: &str) -> Result<(), Refusal> {
    let failed = |e: ferry_auth::StoreError| (codes::KAFKA_STORAGE_ERROR, e.to_string());
    match store {
        USERS => ctx.users.as_ref().map_or(Ok(()), |u| u.import(content).map_err(failed)),
        _ => ctx.acls.as_ref().map_or(Ok(()), |a| a.import(content).map_err(failed)),
    }
}

fn is_empty(ctx: &Context, store: &str) -> bool {
    match store {
        USERS => ctx.users.as_ref().is_none_or(|u| u.is_empty()),
        _ => ctx.acls.as_ref().is_none_or(|a| a.is_empty()),
    }
}

/// Keeps this broker's stores at the cluster's versions (a task of its own,
/// on a cluster). ACLs are followed only by brokers that enforce them.
pub async fn follow(ctx: Context) {
    let Some(replica) = ctx.security.clone() else { return };
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tick.tick().await;
        for store in [USERS, ACLS] {
            if store == ACLS && ctx.acls.is_none() {
                continue;
            }
            let Ok(_one_at_a_time) = replica.changing.try_lock() else { continue };
            if let Err((_, e)) = seed_or_catch_up(&ctx, &replica, store).await {
                warn!(store, error = %e, "cannot take the cluster's security store; retrying");
            }
        }
    }
}

/// A cluster whose store was never written takes this broker's offline
/// content (first offer wins); otherwise a newer version is imported.
async fn seed_or_catch_up(ctx: &Context, replica: &SecurityReplica, store: &'static str) -> Result<(), Refusal> {
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    let state = cluster.state();
    // Not before this broker's own registration is applied here: until
    // then the state may still be replaying and look never written.
    let caught_up = state.brokers.contains_key(&cluster.node_id());
    let never_written = state.security.get(store).is_none_or(|s| s.version == 0);
    if caught_up && never_written && !is_empty(ctx, store) && !replica.seeded.lock().contains(&store) {
        let content = export(ctx, store)?;
        if content.len() > MAX_SECURITY_STORE_BYTES {
            replica.seeded.lock().push(store);
            warn!(store, bytes = content.len(), "this broker's security store is too large for the cluster to take");
            return Ok(());
        }
        let proposal = Command::PutSecurityStore { store: store.to_string(), base_version: 0, content };
        match cluster.propose(proposal).await {
            Ok(_) => {
                replica.seeded.lock().push(store);
                replica.imported.lock().insert(store, 1);
                info!(store, "this broker's security store is the cluster's first");
            }
            Err(ClusterError::Refused(_)) => replica.seeded.lock().push(store),
            // No leader yet: offer again at the next tick.
            Err(_) => {}
        }
        return Ok(());
    }
    catch_up(ctx, replica, store).map(|_| ())
}
