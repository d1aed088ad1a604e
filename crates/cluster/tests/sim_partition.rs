//! Deterministic simulation of the partition groups (see `sim.rs` for the
//! metadata group): three brokers each holding a replica of two partitions,
//! every `PartitionGroup` driven as the driver drives it (messages stepped,
//! ticks with `track_followers`, every 50 ticks `refresh_in_sync` and
//! `rebalance_leadership`, then `handle_ready` and the outbox), every choice
//! from one seed. Simulated: the network (loss, duplication, delay and so
//! reordering, a broker cut off and healed), the partition logs (in memory,
//! see `mem_log.rs`), crashes between rounds and in the middle of an fsync
//! (keeping any byte prefix of what was not synced), restarts that reopen
//! every group from its disk, slow fsyncs (a broker stalled for a while, its
//! messages queueing), producers appending with acks=1 and acks=all at the
//! broker they believe leads (their requests arriving between the peers'
//! messages), giving up waiting now and then, sending again what was not
//! acknowledged (recognised by the partition's producer state), and
//! DeleteRecords now and then. In two seeds of three each replica also
//! drops its log's head up to the log start every 50 ticks (as retention
//! does), so a follower behind it is sent a snapshot and starts over there.
//!
//! Checked all along: one leader per term; each replica's high watermark
//! never goes back while it is up and never covers unsynced data; the
//! replicas hold the same bytes below their high watermarks; no truncation
//! below it; the log start never past it; no two acks=all acknowledgements
//! at overlapping offsets. After the faults stop and the group settles:
//! every replica holds the same log, all committed, with every acks=all
//! batch at its acknowledged offsets, acks=1 batches there or lost, no
//! batch twice, every replica back in the leader's ISR.
//!
//! Not simulated: the real segments and their recovery (the hard state and
//! marks files are real, in a temp directory; they are fsynced, so a crash
//! keeps them whole), Kafka's producer sequence rules (a retry is known by
//! its batch's id), the transport's
//! batching, the metadata group and its leader reports. Brokers' clocks run
//! at one rate, each missing a tick now and then.
//!
//!     cargo test --release -p ferry-cluster --test sim_partition                             # 1000 seeds (CI)
//!     FERRY_SIM_SEEDS=50000 cargo test --release -p ferry-cluster --test sim_partition       # the long run
//!     FERRY_SIM_SEED=1234 cargo test --release -p ferry-cluster --test sim_partition         # replay one
//!
//! `FERRY_SIM_STEPS` sets the faulty steps per seed, `FERRY_SIM_FIRST` the
//! first seed (to split a long run).

#[path = "sim_partition/checks.rs"]
mod checks;
#[path = "sim_partition/clients.rs"]
mod clients;
#[path = "sim_partition/mem_log.rs"]
mod mem_log;
#[path = "sim_partition/record.rs"]
mod record;
#[path = "common/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_cluster::partition::{AppendError, GroupSpec, PartitionGroup, Placed};
use ferry_cluster::NodeOptions;
use mem_log::MemLog;
use raft::eraftpb::Message;
use record::PartitionRecord;
use rng::Rng;
use tokio::sync::oneshot;

const BROKERS: usize = 3;
const PARTITIONS: usize = 2;
const TICK_MS: u64 = 100;
/// As the driver: the ISR and the preferred leader are looked at every 50 ticks.
const CHECK_TICKS: u64 = 50;
const SETTLE_STEPS: u64 = 600;

/// One broker's replica of one partition.
struct Replica {
    group: Option<PartitionGroup>,
    log: Arc<MemLog>,
    state_path: PathBuf,
    voters: Vec<u64>,
    /// The highest high watermark seen since the broker last started.
    hw_seen: i64,
    /// Offsets below this were compared with the committed batches since then.
    checked_to: i64,
}

struct Broker {
    replicas: Vec<Replica>,
    up: bool,
    down_until: u64,
    /// A slow fsync: until then the broker's Raft thread does nothing.
    stalled_until: u64,
    ticks: u64,
    _dir: tempfile::TempDir,
}

enum Ask {
    /// `batch` as the producer sent it, to send again.
    Append { id: u64, records: i64, acks: i16, batch: Vec<u8> },
    DeleteRecords,
}

