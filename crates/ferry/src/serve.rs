//! `ferry serve`: open the data directory, serve Kafka clients, shut down
//! cleanly on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_broker::producer_ids::IdSpace;
use ferry_broker::txn::TxnConfig;
use ferry_broker::{Engine, EngineConfig};
use ferry_cluster::{Cluster, ClusterConfig};
use ferry_http::HttpListen;
use ferry_auth::{Authenticator, UserStore};
use ferry_kafka::sasl::SaslConfig;
use ferry_kafka::tls::TlsState;
use ferry_kafka::{serve_listeners, Context, Listener, ServerConfig, Transport};
use ferry_log::storage::{FaultPlan, FaultyStorage, FsStorage, Storage};
use ferry_metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;

/// Testing hook: storage faults to inject, as `kind:path-substring:after,...`
/// (kinds: write-error, fsync-error, disk-full). Never set in production.
const FAULT_ENV: &str = "FERRY_FAULT_INJECT";

/// Node ids of a cluster's brokers are below this (producer ids are split by it).
pub const MAX_CLUSTER_NODE_ID: i64 = 1024;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let fs: Arc<dyn Storage> = Arc::new(FsStorage);
    let storage: Arc<dyn Storage> = match std::env::var(FAULT_ENV) {
        Ok(spec) if !spec.trim().is_empty() => {
            let plan = FaultPlan::parse(&spec).map_err(|e| anyhow::anyhow!("{FAULT_ENV}: {e}"))?;
            warn!(spec = %spec, "storage fault injection is ON");
            Arc::new(FaultyStorage::new(fs, plan))
        }
        _ => fs,
    };
    // On a cluster each broker hands out its own residue of producer ids
    // (node ids are below MAX_CLUSTER_NODE_ID), so no two brokers give the same.
    let txn = match &settings.cluster {
        Some(_) => TxnConfig {
            producer_id_space: IdSpace { stride: MAX_CLUSTER_NODE_ID, offset: i64::from(settings.node_id) },
            ..TxnConfig::default()
        },
        None => TxnConfig::default(),
    };
    // `--http-listen none` turns counting off too: nobody could read it.
    let metrics = (settings.http_listen != HttpListen::Off).then(|| Arc::new(Metrics::new()));
    let engine_config = EngineConfig {
        txn,
        data_dir: settings.data_dir.clone(),
        node_id: settings.node_id,
        auto_create_topics_enable: settings.auto_create_topics_enable,
        num_partitions: settings.num_partitions,
        max_partitions: settings.max_partitions,
        group: settings.group.clone(),
        cleaner: settings.cleaner.clone(),
        metrics: metrics.clone(),
        ..EngineConfig::default()
    };
    let data_dir = settings.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config, storage))
        .await?
        .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;
    let engine = Arc::new(engine);
    // Transactions left in Prepare* by a crash are finished before any
    // client is served. On a cluster their markers go through partition
    // leaders, known only once the cluster runs: see below.
    if settings.cluster.is_none() {
        engine.txns.recover(&engine).await;
    }

    let cluster = match &settings.cluster {
        Some(c) => {
            let mut config = ClusterConfig::new(settings.node_id as u64, c.listen, c.voters.clone(), settings.data_dir.join("cluster"));
            config.auto_leader_rebalance_enable = c.auto_leader_rebalance_enable;
            config.log_retention_check_interval_ms = settings.log_retention_check_interval_ms;
            config.secret = c.secret.clone();
            let cluster = Cluster::start(config).await.context("cannot start the cluster layer")?;
            tokio::spawn(crate::cluster_sync::register(cluster.clone(), settings.advertised_host.clone(), settings.advertised_port));
            tokio::spawn(crate::cluster_sync::reconcile_topics(engine.clone(), cluster.clone()));
            Some(cluster)
        }
        None => None,
    };

    let tls = match &settings.tls {
        Some(files) => Some(TlsState::new(files.clone()).context("cannot load the TLS certificates")?),
        None => None,
    };
    // Opened on every broker (it holds the store's lock, and AdminClients
    // manage users whatever the listeners); per broker, not replicated yet.
    let users = Arc::new(UserStore::open(&settings.data_dir).context("cannot open the user store")?);
    let authenticator = Authenticator::new(users.clone(), settings.sasl_enabled_mechanisms.clone())?;
    let sasl = SaslConfig {
        authenticator: Arc::new(authenticator),
        failed_authentication_delay: Duration::from_millis(settings.connection_failed_authentication_delay_ms),
    };
    let acls = match settings.acls.clone() {
        Some(config) => {
            let authorizer = ferry_auth::acl::Authorizer::open(&settings.data_dir, config).context("cannot open the ACL store")?;
            info!(acls = authorizer.describe(&ferry_auth::acl::AclFilter::any()).len(), "ACLs enabled");
            Some(Arc::new(authorizer))
        }
        None => None,
    };
    let listeners = bind_listeners(&settings, tls.as_ref(), &sasl).await?;
    let server_config = listeners[0].config.clone();
    // Before "ready": an explicit --http-listen that is taken stops the start.
    let http_listener = ferry_http::bind(settings.http_listen).await?;
    let name = |l: &Listener| l.protocol_name();
    let listening: Vec<String> =
        listeners.iter().map(|l| format!("{}://{}", name(l), l.socket.local_addr().map(|a| a.to_string()).unwrap_or_default())).collect();
    let advertised: Vec<String> = listeners.iter().map(|l| format!("{}://{}:{}", name(l), l.config.advertised_host, l.config.advertised_port)).collect();
    info!(
        listen = %listening.join(","),
        advertised = %advertised.join(","),
        data_dir = %settings.data_dir.display(),
        "ferry is ready"
    );
    let tls_reloader = tls.map(|t| tokio::spawn(ferry_kafka::tls::keep_fresh(t)));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // With ACLs on, the console and its API take a login from the user store.
    let console_auth = acls.clone().map(|acls| ferry_http::ConsoleAuth { users: users.clone(), acls });
    let http = start_http(http_listener, &engine, metrics, &settings, cluster.clone(), console_auth, &shutdown_rx);
    let retention_engine = engine.clone();
    let interval = Duration::from_millis(settings.log_retention_check_interval_ms);
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let e = retention_engine.clone();
            let _ = tokio::task::spawn_blocking(move || e.apply_retention()).await;
        }
    });

    let group_engine = engine.clone();
    let group_ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            for (group, keys) in group_engine.groups.tick() {
                if let Err(e) = group_engine.groups.offsets.delete(&group, keys).await {
                    warn!(%group, error = %e, "expiring committed offsets failed");
                }
            }
            if ticks % 600 == 0 {
                group_engine.groups.drop_empty_groups();
                group_engine.expire_producers();
            }
        }
    });

    // Its own task: completing a timed-out transaction writes and fsyncs
    // markers, which must not hold up group session timeouts.
    let txn_engine = engine.clone();
    let txn_ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            txn_engine.txns.tick(&txn_engine).await;
        }
    });

    // A thread of its own: a pass reads and rewrites whole segments and
    // must never hold up the runtime's workers or a producer.
    let cleaner = ferry_broker::Cleaner::start(engine.clone()).context("cannot start the log cleaner")?;

    let mut ctx = Context::new(engine.clone(), server_config);
    ctx.cluster = cluster.clone();
    ctx.users = Some(users);
    // Per broker, like users and ACLs: not replicated through the metadata group yet.
    let quotas = ferry_auth::quota::ClientQuotas::open(&settings.data_dir, settings.quota_window).context("cannot open the client quota store")?;
    if !quotas.is_empty() {
        info!(entities = quotas.len(), "client quotas loaded");
    }
    ctx.quotas = Some(Arc::new(quotas));
    ctx.acls = acls.clone();
    if cluster.is_some() {
        // Users and ACLs are the cluster's: followed from the metadata group.
        ctx.security = Some(Arc::new(ferry_kafka::security_replica::SecurityReplica::default()));
        tokio::spawn(ferry_kafka::security_replica::follow(ctx.clone()));
    }
    if cluster.is_some() {
        warn_if_brokers_cannot_call_each_other(&settings, acls.as_deref());
        ferry_kafka::route_markers(&ctx);
        // Retried each second by the transaction ticker until leaders answer.
        let recovering = engine.clone();
        tokio::spawn(async move { recovering.txns.recover(&recovering).await });
    }
    let server = tokio::spawn(serve_listeners(listeners, ctx, shutdown_rx));
    wait_for_signal().await;
    info!("shutting down: no new connections, answering in-flight requests");
    let _ = shutdown_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "server stopped with an error"),
        Err(e) => warn!(error = %e, "server task failed"),
    }
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
    }
    if let Some(h) = http {
        h.abort();
    }
    if let Some(h) = tls_reloader {
        h.abort();
    }
    retention.abort();
    group_ticker.abort();
    txn_ticker.abort();
    tokio::task::spawn_blocking(move || cleaner.stop(Duration::from_secs(5))).await?;
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.sync_all()).await?.context("final sync failed")?;
    info!("logs synced; bye");
    Ok(())
}

