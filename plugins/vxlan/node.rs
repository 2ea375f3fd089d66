//! The node side of the overlay: which underlay, the VTEP device, and the per-peer neighbour, FDB and
//! route entries. The pod side is the shared bridge recipe (`rcni::pod::attach`).

use crate::config::{Peer, VxlanConf, read_peers_file};
use crate::peerplan::{self, Entries, MacBytes};
use ipnetwork::IpNetwork;
use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use rcni::net::{AddrOptions, Link, Mac, NetHandle, RouteFilter, RouteSpec, TABLE_MAIN, VxlanSpec, sysctl};
use std::net::IpAddr;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
const OVERHEAD_V4: u32 = 50;
/// The same with a 40-byte outer IPv6 header.
const OVERHEAD_V6: u32 = 70;

/// The underlay as found in the node: device, local VTEP address, and the overlay MTU it allows.
#[derive(Debug, Clone)]
pub struct Underlay {
    pub link: Link,
    pub local: IpAddr,
    pub mtu: u32,
}

fn not_ready(msg: String) -> CniError {
    CniError::new(code::NOT_AVAILABLE, msg)
}

/// Find the underlay: `vxlan.underlay` by name, else the device holding `vxlan.local`, else the device of
/// the default route. Errors are "not available" (code 50): the node is not ready for pods.
pub async fn underlay(node: &NetHandle, c: &VxlanConf) -> CniResult<Underlay> {
    let link = if let Some(name) = &c.vxlan.underlay {
        node.link_by_name(name).await?.ok_or_else(|| {
            not_ready(format!("underlay device {name:?} (vxlan.underlay) does not exist in this node"))
        })?
    } else if let Some(local) = c.vxlan.local {
        let holder = node.addresses(None, None).await?.into_iter().find(|a| a.ip() == local);
        let holder =
            holder.ok_or_else(|| not_ready(format!("no device in this node has the address {local} (vxlan.local)")))?;
        node.link_by_index(holder.index).await?.ok_or_else(|| not_ready(format!("device of {local} vanished")))?
    } else {
        let routes = node.routes(&RouteFilter::default()).await?;
        let default = routes.iter().find(|r| r.dst.prefix() == 0 && r.oif.is_some());
        let oif = default.and_then(|r| r.oif).ok_or_else(|| {
            not_ready("this node has no default route to pick the underlay from".to_string())
                .with_details("set vxlan.underlay (a device name) or vxlan.local (its address)")
        })?;
        node.link_by_index(oif).await?.ok_or_else(|| not_ready("the default route's device vanished".into()))?
    };
    let local = match c.vxlan.local {
        Some(l) => l,
        None => {
            let addrs = node.addresses(Some(link.index), None).await?;
            let pick = |v4: bool| addrs.iter().find(|a| a.ip().is_ipv4() == v4 && !a.is_link_local()).map(|a| a.ip());
            pick(true).or_else(|| pick(false)).ok_or_else(|| {
                not_ready(format!("underlay {} has no usable address", link.name))
                    .with_details("give it an address or set vxlan.local")
            })?
        }
    };
    let overhead = if local.is_ipv4() { OVERHEAD_V4 } else { OVERHEAD_V6 };
    let mtu = match c.vxlan.mtu {
        Some(m) => m,
        None => link.mtu.unwrap_or(1500).saturating_sub(overhead),
    };
    Ok(Underlay { link, local, mtu })
}

/// The VTEP MAC: derived from the underlay address, so every node knows every other node's MAC from its
/// address alone.
pub fn vtep_mac(underlay: IpAddr) -> Mac {
    Mac::from_ip(underlay)
}

