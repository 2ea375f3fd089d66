//! The underlay (which device and address carry the overlay) and the VTEP device itself.

use crate::cni::error::code;
use crate::cni::{CniError, CniResult};
use crate::net::{AddrOptions, Link, Mac, NetHandle, RouteFilter, VxlanSpec, sysctl};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
const OVERHEAD_V4: u32 = 50;
/// The same with a 40-byte outer IPv6 header.
const OVERHEAD_V6: u32 = 70;

/// How the underlay is chosen: a device by name, else the device holding `local`, else the device of the
/// default route. The local VTEP address is `local`, else the device's first global address.
#[derive(Debug, Clone, Default)]
pub struct UnderlayChoice {
    pub device: Option<String>,
    pub local: Option<IpAddr>,
    /// The overlay MTU; default: the underlay's MTU minus the encapsulation overhead.
    pub mtu: Option<u32>,
}

/// The underlay as found in the node: device, local VTEP address, the overlay MTU it allows, and the
/// prefixes configured on it (the L2 segment that DirectRouting reaches without encapsulation).
#[derive(Debug, Clone)]
pub struct Underlay {
    pub link: Link,
    pub local: IpAddr,
    pub mtu: u32,
    pub segments: Vec<IpNetwork>,
}

impl Underlay {
    /// Is `peer` on this node's underlay segment (reachable without a router)?
    pub fn same_segment(&self, peer: IpAddr) -> bool {
        self.segments.iter().any(|s| s.contains(peer) && s.prefix() > 0)
    }
}

fn not_ready(msg: String) -> CniError {
    CniError::new(code::NOT_AVAILABLE, msg)
}

/// Find the underlay. Errors are "not available" (code 50): the node is not ready for pods. `what`
/// names the settings in messages (`vxlan.underlay`/`vxlan.local`, or the agent's flags).
pub async fn find_underlay(node: &NetHandle, c: &UnderlayChoice, what: (&str, &str)) -> CniResult<Underlay> {
    let link = if let Some(name) = &c.device {
        node.link_by_name(name)
            .await?
            .ok_or_else(|| not_ready(format!("underlay device {name:?} ({}) does not exist in this node", what.0)))?
    } else if let Some(local) = c.local {
        let holder = node.addresses(None, None).await?.into_iter().find(|a| a.ip() == local);
        let holder =
            holder.ok_or_else(|| not_ready(format!("no device in this node has the address {local} ({})", what.1)))?;
        node.link_by_index(holder.index).await?.ok_or_else(|| not_ready(format!("device of {local} vanished")))?
    } else {
        let routes = node.routes(&RouteFilter::default()).await?;
        let default = routes.iter().find(|r| r.dst.prefix() == 0 && r.oif.is_some());
        let oif = default.and_then(|r| r.oif).ok_or_else(|| {
            not_ready("this node has no default route to pick the underlay from".to_string())
                .with_details(format!("set {} (a device name) or {} (its address)", what.0, what.1))
        })?;
        node.link_by_index(oif).await?.ok_or_else(|| not_ready("the default route's device vanished".into()))?
    };
    let addrs = node.addresses(Some(link.index), None).await?;
    let local = match c.local {
        Some(l) => l,
        None => {
            let pick = |v4: bool| addrs.iter().find(|a| a.ip().is_ipv4() == v4 && !a.is_link_local()).map(|a| a.ip());
            pick(true).or_else(|| pick(false)).ok_or_else(|| {
                not_ready(format!("underlay {} has no usable address", link.name))
                    .with_details(format!("give it an address or set {}", what.1))
            })?
        }
    };
    let segments = addrs.iter().filter(|a| !a.is_link_local()).map(|a| a.net).collect();
    let overhead = if local.is_ipv4() { OVERHEAD_V4 } else { OVERHEAD_V6 };
    let mtu = match c.mtu {
        Some(m) => m,
        None => link.mtu.unwrap_or(1500).saturating_sub(overhead),
    };
    Ok(Underlay { link, local, mtu, segments })
}

/// The VTEP MAC: derived from the underlay address, so every rcni node knows every other rcni node's MAC
/// from its address alone.
pub fn vtep_mac(underlay: IpAddr) -> Mac {
    Mac::from_ip(underlay)
}

/// The VTEP device as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepConf {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub learning: bool,
}

fn want_vtep(c: &VtepConf, u: &Underlay) -> VxlanSpec {
    VxlanSpec {
        name: c.name.clone(),
        vni: c.vni,
        port: Some(c.port),
        local: Some(u.local),
        underlay: Some(u.link.index),
        learning: c.learning,
        mtu: Some(u.mtu),
        mac: Some(vtep_mac(u.local)),
        udp_csum: None,
        // Brought up by `ensure_vtep` after its sysctls are set.
        up: false,
    }
}

