//! Kafka's client quotas (KIP-13, KIP-55, KIP-124, KIP-546): byte rates
//! for producing and fetching and a share of request handling time, set
//! on users, client ids and users' client ids (each possibly `<default>`),
//! durable in `<data-dir>/security/quotas.json`, and measured per quota
//! entity the way Kafka's ClientQuotaManager measures them. No Kafka
//! dependency: the front end turns the wire into these calls.

pub mod model;
pub mod rate;
pub mod store;

mod resolve;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

pub use model::{EntityName, QuotaEntity, QuotaError, QuotaKey, Values, CLIENT_ID, IP, MAX_ENTITIES, USER};
pub use rate::WindowConfig;
pub use store::Config;

use crate::store::StoreError;
use rate::Rate;
use store::QuotaStore;

/// The quotas the broker enforces, each measured by its own sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enforced {
    /// producer_byte_rate: Produce request bytes per second.
    Produce,
    /// consumer_byte_rate: Fetch response record bytes per second.
    Fetch,
    /// request_percentage: handling time, in percent of one thread.
    Request,
}

impl Enforced {
    const ALL: [Enforced; 3] = [Enforced::Produce, Enforced::Fetch, Enforced::Request];

    pub fn key(self) -> QuotaKey {
        match self {
            Enforced::Produce => QuotaKey::ProducerByteRate,
            Enforced::Fetch => QuotaKey::ConsumerByteRate,
            Enforced::Request => QuotaKey::RequestPercentage,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One op of an AlterClientQuotas entry: set `key` to `value`, or remove it.
#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    pub value: f64,
    pub remove: bool,
}

/// One AlterClientQuotas entry; the entity as parsed from the wire.
#[derive(Debug, Clone)]
pub struct Alteration {
    pub entity: Result<QuotaEntity, QuotaError>,
    pub ops: Vec<Op>,
}

/// One DescribeClientQuotas filter component: match type 0 (exact name;
/// `name` set), 1 (the default entity), 2 (any entity of that type).
#[derive(Debug, Clone)]
pub struct FilterComponent {
    pub entity_type: String,
    pub match_type: i8,
    pub name: Option<String>,
}

/// Sensors live per (quota, user tag, client-id tag), as Kafka's metric tags.
type SensorKey = (Enforced, String, String);

/// At most this many sensors; beyond, idle ones are dropped first.
const MAX_SENSORS: usize = 100_000;

/// The quota configuration and the sensors measuring clients against it.
#[derive(Debug)]
pub struct ClientQuotas {
    store: QuotaStore,
    config: RwLock<Arc<Config>>,
    /// Serializes changes: check, file write and swap happen as one.
    writer: Mutex<()>,
    /// Per enforced quota: does any entity set it? One load decides that
    /// a request needs no quota work at all.
    active: [AtomicBool; 3],
    window: WindowConfig,
    sensors: Mutex<Sensors>,
    clock: Instant,
}

/// The sensors and when idle ones were last dropped.
#[derive(Debug, Default)]
struct Sensors {
    map: HashMap<SensorKey, Rate>,
    purged_ms: u64,
}

impl ClientQuotas {
    /// Opens `data_dir/security/quotas.json` (empty when absent).
    pub fn open(data_dir: &Path, window: WindowConfig) -> Result<ClientQuotas, StoreError> {
        let (store, config) = QuotaStore::open(data_dir)?;
        let quotas = ClientQuotas {
            store,
            config: RwLock::new(Arc::new(Config::new())),
            writer: Mutex::new(()),
            active: [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)],
            window,
            sensors: Mutex::new(Sensors::default()),
            clock: Instant::now(),
        };
        quotas.install(config);
        Ok(quotas)
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    pub fn window(&self) -> WindowConfig {
        self.window
    }

    /// How many entities carry quotas.
    pub fn len(&self) -> usize {
        self.config.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn install(&self, config: Config) {
        for kind in Enforced::ALL {
            let set = config.values().any(|v| v.contains_key(&kind.key()));
            self.active[kind.index()].store(set, Ordering::Release);
        }
        *self.config.write() = Arc::new(config);
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether any entity sets this quota: the hot path's only cost when none does.
    #[inline]
    pub fn is_active(&self, kind: Enforced) -> bool {
        self.active[kind.index()].load(Ordering::Acquire)
    }

    /// Whether any enforced quota is set at all.
    #[inline]
    pub fn any_active(&self) -> bool {
        Enforced::ALL.into_iter().any(|k| self.is_active(k))
    }

    /// The current configuration (a snapshot).
    pub fn snapshot(&self) -> Arc<Config> {
        self.config.read().clone()
    }
}

impl ClientQuotas {
    /// AlterClientQuotas: one result per entry, in order. An entry applies
    /// whole or not at all; with `validate_only` nothing is written. Err:
    /// the file could not be written, and nothing changed.
    pub fn alter(&self, entries: Vec<Alteration>, validate_only: bool) -> Result<Vec<Result<(), QuotaError>>, StoreError> {
        let _writing = self.writer.lock();
        let mut config: Config = (**self.config.read()).clone();
        let mut seen = HashSet::new();
        let results: Vec<Result<(), QuotaError>> = entries.into_iter().map(|e| apply_one(&mut config, e, &mut seen)).collect();
        if validate_only || *self.config.read().as_ref() == config {
            return Ok(results);
        }
        self.store.save(&config)?;
        self.install(config);
        Ok(results)
    }

    /// DescribeClientQuotas: the entities the filter matches, with their quotas.
    pub fn describe(&self, components: &[FilterComponent], strict: bool) -> Result<Vec<(QuotaEntity, Values)>, QuotaError> {
        let filter = resolve::Filter::parse(components)?;
        let config = self.snapshot();
        Ok(config.iter().filter(|(e, _)| filter.matches(e, strict)).map(|(e, v)| (e.clone(), v.clone())).collect())
    }
}

/// Checks one entry against the configuration being built and applies it.
fn apply_one(config: &mut Config, e: Alteration, seen: &mut HashSet<QuotaEntity>) -> Result<(), QuotaError> {
    let entity = e.entity?;
    entity.validate()?;
    if !seen.insert(entity.clone()) {
        return Err(QuotaError::DuplicateEntity(entity.path()));
    }
    let mut changes: Vec<(QuotaKey, Option<f64>)> = Vec::new();
    for op in &e.ops {
        let key = QuotaKey::from_name(&op.key).ok_or_else(|| QuotaError::UnknownKey(op.key.clone()))?;
        if changes.iter().any(|(k, _)| *k == key) {
            return Err(QuotaError::DuplicateKey(op.key.clone()));
        }
        if !op.remove {
            key.check_value(op.value)?;
        }
        changes.push((key, (!op.remove).then_some(op.value)));
    }
    let is_new = !config.contains_key(&entity);
    let mut values = config.get(&entity).cloned().unwrap_or_default();
    for (key, value) in changes {
        match value {
            Some(v) => values.insert(key, v),
            None => values.remove(&key),
        };
    }
    if values.is_empty() {
        config.remove(&entity);
    } else {
        if is_new && config.len() >= MAX_ENTITIES {
            return Err(QuotaError::TooManyEntities);
        }
        config.insert(entity, values);
    }
    Ok(())
}

impl ClientQuotas {
    /// Records `value` used by (user, client id) and answers how long the
    /// client must wait (ms; 0 when within its quota or when it has none).
    /// `user` is the principal's name (`alice` for `User:alice`).
    pub fn record(&self, kind: Enforced, user: &str, client_id: &str, value: f64) -> u64 {
        self.record_at(kind, user, client_id, value, self.now_ms())
    }

    fn record_at(&self, kind: Enforced, user: &str, client_id: &str, value: f64, now: u64) -> u64 {
        let config = self.snapshot();
        let Some((bound, tags)) = resolve::quota_for(&config, kind.key(), user, client_id) else { return 0 };
        let mut sensors = self.sensors.lock();
        let Some(rate) = sensor(&mut sensors, self.window, (kind, tags.0, tags.1), now) else { return 0 };
        rate.record(self.window, value, now);
        self.bounded(kind, rate.throttle_ms(self.window, bound, now))
    }

    /// How long (user, client id) must wait now, recording nothing.
    pub fn throttle(&self, kind: Enforced, user: &str, client_id: &str) -> u64 {
        let now = self.now_ms();
        let config = self.snapshot();
        let Some((bound, tags)) = resolve::quota_for(&config, kind.key(), user, client_id) else { return 0 };
        let mut sensors = self.sensors.lock();
        match sensors.map.get_mut(&(kind, tags.0, tags.1)) {
            Some(rate) => self.bounded(kind, rate.throttle_ms(self.window, bound, now)),
            None => 0,
        }
    }

    /// Takes back a recorded value (a throttled fetch answers no data, as in Kafka).
    pub fn unrecord(&self, kind: Enforced, user: &str, client_id: &str, value: f64) {
        let now = self.now_ms();
        let config = self.snapshot();
        let Some((_, tags)) = resolve::quota_for(&config, kind.key(), user, client_id) else { return };
        if let Some(rate) = self.sensors.lock().map.get_mut(&(kind, tags.0, tags.1)) {
            rate.record(self.window, -value, now);
        }
    }

    /// The most one request may use without being throttled for sure:
    /// quota × (samples - 1) windows (Kafka caps a fetch's size at this).
    pub fn max_in_window(&self, kind: Enforced, user: &str, client_id: &str) -> Option<f64> {
        let config = self.snapshot();
        let (bound, _) = resolve::quota_for(&config, kind.key(), user, client_id)?;
        let span_s = f64::from(self.window.samples.saturating_sub(1)) * self.window.window_ms as f64 / 1000.0;
        Some(bound * span_s)
    }

    /// Kafka caps a request-time throttle at one window; byte rates are not capped.
    fn bounded(&self, kind: Enforced, ms: u64) -> u64 {
        match kind {
            Enforced::Request => ms.min(self.window.window_ms),
            _ => ms,
        }
    }
}

/// The sensor for `key`, created if need be. Idle sensors measure zero, so
/// dropping them when the map is full loses nothing (at most once a window,
/// so a flood of new client ids cannot make every request scan the map);
/// None if it is still full of active ones (that client is not measured).
fn sensor(sensors: &mut Sensors, cfg: WindowConfig, key: SensorKey, now: u64) -> Option<&mut Rate> {
    if !sensors.map.contains_key(&key) && sensors.map.len() >= MAX_SENSORS {
        if now.saturating_sub(sensors.purged_ms) >= cfg.window_ms {
            sensors.purged_ms = now;
            sensors.map.retain(|_, r| !r.is_idle(cfg, now));
        }
        if sensors.map.len() >= MAX_SENSORS {
            tracing::warn!(max = MAX_SENSORS, "too many active quota sensors; a new client is not measured");
            return None;
        }
    }
    Some(sensors.map.entry(key).or_insert_with(|| Rate::new(now)))
}

#[cfg(test)]
mod tests;
