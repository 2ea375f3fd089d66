//! A pod's veth pair: the container end born in the pod netns under its final name, the host end on the
//! bridge under a name derived from (containerID, ifname).

use super::names::host_veth_name;
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
        host_up: true,
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
            if node.link_by_name(&host_name).await?.is_none() {
                return Err(veth_error(a, &host_name, e));
            }
            node.delete_link_by_name(&host_name).await.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;
            node.create_veth(&spec).await.map_err(|e| veth_error(a, &host_name, e))?
        }
        Err(e) => return Err(veth_error(a, &host_name, e)),
    };
    let finish = async {
        if a.hairpin || a.isolated {
            let flags = BridgePortFlags { hairpin: Some(a.hairpin), isolated: Some(a.isolated) };
            node.set_bridge_port_flags(host.index, &flags)
                .await
                .map_err(|e| CniError::internal(format!("failed to set port flags on {host_name}: {e}")))?;
        }
        Ok::<_, CniError>(pod.require_link(a.ifname).await?)
    };
    match finish.await {
        Ok(container) => Ok(Attached { host, container }),
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
    } else {
        CniError::internal(format!("failed to create veth {host_name} <-> {}: {e}", a.ifname))
    }
}

/// Remove the pair: from the pod side when the netns is still there, and by its derived host name in any
/// case (the netns may be gone, or the pair half-made). Absent links are fine.
pub async fn remove(node: &NetHandle, pod: Option<&NetHandle>, container_id: &str, ifname: &str) -> CniResult<()> {
    let ignore_absent = |r: crate::net::Result<()>| match r {
        Err(e) if !e.is_not_found() => Err(CniError::from(e)),
        _ => Ok(()),
    };
    if let Some(pod) = pod {
        if let Some(l) = pod.link_by_name(ifname).await? {
            // Only a veth is ours to delete: never remove some other kind of device that has the name.
            if l.is_kind("veth") {
                ignore_absent(pod.delete_link(l.index).await)?;
            }
        }
    }
    ignore_absent(node.delete_link_by_name(&host_veth_name(container_id, ifname)).await)
}

/// DEL's removal. The kernel's unregister of a pair waits out an RCU barrier (tens of ms), and nothing after
/// DEL depends on that wait once the pair is inert, so with `background` the pair is only made inert here;
/// the caller hands the returned host index to a detached child (`net::detached`) at the end of DEL:
/// - the pod end goes down — the pod can send nothing, and frames to it are dropped — and is renamed
///   `rcnidel<index>`, so its name is free at once for a new attachment in a netns that lives on;
/// - the IP can then be released safely; the host end keeps its derived name until the child deletes the
///   pair (an ADD of the same attachment meanwhile removes it by that name, as it does any leftover).
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
    let host = host_end(node, container_id, ifname).await?;
    let Some(host) = host.filter(|_| background) else {
        return remove(node, pod, container_id, ifname).await.map(|_| None);
    };
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

/// The host end of the pod's veth, by its derived name.
pub async fn host_end(node: &NetHandle, container_id: &str, ifname: &str) -> CniResult<Option<Link>> {
    Ok(node.link_by_name(&host_veth_name(container_id, ifname)).await?)
}
