//! `ferry serve` settings: defaults, then the TOML file, then `FERRY_*`
//! environment variables, then flags (clap reads env and flags into the
//! same fields, flags winning).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use ferry_auth::mechanism::parse_mechanisms;
use ferry_auth::SaslMechanism;
use ferry_kafka::listener::{plan_listeners, ListenerPlan};
use ferry_kafka::tls::{ClientAuth, TlsFiles};
use serde::Deserialize;

/// Flags of `ferry serve`. Each also reads `FERRY_<NAME>`; each is also a
/// key of the `--config` TOML file (snake_case). Kafka's name for the same
/// setting is given in the help.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to listen for Kafka clients (Kafka: listeners): HOST:PORT, or
    /// PROTOCOL://HOST:PORT comma-separated, PROTOCOL one of PLAINTEXT, SSL
    /// (SASL_PLAINTEXT, SASL_SSL not yet) [default: 127.0.0.1:9092].
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<String>,
    /// Where clients are told to connect (Kafka: advertised.listeners), same
    /// syntax as --listen, matched by protocol [default: each listen address].
    #[arg(long, env = "FERRY_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// PEM certificate (chain) of SSL listeners (librdkafka: ssl.certificate.location).
    #[arg(long, env = "FERRY_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of that certificate (librdkafka: ssl.key.location).
    #[arg(long, env = "FERRY_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (librdkafka: ssl.ca.location).
    #[arg(long, env = "FERRY_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificates: none, requested or required (Kafka: ssl.client.auth) [default: none].
    #[arg(long, env = "FERRY_SSL_CLIENT_AUTH")]
    pub ssl_client_auth: Option<String>,
    /// SASL mechanisms of SASL listeners, comma-separated: PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512 (Kafka: sasl.enabled.mechanisms). Users: `ferry user add`
    /// or kafka-configs.sh --entity-type users [default: SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, env = "FERRY_SASL_ENABLED_MECHANISMS")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// Answer a failed SASL authentication (and close) after this long
    /// (Kafka: connection.failed.authentication.delay.ms) [default: 100].
    #[arg(long, env = "FERRY_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS")]
    pub connection_failed_authentication_delay_ms: Option<u64>,
    /// Check every request against ACLs (Kafka: authorizer.class.name set);
    /// ACLs are kept in DATA_DIR/security/acls.json [default: false].
    #[arg(long, env = "FERRY_ACLS_ENABLE")]
    pub acls_enable: Option<bool>,
    /// Principals that pass every ACL check, `;`-separated, e.g.
    /// "User:admin;User:ops" (Kafka: super.users).
    #[arg(long, env = "FERRY_SUPER_USERS")]
    pub super_users: Option<String>,
    /// Allow a resource no ACL matches (Kafka: allow.everyone.if.no.acl.found) [default: false].
    #[arg(long, env = "FERRY_ALLOW_EVERYONE_IF_NO_ACL_FOUND", num_args = 0..=1, default_missing_value = "true")]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Directory for topics and logs (Kafka: log.dirs) [default: ./data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This broker's id (Kafka: node.id) [default: 1].
    #[arg(long, env = "FERRY_NODE_ID")]
    pub node_id: Option<i32>,
    /// Create unknown topics on first use (Kafka: auto.create.topics.enable) [default: true].
    #[arg(long, env = "FERRY_AUTO_CREATE_TOPICS_ENABLE")]
    pub auto_create_topics_enable: Option<bool>,
    /// Partitions of an auto-created topic (Kafka: num.partitions) [default: 1].
    #[arg(long, env = "FERRY_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Most client connections at once (Kafka: max.connections) [default: 10000].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one client address (Kafka: max.connections.per.ip) [default: no limit].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Per-address exceptions, IP:COUNT comma-separated (Kafka: max.connections.per.ip.overrides).
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_IP_OVERRIDES")]
    pub max_connections_per_ip_overrides: Option<String>,
    /// Largest request frame accepted (Kafka: socket.request.max.bytes) [default: 104857600].
    #[arg(long, env = "FERRY_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<usize>,
    /// Largest fetch response (Kafka: fetch.max.bytes) [default: 57671680].
    #[arg(long, env = "FERRY_FETCH_MAX_BYTES")]
    pub fetch_max_bytes: Option<usize>,
    /// Close connections idle this long (Kafka: connections.max.idle.ms) [default: 600000].
    #[arg(long, env = "FERRY_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// How often retention runs (Kafka: log.retention.check.interval.ms) [default: 300000].
    #[arg(long, env = "FERRY_LOG_RETENTION_CHECK_INTERVAL_MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Run the log cleaner on compacted topics (Kafka: log.cleaner.enable) [default: true].
    #[arg(long, env = "FERRY_LOG_CLEANER_ENABLE")]
    pub log_cleaner_enable: Option<bool>,
    /// Sleep this long when no log needs cleaning (Kafka: log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, env = "FERRY_LOG_CLEANER_BACKOFF_MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Cleaner read plus write bytes per second (Kafka: log.cleaner.io.max.bytes.per.second) [default: 1.7976931348623157E308, unlimited].
    #[arg(long, env = "FERRY_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND")]
    pub log_cleaner_io_max_bytes_per_second: Option<f64>,
    /// Memory for one cleaning pass's key map (Kafka: log.cleaner.dedupe.buffer.size) [default: 134217728].
    #[arg(long, env = "FERRY_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    pub log_cleaner_dedupe_buffer_size: Option<usize>,
    /// Most partitions across all topics [default: 10000].
    #[arg(long, env = "FERRY_MAX_PARTITIONS")]
    pub max_partitions: Option<usize>,
    /// Wait for more members when an empty group forms (Kafka: group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, env = "FERRY_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest session timeout a member may ask (Kafka: group.min.session.timeout.ms) [default: 6000].
    #[arg(long, env = "FERRY_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a member may ask (Kafka: group.max.session.timeout.ms) [default: 1800000].
    #[arg(long, env = "FERRY_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Most members in one group (Kafka: group.max.size) [default: 1000].
    #[arg(long, env = "FERRY_GROUP_MAX_SIZE")]
    pub group_max_size: Option<usize>,
    /// Keep an empty group's committed offsets this long (Kafka: offsets.retention.minutes) [default: 10080].
    #[arg(long, env = "FERRY_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// Samples a client quota's rate is measured over (Kafka: quota.window.num) [default: 11].
    #[arg(long, env = "FERRY_QUOTA_WINDOW_NUM")]
    pub quota_window_num: Option<u32>,
    /// Length of each quota sample in seconds (Kafka: quota.window.size.seconds) [default: 1].
    #[arg(long, env = "FERRY_QUOTA_WINDOW_SIZE_SECONDS")]
    pub quota_window_size_seconds: Option<u32>,
    /// Where this broker accepts other brokers' Raft traffic (default: its
    /// own entry in --cluster-voters).
    #[arg(long, env = "FERRY_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Every broker of the cluster as ID@HOST:PORT, comma-separated (Kafka's
    /// controller.quorum.voters). Without it Ferry runs as a single node.
    #[arg(long, env = "FERRY_CLUSTER_VOTERS")]
    pub cluster_voters: Option<String>,
    /// A file holding the secret every broker of the cluster shares (at
    /// least 16 bytes, e.g. `openssl rand -hex 32`): a connection to
    /// --cluster-listen must prove it knows it. Without it any process that
    /// reaches --cluster-listen is taken for a broker.
    #[arg(long, env = "FERRY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Replicas of a topic created without a replication factor (Kafka's
    /// default.replication.factor) [default: min(3, brokers)].
    #[arg(long, env = "FERRY_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// Move each partition's leadership back to its preferred (first)
    /// replica once it is caught up (Kafka: auto.leader.rebalance.enable) [default: true].
    #[arg(long, env = "FERRY_AUTO_LEADER_REBALANCE_ENABLE")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// HOST:PORT for /metrics, /api and the console, or `none` (no HTTP, nothing counted) [default: 127.0.0.1:9644; if taken, a warning].
    #[arg(long, env = "FERRY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised_listener: Option<String>,
    ssl_certificate_location: Option<PathBuf>,
    ssl_key_location: Option<PathBuf>,
    ssl_ca_location: Option<PathBuf>,
    ssl_client_auth: Option<String>,
    sasl_enabled_mechanisms: Option<String>,
    connection_failed_authentication_delay_ms: Option<u64>,
    acls_enable: Option<bool>,
    super_users: Option<String>,
    allow_everyone_if_no_acl_found: Option<bool>,
    data_dir: Option<PathBuf>,
    node_id: Option<i32>,
    auto_create_topics_enable: Option<bool>,
    num_partitions: Option<i32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_connections_per_ip_overrides: Option<String>,
    socket_request_max_bytes: Option<usize>,
    fetch_max_bytes: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    log_retention_check_interval_ms: Option<u64>,
    log_cleaner_enable: Option<bool>,
    log_cleaner_backoff_ms: Option<u64>,
    log_cleaner_io_max_bytes_per_second: Option<f64>,
    log_cleaner_dedupe_buffer_size: Option<usize>,
    max_partitions: Option<usize>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_max_size: Option<usize>,
    offsets_retention_minutes: Option<i64>,
    quota_window_num: Option<u32>,
    quota_window_size_seconds: Option<u32>,
    http_listen: Option<String>,
    cluster_listen: Option<SocketAddr>,
    cluster_voters: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    default_replication_factor: Option<i16>,
    auto_leader_rebalance_enable: Option<bool>,
}

