//! ADD of a pod on a node bridge — the recipe bridge and vxlan share: bridge, veth, IPAM, pod addresses
//! and routes, gateway, forwarding, masquerade. If any step fails, every earlier step is undone (the
//! reference leaves the veth behind).

use super::bridge::{BridgeSettings, enable_forwarding, ensure_found_bridge, ensure_gateways};
use super::iface::{self, IfaceSetup};
use super::ipam::{Allocation, Ipam};
use super::veth::{self, VethAttach};
use super::{block_on, open_netns, plan};
use crate::cni::log;
use crate::cni::result::{AddResult, Interface, IpConfig, Route};
use crate::cni::skel::Request;
use crate::cni::{CniError, CniResult};
use crate::net::masq::{self, Backend, PodEntry};
use crate::net::{BridgeVlan, IpFamily, Link, Mac, NetHandle, Netns};
use crate::net::{garp, spoofchk};
use ipnetwork::IpNetwork;
use std::time::Duration;

/// How long the host end may take to become a forwarding bridge port (the reference polls up to 2.55 s).
const PORT_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything that shapes one attachment, decided by the plugin from its config.
#[derive(Debug, Clone, Default)]
pub struct AttachSpec {
    pub bridge: BridgeSettings,
    /// MTU of both veth ends.
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub isolated: bool,
    pub container_mac: Option<Mac>,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    /// Drop frames from the pod whose source MAC is not its interface's (`macspoofchk`).
    pub mac_spoof_check: bool,
    pub vlans: Option<VlanPlan>,
    pub masq: Option<MasqSpec>,
    /// Destinations the pod reaches through its gateway besides what IPAM returns (vxlan: the cluster
    /// network); added to the result as routes with the gateway.
    pub gateway_routes: Vec<IpNetwork>,
    /// DEL: make the veth pair inert and let a detached child wait for the kernel to delete it.
    pub background_unlink: bool,
}

#[derive(Debug, Clone)]
pub struct VlanPlan {
    /// The port's PVID (untagged); None with only trunk VLANs means VLAN 1 is native.
    pub native: Option<u16>,
    pub tagged: Vec<u16>,
    pub preserve_default: bool,
}

#[derive(Debug, Clone)]
pub struct MasqSpec {
    pub backend: Backend,
    /// Destinations never masqueraded; None = each pod address's own subnet (bridge).
    pub exempt: Option<Vec<IpNetwork>>,
}

impl MasqSpec {
    pub fn exempt_for(&self, ips: &[IpNetwork]) -> Vec<IpNetwork> {
        match &self.exempt {
            Some(list) => list.clone(),
            None => ips.iter().map(|i| plan::subnet_of(*i)).collect(),
        }
    }
}

/// What this ADD has done so far to the kernel, so a failure can undo it in reverse. The IPAM allocation
/// is released last, by `with_allocation`.
#[derive(Default)]
struct Undo {
    veth: bool,
    spoof_check: bool,
    masq: Option<PodEntry>,
}

impl Undo {
    async fn run(self, req: &Request, node: &NetHandle, pod: &NetHandle) {
        if let Some(entry) = &self.masq {
            if let Err(e) = masq::teardown(&req.conf.name, entry) {
                log::warn(&req.conf.plugin_type, format!("rollback: masquerade teardown: {e}"));
            }
        }
        if self.spoof_check {
            if let Err(e) = spoofchk::teardown(&req.container_id, &req.ifname) {
                log::warn(&req.conf.plugin_type, format!("rollback: macspoofchk teardown: {e}"));
            }
        }
        if self.veth {
            if let Err(e) = veth::remove(node, Some(pod), &req.container_id, &req.ifname).await {
                log::warn(&req.conf.plugin_type, format!("rollback: veth removal: {e}"));
            }
        }
    }
}

/// The one ADD entry of the recipe. IPAM starts allocating once the pod's netns is open, on its own thread
/// (see `Allocation`);
/// then `node_setup` runs on the node's handle: it prepares what the plugin keeps on the node for all of
/// its pods (vxlan's VTEP and peers; nothing for bridge) and gives this attachment's spec. A failed ADD
/// releases the allocation after its own undo, so an address is never free while an interface holds it.
pub fn add(
    req: &Request,
    ipam: Option<&Ipam>,
    node_setup: impl AsyncFnOnce(&NetHandle) -> CniResult<AttachSpec>,
) -> CniResult<AddResult> {
    let mut alloc = None;
    let outcome = open_netns(&req.netns).and_then(|pod_ns| {
        block_on(async {
            let node = NetHandle::current()?;
            // The pod's socket first: it is made by a new thread inside the pod netns (which stays for the
            // pod interface's sysctls), and the scheduler tends to queue a new thread behind a just-started
            // IPAM thread on the same CPU.
            let pod = NetHandle::for_netns(&pod_ns)?;
            alloc = ipam.map(|i| Allocation::start(i, req));
            let spec = node_setup(&node).await?;
            add_in(req, &spec, alloc.as_mut(), &node, &pod, &pod_ns).await
        })
    });
    if let (Err(_), Some(a)) = (&outcome, alloc) {
        a.release(req);
    }
    outcome
}

