//! Deterministic simulation of the metadata group (as FoundationDB and
//! TigerBeetle's VOPR do): three members in one process, the network and
//! the disks simulated, every choice from one seed. Each schedule mixes
//! message loss, duplication and delay (which reorders), a member cut off
//! and healed, crashes that lose what was not fsynced (or only part of it)
//! and restarts, while proposals arrive at random members. A fourth
//! broker, outside the voters, starts partway and joins as a learner (the
//! leader proposes it, as the Raft thread does for a broker that says
//! hello); it takes faults and proposals like the others. Checked all
//! along: one leader per term, never the learner, members agree on every
//! applied entry; after the faults stop: every acknowledged proposal is
//! applied everywhere, the learner included, and the states are equal.
//!
//!     cargo test --release -p ferry-cluster --test sim                       # 300 seeds (CI)
//!     FERRY_SIM_SEEDS=20000 cargo test --release -p ferry-cluster --test sim # the long run
//!     FERRY_SIM_SEED=1234 cargo test -p ferry-cluster --test sim             # replay one
//!     FERRY_SIM_LOG=1 FERRY_SIM_SEED=1234 cargo test -p ferry-cluster --test sim -- --nocapture  # with raft-rs's log

#[path = "common/rng.rs"]
mod rng;

/// raft-rs's log on stderr, for replaying one seed (`FERRY_SIM_LOG=1`).
mod debug_log {
    use std::fmt::Write;

    pub struct Stderr;

    struct Line(String);

    impl slog::Serializer for Line {
        fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
            let _ = write!(self.0, " {key}={val}");
            Ok(())
        }
    }

    impl slog::Drain for Stderr {
        type Ok = ();
        type Err = slog::Never;

        fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
            use slog::KV;
            let mut line = Line(format!("{}", record.msg()));
            let _ = record.kv().serialize(record, &mut line);
            let _ = values.serialize(record, &mut line);
            eprintln!("{}", line.0);
            Ok(())
        }
    }
}

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use ferry_cluster::node::{LogStore, MetadataNode, NodeOptions};
use ferry_cluster::wal::Recovered;
use ferry_cluster::{Applied, ClusterError, Command};
use raft::eraftpb::{Entry, HardState, Message};
use rng::Rng;
use tokio::sync::oneshot;

/// The voters.
const MEMBERS: u64 = 3;
/// The broker outside the voters that joins partway.
const JOINER: u64 = MEMBERS + 1;

enum Record {
    Entry(Entry),
    HardState(HardState),
}

/// A member's disk: records fsynced, and records written but not yet fsynced.
#[derive(Default)]
struct Disk {
    durable: Vec<Record>,
    volatile: Vec<Record>,
}

impl Disk {
    /// A crash: a prefix of the unsynced writes may have reached the disk.
    fn crash(&mut self, survive: usize) {
        let kept: Vec<Record> = self.volatile.drain(..).take(survive).collect();
        self.durable.extend(kept);
    }

    /// What the WAL's replay would recover from the durable records.
    fn recover(&self) -> Recovered {
        let mut out = Recovered::default();
        for r in &self.durable {
            match r {
                Record::Entry(e) => {
                    let keep = out.entries.partition_point(|x| x.index < e.index);
                    out.entries.truncate(keep);
                    out.entries.push(e.clone());
                }
                Record::HardState(hs) => out.hard_state = hs.clone(),
            }
        }
        out
    }
}

struct SimStore(Rc<RefCell<Disk>>);

impl LogStore for SimStore {
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), ClusterError> {
        let mut disk = self.0.borrow_mut();
        disk.volatile.extend(entries.iter().cloned().map(Record::Entry));
        disk.volatile.extend(hard_state.cloned().map(Record::HardState));
        if sync {
            let written: Vec<Record> = disk.volatile.drain(..).collect();
            disk.durable.extend(written);
        }
        Ok(())
    }
}

struct Member {
    node: Option<MetadataNode<SimStore>>,
    /// This incarnation's fixed election timeout, in ticks.
    election_timeout: usize,
    disk: Rc<RefCell<Disk>>,
    down_until: u64,
}

fn open(id: u64, disk: &Rc<RefCell<Disk>>, election_timeout: usize, incarnation: u64) -> MetadataNode<SimStore> {
    let options = NodeOptions {
        node_id: id,
        voters: (1..=MEMBERS).collect(),
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_pending_proposals: 1000,
        fixed_election_timeout: Some(election_timeout),
        incarnation,
    };
    let logger = if std::env::var("FERRY_SIM_LOG").is_ok() {
        use slog::Drain;
        slog::Logger::root(debug_log::Stderr.fuse(), slog::o!("node" => id))
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    };
    let recovered = disk.borrow().recover();
    let mut node = MetadataNode::open(options, SimStore(disk.clone()), recovered, &logger).expect("member opens");
    node.history = Some(Vec::new());
    node
}