/// Set when `--cluster-voters` is: this broker is one of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub listen: SocketAddr,
    pub voters: Vec<ferry_cluster::Voter>,
    pub auto_leader_rebalance_enable: bool,
    pub secret: Option<ferry_cluster::ClusterSecret>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka listeners, the first one also registered with a cluster.
    pub listeners: Vec<ListenerPlan>,
    /// The first listener's advertised address.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Set when a listener uses TLS.
    pub tls: Option<TlsFiles>,
    /// The mechanisms SASL listeners offer.
    pub sasl_enabled_mechanisms: Vec<SaslMechanism>,
    pub connection_failed_authentication_delay_ms: u64,
    /// Set with `acls_enable`: the authorizer's settings.
    pub acls: Option<ferry_auth::acl::AuthorizerConfig>,
    /// How client quota rates are measured (quota.window.num, quota.window.size.seconds).
    pub quota_window: ferry_auth::quota::WindowConfig,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub max_connections: usize,
    pub max_connections_per_ip: ferry_kafka::ip_limit::PerIpLimits,
    pub socket_request_max_bytes: usize,
    pub fetch_max_bytes: usize,
    pub connections_max_idle_ms: u64,
    pub log_retention_check_interval_ms: u64,
    pub max_partitions: usize,
    pub group: ferry_broker::group::GroupConfig,
    pub cleaner: ferry_broker::CleanerConfig,
    pub cluster: Option<ClusterSettings>,
    pub default_replication_factor: i16,
    pub http_listen: ferry_http::HttpListen,
}

