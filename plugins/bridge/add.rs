//! ADD: bridge, veth, IPAM, pod addresses and routes, gateway, forwarding, masquerade — and, if any step
//! fails, every earlier step undone (the reference leaves the veth behind).

use crate::Invocation;
use rcni::cni::log;
use rcni::cni::result::{AddResult, Interface};
use rcni::cni::{CniError, CniResult, delegate};
use rcni::net::masq::{self, Backend, PodEntry};
use rcni::net::{BridgeVlan, IpFamily, Link, Mac, NetHandle, Netns};
use rcni::pod::bridge::{BridgeSettings, enable_forwarding, ensure_bridge, ensure_gateways};
use rcni::pod::iface::{self, IfaceSetup};
use rcni::pod::veth::{self, VethAttach};
use rcni::pod::{block_on, open_netns, plan};
use std::time::Duration;

/// How long the host end may take to become a forwarding bridge port (the reference polls up to 2.55 s).
const PORT_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// What this ADD has done so far, so a failure can undo it in reverse.
#[derive(Default)]
struct Undo {
    veth: bool,
    ipam: bool,
    masq: Option<PodEntry>,
}

impl Undo {
    async fn run(self, inv: &Invocation<'_>, node: &NetHandle, pod: &NetHandle) {
        let req = inv.req;
        if let Some(entry) = &self.masq {
            if let Err(e) = masq::teardown(&req.conf.name, entry) {
                log::warn("bridge", format!("rollback: masquerade teardown: {e}"));
            }
        }
        if self.veth {
            if let Err(e) = veth::remove(node, Some(pod), &req.container_id, &req.ifname).await {
                log::warn("bridge", format!("rollback: veth removal: {e}"));
            }
        }
        if self.ipam {
            if let Some(ipam) = &inv.ipam {
                if let Err(e) = delegate::del(ipam, req) {
                    log::warn("bridge", format!("rollback: IPAM DEL: {e}"));
                }
            }
        }
    }
}