struct Waiting {
    partition: usize,
    ask: Ask,
    rx: oneshot::Receiver<Result<Placed, AppendError>>,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    appends: u64,
    retries: u64,
    acked_all: u64,
    acked_one: u64,
    lost_one: u64,
    deletes: u64,
    crashes: u64,
    died_in_fsync: u64,
    cuts: u64,
    stalls: u64,
    leaders: u64,
    snapshots: u64,
}

struct Sim {
    rng: Rng,
    seed: u64,
    step: u64,
    start: Instant,
    brokers: Vec<Broker>,
    /// (due step, group, message)
    in_flight: Vec<(u64, u64, Message)>,
    cut: Option<u64>,
    faults: bool,
    leaders: BTreeMap<(usize, u64), u64>,
    records: Vec<PartitionRecord>,
    waiting: Vec<Waiting>,
    /// Appends refused or unanswered (the broker died, the producer gave
    /// up waiting): the producer may send them again.
    unknown: Vec<(usize, Ask)>,
    next_id: u64,
    stats: Stats,
    logger: slog::Logger,
}

/// Where the brokers' hard state and marks files go: in memory when the
/// machine allows (their fsyncs are the real code's; on a disk they would
/// be most of the run time).
fn state_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    dir.expect("a temp dir")
}

fn group_id(partition: usize) -> u64 {
    partition as u64 + 1
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let brokers = (0..BROKERS)
            .map(|b| {
                let dir = state_dir();
                let replicas = (0..PARTITIONS)
                    .map(|p| Replica {
                        group: None,
                        log: Arc::new(MemLog::new(format!("seed {seed}: broker {} partition {p}", b + 1))),
                        state_path: dir.path().join(format!("{}.raft", group_id(p))),
                        // Each partition prefers another broker as its leader.
                        voters: (0..BROKERS).map(|i| ((p + i) % BROKERS) as u64 + 1).collect(),
                        hw_seen: 0,
                        checked_to: 0,
                    })
                    .collect();
                Broker { replicas, up: false, down_until: 0, stalled_until: 0, ticks: 0, _dir: dir }
            })
            .collect();
        let mut sim = Sim {
            rng: Rng(seed),
            seed,
            step: 0,
            start: Instant::now(),
            brokers,
            in_flight: Vec::new(),
            cut: None,
            faults: true,
            leaders: BTreeMap::new(),
            records: (0..PARTITIONS).map(|_| PartitionRecord::default()).collect(),
            waiting: Vec::new(),
            unknown: Vec::new(),
            next_id: 0,
            stats: Stats::default(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        };
        // Chosen after the brokers, so a seed's schedule otherwise stays
        // the one it was before compaction existed.
        if sim.rng.below(3) > 0 {
            sim.brokers.iter().flat_map(|b| &b.replicas).for_each(|r| r.log.set_compacting(true));
        }
        sim.restart_due();
        sim
    }

    fn fail(&self, what: String) -> ! {
        let mut lines = Vec::new();
        for (b, broker) in self.brokers.iter().enumerate() {
            for (p, r) in broker.replicas.iter().enumerate() {
                let state = match &r.group {
                    Some(g) => {
                        let raft = &g.raw.raft;
                        let s = g.status();
                        format!("term {} leader {} commit {} hw {} in sync {:?}", s.term, s.leader_id, raft.raft_log.committed, s.high_watermark, g.in_sync)
                    }
                    None => "down".into(),
                };
                lines.push(format!("broker {} partition {p}: log end {}, {state}", b + 1, r.log.end_offset()));
            }
        }
        panic!(
            "seed {} step {}: {what}\n{}\nreplay: FERRY_SIM_SEED={} cargo test --release -p ferry-cluster --test sim_partition",
            self.seed,
            self.step,
            lines.join("\n"),
            self.seed
        )
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.step * TICK_MS)
    }

    /// Up and not in the middle of a slow fsync.
    fn active(&self, b: usize) -> bool {
        self.brokers[b].up && self.brokers[b].stalled_until <= self.step
    }

    fn run_step(&mut self) {
        self.step += 1;
        if self.faults {
            self.inject_faults();
        }
        self.restart_due();
        self.deliver();
        self.tick();
        if self.faults && self.rng.chance(30) {
            // Several appends in one round now and then: proposals pile up
            // before the Ready that writes them.
            let n = if self.rng.chance(20) { 2 + self.rng.below(4) } else { 1 };
            for _ in 0..n {
                self.client();
            }
        }
        for b in 0..BROKERS {
            self.ready(b);
        }
        self.check();
    }

    fn inject_faults(&mut self) {
        let roll = self.rng.below(1000);
        let b = self.rng.below(BROKERS as u64) as usize;
        if roll < 5 {
            if self.brokers[b].up {
                self.crash(b);
            }
        } else if roll < 11 {
            self.cut = if self.cut.is_some() { None } else { Some(b as u64 + 1) };
            self.stats.cuts += u64::from(self.cut.is_some());
        } else if roll < 18 && self.active(b) {
            self.brokers[b].stalled_until = self.step + 1 + self.rng.below(25);
            self.stats.stalls += 1;
        } else if roll < 21 && self.active(b) {
            // Dies at its next fsync, whichever group makes it.
            let p = self.rng.below(PARTITIONS as u64) as usize;
            self.brokers[b].replicas[p].log.die_at_next_sync();
        }
    }

    /// The broker's process dies: its groups go (their waiters with them),
    /// each log keeps some prefix of what it had not synced.
    fn crash(&mut self, b: usize) {
        self.stats.crashes += 1;
        for p in 0..PARTITIONS {
            let r = &mut self.brokers[b].replicas[p];
            r.group = None;
            let volatile = r.log.volatile_len() as u64;
            let survive = self.rng.below(volatile + 1) as usize;
            self.brokers[b].replicas[p].log.crash(survive);
        }
        self.brokers[b].up = false;
        self.brokers[b].down_until = self.step + 1 + self.rng.below(60);
    }

    fn restart_due(&mut self) {
        for b in 0..BROKERS {
            let broker = &self.brokers[b];
            if broker.up || (broker.down_until > self.step && self.faults) {
                continue;
            }
            for p in 0..PARTITIONS {
                let group = self.open_group(b, p);
                let r = &mut self.brokers[b].replicas[p];
                r.group = Some(group);
                r.hw_seen = 0;
                r.checked_to = 0;
            }
            let broker = &mut self.brokers[b];
            broker.up = true;
            broker.ticks = 0;
        }
    }

    fn open_group(&mut self, b: usize, p: usize) -> PartitionGroup {
        let options = NodeOptions {
            node_id: b as u64 + 1,
            voters: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_pending_proposals: 1000,
            incarnation: 0,
            // Each run of each group draws its own, as raft-rs would.
            fixed_election_timeout: Some(10 + self.rng.below(10) as usize),
        };
        let r = &self.brokers[b].replicas[p];
        let spec = GroupSpec { group: group_id(p), voters: r.voters.clone(), preferred: 0, state_path: r.state_path.clone(), log: r.log.clone() };
        PartitionGroup::open(spec, &options, &self.logger).unwrap_or_else(|e| self.fail(format!("broker {} cannot reopen partition {p}: {e}", b + 1)))
    }

    fn deliver(&mut self) {
        let mut later = Vec::new();
        for (at, group, msg) in std::mem::take(&mut self.in_flight) {
            let to = msg.to as usize - 1;
            // A stalled broker reads its messages once its fsync returns.
            if at > self.step || (self.brokers[to].up && !self.active(to)) {
                later.push((at, group, msg));
                continue;
            }
            if self.cut == Some(msg.to) || self.cut == Some(msg.from) {
                continue;
            }
            // Producers' requests arrive between peers' messages.
            if self.faults && self.rng.chance(3) {
                self.client();
            }
            if let Some(g) = self.brokers[to].replicas[group as usize - 1].group.as_mut() {
                let _ = g.raw.step(msg);
            }
        }
        self.in_flight = later;
    }

    fn tick(&mut self) {
        let now = self.now();
        for b in 0..BROKERS {
            // Each broker ticks on its own clock, late now and then. Without
            // it, two members whose (fixed) election timeouts are equal
            // split every vote while the one that could win never times out.
            if !self.active(b) || self.rng.chance(10) {
                continue;
            }
            let broker = &mut self.brokers[b];
            broker.ticks += 1;
            let check = broker.ticks.is_multiple_of(CHECK_TICKS);
            for g in broker.replicas.iter_mut().filter_map(|r| r.group.as_mut()) {
                g.raw.tick();
                g.track_followers(now);
                if check {
                    g.refresh_in_sync(now);
                    g.rebalance_leadership_at(now);
                    if let Err(e) = g.compact_by_retention() {
                        panic!("seed {}: broker {} cannot compact group {}: {e}", self.seed, b + 1, g.id);
                    }
                }
            }
        }
    }

    /// The broker's Raft round: every group's Ready, then the outboxes (a
    /// broker dying in an fsync sends nothing of this round).
    fn ready(&mut self, b: usize) {
        if !self.active(b) {
            return;
        }
        for p in 0..PARTITIONS {
            let r = &mut self.brokers[b].replicas[p];
            let Some(g) = r.group.as_mut() else { continue };
            if let Err(e) = g.handle_ready() {
                if !r.log.dying() {
                    self.fail(format!("broker {} partition {p}: handle_ready failed: {e}", b + 1));
                }
                self.stats.died_in_fsync += 1;
                return self.crash(b);
            }
        }
        for p in 0..PARTITIONS {
            let Some(g) = self.brokers[b].replicas[p].group.as_mut() else { continue };
            let outbox = g.take_outbox();
            for msg in outbox {
                self.send(b, p, msg);
            }
        }
    }

    fn send(&mut self, b: usize, p: usize, msg: Message) {
        let lossy = self.faults;
        if !self.brokers[msg.to as usize - 1].up {
            // The transport cannot reach a broker that is down.
            if self.rng.chance(50) {
                if let Some(g) = self.brokers[b].replicas[p].group.as_mut() {
                    g.raw.report_unreachable(msg.to);
                }
            }
        }
        if lossy && self.rng.chance(5) {
            return;
        }
        let delay = if lossy { self.rng.below(6) } else { 0 };
        if lossy && self.rng.chance(2) {
            self.in_flight.push((self.step + 1 + self.rng.below(6), group_id(p), msg.clone()));
        }
        self.in_flight.push((self.step + 1 + delay, group_id(p), msg));
    }
}

