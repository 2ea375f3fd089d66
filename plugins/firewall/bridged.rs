//! Whether `ingressPolicy: "isolated"` can hold on this node.
//!
//! Its `-i br -o br -j DROP` rule sees traffic between two pods of the same bridge only when bridged
//! frames pass through iptables (br_netfilter loaded and `net.bridge.bridge-nf-call-iptables` /
//! `-ip6tables` = 1 in the node's namespace). Otherwise the frames are switched at layer 2, never reach
//! FORWARD, and the pods talk freely while the reference reports success. The other way to keep them
//! apart is the bridge's own port isolation (bridge plugin `portIsolation: true`): isolated ports do not
//! forward to each other. ADD refuses `isolated` when neither holds, rather than promise an isolation
//! the kernel will not do (tests/firewall.rs `isolated_without_br_netfilter_needs_port_isolation`).

use std::net::IpAddr;

use rcni::cni::result::AddResult;
use rcni::cni::{CniError, CniResult};
use rcni::net::{NetHandle, sysctl};
use rcni::pod::block_on;

/// Whether bridged traffic of `v4`/`v6` passes through ip(6)tables in the calling thread's namespace.
fn bridged_through_iptables(v6: bool) -> bool {
    let key = if v6 { "net.bridge.bridge-nf-call-ip6tables" } else { "net.bridge.bridge-nf-call-iptables" };
    sysctl::read(key).is_ok_and(|v| v.trim() == "1")
}

/// The host-side interfaces of the result besides the bridge: the pod's bridge ports (bridge reports
/// the bridge first, then the host veth, then the container's interface with its sandbox).
fn host_ports(prev: &AddResult) -> Vec<String> {
    prev.interfaces
        .iter()
        .skip(1)
        .filter(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name.clone())
        .collect()
}

/// Ok when every family of `ips` has its bridged traffic filtered by iptables, or every host port of the
/// pod is an isolated bridge port.
pub fn check_isolated_enforced(prev: &AddResult, bridge: &str, ips: &[IpAddr]) -> CniResult<()> {
    let unfiltered: Vec<&str> =
        [(false, "net.bridge.bridge-nf-call-iptables"), (true, "net.bridge.bridge-nf-call-ip6tables")]
            .into_iter()
            .filter(|(v6, _)| ips.iter().any(|ip| ip.is_ipv6() == *v6))
            .filter(|(v6, _)| !bridged_through_iptables(*v6))
            .map(|(_, key)| key)
            .collect();
    if unfiltered.is_empty() {
        return Ok(());
    }
    let ports = host_ports(prev);
    let isolated = |name: &str| -> CniResult<bool> {
        let link = block_on(async { NetHandle::current()?.link_by_name(name).await })?;
        Ok(link.and_then(|l| l.bridge_port).and_then(|p| p.isolated).unwrap_or(false))
    };
    let mut open = Vec::new();
    for p in &ports {
        if !isolated(p)? {
            open.push(p.as_str());
        }
    }
    if !ports.is_empty() && open.is_empty() {
        return Ok(());
    }
    let which = if ports.is_empty() {
        "prevResult names no host-side port of the pod".to_string()
    } else {
        format!("the pod's bridge port {} is not isolated", open.join(", "))
    };
    Err(CniError::invalid_config(format!(
        "ingressPolicy \"isolated\" cannot keep the pods of bridge {bridge} apart on this node: bridged traffic does \
         not pass through iptables ({} is not 1 here, or br_netfilter is not loaded) and {which}",
        unfiltered.join(", ")
    ))
    .with_details(
        "set \"portIsolation\": true in this list's bridge plugin, or load br_netfilter and set those sysctls to 1 \
         in the node; the reference firewall accepts this and the pods can reach each other",
    ))
}