pub fn add(inv: &Invocation<'_>) -> CniResult<AddResult> {
    let req = inv.req;
    let mac = inv.container_mac()?;
    let backend = if inv.conf.ip_masq && inv.ipam.is_some() { Some(inv.masq_backend()?) } else { None };
    let pod_ns = open_netns(&req.netns)?;
    block_on(async {
        let node = NetHandle::current()?;
        let pod = NetHandle::for_netns(&pod_ns)?;
        // Checked before anything is made, so this failure needs no undo.
        veth::ensure_absent_in_pod(&pod, &req.ifname).await?;
        let c = &inv.conf;
        let settings = BridgeSettings {
            name: c.bridge.clone(),
            mtu: (c.mtu > 0).then_some(c.mtu),
            vlan_filtering: c.vlan != 0 || !c.vlan_trunk.is_empty(),
            promisc: c.promisc_mode,
        };
        // The bridge is shared by every pod of the network: it stays even if this ADD fails.
        let br = ensure_bridge(&node, &settings).await?;
        let mut undo = Undo::default();
        match steps(inv, &node, &pod, &pod_ns, &br, mac, backend, &mut undo).await {
            Ok(r) => Ok(r),
            Err(e) => {
                undo.run(inv, &node, &pod).await;
                Err(e)
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    inv: &Invocation<'_>,
    node: &NetHandle,
    pod: &NetHandle,
    pod_ns: &Netns,
    br: &Link,
    mac: Option<Mac>,
    backend: Option<Backend>,
    undo: &mut Undo,
) -> CniResult<AddResult> {
    let (req, c) = (inv.req, &inv.conf);
    undo.veth = true; // set first: a half-made pair (host end only) is removed too
    let attached = veth::attach(
        node,
        pod,
        &VethAttach {
            pod_ns,
            container_id: &req.container_id,
            ifname: &req.ifname,
            bridge_index: br.index,
            mtu: (c.mtu > 0).then_some(c.mtu),
            container_mac: mac,
            hairpin: c.hairpin_mode,
            isolated: c.port_isolation,
        },
    )
    .await?;
    configure_vlans(inv, node, &attached.host).await?;

    let mut result = AddResult::default();
    if let Some(ipam) = &inv.ipam {
        undo.ipam = true; // a failed IPAM ADD may still have reserved something: DEL it too
        let ipam_result = delegate::add(ipam, req)?;
        if ipam_result.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config")
                .with_details(format!("{ipam} gave no address; check its ranges")));
        }
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        for ip in &mut result.ips {
            ip.interface = Some(2);
        }
        if c.is_gateway {
            plan::fill_gateways(&mut result.ips);
        }
        if c.is_default_gateway {
            plan::add_default_routes(&mut result);
        }
        let routes = plan::pod_routes(&result);
        let setup =
            IfaceSetup { link: &attached.container, ips: &result.ips, routes: &routes, enable_dad: c.enable_dad };
        iface::configure(pod, pod_ns, &setup).await?;
        if c.is_gateway {
            ensure_gateways(node, br, &plan::bridge_gateways(&result.ips), c.force_address).await?;
            let mut fams: Vec<IpFamily> = Vec::new();
            for ip in &result.ips {
                let f = IpFamily::of(&ip.address.ip());
                if !fams.contains(&f) {
                    fams.push(f);
                }
            }
            enable_forwarding(&fams)?;
        }
        if let Some(backend) = backend {
            let entry = PodEntry {
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                ips: result.ips.iter().map(|i| i.address).collect(),
            };
            let exempt: Vec<_> = result.ips.iter().map(|i| plan::subnet_of(i.address)).collect();
            undo.masq = Some(entry.clone());
            masq::setup(backend, &req.conf.name, &exempt, &entry)
                .map_err(|e| CniError::internal(format!("failed to set up masquerade: {e}")))?;
        }
    } else if !c.disable_container_interface {
        pod.set_up(attached.container.index).await?;
    }

    if !c.disable_container_interface {
        node.wait_oper_up(attached.host.index, PORT_UP_TIMEOUT).await.map_err(|e| {
            CniError::internal(format!("bridge port in error state: {} did not come up: {e}", attached.host.name))
        })?;
    }

    // MACs as they are now: the bridge's is pinned, the veth ends' never change after creation.
    let br_now = node.require_link(&br.name).await?;
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

/// VLANs on the host port: `vlan` becomes the PVID (untagged), `vlanTrunk` IDs are tagged; the kernel's
/// default VLAN 1 is removed unless `preserveDefaultVlan` (the reference's current default is to remove it).
async fn configure_vlans(inv: &Invocation<'_>, node: &NetHandle, host: &Link) -> CniResult<()> {
    let c = &inv.conf;
    let trunk = c.trunk_vids()?;
    if c.vlan == 0 && trunk.is_empty() {
        return Ok(());
    }
    let vlan_err = |e: rcni::net::NetError| {
        CniError::internal(format!("failed to set VLANs on {}: {e}", host.name))
            .with_details("the kernel needs CONFIG_BRIDGE_VLAN_FILTERING for vlan/vlanTrunk")
    };
    if !c.preserve_default_vlan {
        let default = BridgeVlan { vid: 1, pvid: true, untagged: true, on_bridge: false };
        match node.bridge_vlan_del(host.index, &default).await {
            Err(e) if !e.is_not_found() => return Err(vlan_err(e)),
            _ => {}
        }
    }
    let native = if c.vlan != 0 { c.vlan as u16 } else { 1 };
    let untagged = BridgeVlan { vid: native, pvid: true, untagged: true, on_bridge: false };
    node.bridge_vlan_add(host.index, &untagged).await.map_err(vlan_err)?;
    for vid in trunk.into_iter().filter(|v| *v != native) {
        let tagged = BridgeVlan { vid, pvid: false, untagged: false, on_bridge: false };
        node.bridge_vlan_add(host.index, &tagged).await.map_err(vlan_err)?;
    }
    Ok(())
}
