//! Hosts of their own for a fault run: one network namespace per broker,
//! each joined to a bridge in the caller's namespace by a veth pair, so a
//! link can really be cut (`ip link set down`), which loopback ports
//! cannot. Needs root and iproute2; everything is removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum NetLabError {
    #[error("cannot run `ip` (iproute2 is needed, and root): {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ip {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

pub struct NetLab {
    tag: String,
    bridge: String,
    subnet: u8,
    hosts: usize,
}

fn ip(args: &[&str]) -> Result<(), NetLabError> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetLabError::Failed { args: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
}

impl NetLab {
    /// `n` hosts at 10.77.<subnet>.1 ..= .n; the caller itself is .254.
    pub fn new(n: usize) -> Result<NetLab, NetLabError> {
        // Labs of one process may run at once: each its own names and subnet.
        static LABS: AtomicU32 = AtomicU32::new(0);
        let lab_no = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = ((pid + lab_no * 67) % 200) as u8 + 20;
        let tag = format!("f{}x{lab_no}", pid % 100_000);
        // Built before the first command, so a failure part-way removes what was made.
        let lab = NetLab { bridge: format!("{tag}br"), tag, subnet, hosts: n };
        ip(&["link", "add", &lab.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{subnet}.254/24"), "dev", &lab.bridge])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        for i in 1..=n {
            lab.add_host(i)?;
        }
        Ok(lab)
    }

    fn add_host(&self, i: usize) -> Result<(), NetLabError> {
        let (ns, outside, inside) = (self.ns(i), self.outside(i), format!("{}n{i}", self.tag));
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &outside, "master", &self.bridge])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", self.addr(i)), "dev", &inside])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
    }

    /// The namespace of host `i` (run a program in it with `ip netns exec`).
    pub fn ns(&self, i: usize) -> String {
        format!("{}ns{i}", self.tag)
    }

    fn outside(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("10.77.{}.{i}", self.subnet)
    }

    /// Cuts host `i` off from every other host and from the caller.
    pub fn cut(&self, i: usize) -> Result<(), NetLabError> {
        ip(&["link", "set", &self.outside(i), "down"])
    }

    pub fn heal(&self, i: usize) -> Result<(), NetLabError> {
        ip(&["link", "set", &self.outside(i), "up"])
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth pair too; output() keeps
        // the "cannot find device" of what is already gone quiet.
        for i in 1..=self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).output();
            let _ = Command::new("ip").args(["link", "del", &self.outside(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
