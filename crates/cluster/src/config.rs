//! The cluster's settings: who the voters are and how Raft is timed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ClusterError;

/// One broker of the cluster: its node id and its `--cluster-listen` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: u64,
    /// `host:port`, resolved when connecting.
    pub addr: String,
}

impl FromStr for Voter {
    type Err = String;

    /// `ID@HOST:PORT`, as in Kafka's `controller.quorum.voters`.
    fn from_str(s: &str) -> Result<Voter, String> {
        let (id, addr) = s.trim().split_once('@').ok_or_else(|| format!("{s:?}: expected ID@HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|_| format!("{s:?}: node id {id:?} is not a positive integer"))?;
        if id == 0 {
            return Err(format!("{s:?}: node id 0 is reserved; start node ids at 1"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected ID@HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{s:?}: expected ID@HOST:PORT"));
        }
        // Brokers pass the address on in their hello, which bounds it.
        if addr.len() > crate::wire::MAX_ADDR_BYTES {
            return Err(format!("{s:?}: the address is longer than {} bytes", crate::wire::MAX_ADDR_BYTES));
        }
        Ok(Voter { id, addr: addr.to_string() })
    }
}

/// Parses `--cluster-voters`: comma-separated `ID@HOST:PORT`.
pub fn parse_voters(s: &str) -> Result<Vec<Voter>, String> {
    let voters: Vec<Voter> = s.split(',').filter(|p| !p.trim().is_empty()).map(Voter::from_str).collect::<Result<_, _>>()?;
    let mut ids: Vec<u64> = voters.iter().map(|v| v.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != voters.len() {
        return Err("a node id appears twice in --cluster-voters".into());
    }
    if voters.is_empty() {
        return Err("--cluster-voters lists no voter".into());
    }
    Ok(voters)
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Where this broker accepts other brokers' connections.
    pub listen: SocketAddr,
    pub voters: Vec<Voter>,
    /// Where the metadata group's log lives (`<data-dir>/cluster`).
    pub dir: PathBuf,
    /// One Raft tick; elections and heartbeats count in ticks.
    pub tick_ms: u64,
    /// A follower campaigns after this many ticks without a leader
    /// (randomised up to twice as many by raft-rs).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// How long a metadata change may take to commit before the caller
    /// gets a timeout.
    pub proposal_timeout_ms: u64,
    /// Metadata changes waiting for their commit, at most.
    pub max_pending_proposals: usize,
    /// Raft messages queued for one peer, at most; more are dropped (Raft
    /// retransmits) rather than growing memory while a peer is down.
    pub max_queued_messages_per_peer: usize,
    /// Leaders hand leadership back to the preferred replica on their own
    /// (Kafka's auto.leader.rebalance.enable); without it only ElectLeaders does.
    pub auto_leader_rebalance_enable: bool,
    /// How often each replica drops the head of its partitions' logs that
    /// retention or DeleteRecords no longer keep (Kafka's
    /// log.retention.check.interval.ms).
    pub log_retention_check_interval_ms: u64,
    /// Connections from other brokers must prove they know it (`secret.rs`);
    /// None: any process that reaches `listen` is taken for a broker.
    pub secret: Option<crate::ClusterSecret>,
}

impl ClusterConfig {
    pub fn new(node_id: u64, listen: SocketAddr, voters: Vec<Voter>, dir: PathBuf) -> ClusterConfig {
        ClusterConfig {
            node_id,
            listen,
            voters,
            dir,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            proposal_timeout_ms: 10_000,
            max_pending_proposals: 10_000,
            max_queued_messages_per_peer: 4096,
            auto_leader_rebalance_enable: true,
            log_retention_check_interval_ms: 300_000,
            secret: None,
        }
    }

    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(ClusterError::Config("election ticks must exceed heartbeat ticks".into()));
        }
        if self.listen.ip().is_unspecified() && !self.is_voter() {
            // A joining broker tells the others where to reach it; a
            // wildcard address reaches nobody.
            return Err(ClusterError::Config(format!(
                "--cluster-listen {} is a wildcard address; a broker outside --cluster-voters must listen on the address the others reach it at",
                self.listen
            )));
        }
        Ok(())
    }

    /// Is this broker one of the metadata group's voters? A broker outside
    /// `--cluster-voters` joins the cluster as an observer (Kafka: a broker
    /// that is not a controller), a learner of the metadata group.
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|v| v.id == self.node_id)
    }

    /// The address this broker gives the others to reach it at.
    pub fn advertised_addr(&self) -> String {
        match self.voters.iter().find(|v| v.id == self.node_id) {
            Some(me) => me.addr.clone(),
            None => self.listen.to_string(),
        }
    }

    pub fn voter_ids(&self) -> Vec<u64> {
        self.voters.iter().map(|v| v.id).collect()
    }

    pub fn peers(&self) -> impl Iterator<Item = &Voter> {
        self.voters.iter().filter(move |v| v.id != self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_style_voters() {
        let v = parse_voters("1@127.0.0.1:9192,2@127.0.0.1:9193, 3@host-c:9194").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], Voter { id: 3, addr: "host-c:9194".into() });
    }

    #[test]
    fn refuses_bad_voters() {
        let long = format!("1@{}:1", "h".repeat(400));
        for bad in ["", "1@", "x@h:1", "0@h:1", "1@h", "1@h:99999", "1@h:1,1@h:2", &long] {
            assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
        }
    }
}
