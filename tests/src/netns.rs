//! Hosts of their own for a test: one network namespace per broker, each
//! joined to a bridge in the test's namespace by a veth pair, so a link can
//! really be cut (`ip link set down`), which loopback ports cannot. Needs
//! root, as CI has; everything is removed on drop.

use std::process::Command;

pub struct NetLab {
    tag: String,
    bridge: String,
    pub subnet: u8,
    hosts: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the ip command (iproute2) is needed");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl NetLab {
    /// `n` hosts at 10.77.<subnet>.1 ..= .n; the test itself is .254.
    pub fn new(n: usize) -> NetLab {
        // Tests of one process run in parallel: each lab its own names and subnet.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lab_no = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = ((pid + lab_no * 67) % 200) as u8 + 20;
        let tag = format!("f{}x{lab_no}", pid % 100_000);
        let lab = NetLab { bridge: format!("{tag}br"), tag, subnet, hosts: n };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.77.{subnet}.254/24"), "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for i in 1..=n {
            let (ns, outside, inside) = (lab.ns(i), lab.outside(i), format!("{}n{i}", lab.tag));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &outside, "master", &lab.bridge]);
            ip(&["link", "set", &outside, "up"]);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", lab.addr(i)), "dev", &inside]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        lab
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}ns{i}", self.tag)
    }

    fn outside(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("10.77.{}.{i}", self.subnet)
    }

    /// Cuts host `i` off from every other host and from the test.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.outside(i), "down"]);
    }

    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.outside(i), "up"]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth pair too; output() keeps
        // the "cannot find device" of what is already gone off the test log.
        for i in 1..=self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).output();
            let _ = Command::new("ip").args(["link", "del", &self.outside(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
