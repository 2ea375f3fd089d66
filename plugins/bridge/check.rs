//! CHECK: what ADD made is still there — bridge, the pod's veth on it, addresses, routes, masquerade
//! entry, and the IPAM reservation. Works for L2-only networks too (the reference always fails there).

use crate::Invocation;
use rcni::cni::result::AddResult;
use rcni::cni::{CniError, CniResult, delegate};
use rcni::net::NetHandle;
use rcni::net::masq::{self, PodEntry};
use rcni::pod::{block_on, iface, open_netns, plan, veth};

pub fn check(inv: &Invocation<'_>) -> CniResult<()> {
    let req = inv.req;
    let prev = req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("Required prevResult missing")
            .with_details("CHECK compares the kernel with the ADD result; the runtime passes it as prevResult")
    })?;
    let pod_ns = open_netns(&req.netns)?;
    block_on(async {
        let node = NetHandle::current()?;
        let pod = NetHandle::for_netns(&pod_ns)?;
        check_links(inv, prev, &node, &pod).await?;
        let container = pod.require_link(&req.ifname).await?;
        let mine: Vec<_> = prev
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none_or(|i| prev.interfaces.get(i).is_some_and(|f| f.name == req.ifname)))
            .cloned()
            .collect();
        iface::check(&pod, &container, &mine, &plan::pod_routes(prev)).await?;
        Ok::<(), CniError>(())
    })?;
    if let Some(ipam) = &inv.ipam {
        if inv.conf.ip_masq {
            let entry = PodEntry {
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                ips: prev.ips.iter().map(|i| i.address).collect(),
            };
            let exempt: Vec<_> = prev.ips.iter().map(|i| plan::subnet_of(i.address)).collect();
            masq::check(inv.masq_backend()?, &req.conf.name, &exempt, &entry)
                .map_err(|e| CniError::internal(format!("masquerade check failed: {e}")))?;
        }
        delegate::check(ipam, req)?;
    }
    Ok(())
}

async fn check_links(inv: &Invocation<'_>, prev: &AddResult, node: &NetHandle, pod: &NetHandle) -> CniResult<()> {
    let (req, c) = (inv.req, &inv.conf);
    let br = node.link_by_name(&c.bridge).await?.filter(|l| l.is_kind("bridge")).ok_or_else(|| {
        CniError::internal(format!("CNI created bridge {} in host namespace was not found", c.bridge))
    })?;
    if c.promisc_mode && !br.promisc {
        return Err(CniError::internal(format!("bridge {} is not in promiscuous mode, the config wants it", c.bridge)));
    }
    let container = pod
        .link_by_name(&req.ifname)
        .await?
        .ok_or_else(|| CniError::internal(format!("CNI created interface in container {} not found", req.ifname)))?;
    if !container.is_kind("veth") {
        return Err(CniError::internal(format!("{} in the container is not a veth", req.ifname)));
    }
    if let Some(want) = prev.interfaces.iter().find(|i| i.name == req.ifname && !i.sandbox.is_empty()) {
        if want.sandbox != req.netns {
            return Err(CniError::internal(format!(
                "Sandbox in prevResult {} doesn't match configured netns: {}",
                want.sandbox, req.netns
            )));
        }
        let have = container.mac.map(|m| m.to_string()).unwrap_or_default();
        if !want.mac.is_empty() && !want.mac.eq_ignore_ascii_case(&have) {
            return Err(CniError::internal(format!(
                "interface {} has MAC {have}, the ADD result says {}",
                req.ifname, want.mac
            )));
        }
    }
    let host = veth::host_end(node, &req.container_id, &req.ifname)
        .await?
        .ok_or_else(|| CniError::internal(format!("CNI veth created for bridge {} was not found", c.bridge)))?;
    if host.master != Some(br.index) {
        return Err(CniError::internal(format!("host veth {} is not attached to bridge {}", host.name, c.bridge)));
    }
    if container.peer_index != Some(host.index) {
        return Err(CniError::internal(format!(
            "{} in the container is not the peer of host veth {}",
            req.ifname, host.name
        )));
    }
    Ok(())
}
