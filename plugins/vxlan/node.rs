//! The node side of the vxlan plugin: its peer source and the node-level steps (VTEP, peer entries)
//! around the shared overlay code (`rcni::overlay`). The pod side is the shared bridge recipe
//! (`rcni::pod::attach`).

use crate::config::VxlanConf;
use ipnetwork::IpNetwork;
use rcni::cni::CniResult;
use rcni::net::{Link, NetHandle};
use rcni::overlay::peer::read_peers_file;
use rcni::overlay::plan::is_self;
use rcni::overlay::{self, NodeState, Overlay, Peer, Underlay, vtep};
use std::path::Path;

/// Where the per-node records live (one private directory per node netns below it).
const STATE_BASE: &str = "/run/rcni";

pub async fn underlay(node: &NetHandle, c: &VxlanConf) -> CniResult<Underlay> {
    overlay::find_underlay(node, &c.underlay_choice(), ("vxlan.underlay", "vxlan.local")).await
}

/// Every peer from the config and the peers file (re-read on each call).
pub fn peers(c: &VxlanConf) -> CniResult<Vec<Peer>> {
    let mut all = c.peers.clone();
    if let Some(f) = &c.peers_file {
        all.extend(read_peers_file(f, &c.network)?);
    }
    Ok(all)
}

/// Why the node-level steps run: a pod ADD, or an explicit `vxlan sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Add,
    Sync,
}

/// The peer set to apply. `sync` applies what the sources say. An ADD is more careful, because a peers
/// file being rewritten by a non-atomic writer can be empty or half-written for a moment: an unreadable or
/// invalid file, or one that would remove every other node, makes ADD keep the last good set (with a
/// warning) instead of cutting this node off; `vxlan sync` applies such a change on purpose.
fn peer_set(
    c: &VxlanConf,
    state: &NodeState,
    network: &str,
    u: &Underlay,
    own: &[IpNetwork],
    t: Trigger,
) -> CniResult<Vec<Peer>> {
    let read = peers(c);
    if t == Trigger::Sync {
        return read;
    }
    let others = |p: &[Peer]| p.iter().filter(|p| !is_self(p, u.local, own)).count();
    match (read, state.last_peers(network)) {
        (Ok(new), Some(last)) if others(&new) == 0 && others(&last) > 0 => {
            rcni::cni::log::warn(
                "vxlan",
                format!(
                    "the peer sources list no other node (the last good set has {}): keeping it; run `vxlan sync` to apply an empty peer set",
                    others(&last)
                ),
            );
            Ok(last)
        }
        (Ok(new), _) => Ok(new),
        (Err(e), Some(last)) => {
            rcni::cni::log::warn("vxlan", format!("{e}: keeping the last good peer set ({} peers)", last.len()));
            Ok(last)
        }
        (Err(e), None) => Err(e),
    }
}

/// Node setup under the node lock: the VTEP (claimed for this network: a device owned by another network
/// is refused, never shared), the removal of this network's previous VTEP after a rename, and the peer
/// entries. Returns the overlay MTU and what changed.
pub async fn prepare(
    node: &NetHandle,
    network: &str,
    c: &VxlanConf,
    own: &[IpNetwork],
    t: Trigger,
) -> CniResult<(u32, Vec<String>)> {
    let state = NodeState::for_this_node(Path::new(STATE_BASE))?;
    let _lock = state.lock()?;
    let u = underlay(node, c).await?;
    let want = c.vtep();
    state.claim_device(network, &want.name)?;
    let mut changes = Vec::new();
    if let Some(prev) = state.network_device(network)?.filter(|p| *p != want.name) {
        if state.device_owner(&prev)?.as_deref() == Some(network) {
            changes.extend(vtep::remove_vtep(node, &prev).await?);
            state.release_device(network, &prev)?;
        }
    }
    let (link, created) = overlay::ensure_vtep(node, &want, &u, own).await?;
    changes.extend(created);
    state.set_network_device(network, &want.name)?;
    let peers = peer_set(c, &state, network, &u, own, t)?;
    let o = overlay_of(c, link, u, own);
    changes.extend(overlay::reconcile_peers(node, &o, &peers).await?);
    if state.last_peers(network).as_deref() != Some(&peers[..]) {
        state.save_peers(network, &peers)?;
    }
    Ok((o.underlay.mtu, changes))
}

fn overlay_of(c: &VxlanConf, vtep: Link, underlay: Underlay, own: &[IpNetwork]) -> Overlay {
    Overlay { vtep, underlay, own: own.to_vec(), network: c.network.clone(), direct_routing: false }
}

/// CHECK of the node side: the VTEP as configured and every wanted peer entry present.
pub async fn check(node: &NetHandle, c: &VxlanConf, own: &[IpNetwork]) -> CniResult<u32> {
    let u = underlay(node, c).await?;
    let link = overlay::check_vtep(node, &c.vtep(), &u).await?;
    let o = overlay_of(c, link, u, own);
    overlay::check_peers(node, &o, &peers(c)?).await?;
    Ok(o.underlay.mtu)
}
