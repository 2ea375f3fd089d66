//! Applying a peer set to the kernel: a diff of what the VTEP (and, with DirectRouting, the underlay
//! device) holds against what the peers need. Only our own entries count: permanent neighbours and FDB
//! entries with a remote on the VTEP, gateway routes via the VTEP, and gateway routes into the cluster
//! network via the underlay when DirectRouting is on. Foreign routes on other devices are never touched.

use super::peer::inside_network;
use super::plan::{self, Entries, MacBytes};
use super::{Peer, Underlay};
use crate::cni::{CniError, CniResult};
use crate::net::{Link, Mac, NetHandle, RouteFilter, RouteSpec, TABLE_MAIN};
use ipnetwork::IpNetwork;

/// This node's side of the overlay, as the reconciler needs it.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub vtep: Link,
    pub underlay: Underlay,
    /// This node's pod subnets (never routed into the overlay).
    pub own: Vec<IpNetwork>,
    /// The cluster network(s): DirectRouting's routes are recognised as ours by lying inside them.
    pub network: Vec<IpNetwork>,
    /// Peers on the underlay's segment get a plain route via their underlay address.
    pub direct_routing: bool,
}

impl Overlay {
    fn desired(&self, peers: &[Peer]) -> Entries {
        plan::desired(peers, self.underlay.local, &self.own, |u| self.direct_routing && self.underlay.same_segment(u))
    }
}

/// What the kernel holds now (see the module comment for what counts as ours).
async fn current_entries(node: &NetHandle, o: &Overlay) -> CniResult<Entries> {
    let mut e = Entries::default();
    for n in node.neighbours(Some(o.vtep.index), None).await? {
        if let (true, Some(mac)) = (n.is_permanent(), n.mac) {
            e.neighs.insert((n.ip, mac.octets()));
        }
    }
    for f in node.fdb(Some(o.vtep.index)).await? {
        if let Some(dst) = f.dst.filter(|_| !f.mac.is_zero()) {
            e.fdb.insert((f.mac.octets(), dst));
        }
    }
    let filter = RouteFilter { family: None, table: Some(TABLE_MAIN), oif: Some(o.vtep.index) };
    for r in node.routes(&filter).await? {
        if let Some(gw) = r.gw {
            e.routes.insert((r.dst, gw));
        }
    }
    if o.direct_routing {
        let filter = RouteFilter { family: None, table: Some(TABLE_MAIN), oif: Some(o.underlay.link.index) };
        for r in node.routes(&filter).await? {
            let ours = inside_network(&r.dst, &o.network) && !o.own.iter().any(|s| s.contains(r.dst.network()));
            if let (true, Some(gw)) = (ours, r.gw) {
                e.direct.insert((r.dst, gw));
            }
        }
    }
    Ok(e)
}

fn fmt_mac(m: &MacBytes) -> String {
    Mac(*m).to_string()
}

/// Bring the kernel to the peer set: remove stale entries (routes, FDB, neighbours — reverse of
/// creation), add missing ones (neighbour, FDB, route: once the route exists the kernel would otherwise ARP
/// for a gateway that has no entry yet). Unchanged entries are not touched. Returns what changed.
pub async fn reconcile_peers(node: &NetHandle, o: &Overlay, peers: &[Peer]) -> CniResult<Vec<String>> {
    for p in peers.iter().filter(|p| p.underlay != o.underlay.local && plan::is_self(p, o.underlay.local, &o.own)) {
        crate::cni::log::warn(
            "overlay",
            format!("peer {} claims this node's subnet(s): treated as this node and skipped", p.underlay),
        );
    }
    let want = o.desired(peers);
    let have = current_entries(node, o).await?;
    let d = plan::diff(&want, &have);
    let mut changes = Vec::new();
    let gone = |r: crate::net::Result<()>| match r {
        Err(e) if !e.is_not_found() => Err(CniError::from(e)),
        _ => Ok(()),
    };
    let vtep = o.vtep.index;
    let underlay = o.underlay.link.index;
    let route = |dst: IpNetwork, gw, oif, onlink| {
        let mut spec = RouteSpec::to(dst);
        spec.gw = Some(gw);
        spec.oif = Some(oif);
        spec.onlink = onlink;
        spec
    };
    for (dst, gw) in &d.remove.routes {
        gone(node.del_route(&route(*dst, *gw, vtep, false)).await)?;
        changes.push(format!("removed route {dst} via {gw}"));
    }
    for (dst, gw) in &d.remove.direct {
        gone(node.del_route(&route(*dst, *gw, underlay, false)).await)?;
        changes.push(format!("removed route {dst} via {gw} dev {}", o.underlay.link.name));
    }
    for (mac, dst) in &d.remove.fdb {
        gone(node.del_fdb(vtep, Mac(*mac), Some(*dst)).await)?;
        changes.push(format!("removed fdb {} dst {dst}", fmt_mac(mac)));
    }
    for (ip, mac) in &d.remove.neighs {
        gone(node.del_neighbour(vtep, *ip).await)?;
        changes.push(format!("removed neighbour {ip} lladdr {}", fmt_mac(mac)));
    }
    for (ip, mac) in &d.add.neighs {
        node.set_neighbour(vtep, *ip, Mac(*mac)).await?;
        changes.push(format!("added neighbour {ip} lladdr {}", fmt_mac(mac)));
    }
    for (mac, dst) in &d.add.fdb {
        node.set_fdb(vtep, Mac(*mac), *dst).await?;
        changes.push(format!("added fdb {} dst {dst}", fmt_mac(mac)));
    }
    for (dst, gw) in &d.add.routes {
        node.replace_route(&route(*dst, *gw, vtep, true)).await?;
        changes.push(format!("added route {dst} via {gw} onlink"));
    }
    for (dst, gw) in &d.add.direct {
        node.replace_route(&route(*dst, *gw, underlay, false)).await?;
        changes.push(format!("added route {dst} via {gw} dev {}", o.underlay.link.name));
    }
    Ok(changes)
}

/// CHECK of the peer entries: every wanted entry is there (extra ones are left for `sync` to judge).
pub async fn check_peers(node: &NetHandle, o: &Overlay, peers: &[Peer]) -> CniResult<()> {
    let want = o.desired(peers);
    let have = current_entries(node, o).await?;
    let d = plan::diff(&want, &have);
    let fix = "run `vxlan sync <conf>` to restore the overlay entries";
    let name = &o.vtep.name;
    if let Some((mac, dst)) = d.add.fdb.iter().next() {
        return Err(
            CniError::internal(format!("FDB entry {} dst {dst} is missing on {name}", fmt_mac(mac))).with_details(fix)
        );
    }
    if let Some((ip, mac)) = d.add.neighs.iter().next() {
        return Err(CniError::internal(format!("neighbour {ip} lladdr {} is missing on {name}", fmt_mac(mac)))
            .with_details(fix));
    }
    if let Some((dst, gw)) = d.add.routes.iter().next() {
        return Err(CniError::internal(format!("route {dst} via {gw} dev {name} is missing")).with_details(fix));
    }
    if let Some((dst, gw)) = d.add.direct.iter().next() {
        return Err(CniError::internal(format!("route {dst} via {gw} dev {} is missing", o.underlay.link.name))
            .with_details(fix));
    }
    Ok(())
}
