//! A pod's veth pair: the container end born in the pod netns under its final name, the host end on the
//! bridge under a name derived from (containerID, ifname).

use super::names::host_veth_name;
use crate::attachment::Attachment;
use crate::cni::log;
use crate::cni::{CniError, CniResult};
use crate::net::{BridgePortFlags, Link, Mac, NetHandle, Netns, VethEnd, VethSpec};

pub struct VethAttach<'a> {
    pub pod_ns: &'a Netns,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub bridge_index: u32,
    pub mtu: Option<u32>,
    pub container_mac: Option<Mac>,
    pub hairpin: bool,
    pub isolated: bool,
}

pub struct Attached {
    pub host: Link,
    pub container: Link,
}

/// The pod has an interface named `ifname`. When an ADD was to create it, that is a live attachment's.
pub async fn pod_has(pod: &NetHandle, ifname: &str) -> CniResult<bool> {
    Ok(pod.link_by_name(ifname).await?.is_some())
}

/// Fail if the pod already has an interface with this name (asked when the veth creation found a name taken).
async fn ensure_absent_in_pod(pod: &NetHandle, ifname: &str) -> CniResult<()> {
    if pod_has(pod, ifname).await? {
        return Err(CniError::internal(format!("container veth name ({ifname:?}) already exists"))
            .with_details("the pod already has an interface with this name: choose another CNI_IFNAME or DEL the old attachment first"));
    }
    Ok(())
}

/// Create the pair and attach the host end to the bridge. A host end left by an earlier, interrupted ADD of
/// this same attachment carries our derived name: it is ours, so it is removed and the pair made anew.
///
/// All or nothing: the pair is created in one request, and if a later step here fails, the pair this call
/// made is deleted (by its host end's index) before returning — never an interface of the pod's that merely
/// has the same name.
pub async fn attach(node: &NetHandle, pod: &NetHandle, a: &VethAttach<'_>) -> CniResult<Attached> {
    let host_name = host_veth_name(a.container_id, a.ifname);
    let spec = VethSpec {
        host: VethEnd { name: host_name.clone(), mtu: a.mtu, mac: None },
        // Up only after IPv6 address generation is off for it (see `finish`).
        host_up: false,
        host_master: Some(a.bridge_index),
        peer: VethEnd { name: a.ifname.to_string(), mtu: a.mtu, mac: a.container_mac },
        peer_ns: a.pod_ns,
    };
    let host = match node.create_veth(&spec).await {
        Ok(l) => l,
        // Nothing was created. Which name is taken? The pod's own interface first: then the attachment may
        // be live, and its host end (our derived name) must not be touched.
        Err(e) if e.is_exists() => {
            ensure_absent_in_pod(pod, a.ifname).await?;
            // Only a leftover of this attachment is removed (its peer is in this pod: a retired or
            // interrupted pair); a link that merely has the derived name belongs to someone else.
            let Some(leftover) = owned_host_end(node, Some(pod), a.container_id, a.ifname).await? else {
                return Err(veth_error(a, &host_name, e));
            };
            node.delete_link(leftover.index).await.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;
            node.create_veth(&spec).await.map_err(|e| veth_error(a, &host_name, e))?
        }
        Err(e) => return Err(veth_error(a, &host_name, e)),
    };
    // The node side (port flags, up) and the pod side (the container end as the kernel made it) are
    // independent requests on two sockets: sent together, each waits only for its own answer.
    let port = async {
        if a.hairpin || a.isolated {
            let flags = BridgePortFlags { hairpin: Some(a.hairpin), isolated: Some(a.isolated) };
            node.set_bridge_port_flags(host.index, &flags)
                .await
                .map_err(|e| CniError::internal(format!("failed to set port flags on {host_name}: {e}")))?;
        }
        // The host end is a bridge port and needs no IPv6 address: without one, no per-port IPv6 work
        // (DAD, router solicitation, MLD) competes for the kernel's rtnl lock with later ADDs.
        node.set_up_no_ipv6_addr(host.index).await?;
        Ok::<_, CniError>(())
    };
    let container = async { Ok::<_, CniError>(pod.require_link(a.ifname).await?) };
    let finish = async {
        let (p, c) = futures::join!(port, container);
        p?;
        c
    };
    match finish.await {
        Ok(container) => Ok(Attached { host: Link { admin_up: true, ..host }, container }),
        Err(e) => {
            let _ = node.delete_link(host.index).await;
            Err(e)
        }
    }
}