/// Binds every listener, each with the front-end settings and its own
/// advertised address.
async fn bind_listeners(settings: &Settings, tls: Option<&Arc<TlsState>>, sasl: &SaslConfig) -> anyhow::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for plan in &settings.listeners {
        let transport = match (plan.protocol.uses_tls(), tls) {
            (false, _) => Transport::Plaintext,
            (true, Some(tls)) => Transport::Tls(tls.clone()),
            (true, None) => anyhow::bail!("listener {}://{} needs TLS settings", plan.protocol, plan.bind),
        };
        let mut config = ServerConfig::new(plan.bind);
        config.default_replication_factor = settings.default_replication_factor;
        config.advertised_host = plan.advertised_host.clone();
        config.advertised_port = i32::from(plan.advertised_port);
        config.max_connections = settings.max_connections;
        config.max_connections_per_ip = settings.max_connections_per_ip.clone();
        config.socket_request_max_bytes = settings.socket_request_max_bytes;
        config.fetch_max_bytes = settings.fetch_max_bytes;
        config.connections_max_idle_ms = settings.connections_max_idle_ms;
        let socket = TcpListener::bind(plan.bind)
            .await
            .with_context(|| format!("cannot listen on {}://{}", plan.protocol, plan.bind))?;
        let sasl = plan.protocol.uses_sasl().then(|| sasl.clone());
        listeners.push(Listener { socket, transport, sasl, config: Arc::new(config) });
    }
    Ok(listeners)
}

