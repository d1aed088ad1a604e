//! The fault thread of a verify run: which fault comes next, which broker
//! it hits, and how each kind is injected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_verify::Event;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::broker::{Broker, Fleet};
use super::workload::{Endpoint, Recorder};
use super::Rng;

/// Kinds a single broker takes, and kinds a cluster takes.
pub const SINGLE_NODE_FAULTS: &[&str] = &["kill", "pause", "disconnect", "fsync-error", "torn-tail"];
pub const CLUSTER_FAULTS: &[&str] = &["kill", "pause", "disconnect", "partition", "leader-isolation"];

/// Does any of `kinds` cut links (so the brokers need namespaces)?
pub fn cuts_links(kinds: &[String]) -> bool {
    kinds.iter().any(|k| k == "partition" || k == "leader-isolation")
}

/// Longest a single fault takes to inject (fsync-error: two restarts and
/// up to two seconds between them).
pub const FAULT_MAX_MS: u64 = 5_000;

/// Which fault comes next: every requested kind once, in an order the seed
/// shuffles, then again, so a run of N faults has each kind N / kinds times.
pub struct FaultSchedule {
    kinds: Vec<String>,
    round: Vec<String>,
    injected: HashMap<String, usize>,
}

impl FaultSchedule {
    /// `kinds` holds each kind once (`run` deduplicates --faults).
    fn new(kinds: &[String]) -> FaultSchedule {
        FaultSchedule { kinds: kinds.to_vec(), round: Vec::new(), injected: HashMap::new() }
    }
    fn next(&mut self, rng: &mut Rng) -> Option<String> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            for i in (1..self.round.len()).rev() {
                self.round.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
        }
        let kind = self.round.pop()?;
        *self.injected.entry(kind.clone()).or_default() += 1;
        Some(kind)
    }
    fn every_kind_injected(&self) -> bool {
        self.kinds.iter().all(|k| self.injected.contains_key(k))
    }
}

/// What the fault thread is to do.
pub struct FaultPlan {
    pub kinds: Vec<String>,
    pub interval_ms: u64,
    pub max_faults: u32,
    pub seed: u64,
    /// The topic under test: torn tails go into its segments, and on a
    /// cluster the leader of one of its partitions is a fault's target.
    pub topic: String,
    pub partitions: i32,
}

/// Injects faults until `stop`, or `max_faults`; clears `faults_pending`
/// once every kind has landed.
pub fn spawn(fleet: Arc<Mutex<Fleet>>, plan: FaultPlan, stop: Arc<AtomicBool>, faults_pending: Arc<AtomicBool>, recorder: Arc<Recorder>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng(plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut schedule = FaultSchedule::new(&plan.kinds);
        let interval = plan.interval_ms.max(200);
        let endpoint = fleet.lock().expect("fleet lock").endpoint();
        let mut injected = 0;
        while !stop.load(Ordering::SeqCst) && injected < plan.max_faults {
            // The first fault comes early, so even a short run has one.
            let wait_ms = if injected == 0 { interval / 4 } else { interval / 2 + rng.next() % interval };
            injected += 1;
            std::thread::sleep(Duration::from_millis(wait_ms));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(kind) = schedule.next(&mut rng) else { break };
            let target = pick_target(&fleet, &kind, &endpoint, &plan, &mut rng);
            recorder.push(Event::Fault { kind: kind.clone(), time_ms: recorder.now_ms() });
            let mut fleet = fleet.lock().expect("fleet lock");
            if let Err(e) = inject(&mut fleet, target, &kind, &plan.topic, &mut rng) {
                eprintln!("verify: injecting {kind} failed: {e:#}");
            }
            if schedule.every_kind_injected() {
                faults_pending.store(false, Ordering::SeqCst);
            }
        }
    })
}

/// The broker a fault hits: the only one; on a cluster, for the kinds
/// about leaders, the leader of a random partition of the topic (a random
/// broker if none is known), else any broker.
fn pick_target(fleet: &Mutex<Fleet>, kind: &str, endpoint: &Endpoint, plan: &FaultPlan, rng: &mut Rng) -> usize {
    let n = fleet.lock().expect("fleet lock").brokers.len();
    if n == 1 {
        return 0;
    }
    let random = (rng.next() % n as u64) as usize;
    if kind == "partition" {
        return random;
    }
    let partition = (rng.next() % plan.partitions.max(1) as u64) as i32;
    leader_of(endpoint, &plan.topic, partition).filter(|id| (1..=n as i32).contains(id)).map(|id| id as usize - 1).unwrap_or(random)
}

fn leader_of(endpoint: &Endpoint, topic: &str, partition: i32) -> Option<i32> {
    let c: BaseConsumer = endpoint.config().create().ok()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(3)).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    t.partitions().iter().find(|p| p.id() == partition).map(|p| p.leader()).filter(|l| *l > 0)
}

fn restart(b: &mut Broker) {
    if let Err(e) = b.spawn() {
        eprintln!("verify: broker restart failed: {e:#}");
    }
}

fn inject(fleet: &mut Fleet, target: usize, kind: &str, topic: &str, rng: &mut Rng) -> anyhow::Result<()> {
    match kind {
        "partition" | "leader-isolation" => {
            // Longer than an election timeout, so the others elect a leader
            // and the cut-off one must catch up once healed.
            fleet.cut(target)?;
            std::thread::sleep(Duration::from_millis(2_500 + rng.next() % 3_000));
            fleet.heal(target)?;
            return Ok(());
        }
        "disconnect" => {
            fleet.brokers.iter().for_each(Broker::disconnect_all);
            return Ok(());
        }
        _ => {}
    }
    let b = &mut fleet.brokers[target];
    match kind {
        "kill" => {
            b.kill9();
            std::thread::sleep(Duration::from_millis(200 + rng.next() % 300));
            restart(b);
        }
        "fsync-error" => {
            // The partitions of the topic fail an fsync soon; they refuse
            // writes until the clean restart below recovers them.
            b.kill9();
            let spec = format!("fsync-error:{topic}:{}", 5 + rng.next() % 50);
            if let Err(e) = b.spawn_with_faults(Some(&spec)) {
                eprintln!("verify: broker restart failed: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(1000 + rng.next() % 1000));
            b.kill9();
            restart(b);
        }
        "torn-tail" => {
            b.kill9();
            b.tear_tails(topic, rng)?;
            restart(b);
        }
        _ => {
            b.signal("STOP");
            std::thread::sleep(Duration::from_millis(300 + rng.next() % 700));
            b.signal("CONT");
        }
    }
    Ok(())
}