impl ServeArgs {

    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let cleaner = resolve_cleaner(&self, &file)?;
        let node_id = self.node_id.or(file.node_id).unwrap_or(1);
        let cluster = resolve_cluster(&self, &file, node_id)?;
        let brokers = cluster.as_ref().map(|c| c.voters.len()).unwrap_or(1);
        let default_replication_factor = self.default_replication_factor.or(file.default_replication_factor).unwrap_or(brokers.min(3) as i16);
        if default_replication_factor < 1 || default_replication_factor as usize > brokers {
            bail!("default_replication_factor must be between 1 and the number of brokers ({brokers}), got {default_replication_factor}");
        }
        let http_listen = ferry_http::HttpListen::parse(self.http_listen.as_deref().or(file.http_listen.as_deref()))?;
        let listeners = resolve_listeners(&self, &file)?;
        let tls = resolve_tls(&self, &file, &listeners)?;
        let sasl_enabled_mechanisms = resolve_sasl(&self, &file)?;
        let connection_failed_authentication_delay_ms =
            self.connection_failed_authentication_delay_ms.or(file.connection_failed_authentication_delay_ms).unwrap_or(100);
        let acls = resolve_acls(&self, &file)?;
        let (host, port) = (listeners[0].advertised_host.clone(), listeners[0].advertised_port);
        let num_partitions = self.num_partitions.or(file.num_partitions).unwrap_or(1);
        if num_partitions < 1 {
            bail!("num_partitions must be at least 1, got {num_partitions}");
        }
        let socket_request_max_bytes = self.socket_request_max_bytes.or(file.socket_request_max_bytes).unwrap_or(100 * 1024 * 1024);
        if !(1024..=i32::MAX as usize).contains(&socket_request_max_bytes) {
            bail!("socket_request_max_bytes must be between 1024 and {}", i32::MAX);
        }
        let max_connections = self.max_connections.or(file.max_connections).unwrap_or(10_000);
        if max_connections == 0 || max_connections > u32::MAX as usize / 2 {
            bail!("max_connections must be between 1 and {}", u32::MAX / 2);
        }
        let max_connections_per_ip = resolve_per_ip(&self, &file)?;
        let defaults = ferry_broker::group::GroupConfig::default();
        let group = ferry_broker::group::GroupConfig {
            initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(defaults.initial_rebalance_delay_ms),
            min_session_timeout_ms: self.group_min_session_timeout_ms.or(file.group_min_session_timeout_ms).unwrap_or(defaults.min_session_timeout_ms),
            max_session_timeout_ms: self.group_max_session_timeout_ms.or(file.group_max_session_timeout_ms).unwrap_or(defaults.max_session_timeout_ms),
            max_size: self.group_max_size.or(file.group_max_size).unwrap_or(defaults.max_size),
            offsets_retention_ms: self
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes)
                .map(|m| m * 60_000)
                .unwrap_or(defaults.offsets_retention_ms),
            ..defaults
        };
        if group.min_session_timeout_ms > group.max_session_timeout_ms || group.min_session_timeout_ms < 1 {
            bail!("group_min_session_timeout_ms must be positive and at most group_max_session_timeout_ms");
        }
        if group.max_size == 0 {
            bail!("group_max_size must be at least 1");
        }
        let quota_window = resolve_quota_window(&self, &file)?;
        Ok(Settings {
            group,
            cleaner,
            http_listen,
            listeners,
            tls,
            sasl_enabled_mechanisms,
            connection_failed_authentication_delay_ms,
            acls,
            quota_window,
            advertised_host: host,
            advertised_port: port as i32,
            data_dir: self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data")),
            node_id,
            cluster,
            default_replication_factor,
            auto_create_topics_enable: self.auto_create_topics_enable.or(file.auto_create_topics_enable).unwrap_or(true),
            num_partitions,
            max_connections,
            max_connections_per_ip,
            socket_request_max_bytes,
            fetch_max_bytes: self.fetch_max_bytes.or(file.fetch_max_bytes).unwrap_or(55 * 1024 * 1024),
            connections_max_idle_ms: self.connections_max_idle_ms.or(file.connections_max_idle_ms).unwrap_or(600_000),
            log_retention_check_interval_ms: self
                .log_retention_check_interval_ms
                .or(file.log_retention_check_interval_ms)
                .unwrap_or(300_000)
                .max(100),
            max_partitions: self.max_partitions.or(file.max_partitions).unwrap_or(10_000),
        })
    }
}