fn want_vtep(c: &VxlanConf, u: &Underlay) -> VxlanSpec {
    VxlanSpec {
        name: c.device_name(),
        vni: c.vni(),
        port: Some(c.port()),
        local: Some(u.local),
        underlay: Some(u.link.index),
        learning: c.vxlan.learning,
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
/// address, MAC...). Returns the device and what changed.
pub async fn ensure_vtep(
    node: &NetHandle,
    c: &VxlanConf,
    u: &Underlay,
    own: &[IpNetwork],
    previous: Option<&str>,
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
                    changes.push(format!(
                        "created {} (vni {}, port {}, local {})",
                        want.name,
                        want.vni,
                        c.port(),
                        u.local
                    ));
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
    changes.extend(remove_previous_vtep(node, &link, previous).await?);
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

/// After a VNI change the default device name (`rcni.<vni>`) changes too, and the old device would stay,
/// still holding the peer routes. `previous` is the device this network used before (recorded per node):
/// remove it if it is another VXLAN device. Devices of other networks are never touched.
async fn remove_previous_vtep(node: &NetHandle, current: &Link, previous: Option<&str>) -> CniResult<Vec<String>> {
    let Some(name) = previous.map(str::trim).filter(|n| !n.is_empty() && *n != current.name) else {
        return Ok(Vec::new());
    };
    match node.link_by_name(name).await? {
        Some(l) if l.is_kind("vxlan") => match node.delete_link(l.index).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(vec![format!("removed stale device {name}")]),
        },
        _ => Ok(Vec::new()),
    }
}

/// CHECK of the VTEP: it exists as the config wants.
pub async fn check_vtep(node: &NetHandle, c: &VxlanConf, u: &Underlay) -> CniResult<Link> {
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

/// Every peer from the config and the peers file (re-read on each call).
pub fn peers(c: &VxlanConf) -> CniResult<Vec<Peer>> {
    let mut all = c.peers.clone();
    if let Some(f) = &c.peers_file {
        all.extend(read_peers_file(f, &c.network)?);
    }
    Ok(all)
}

/// What the VTEP holds now: permanent neighbours, FDB entries with a remote, and gateway routes.
async fn current_entries(node: &NetHandle, vtep: &Link) -> CniResult<Entries> {
    let mut e = Entries::default();
    for n in node.neighbours(Some(vtep.index), None).await? {
        if let (true, Some(mac)) = (n.is_permanent(), n.mac) {
            e.neighs.insert((n.ip, mac.octets()));
        }
    }
    for f in node.fdb(Some(vtep.index)).await? {
        if let Some(dst) = f.dst.filter(|_| !f.mac.is_zero()) {
            e.fdb.insert((f.mac.octets(), dst));
        }
    }
    let filter = RouteFilter { family: None, table: Some(TABLE_MAIN), oif: Some(vtep.index) };
    for r in node.routes(&filter).await? {
        if let Some(gw) = r.gw {
            e.routes.insert((r.dst, gw));
        }
    }
    Ok(e)
}

fn mac_of(ip: IpAddr) -> MacBytes {
    vtep_mac(ip).octets()
}

fn fmt_mac(m: &MacBytes) -> String {
    Mac(*m).to_string()
}

/// Bring the VTEP's peer entries to the peer set: remove stale ones (route, FDB, neighbour — reverse of
/// creation), add missing ones (neighbour, FDB, route: once the route exists the kernel would otherwise ARP
/// for a gateway that has no entry yet). Unchanged entries are not touched. Returns what changed.
pub async fn reconcile_peers(
    node: &NetHandle,
    vtep: &Link,
    local: IpAddr,
    own: &[IpNetwork],
    peers: &[Peer],
) -> CniResult<Vec<String>> {
    for p in peers.iter().filter(|p| p.underlay != local && peerplan::is_self(p, local, own)) {
        rcni::cni::log::warn(
            "vxlan",
            format!("peer {} claims this node's subnet(s): treated as this node and skipped", p.underlay),
        );
    }
    let want = peerplan::desired(peers, local, own, mac_of);
    let have = current_entries(node, vtep).await?;
    let d = peerplan::diff(&want, &have);
    let mut changes = Vec::new();
    let gone = |r: rcni::net::Result<()>| match r {
        Err(e) if !e.is_not_found() => Err(CniError::from(e)),
        _ => Ok(()),
    };
    for (dst, gw) in &d.remove.routes {
        let mut spec = RouteSpec::to(*dst);
        spec.gw = Some(*gw);
        spec.oif = Some(vtep.index);
        gone(node.del_route(&spec).await)?;
        changes.push(format!("removed route {dst} via {gw}"));
    }
    for (mac, dst) in &d.remove.fdb {
        gone(node.del_fdb(vtep.index, Mac(*mac), Some(*dst)).await)?;
        changes.push(format!("removed fdb {} dst {dst}", fmt_mac(mac)));
    }
    for (ip, mac) in &d.remove.neighs {
        gone(node.del_neighbour(vtep.index, *ip).await)?;
        changes.push(format!("removed neighbour {ip} lladdr {}", fmt_mac(mac)));
    }
    for (ip, mac) in &d.add.neighs {
        node.set_neighbour(vtep.index, *ip, Mac(*mac)).await?;
        changes.push(format!("added neighbour {ip} lladdr {}", fmt_mac(mac)));
    }
    for (mac, dst) in &d.add.fdb {
        node.set_fdb(vtep.index, Mac(*mac), *dst).await?;
        changes.push(format!("added fdb {} dst {dst}", fmt_mac(mac)));
    }
    for (dst, gw) in &d.add.routes {
        let mut spec = RouteSpec::to(*dst);
        spec.gw = Some(*gw);
        spec.oif = Some(vtep.index);
        spec.onlink = true;
        node.replace_route(&spec).await?;
        changes.push(format!("added route {dst} via {gw} onlink"));
    }
    Ok(changes)
}

/// CHECK of the peer entries: every wanted entry is there (extra ones are left for `sync` to judge).
pub async fn check_peers(
    node: &NetHandle,
    vtep: &Link,
    local: IpAddr,
    own: &[IpNetwork],
    peers: &[Peer],
) -> CniResult<()> {
    let want = peerplan::desired(peers, local, own, mac_of);
    let have = current_entries(node, vtep).await?;
    let d = peerplan::diff(&want, &have);
    let fix = "run `vxlan sync <conf>` to restore the overlay entries";
    if let Some((mac, dst)) = d.add.fdb.iter().next() {
        return Err(CniError::internal(format!("FDB entry {} dst {dst} is missing on {}", fmt_mac(mac), vtep.name))
            .with_details(fix));
    }
    if let Some((ip, mac)) = d.add.neighs.iter().next() {
        return Err(CniError::internal(format!("neighbour {ip} lladdr {} is missing on {}", fmt_mac(mac), vtep.name))
            .with_details(fix));
    }
    if let Some((dst, gw)) = d.add.routes.iter().next() {
        return Err(CniError::internal(format!("route {dst} via {gw} dev {} is missing", vtep.name)).with_details(fix));
    }
    Ok(())
}