/// Serves /metrics, /api and the console on the bound `--http-listen`.
fn start_http(
    listener: Option<TcpListener>,
    engine: &Arc<Engine>,
    metrics: Option<Arc<Metrics>>,
    settings: &Settings,
    cluster: Option<Arc<Cluster>>,
    auth: Option<ferry_http::ConsoleAuth>,
    shutdown: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (Some(listener), Some(metrics)) = (listener, metrics) else { return None };
    let me = ferry_http::Advertised { node_id: settings.node_id, host: settings.advertised_host.clone(), port: settings.advertised_port };
    Some(tokio::spawn(ferry_http::serve(listener, engine.clone(), metrics, me, cluster, auth, shutdown.clone())))
}

/// Brokers send each other transaction markers and verifications as a
/// Kafka client without credentials on the first listener (there is no
/// inter-broker listener yet): that takes a PLAINTEXT first listener and,
/// with ACLs on, the anonymous principal allowed to.
fn warn_if_brokers_cannot_call_each_other(settings: &Settings, acls: Option<&ferry_auth::acl::Authorizer>) {
    use ferry_auth::acl::{Operation, ResourceType, Session, CLUSTER_NAME};
    let plaintext = settings.listeners[0].protocol == ferry_kafka::listener::SecurityProtocol::Plaintext;
    let anonymous = Session { principal: "User:ANONYMOUS".into(), host: "127.0.0.1".into() };
    let allowed = acls.is_none_or(|a| a.authorize(&anonymous, Operation::ClusterAction, ResourceType::Cluster, CLUSTER_NAME));
    if !plaintext || !allowed {
        warn!("transactions on replicated partitions need the brokers to reach each other's first listener as an anonymous Kafka client (WriteTxnMarkers, AddPartitionsToTxn): make the first --listen PLAINTEXT (on a network only brokers reach) and, with ACLs on, let User:ANONYMOUS act as the cluster; until then transactions wait");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