/// The totals of one schedule.
fn run_seed(seed: u64, steps: u64) -> Stats {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.run_step();
    }
    sim.settle();
    sim.stats
}

#[test]
fn seeded_schedules_keep_partitions_consistent_and_lose_nothing_acknowledged() {
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name} is a number")));
    let steps = env("FERRY_SIM_STEPS").unwrap_or(1500);
    let seeds: Vec<u64> = match env("FERRY_SIM_SEED") {
        Some(one) => vec![one],
        None => {
            let first = env("FERRY_SIM_FIRST").unwrap_or(1);
            (first..first + env("FERRY_SIM_SEEDS").unwrap_or(1000)).collect()
        }
    };
    let started = Instant::now();
    let mut t = Stats::default();
    for &seed in &seeds {
        let s = std::panic::catch_unwind(|| run_seed(seed, steps))
            .unwrap_or_else(|_| panic!("seed {seed} failed (above); replay: FERRY_SIM_SEED={seed} cargo test --release -p ferry-cluster --test sim_partition"));
        t.appends += s.appends;
        t.retries += s.retries;
        t.acked_all += s.acked_all;
        t.acked_one += s.acked_one;
        t.lost_one += s.lost_one;
        t.deletes += s.deletes;
        t.crashes += s.crashes;
        t.died_in_fsync += s.died_in_fsync;
        t.cuts += s.cuts;
        t.stalls += s.stalls;
        t.leaders += s.leaders;
        t.snapshots += s.snapshots;
    }
    eprintln!(
        "{} seeds x {steps} steps in {:.1?}: {} appends ({} retries), {} acknowledged acks=all and {} acks=1 ({} of those lost, as acks=1 may), {} DeleteRecords, {} snapshots installed; \
         {} leader terms, {} crashes ({} in an fsync), {} cuts, {} stalls",
        seeds.len(),
        started.elapsed(),
        t.appends,
        t.retries,
        t.acked_all,
        t.acked_one,
        t.lost_one,
        t.deletes,
        t.snapshots,
        t.leaders,
        t.crashes,
        t.died_in_fsync,
        t.cuts,
        t.stalls
    );
    let n = seeds.len() as u64;
    assert!(t.acked_all > 10 * n && t.acked_one > n && t.crashes >= n && t.cuts >= n && t.leaders >= 2 * n, "the schedules barely exercised the groups");
}
