//! `max.connections.per.ip` and `max.connections.per.ip.overrides`: how many
//! connections one client address may hold open, across every listener, so
//! one host cannot take every `max.connections` slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerIpLimits {
    pub default: usize,
    pub overrides: HashMap<IpAddr, usize>,
}

impl Default for PerIpLimits {
    /// Kafka's default: no limit beyond `max.connections`.
    fn default() -> PerIpLimits {
        PerIpLimits { default: usize::MAX, overrides: HashMap::new() }
    }
}

impl PerIpLimits {
    pub fn limit_for(&self, ip: IpAddr) -> usize {
        self.overrides.get(&ip).copied().unwrap_or(self.default)
    }

    /// Kafka's `HOST:COUNT,HOST:COUNT` (IP addresses here; IPv6 as `[::1]:5`).
    pub fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, usize>, String> {
        let mut overrides = HashMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, count) = item.rsplit_once(':').ok_or_else(|| format!("`{item}` is not HOST:COUNT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = host.parse().map_err(|_| format!("`{host}` is not an IP address (host names are not resolved)"))?;
            let count: usize = count.parse().map_err(|_| format!("`{count}` is not a connection count"))?;
            overrides.insert(ip, count);
        }
        Ok(overrides)
    }
}

/// Open connections per client address, shared by every accept loop.
#[derive(Debug, Clone)]
pub struct ConnectionsPerIp {
    limits: Arc<PerIpLimits>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnectionsPerIp {
    pub fn new(limits: PerIpLimits) -> ConnectionsPerIp {
        ConnectionsPerIp { limits: Arc::new(limits), open: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A slot for one more connection from `ip`; Err(limit) when it holds its limit.
    pub fn try_open(&self, ip: IpAddr) -> Result<IpSlot, usize> {
        let limit = self.limits.limit_for(ip);
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                open.remove(&ip);
            }
            return Err(limit);
        }
        *n += 1;
        Ok(IpSlot { ip, open: self.open.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let limits = PerIpLimits { default: 2, overrides: HashMap::from([(b, 0)]) };
        let c = ConnectionsPerIp::new(limits);
        let first = c.try_open(a).unwrap();
        let _second = c.try_open(a).unwrap();
        assert_eq!(c.try_open(a).unwrap_err(), 2);
        assert_eq!(c.try_open(b).unwrap_err(), 0);
        drop(first);
        assert!(c.try_open(a).is_ok());
    }

    #[test]
    fn parses_kafka_overrides() {
        let o = PerIpLimits::parse_overrides("127.0.0.1:5, [::1]:7").unwrap();
        assert_eq!(o[&"127.0.0.1".parse::<IpAddr>().unwrap()], 5);
        assert_eq!(o[&"::1".parse::<IpAddr>().unwrap()], 7);
        assert!(PerIpLimits::parse_overrides("localhost:5").unwrap_err().contains("not an IP address"));
        assert!(PerIpLimits::parse_overrides("127.0.0.1").unwrap_err().contains("HOST:COUNT"));
    }
}
