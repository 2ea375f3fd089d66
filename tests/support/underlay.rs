//! A simulated underlay: a switch (a bridge `sw0` in its own netns) and veths from it into node
//! namespaces, addressed in 198.18.0.0/15; plus a TCP exchange between two pods across it.

use super::{NetNs, NodeNs, PodNs};
use std::ops::Deref;
use std::process::{Command, Stdio};

/// The switch netns with its bridge `sw0`.
pub struct Switch(NodeNs);

impl Switch {
    pub fn new(tag: &str) -> Switch {
        let ns = NodeNs::new(&format!("{tag}-sw"));
        ns.ip(&["link", "add", "sw0", "type", "bridge"]).ok();
        ns.ip(&["link", "set", "sw0", "up"]).ok();
        Switch(ns)
    }

    /// A veth from the switch (port `port`) into `ns`, named eth0 there, up, with `addr` (CIDR).
    pub fn plug(&self, ns: &NetNs, port: &str, addr: &str) {
        self.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]).ok();
        self.ip(&["link", "set", port, "master", "sw0", "up"]).ok();
        ns.ip(&["addr", "add", addr, "dev", "eth0"]).ok();
        ns.ip(&["link", "set", "eth0", "up"]).ok();
    }
}

impl Deref for Switch {
    type Target = NodeNs;
    fn deref(&self) -> &NodeNs {
        &self.0
    }
}

/// A TCP exchange from `from` to `to_ip`:5000 in `to`: the server echoes what it got in upper case.
/// The client retries until the server listens (starting it under load can take a while).
pub fn tcp_exchange(from: &PodNs, to: &PodNs, to_ip: &str) -> bool {
    let server = Command::new("ip")
        .args(["netns", "exec", to.name(), "timeout", "10", "sh", "-c", "nc -l -p 5000 -w 8 </dev/null | tr a-z A-Z"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Command::new("ip")
        .args(["netns", "exec", from.name(), "timeout", "10", "sh", "-c"])
        .arg(format!(
            "for i in $(seq 80); do echo hello-overlay | nc -N -w 3 {to_ip} 5000 && exit 0; sleep 0.1; done; exit 1"
        ))
        .output()
        .unwrap();
    let out = server.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    if !client.status.success() || !got.contains("HELLO-OVERLAY") {
        eprintln!(
            "tcp exchange to {to_ip}: client {:?} {}, server got {got:?}",
            client.status,
            String::from_utf8_lossy(&client.stderr)
        );
        return false;
    }
    true
}