async fn add_in(
    req: &Request,
    spec: &AttachSpec,
    mut alloc: Option<&mut Allocation<'_>>,
    node: &NetHandle,
    pod: &NetHandle,
    pod_ns: &Netns,
) -> CniResult<AddResult> {
    log::trace(&req.conf.plugin_type, "handles ready");
    let found = node.link_by_name(&spec.bridge.name).await?;
    // IPAM overlaps the veth work only where a failed ADD's port, added and removed, leaves the bridge as
    // it was: a bridge already forwarding for another port (its MAC is pinned or recomputed from the ports
    // that stay; its carrier stays). A missing bridge would be created for nothing, and a port-less one
    // would keep the carrier loss and the MAC change of that port, so there IPAM — the step that fails
    // most often (a config error, an exhausted range) — must have succeeded before the node is touched.
    if !found.as_ref().is_some_and(Link::is_oper_up) {
        if let Some(a) = alloc.as_mut() {
            a.wait()?;
        }
    }
    // The bridge is shared by every pod of the network: once made, it stays even if a later step fails
    // (another ADD may already be using it; the reference leaves it too).
    let br = ensure_found_bridge(node, &spec.bridge, found).await?;
    let mut undo = Undo::default();
    match steps(req, spec, alloc, node, pod, pod_ns, &br, &mut undo).await {
        Ok(r) => Ok(r),
        Err(e) => {
            undo.run(req, node, pod).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    req: &Request,
    spec: &AttachSpec,
    alloc: Option<&mut Allocation<'_>>,
    node: &NetHandle,
    pod: &NetHandle,
    pod_ns: &Netns,
    br: &Link,
    undo: &mut Undo,
) -> CniResult<AddResult> {
    let veth_attach = VethAttach {
        pod_ns,
        container_id: &req.container_id,
        ifname: &req.ifname,
        bridge_index: br.index,
        mtu: spec.mtu,
        container_mac: spec.container_mac,
        hairpin: spec.hairpin,
        isolated: spec.isolated,
    };
    let attached = match veth::attach(node, pod, &veth_attach).await {
        Ok(a) => a,
        Err(e) => {
            // A failed attach leaves nothing of its own, so an interface under CNI_IFNAME is a live
            // attachment's (when unsure, assume so: a leaked address beats a duplicate one).
            if let Some(alloc) = alloc {
                if veth::pod_has(pod, &req.ifname).await.unwrap_or(true) {
                    alloc.attachment_is_live();
                }
            }
            return Err(e);
        }
    };
    // Only now: a failed create made nothing of ours, and the name it collided with may be the pod's own.
    undo.veth = true;
    log::trace(&req.conf.plugin_type, "veth created");
    if let Some(vlans) = &spec.vlans {
        configure_vlans(node, &attached.host, vlans).await?;
    }
    if spec.mac_spoof_check {
        let mac = attached.container.mac.ok_or_else(|| CniError::internal("the pod interface has no MAC"))?;
        undo.spoof_check = true;
        spoofchk::setup(&req.conf.name, &req.container_id, &req.ifname, &attached.host.name, mac)
            .map_err(|e| CniError::internal(format!("failed to set up macspoofchk: {e}")))?;
    }

    let mut result = AddResult::default();
    if let Some(alloc) = alloc {
        iface::bring_up(pod, &attached.container, spec.enable_dad).await?;
        let ipam_result = alloc.result()?;
        log::trace(&req.conf.plugin_type, "IPAM ADD done");
        if ipam_result.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config")
                .with_details(format!("{} gave no address; check its ranges", alloc.plugin())));
        }
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        for ip in &mut result.ips {
            ip.interface = Some(2);
        }
        if spec.is_gateway {
            plan::fill_gateways(&mut result.ips);
        }
        add_gateway_routes(&mut result, &spec.gateway_routes);
        if spec.is_default_gateway {
            plan::add_default_routes(&mut result);
        }
        let routes = plan::pod_routes(&result);
        let setup =
            IfaceSetup { link: &attached.container, ips: &result.ips, routes: &routes, enable_dad: spec.enable_dad };
        iface::configure(pod, &setup).await?;
        log::trace(&req.conf.plugin_type, "pod interface configured");
        if spec.is_gateway {
            ensure_gateways(node, br, &plan::bridge_gateways(&result.ips), spec.force_address).await?;
            let mut fams: Vec<IpFamily> = Vec::new();
            for ip in &result.ips {
                let f = IpFamily::of(&ip.address.ip());
                if !fams.contains(&f) {
                    fams.push(f);
                }
            }
            enable_forwarding(&fams)?;
            log::trace(&req.conf.plugin_type, "gateway and forwarding done");
        }
        if let Some(m) = &spec.masq {
            let ips: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
            let exempt = m.exempt_for(&ips);
            let entry = PodEntry { container_id: req.container_id.clone(), ifname: req.ifname.clone(), ips };
            undo.masq = Some(entry.clone());
            masq::setup(m.backend, &req.conf.name, &exempt, &entry)
                .map_err(|e| CniError::internal(format!("failed to set up masquerade: {e}")))?;
            log::trace(&req.conf.plugin_type, "masquerade done");
        }
    } else if !spec.disable_container_interface {
        pod.set_up(attached.container.index).await?;
    }

    let port_up = async {
        if !spec.disable_container_interface {
            node.wait_oper_up(attached.host.index, PORT_UP_TIMEOUT).await.map_err(|e| {
                CniError::internal(format!("bridge port in error state: {} did not come up: {e}", attached.host.name))
            })?;
        }
        Ok::<_, CniError>(())
    };
    // MACs as they are now: the bridge's is pinned when we made it (one that existed before may have
    // taken a port's when the port joined, which happened at creation), the veth ends' never change after
    // creation. Read while the port comes up: the two answers do not depend on each other.
    let (up, br_now) = futures::join!(port_up, node.require_link(&br.name));
    up?;
    let br_now = br_now?;
    log::trace(&req.conf.plugin_type, "host port up");
    announce(req, pod, &attached.container, &result.ips).await;
    let mac_str = |l: &Link| l.mac.map(|m| m.to_string()).unwrap_or_default();
    result.interfaces = vec![
        Interface { name: br_now.name.clone(), mac: mac_str(&br_now), ..Default::default() },
        Interface { name: attached.host.name.clone(), mac: mac_str(&attached.host), ..Default::default() },
        Interface {
            name: attached.container.name.clone(),
            mac: mac_str(&attached.container),
            sandbox: req.netns.clone(),
            ..Default::default()
        },
    ];
    if let Some(dns) = req.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// The pod's gratuitous ARP for its IPv4 addresses, which the up did not send (`iface::configure` brings the
/// interface up with `arp_notify` applied after it): now that the port forwards, by the kernel (`net::garp`).
/// A failure is logged, not an ADD error: the kernel's announcement at the up could not fail either.
async fn announce(req: &Request, pod: &NetHandle, container: &Link, ips: &[IpConfig]) {
    let Some(mac) = container.mac.filter(|_| ips.iter().any(|i| i.address.is_ipv4())) else { return };
    if let Err(e) = garp::announce(pod, container.index, mac).await {
        log::warn(&req.conf.plugin_type, e.to_string());
    }
}

/// Routes to `dsts` via the family's gateway, unless the result already has a route to that destination.
fn add_gateway_routes(result: &mut AddResult, dsts: &[IpNetwork]) {
    for dst in dsts {
        let gw = result.ips.iter().filter(|i| i.address.is_ipv4() == dst.is_ipv4()).find_map(|i| i.gateway);
        if gw.is_some() && !result.routes.iter().any(|r| r.dst == *dst) {
            result.routes.push(Route::new(*dst, gw));
        }
    }
}

/// VLANs on the host port: the native VLAN becomes the PVID (untagged), trunk IDs are tagged; the kernel's
/// default VLAN 1 is removed unless it is to be preserved (the reference's current default is to remove it).
async fn configure_vlans(node: &NetHandle, host: &Link, v: &VlanPlan) -> CniResult<()> {
    let vlan_err = |e: crate::net::NetError| {
        CniError::internal(format!("failed to set VLANs on {}: {e}", host.name))
            .with_details("the kernel needs CONFIG_BRIDGE_VLAN_FILTERING for vlan/vlanTrunk")
    };
    if !v.preserve_default {
        let default = BridgeVlan { vid: 1, pvid: true, untagged: true, on_bridge: false };
        match node.bridge_vlan_del(host.index, &default).await {
            Err(e) if !e.is_not_found() => return Err(vlan_err(e)),
            _ => {}
        }
    }
    let native = v.native.unwrap_or(1);
    let untagged = BridgeVlan { vid: native, pvid: true, untagged: true, on_bridge: false };
    node.bridge_vlan_add(host.index, &untagged).await.map_err(vlan_err)?;
    for vid in v.tagged.iter().copied().filter(|t| *t != native) {
        let tagged = BridgeVlan { vid, pvid: false, untagged: false, on_bridge: false };
        node.bridge_vlan_add(host.index, &tagged).await.map_err(vlan_err)?;
    }
    Ok(())
}