fn veth_error(a: &VethAttach<'_>, host_name: &str, e: crate::net::NetError) -> CniError {
    if e.is_exists() {
        CniError::internal(format!("container veth name ({:?}) peer provided ({host_name:?}) already exists", a.ifname))
            .with_details(
                "an interface with one of these names exists: DEL the old attachment or choose another CNI_IFNAME",
            )
    } else if e.errno() == Some(libc::EXFULL) {
        // br_add_if: every port number of the bridge is in use (BR_MAX_PORTS 1024, port 0 reserved).
        CniError::internal(format!(
            "failed to create veth {host_name} <-> {}: the bridge (ifindex {}) is full: the kernel allows at \
             most {BRIDGE_MAX_PORTS} ports per bridge ({e})",
            a.ifname, a.bridge_index
        ))
        .with_details("spread the pods over more bridges: another network with its own `bridge` name and subnet")
    } else {
        CniError::internal(format!("failed to create veth {host_name} <-> {}: {e}", a.ifname))
    }
}

/// Ports a Linux bridge can have (BR_MAX_PORTS is 1024, and port number 0 is never handed out).
const BRIDGE_MAX_PORTS: u32 = 1023;

/// Remove the pair: from the pod side when the netns is still there, and by its derived host name when
/// that link is ours (see `owned_host_end`; the netns may be gone). Absent links are fine.
pub async fn remove(node: &NetHandle, pod: Option<&NetHandle>, container_id: &str, ifname: &str) -> CniResult<()> {
    let ignore_absent = |r: crate::net::Result<()>| match r {
        Err(e) if !e.is_not_found() => Err(CniError::from(e)),
        _ => Ok(()),
    };
    let host = owned_host_end(node, pod, container_id, ifname).await?;
    if let Some(pod) = pod {
        if let Some(l) = pod.link_by_name(ifname).await? {
            // Only a veth is ours to delete: never remove some other kind of device that has the name.
            if l.is_kind("veth") {
                ignore_absent(pod.delete_link(l.index).await)?;
            }
        }
    }
    match host {
        Some(h) => ignore_absent(node.delete_link(h.index).await),
        None => Ok(()),
    }
}

/// The host end of the attachment's pair, if the link under the derived name is ours: a veth whose peer is
/// in the pod's netns (when the pod's netns is known). Without the netns there is nothing to compare: a
/// veth under the derived name is taken as ours (the attachment's netns may be gone while the pair
/// lives on, held by something else). Another kind of device, or a veth whose peer is elsewhere (a
/// colliding name of another attachment), is never ours.
pub async fn owned_host_end(
    node: &NetHandle,
    pod: Option<&NetHandle>,
    container_id: &str,
    ifname: &str,
) -> CniResult<Option<Link>> {
    let Some(host) = host_end(node, container_id, ifname).await?.filter(|l| l.is_kind("veth")) else {
        return Ok(None);
    };
    let Some(pod) = pod else { return Ok(Some(host)) };
    let Some(peer) = host.peer_index.filter(|_| host.link_netnsid.is_some()) else { return Ok(None) };
    let peer_here =
        pod.link_by_index(peer).await?.is_some_and(|p| p.is_kind("veth") && p.peer_index == Some(host.index));
    Ok(peer_here.then_some(host))
}