/// How an existing device differs from what the config wants (empty: it matches).
fn drift(l: &Link, want: &VxlanSpec) -> Vec<String> {
    let mut d = Vec::new();
    let Some(v) = l.vxlan.as_ref() else {
        return vec![format!("{} is a {} device, not vxlan", l.name, l.kind.as_deref().unwrap_or("non-vxlan"))];
    };
    if v.vni != Some(want.vni) {
        d.push(format!("vni {:?} (want {})", v.vni, want.vni));
    }
    if v.port != want.port {
        d.push(format!("port {:?} (want {:?})", v.port, want.port));
    }
    if v.local != want.local {
        d.push(format!("local {:?} (want {:?})", v.local, want.local));
    }
    if v.learning != Some(want.learning) {
        d.push(format!("learning {:?} (want {})", v.learning, want.learning));
    }
    if v.underlay != want.underlay {
        d.push(format!("underlay #{:?} (want #{:?})", v.underlay, want.underlay));
    }
    if l.mac != want.mac {
        d.push(format!("mac {:?} (want {:?})", l.mac.map(|m| m.to_string()), want.mac.map(|m| m.to_string())));
    }
    d
}

/// The network address of each own subnet on the VTEP as a host route (`10.244.1.0/32`), as flannel does:
/// it is the next hop other nodes use for this node's pods, and node-originated overlay traffic uses it
/// as source.
fn vtep_addresses(own: &[IpNetwork]) -> Vec<IpNetwork> {
    own.iter().map(|s| IpNetwork::new(s.network(), if s.is_ipv4() { 32 } else { 128 }).unwrap()).collect()
}

/// Make the VTEP exist as configured: create it, or re-create it when it drifted (wrong VNI, port, local
/// address, MAC...). Returns the device and what changed. Whether this caller may own a device of that
/// name is [`super::NodeState`]'s decision, taken before.
pub async fn ensure_vtep(
    node: &NetHandle,
    c: &VtepConf,
    u: &Underlay,
    own: &[IpNetwork],
) -> CniResult<(Link, Vec<String>)> {
    let want = want_vtep(c, u);
    let mut changes = Vec::new();
    let mut link = match node.link_by_name(&want.name).await? {
        Some(l) => {
            let d = drift(&l, &want);
            if d.is_empty() {
                Some(l)
            } else {
                changes.push(format!("re-created {}: {}", want.name, d.join(", ")));
                match node.delete_link(l.index).await {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => None,
                }
            }
        }
        None => None,
    };
    if link.is_none() {
        link = Some(match node.create_vxlan(&want).await {
            Ok(l) => {
                if changes.is_empty() {
                    changes
                        .push(format!("created {} (vni {}, port {}, local {})", want.name, want.vni, c.port, u.local));
                }
                // Before the first up: no router advertisements, no DAD (the device's link-local address
                // would be tentative for a while). Hosts without IPv6 have no such keys.
                for key in ["accept_ra", "accept_dad"] {
                    let _ = sysctl::write(&format!("net/ipv6/conf/{}/{key}", want.name), "0");
                }
                l
            }
            // Another ADD created it at the same moment: use theirs if it matches.
            Err(e) if e.is_exists() => {
                let l = node.require_link(&want.name).await?;
                let d = drift(&l, &want);
                if !d.is_empty() {
                    return Err(CniError::internal(format!(
                        "{} exists with other settings: {}",
                        want.name,
                        d.join(", ")
                    )));
                }
                l
            }
            Err(e) => {
                return Err(CniError::internal(format!("failed to create vxlan device {}: {e}", want.name))
                    .with_details("another VXLAN device may hold the same UDP port, or the local address is wrong"));
            }
        });
    }
    let mut link = link.expect("set above");
    if link.mtu != want.mtu {
        node.set_mtu(link.index, u.mtu).await?;
    }
    if !link.admin_up {
        node.set_up(link.index).await?;
    }
    // udev (MACAddressPolicy=persistent) may rewrite a new device's MAC: check it after up.
    link = node.require_link(&want.name).await?;
    if link.mac != want.mac {
        node.set_mac(link.index, want.mac.expect("always set")).await?;
    }
    for a in vtep_addresses(own) {
        node.add_address(link.index, a, AddrOptions { nodad: a.is_ipv6(), exists_ok: true }).await?;
    }
    Ok((link, changes))
}

/// Remove `name`, a VXLAN device the caller owned before (after a VNI change the default device name
/// changes too, and the old device would stay, still holding the peer routes). Anything but a VXLAN
/// device is left alone.
pub async fn remove_vtep(node: &NetHandle, name: &str) -> CniResult<Vec<String>> {
    match node.link_by_name(name).await? {
        Some(l) if l.is_kind("vxlan") => match node.delete_link(l.index).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(vec![format!("removed stale device {name}")]),
        },
        _ => Ok(Vec::new()),
    }
}

/// CHECK of the VTEP: it exists as the config wants.
pub async fn check_vtep(node: &NetHandle, c: &VtepConf, u: &Underlay) -> CniResult<Link> {
    let want = want_vtep(c, u);
    let l = node.link_by_name(&want.name).await?.ok_or_else(|| {
        CniError::internal(format!("vxlan device {} is missing", want.name))
            .with_details("run `vxlan sync` or ADD a pod")
    })?;
    let d = drift(&l, &want);
    if !d.is_empty() {
        return Err(CniError::internal(format!(
            "vxlan device {} differs from the config: {}",
            want.name,
            d.join(", ")
        ))
        .with_details("run `vxlan sync <conf>` to re-create it"));
    }
    Ok(l)
}