/// An election timeout in [10, 20) ticks that no other member has. raft-rs
/// would draw a new random one at every election; a fixed one per
/// incarnation replays, but two members with the same one can split every
/// vote in lockstep forever (each vote also resets the third member's
/// timer), which real randomness never sustains.
fn distinct_timeout(rng: &mut Rng, members: &[Member]) -> usize {
    loop {
        let t = 10 + rng.below(10) as usize;
        if !members.iter().any(|m| m.election_timeout == t) {
            return t;
        }
    }
}

struct Sim {
    rng: Rng,
    seed: u64,
    step: u64,
    members: Vec<Member>,
    in_flight: Vec<(u64, Message)>,
    cut: Option<u64>,
    faults: bool,
    leaders: HashMap<u64, u64>,
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    waiting: Vec<(String, oneshot::Receiver<Result<Applied, ClusterError>>)>,
    acknowledged: Vec<String>,
    proposals: u64,
    crashes: u64,
    cuts: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let mut members: Vec<Member> = Vec::new();
        for id in 1..=MEMBERS {
            let disk = Rc::new(RefCell::new(Disk::default()));
            let election_timeout = distinct_timeout(&mut rng, &members);
            members.push(Member { node: Some(open(id, &disk, election_timeout, rng.next())), election_timeout, disk, down_until: 0 });
        }
        // The joiner starts later, as a restart of a member never up before.
        members.push(Member { node: None, election_timeout: 0, disk: Rc::new(RefCell::new(Disk::default())), down_until: 100 + rng.below(500) });
        Sim {
            rng,
            seed,
            step: 0,
            members,
            in_flight: Vec::new(),
            cut: None,
            faults: true,
            leaders: HashMap::new(),
            applied: BTreeMap::new(),
            waiting: Vec::new(),
            acknowledged: Vec::new(),
            proposals: 0,
            crashes: 0,
            cuts: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| match &m.node {
                Some(n) => format!("{}: leader {} applied {} keys {}; {}", n.node_id(), n.leader_id(), n.state().applied_index, n.state().brokers.len(), n.describe_raft()),
                None => "down".into(),
            })
            .collect();
        panic!("seed {} step {}: {what}\n{}\nreplay: FERRY_SIM_SEED={} cargo test -p ferry-cluster --test sim", self.seed, self.step, members.join("\n"), self.seed)
    }

    fn run_step(&mut self) {
        self.step += 1;
        if self.faults {
            self.inject_faults();
        }
        self.restart_due();
        self.deliver();
        for i in 0..self.members.len() {
            if let Some(node) = self.members[i].node.as_mut() {
                node.tick();
            }
        }
        if self.faults && self.rng.chance(20) {
            self.propose();
        }
        if self.step.is_multiple_of(10) {
            self.admit_joiner();
        }
        for i in 0..self.members.len() {
            self.ready(i);
        }
        self.check();
    }

    fn inject_faults(&mut self) {
        let roll = self.rng.below(1000);
        if roll < 8 {
            let victim = self.rng.below(JOINER) as usize;
            if let Some(node) = self.members[victim].node.take() {
                drop(node);
                self.crashes += 1;
                let volatile = self.members[victim].disk.borrow().volatile.len() as u64;
                let survive = self.rng.below(volatile + 1) as usize;
                self.members[victim].disk.borrow_mut().crash(survive);
                self.members[victim].down_until = self.step + 1 + self.rng.below(60);
            }
        } else if roll < 14 {
            self.cut = if self.cut.is_some() { None } else { Some(1 + self.rng.below(JOINER)) };
            self.cuts += u64::from(self.cut.is_some());
        }
    }

    fn restart_due(&mut self) {
        for i in 0..self.members.len() {
            let m = &self.members[i];
            if m.node.is_none() && (m.down_until <= self.step || !self.faults) {
                // Each incarnation draws its own election timeout, as raft-rs would.
                let timeout = distinct_timeout(&mut self.rng, &self.members);
                self.members[i].election_timeout = timeout;
                let incarnation = self.rng.next();
                let node = open(i as u64 + 1, &self.members[i].disk, timeout, incarnation);
                self.members[i].node = Some(node);
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.step;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight).into_iter().partition(|(at, _)| *at <= now);
        self.in_flight = later;
        for (_, msg) in due {
            if self.faults && (self.cut == Some(msg.to) || self.cut == Some(msg.from)) {
                continue;
            }
            if let Some(node) = self.members[msg.to as usize - 1].node.as_mut() {
                let _ = node.step(msg);
            }
        }
    }

    /// The leader proposes the joiner as a learner once it is up and not
    /// a member yet (the Raft thread's `admit_joiners`).
    fn admit_joiner(&mut self) {
        if self.members[JOINER as usize - 1].down_until > self.step {
            return;
        }
        for m in &mut self.members {
            if let Some(node) = m.node.as_mut().filter(|n| n.is_leader() && !n.is_member(JOINER)) {
                let _ = node.propose_join(JOINER);
            }
        }
    }

    fn propose(&mut self) {
        let at = self.rng.below(JOINER) as usize;
        let Some(node) = self.members[at].node.as_mut() else { return };
        self.proposals += 1;
        // A distinct key per proposal, so a lost one shows as a missing key.
        let name = self.proposals.to_string();
        let command = Command::RegisterBroker { node_id: self.proposals, host: format!("h{}", self.proposals), port: 9092, cluster_addr: None };
        let (reply, rx) = oneshot::channel();
        node.propose(command, reply);
        self.waiting.push((name, rx));
    }

    fn ready(&mut self, i: usize) {
        let Some(node) = self.members[i].node.as_mut() else { return };
        node.handle_ready().unwrap_or_else(|e| panic!("seed {}: member {} cannot persist: {e}", self.seed, i + 1));
        for msg in node.take_outbox() {
            let lossy = self.faults;
            if lossy && self.rng.chance(5) {
                continue;
            }
            let delay = if lossy { self.rng.below(6) } else { 0 };
            if lossy && self.rng.chance(2) {
                self.in_flight.push((self.step + 1 + self.rng.below(6), msg.clone()));
            }
            self.in_flight.push((self.step + 1 + delay, msg));
        }
    }

    fn check(&mut self) {
        for i in 0..self.members.len() {
            let Some(node) = self.members[i].node.as_mut() else { continue };
            if node.is_leader() {
                let (term, id) = (node.term(), node.node_id());
                if id == JOINER {
                    self.fail(format!("the learner {id} leads term {term}"));
                }
                if let Some(other) = self.leaders.insert(term, id).filter(|o| *o != id) {
                    self.fail(format!("two leaders in term {term}: {other} and {id}"));
                }
            }
            let history = std::mem::take(node.history.as_mut().expect("kept"));
            for (index, term, data) in history {
                match self.applied.get(&index) {
                    Some((t, d)) if (*t, d) != (term, &data) => {
                        self.fail(format!("member {} applied ({term}, {} bytes) at {index}; another applied ({t}, {} bytes)", i + 1, data.len(), d.len()))
                    }
                    Some(_) => {}
                    None => {
                        self.applied.insert(index, (term, data));
                    }
                }
            }
        }
        let mut still = Vec::new();
        for (name, mut rx) in std::mem::take(&mut self.waiting) {
            match rx.try_recv() {
                Ok(Ok(_)) => self.acknowledged.push(name),
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => still.push((name, rx)),
            }
        }
        self.waiting = still;
    }

    /// Faults stop; the group must converge with every acknowledged change.
    fn settle(&mut self) {
        self.faults = false;
        self.cut = None;
        for _ in 0..400 {
            self.run_step();
        }
        let states: Vec<_> = self.members.iter().map(|m| m.node.as_ref().expect("all up").state().clone()).collect();
        for name in &self.acknowledged {
            let id: u64 = name.parse().expect("numeric key");
            if let Some(i) = states.iter().position(|s| !s.brokers.contains_key(&id)) {
                self.fail(format!("acknowledged {name} is missing on member {}", i + 1));
            }
        }
        for (i, s) in states.iter().enumerate().skip(1) {
            if s.brokers != states[0].brokers || s.observers != states[0].observers {
                self.fail(format!("member {} and member 1 disagree after settling", i + 1));
            }
        }
        if !states[0].observers.contains(&JOINER) {
            self.fail(format!("broker {JOINER} never joined: observers {:?}", states[0].observers));
        }
    }
}

/// (acknowledged, proposed, crashes, cuts) of one schedule.
fn run_seed(seed: u64, steps: u64) -> [u64; 4] {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.run_step();
    }
    sim.settle();
    [sim.acknowledged.len() as u64, sim.proposals, sim.crashes, sim.cuts]
}

#[test]
fn seeded_schedules_keep_raft_safe_and_lose_nothing_acknowledged() {
    let steps: u64 = std::env::var("FERRY_SIM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let seeds: Vec<u64> = match std::env::var("FERRY_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("FERRY_SIM_SEED is a number")],
        Err(_) => (1..=std::env::var("FERRY_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)).collect(),
    };
    let mut totals = [0u64; 4];
    for seed in &seeds {
        for (t, v) in totals.iter_mut().zip(run_seed(*seed, steps)) {
            *t += v;
        }
    }
    let [acknowledged, proposed, crashes, cuts] = totals;
    eprintln!(
        "{} seeds x {steps} steps: {proposed} proposals, {acknowledged} acknowledged and applied everywhere; {crashes} crashes, {cuts} members cut off",
        seeds.len()
    );
    let n = seeds.len() as u64;
    assert!(acknowledged > n && crashes >= n && cuts >= n, "the schedules barely exercised the group: {totals:?}");
}
