//! Loopback ports for brokers a test or `ferry verify` starts, kills and
//! restarts. They come from below the kernel's ephemeral range: a port
//! from `bind(0)` is in that range, so once its broker dies any outgoing
//! connection may be given it as its local port (a peer that keeps dialing
//! the dead port can even connect to itself there), and the restarted
//! broker then cannot listen on it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port handed out.
const FIRST_PORT: u32 = 10_000;

/// The first port of the kernel's ephemeral range (Linux's default when it
/// cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A loopback port nothing listens on now, below the ephemeral range. One
/// walk per process, starting at a place drawn once from the process id and
/// the clock: processes running side by side seldom try the same ports, and
/// within a process no port is handed out twice until the walk has gone
/// round the whole range (a test's killed broker keeps its port for its
/// restart). A port taken in the meantime is skipped.
pub fn listen_port() -> std::io::Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        u64::from(std::process::id()).wrapping_mul(2_654_435_761).wrapping_add(u64::from(nanos))
    });
    let end = ephemeral_start().clamp(FIRST_PORT + 1_000, 65_536);
    let span = u64::from(end - FIRST_PORT);
    for _ in 0..span {
        // 7,919 is prime and does not divide the span of a default range,
        // so the walk visits every port of the range before it repeats.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u64::from(FIRST_PORT) + start.wrapping_add(n.wrapping_mul(7_919)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback port below the ephemeral range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        // Once took two draws of 50 in 28,000 alike (1 run in 25), when each
        // call drew its own start.
        let ports: Vec<u16> = (0..2_000).map(|_| listen_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| u32::from(*p) >= FIRST_PORT && u32::from(*p) < ephemeral_start()));
    }
}