/// DEL's removal. The kernel's unregister of a pair waits out an RCU barrier (tens of ms), and nothing after
/// DEL depends on that wait once the pair is inert, so with `background` the pair is only made inert here;
/// the caller hands the returned host index to a detached child (`net::detached`) at the end of DEL:
/// - the pod end goes down — the pod can send nothing, and frames to it are dropped — and is renamed
///   `rcnidel<index>`, so its name is free at once for a new attachment in a netns that lives on;
/// - the IP can then be released safely; the host end keeps its derived name until the child deletes the
///   pair (an ADD of the same attachment meanwhile removes it by that name, as it does any leftover of
///   its own), and carries `RETIRED_ALIAS`, so GC deletes it if the child never finishes.
///
/// Without `background` the pair is deleted in-line and `None` returned. Absent links are fine; a device
/// under the pod's ifname that is not a veth is never touched.
pub async fn retire(
    node: &NetHandle,
    pod: Option<&NetHandle>,
    container_id: &str,
    ifname: &str,
    background: bool,
) -> CniResult<Option<u32>> {
    let host = owned_host_end(node, pod, container_id, ifname).await?;
    let Some(host) = host.filter(|_| background) else {
        return remove(node, pod, container_id, ifname).await.map(|_| None);
    };
    // Marked first: if the child that deletes the pair never runs to the end, GC still knows the pair as
    // a retired one of ours (`sweep_retired`).
    if let Err(e) = node.set_alias(host.index, RETIRED_ALIAS).await {
        if !e.is_not_found() {
            log::warn("veth", format!("cannot mark {} as retired ({e}); deleting it now", host.name));
            return remove(node, pod, container_id, ifname).await.map(|_| None);
        }
    }
    if let Some(pod) = pod {
        if let Some(l) = pod.link_by_name(ifname).await?.filter(|l| l.is_kind("veth")) {
            let inert = async {
                pod.set_down(l.index).await?;
                pod.set_name(l.index, &retired_name(l.index)).await
            };
            if let Err(e) = inert.await {
                if !e.is_not_found() {
                    log::warn("veth", format!("cannot retire {ifname:?} ({e}); deleting it now"));
                    return remove(node, Some(pod), container_id, ifname).await.map(|_| None);
                }
            }
        }
    }
    Ok(Some(host.index))
}

/// The pod end's name while it waits for deletion: unique in its netns (by index), within IFNAMSIZ.
fn retired_name(index: u32) -> String {
    format!("rcnidel{index:x}")
}

/// The alias of a host end whose pair DEL has retired (made inert, deletion handed to a detached child).
pub const RETIRED_ALIAS: &str = "rcni:retired";

/// Delete the retired pairs whose detached child did not finish (killed, or never scheduled): host ends
/// carrying `RETIRED_ALIAS`, a mark only `retire` sets. They are inert and their addresses released, so
/// they are garbage whichever network they were of. Returns the names deleted.
pub async fn sweep_retired(node: &NetHandle) -> CniResult<Vec<String>> {
    let mut deleted = Vec::new();
    for l in node.links().await? {
        if l.is_kind("veth") && l.alias.as_deref() == Some(RETIRED_ALIAS) {
            match node.delete_link(l.index).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => deleted.push(l.name),
            }
        }
    }
    Ok(deleted)
}

/// Delete the pairs of attachments GC found stale: the host end under each one's derived name, if it is a
/// veth and a port of `bridge` (the network's own bridge; another bridge's port is not this network's).
/// Returns the names deleted.
pub async fn remove_stale(node: &NetHandle, bridge: &str, stale: &[Attachment]) -> CniResult<Vec<String>> {
    let Some(br) = node.link_by_name(bridge).await? else { return Ok(Vec::new()) };
    let mut deleted = Vec::new();
    for a in stale {
        let Some(host) = host_end(node, &a.container_id, &a.ifname).await? else { continue };
        if host.is_kind("veth") && host.master == Some(br.index) {
            match node.delete_link(host.index).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => deleted.push(host.name),
            }
        }
    }
    Ok(deleted)
}

/// The host end of the pod's veth, by its derived name.
pub async fn host_end(node: &NetHandle, container_id: &str, ifname: &str) -> CniResult<Option<Link>> {
    Ok(node.link_by_name(&host_veth_name(container_id, ifname)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(ns: &Netns) -> VethAttach<'_> {
        VethAttach {
            pod_ns: ns,
            container_id: "c1",
            ifname: "eth0",
            bridge_index: 7,
            mtu: None,
            container_mac: None,
            hairpin: false,
            isolated: false,
        }
    }

    /// The 1024th port of a bridge fails in br_add_if with EXFULL (seen at 1023 pods on one cni0): the
    /// error says that the bridge is full and what to do, not just the errno's name.
    #[test]
    fn a_full_bridge_is_named_as_such() {
        let ns = Netns::current().unwrap();
        let full = crate::net::NetError::from_errno("create veth veth1 with peer eth0", libc::EXFULL);
        let e = veth_error(&attach(&ns), "veth1", full);
        assert!(e.msg.contains("the bridge (ifindex 7) is full"), "{}", e.msg);
        assert!(e.msg.contains("at most 1023 ports per bridge"), "{}", e.msg);
        assert!(e.details.contains("more bridges"), "{}", e.details);
        let other = crate::net::NetError::from_errno("create veth veth1 with peer eth0", libc::ENOMEM);
        assert!(!veth_error(&attach(&ns), "veth1", other).msg.contains("full"));
    }
}
