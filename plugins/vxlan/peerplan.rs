//! What the kernel must hold for the overlay's peers, and the difference to what it holds now.
//!
//! Per peer node (underlay U, pod subnets S…): a neighbour entry `S.0 → MAC(U)` and a route
//! `S via S.0 dev <vtep> onlink` per subnet, and one FDB entry `MAC(U) → dst U`. The VTEP MAC is derived
//! from U, so (U, S…) describes a peer completely. Reconciliation is a diff: unchanged entries are not touched.

use crate::config::Peer;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;

pub type MacBytes = [u8; 6];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// (subnet network address, peer VTEP MAC)
    pub neighs: BTreeSet<(IpAddr, MacBytes)>,
    /// (peer VTEP MAC, peer underlay address)
    pub fdb: BTreeSet<(MacBytes, IpAddr)>,
    /// (peer subnet, gateway = its network address)
    pub routes: BTreeSet<(IpNetwork, IpAddr)>,
}

#[cfg(test)]
impl Entries {
    pub fn is_empty(&self) -> bool {
        self.neighs.is_empty() && self.fdb.is_empty() && self.routes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.neighs.len() + self.fdb.len() + self.routes.len()
    }
}

/// Is `p` this node? Its underlay address is ours, or it claims one of our own pod subnets (the same node
/// listed under another of its addresses): routing our own subnet into the VTEP would replace the bridge's
/// connected route and cut off this node's pods.
pub fn is_self(p: &Peer, own_underlay: IpAddr, own_subnets: &[IpNetwork]) -> bool {
    p.underlay == own_underlay
        || p.subnets.iter().any(|s| own_subnets.iter().any(|o| o.contains(s.network()) || s.contains(o.network())))
}

/// The entries for `peers`, leaving out this node itself (one peers file can serve every node).
/// IPv4 and IPv6 pod subnets ride the same VTEP.
pub fn desired(
    peers: &[Peer],
    own_underlay: IpAddr,
    own_subnets: &[IpNetwork],
    mac_of: impl Fn(IpAddr) -> MacBytes,
) -> Entries {
    let mut e = Entries::default();
    for p in peers.iter().filter(|p| !is_self(p, own_underlay, own_subnets)) {
        let mac = mac_of(p.underlay);
        e.fdb.insert((mac, p.underlay));
        for s in &p.subnets {
            e.neighs.insert((s.network(), mac));
            e.routes.insert((*s, s.network()));
        }
    }
    e
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub add: Entries,
    pub remove: Entries,
}

pub fn diff(want: &Entries, have: &Entries) -> Diff {
    Diff {
        add: Entries {
            neighs: want.neighs.difference(&have.neighs).copied().collect(),
            fdb: want.fdb.difference(&have.fdb).copied().collect(),
            routes: want.routes.difference(&have.routes).copied().collect(),
        },
        remove: Entries {
            neighs: have.neighs.difference(&want.neighs).copied().collect(),
            fdb: have.fdb.difference(&want.fdb).copied().collect(),
            routes: have.routes.difference(&want.routes).copied().collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(ip: IpAddr) -> MacBytes {
        match ip {
            IpAddr::V4(v) => {
                let o = v.octets();
                [0x0a, 0x58, o[0], o[1], o[2], o[3]]
            }
            IpAddr::V6(_) => [0x0a, 0x59, 0, 0, 0, 1],
        }
    }

    fn peer(u: &str, subnets: &[&str]) -> Peer {
        Peer { underlay: u.parse().unwrap(), subnets: subnets.iter().map(|s| s.parse().unwrap()).collect() }
    }

    #[test]
    fn desired_skips_self_and_covers_each_subnet() {
        let peers = vec![
            peer("198.18.0.1", &["10.244.1.0/24"]),
            peer("198.18.0.2", &["10.244.2.0/24", "fd00:244:0:2::/64"]),
            peer("198.18.0.3", &["10.244.3.0/24"]),
        ];
        let e = desired(&peers, "198.18.0.1".parse().unwrap(), &[], mac);
        assert_eq!(e.fdb.len(), 2);
        assert_eq!(e.neighs.len(), 3);
        assert_eq!(e.routes.len(), 3);
        assert!(e.routes.contains(&("10.244.2.0/24".parse().unwrap(), "10.244.2.0".parse().unwrap())));
        assert!(e.neighs.contains(&("fd00:244:0:2::".parse().unwrap(), mac("198.18.0.2".parse().unwrap()))));
    }

    #[test]
    fn this_node_under_another_address_is_skipped() {
        let own: Vec<IpNetwork> = vec!["10.244.1.0/24".parse().unwrap()];
        let peers = vec![peer("192.0.2.10", &["10.244.1.0/24"]), peer("198.18.0.2", &["10.244.2.0/24"])];
        let e = desired(&peers, "198.18.0.1".parse().unwrap(), &own, mac);
        assert_eq!(e.routes.len(), 1, "only the real peer: {e:?}");
        assert_eq!(e.fdb.len(), 1);
        assert!(!e.routes.iter().any(|(d, _)| d.to_string() == "10.244.1.0/24"));
    }

    #[test]
    fn diff_touches_only_changes() {
        let own: IpAddr = "198.18.0.1".parse().unwrap();
        let before =
            desired(&[peer("198.18.0.2", &["10.244.2.0/24"]), peer("198.18.0.3", &["10.244.3.0/24"])], own, &[], mac);
        let after =
            desired(&[peer("198.18.0.2", &["10.244.2.0/24"]), peer("198.18.0.4", &["10.244.4.0/24"])], own, &[], mac);
        let d = diff(&after, &before);
        assert_eq!(d.add.len(), 3, "peer .4: neigh, fdb, route");
        assert_eq!(d.remove.len(), 3, "peer .3: neigh, fdb, route");
        assert!(diff(&after, &after).add.is_empty() && diff(&after, &after).remove.is_empty());
    }
}
