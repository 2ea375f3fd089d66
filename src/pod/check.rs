//! CHECK of a pod on a node bridge: what ADD made is still there — bridge, the pod's veth on it, addresses,
//! routes, masquerade entry, and the IPAM reservation. Works for L2-only networks too (the reference
//! always fails there).

use super::attach::AttachSpec;
use super::ipam::Ipam;
use super::{iface, open_netns, plan, veth};
use crate::cni::result::AddResult;
use crate::cni::skel::Request;
use crate::cni::{CniError, CniResult};
use crate::net::NetHandle;
use crate::net::masq::{self, PodEntry};
use crate::net::spoofchk;

/// The ADD result CHECK compares against.
pub fn required_prev_result(req: &Request) -> CniResult<&AddResult> {
    req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("Required prevResult missing")
            .with_details("CHECK compares the kernel with the ADD result; the runtime passes it as prevResult")
    })
}

/// The kernel side: links, addresses, routes (async, with the caller's handles).
pub async fn check_in(
    req: &Request,
    spec: &AttachSpec,
    prev: &AddResult,
    node: &NetHandle,
    pod: &NetHandle,
) -> CniResult<()> {
    check_links(req, spec, prev, node, pod).await?;
    let container = pod.require_link(&req.ifname).await?;
    let mine: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| prev.interfaces.get(i).is_some_and(|f| f.name == req.ifname)))
        .cloned()
        .collect();
    iface::check(pod, &container, &mine, &plan::pod_routes(prev)).await
}

/// The rest: masquerade entry and IPAM reservation.
pub fn check_state(req: &Request, spec: &AttachSpec, prev: &AddResult, ipam: Option<&Ipam>) -> CniResult<()> {
    if let Some(ipam) = ipam {
        if let Some(m) = &spec.masq {
            let ips: Vec<_> = prev.ips.iter().map(|i| i.address).collect();
            let exempt = m.exempt_for(&ips);
            let entry = PodEntry { container_id: req.container_id.clone(), ifname: req.ifname.clone(), ips };
            masq::check(m.backend, &req.conf.name, &exempt, &entry)
                .map_err(|e| CniError::internal(format!("masquerade check failed: {e}")))?;
        }
        ipam.check(req)?;
    }
    Ok(())
}

pub fn check(req: &Request, spec: &AttachSpec, ipam: Option<&Ipam>) -> CniResult<()> {
    let prev = required_prev_result(req)?;
    let pod_ns = open_netns(&req.netns)?;
    super::block_on(async {
        let node = NetHandle::current()?;
        let pod = NetHandle::for_netns(&pod_ns)?;
        check_in(req, spec, prev, &node, &pod).await
    })?;
    check_state(req, spec, prev, ipam)
}

async fn check_links(
    req: &Request,
    spec: &AttachSpec,
    prev: &AddResult,
    node: &NetHandle,
    pod: &NetHandle,
) -> CniResult<()> {
    let name = &spec.bridge.name;
    let br = node
        .link_by_name(name)
        .await?
        .filter(|l| l.is_kind("bridge"))
        .ok_or_else(|| CniError::internal(format!("CNI created bridge {name} in host namespace was not found")))?;
    if spec.bridge.promisc && !br.promisc {
        return Err(CniError::internal(format!("bridge {name} is not in promiscuous mode, the config wants it")));
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
        .ok_or_else(|| CniError::internal(format!("CNI veth created for bridge {name} was not found")))?;
    if host.master != Some(br.index) {
        return Err(CniError::internal(format!("host veth {} is not attached to bridge {name}", host.name)));
    }
    if container.peer_index != Some(host.index) {
        return Err(CniError::internal(format!(
            "{} in the container is not the peer of host veth {}",
            req.ifname, host.name
        )));
    }
    if spec.mac_spoof_check {
        let mac = container.mac.ok_or_else(|| CniError::internal(format!("{} has no MAC", req.ifname)))?;
        spoofchk::check(&req.container_id, &req.ifname, &host.name, mac)
            .map_err(|e| CniError::internal(format!("macspoofchk check failed: {e}")))?;
    }
    Ok(())
}