/// `--listen` and `--advertised-listener`.
/// Kafka's bounds: quota.window.num at least 2 (the rate spans all but
/// one sample), quota.window.size.seconds at least 1; at most an hour.
fn resolve_quota_window(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ferry_auth::quota::WindowConfig> {
    let defaults = ferry_auth::quota::WindowConfig::default();
    let samples = args.quota_window_num.or(file.quota_window_num).unwrap_or(defaults.samples);
    let seconds = args.quota_window_size_seconds.or(file.quota_window_size_seconds).unwrap_or((defaults.window_ms / 1000) as u32);
    if !(2..=3600).contains(&samples) {
        bail!("quota_window_num must be between 2 and 3600, got {samples}");
    }
    if !(1..=3600).contains(&seconds) {
        bail!("quota_window_size_seconds must be between 1 and 3600, got {seconds}");
    }
    Ok(ferry_auth::quota::WindowConfig { samples, window_ms: u64::from(seconds) * 1000 })
}

fn resolve_listeners(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Vec<ListenerPlan>> {
    let listen = args.listen.as_deref().or(file.listen.as_deref()).unwrap_or("127.0.0.1:9092");
    let advertised = args.advertised_listener.as_deref().or(file.advertised_listener.as_deref());
    plan_listeners(listen, advertised).map_err(|e| anyhow::anyhow!("listen: {e}"))
}

/// `acls_enable`, `super_users` (`;`-separated principals, as Kafka's
/// `super.users`) and `allow_everyone_if_no_acl_found`.
fn resolve_acls(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Option<ferry_auth::acl::AuthorizerConfig>> {
    let super_users: Vec<String> = args
        .super_users
        .as_deref()
        .or(file.super_users.as_deref())
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = super_users.iter().find(|p| p.split_once(':').is_none_or(|(kind, _)| kind.is_empty())) {
        bail!("super_users: `{bad}` is not TYPE:NAME (e.g. User:admin)");
    }
    let allow_everyone_if_no_acl_found = args.allow_everyone_if_no_acl_found.or(file.allow_everyone_if_no_acl_found).unwrap_or(false);
    if !args.acls_enable.or(file.acls_enable).unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(ferry_auth::acl::AuthorizerConfig { super_users, allow_everyone_if_no_acl_found }))
}

/// `sasl_enabled_mechanisms`: known names, at least one.
fn resolve_sasl(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Vec<SaslMechanism>> {
    let list = args.sasl_enabled_mechanisms.as_deref().or(file.sasl_enabled_mechanisms.as_deref()).unwrap_or("SCRAM-SHA-256,SCRAM-SHA-512");
    let mechanisms = parse_mechanisms(list).map_err(|e| anyhow::anyhow!("sasl_enabled_mechanisms: {e}"))?;
    if mechanisms.is_empty() {
        bail!("sasl_enabled_mechanisms: name at least one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512");
    }
    Ok(mechanisms)
}

/// The `ssl_*` settings, required as soon as a listener uses TLS.
fn resolve_tls(args: &ServeArgs, file: &FileConfig, listeners: &[ListenerPlan]) -> anyhow::Result<Option<TlsFiles>> {
    let certificate = args.ssl_certificate_location.clone().or_else(|| file.ssl_certificate_location.clone());
    let key = args.ssl_key_location.clone().or_else(|| file.ssl_key_location.clone());
    let ca = args.ssl_ca_location.clone().or_else(|| file.ssl_ca_location.clone());
    let client_auth: ClientAuth = match args.ssl_client_auth.as_deref().or(file.ssl_client_auth.as_deref()) {
        Some(s) => s.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        None => ClientAuth::None,
    };
    if !listeners.iter().any(|l| l.protocol.uses_tls()) {
        return Ok(None);
    }
    let (Some(certificate), Some(key)) = (certificate, key) else {
        bail!("an SSL listener needs ssl_certificate_location and ssl_key_location");
    };
    if client_auth != ClientAuth::None && ca.is_none() {
        bail!("ssl_client_auth={client_auth:?} needs ssl_ca_location");
    }
    Ok(Some(TlsFiles { certificate, key, ca, client_auth }))
}

fn resolve_cluster(args: &ServeArgs, file: &FileConfig, node_id: i32) -> anyhow::Result<Option<ClusterSettings>> {
    let listen = args.cluster_listen.or(file.cluster_listen);
    let Some(voters) = args.cluster_voters.clone().or_else(|| file.cluster_voters.clone()) else {
        if listen.is_some() {
            bail!("cluster_listen is set but cluster_voters is not: list every broker as ID@HOST:PORT");
        }
        if args.cluster_secret_file.is_some() || file.cluster_secret_file.is_some() {
            bail!("cluster_secret_file is set but cluster_voters is not: a single node has no cluster connections");
        }
        return Ok(None);
    };
    let voters = ferry_cluster::config::parse_voters(&voters).map_err(|e| anyhow::anyhow!("cluster_voters: {e}"))?;
    if let Some(v) = voters.iter().find(|v| v.id as i64 >= crate::serve::MAX_CLUSTER_NODE_ID) {
        bail!("cluster_voters: node id {} is too large; use ids below {}", v.id, crate::serve::MAX_CLUSTER_NODE_ID);
    }
    if node_id < 1 || node_id as i64 >= crate::serve::MAX_CLUSTER_NODE_ID {
        bail!("node_id {node_id} is out of range for a cluster: use 1..{}", crate::serve::MAX_CLUSTER_NODE_ID);
    }
    // A broker outside the voters joins the running cluster as an observer
    // (Kafka: a broker that is not a controller); it must say where it listens.
    let me = u64::try_from(node_id).ok().and_then(|id| voters.iter().find(|v| v.id == id));
    let listen = match (listen, me) {
        (Some(l), _) => l,
        (None, Some(me)) => me.addr.parse().with_context(|| format!("cluster_listen not set and this node's voter address {} is not IP:PORT", me.addr))?,
        (None, None) => bail!("node_id {node_id} is not among cluster_voters, so it joins the cluster as an observer: set cluster_listen to where the others reach it"),
    };
    let auto_leader_rebalance_enable = args.auto_leader_rebalance_enable.or(file.auto_leader_rebalance_enable).unwrap_or(true);
    let secret = match args.cluster_secret_file.as_ref().or(file.cluster_secret_file.as_ref()) {
        Some(path) => Some(ferry_cluster::ClusterSecret::from_file(path).map_err(|e| anyhow::anyhow!("cluster_secret_file: {e}"))?),
        None => None,
    };
    Ok(Some(ClusterSettings { listen, voters, auto_leader_rebalance_enable, secret }))
}

/// `max.connections.per.ip` and its overrides. As in Kafka, a limit of 0
/// takes overrides to mean anything (only the listed addresses may connect).
fn resolve_per_ip(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ferry_kafka::ip_limit::PerIpLimits> {
    let default = args.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(usize::MAX);
    let overrides = match args.max_connections_per_ip_overrides.as_deref().or(file.max_connections_per_ip_overrides.as_deref()) {
        Some(text) => ferry_kafka::ip_limit::PerIpLimits::parse_overrides(text).map_err(|e| anyhow::anyhow!("max_connections_per_ip_overrides: {e}"))?,
        None => Default::default(),
    };
    if default == 0 && overrides.is_empty() {
        bail!("max_connections_per_ip 0 refuses every client; list the allowed addresses in max_connections_per_ip_overrides");
    }
    Ok(ferry_kafka::ip_limit::PerIpLimits { default, overrides })
}

/// The `log.cleaner.*` settings, checked against the bounds that make sense
/// (Kafka checks fewer; a zero rate or a tiny key map would never finish a pass).
fn resolve_cleaner(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ferry_broker::CleanerConfig> {
    let d = ferry_broker::CleanerConfig::default();
    let c = ferry_broker::CleanerConfig {
        enable: args.log_cleaner_enable.or(file.log_cleaner_enable).unwrap_or(d.enable),
        backoff_ms: args.log_cleaner_backoff_ms.or(file.log_cleaner_backoff_ms).unwrap_or(d.backoff_ms),
        io_max_bytes_per_second: args
            .log_cleaner_io_max_bytes_per_second
            .or(file.log_cleaner_io_max_bytes_per_second)
            .unwrap_or(d.io_max_bytes_per_second),
        dedupe_buffer_size: args.log_cleaner_dedupe_buffer_size.or(file.log_cleaner_dedupe_buffer_size).unwrap_or(d.dedupe_buffer_size),
    };
    if c.io_max_bytes_per_second.is_nan() || c.io_max_bytes_per_second <= 0.0 {
        bail!("log_cleaner_io_max_bytes_per_second must be positive, got {}", c.io_max_bytes_per_second);
    }
    if c.dedupe_buffer_size < 1024 * 1024 {
        bail!("log_cleaner_dedupe_buffer_size must be at least 1048576, got {}", c.dedupe_buffer_size);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaner_settings_default_to_kafkas_and_are_checked() {
        let s = ServeArgs::default().resolve().expect("defaults resolve");
        assert!(s.cleaner.enable);
        assert_eq!(s.cleaner.backoff_ms, 15_000);
        assert_eq!(s.cleaner.io_max_bytes_per_second, f64::MAX);
        let file: FileConfig = toml::from_str("log_cleaner_backoff_ms = 200\nlog_cleaner_enable = false").expect("toml");
        let c = resolve_cleaner(&ServeArgs { log_cleaner_backoff_ms: Some(300), ..ServeArgs::default() }, &file).expect("valid");
        assert_eq!((c.enable, c.backoff_ms), (false, 300), "flags win over the file");
        for bad in [
            ServeArgs { log_cleaner_io_max_bytes_per_second: Some(0.0), ..ServeArgs::default() },
            ServeArgs { log_cleaner_io_max_bytes_per_second: Some(f64::NAN), ..ServeArgs::default() },
            ServeArgs { log_cleaner_dedupe_buffer_size: Some(1000), ..ServeArgs::default() },
        ] {
            assert!(bad.resolve().is_err());
        }
    }

    #[test]
    fn listeners_default_to_one_plaintext_and_sasl_is_configured() {
        let s = ServeArgs::default().resolve().expect("defaults resolve");
        assert_eq!(s.listeners.len(), 1);
        assert_eq!((s.advertised_host.as_str(), s.advertised_port), ("127.0.0.1", 9092));
        assert!(s.tls.is_none());
        let sasl = ServeArgs { listen: Some("PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093".into()), ..ServeArgs::default() };
        let s = sasl.resolve().expect("SASL_PLAINTEXT needs no files");
        assert_eq!(s.sasl_enabled_mechanisms.len(), 2, "SCRAM-SHA-256,SCRAM-SHA-512 by default");
        assert_eq!(s.connection_failed_authentication_delay_ms, 100);
        let file: FileConfig = toml::from_str("sasl_enabled_mechanisms = \"PLAIN\"").expect("toml");
        assert_eq!(resolve_sasl(&ServeArgs::default(), &file).expect("valid"), vec![SaslMechanism::Plain]);
        let bad = ServeArgs { sasl_enabled_mechanisms: Some("GSSAPI".into()), ..ServeArgs::default() };
        assert!(bad.resolve().expect_err("unknown").to_string().contains("GSSAPI"));
        assert!(s.acls.is_none(), "ACLs are off by default");
        let file: FileConfig = toml::from_str("acls_enable = true\nsuper_users = \"User:admin; User:ops\"").expect("toml");
        let acls = resolve_acls(&ServeArgs::default(), &file).expect("valid").expect("enabled");
        assert_eq!((acls.super_users, acls.allow_everyone_if_no_acl_found), (vec!["User:admin".to_string(), "User:ops".to_string()], false));
        assert!(resolve_acls(&ServeArgs { super_users: Some("admin".into()), ..ServeArgs::default() }, &file).is_err());
        let ssl = ServeArgs { listen: Some("SSL://127.0.0.1:9093".into()), ..ServeArgs::default() };
        assert!(ssl.resolve().expect_err("needs files").to_string().contains("ssl_certificate_location"));
        let file: FileConfig = toml::from_str("listen = \"SSL://127.0.0.1:9093\"\nssl_certificate_location = \"c.pem\"\nssl_key_location = \"k.pem\"\nssl_client_auth = \"required\"").expect("toml");
        assert!(resolve_tls(&ServeArgs::default(), &file, &resolve_listeners(&ServeArgs::default(), &file).expect("listeners")).is_err(), "required needs a CA");
    }
}
