//! What the kernel must hold for the overlay's peers, and the difference to what it holds now.
//!
//! Per peer node (underlay U, VTEP MAC M, pod subnets S…): a neighbour entry `S.0 → M` and a route
//! `S via S.0 dev <vtep> onlink` per subnet, and one FDB entry `M → dst U`. With DirectRouting, a peer on
//! this node's underlay segment gets `S via U dev <underlay>` instead (no encapsulation). Reconciliation
//! is a diff: unchanged entries are not touched.

use super::Peer;
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
    /// (peer subnet, gateway = its network address), on the VTEP
    pub routes: BTreeSet<(IpNetwork, IpAddr)>,
    /// (peer subnet, gateway = the peer's underlay address), on the underlay device
    pub direct: BTreeSet<(IpNetwork, IpAddr)>,
}

impl Entries {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.neighs.len() + self.fdb.len() + self.routes.len() + self.direct.len()
    }
}

/// Is `p` this node? Its underlay address is ours, or it claims one of our own pod subnets (the same node
/// listed under another of its addresses): routing our own subnet into the VTEP would replace the bridge's
/// connected route and cut off this node's pods.
pub fn is_self(p: &Peer, own_underlay: IpAddr, own_subnets: &[IpNetwork]) -> bool {
    p.underlay == own_underlay
        || p.subnets.iter().any(|s| own_subnets.iter().any(|o| o.contains(s.network()) || s.contains(o.network())))
}

/// The entries for `peers`, leaving out this node itself (one peers list can serve every node).
/// IPv4 and IPv6 pod subnets ride the same VTEP. `direct(U)` says whether peer U is reached without
/// encapsulation (DirectRouting and on this node's segment); only subnets of U's family can be.
pub fn desired(
    peers: &[Peer],
    own_underlay: IpAddr,
    own_subnets: &[IpNetwork],
    direct: impl Fn(IpAddr) -> bool,
) -> Entries {
    let mut e = Entries::default();
    for p in peers.iter().filter(|p| !is_self(p, own_underlay, own_subnets)) {
        let via_underlay = direct(p.underlay);
        let mac = p.vtep_mac().octets();
        let mut tunnelled = false;
        for s in &p.subnets {
            if via_underlay && s.is_ipv4() == p.underlay.is_ipv4() {
                e.direct.insert((*s, p.underlay));
            } else {
                e.neighs.insert((s.network(), mac));
                e.routes.insert((*s, s.network()));
                tunnelled = true;
            }
        }
        if tunnelled {
            e.fdb.insert((mac, p.underlay));
        }
    }
    e
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub add: Entries,
    pub remove: Entries,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

fn minus<T: Ord + Copy>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> BTreeSet<T> {
    a.difference(b).copied().collect()
}

pub fn diff(want: &Entries, have: &Entries) -> Diff {
    Diff {
        add: Entries {
            neighs: minus(&want.neighs, &have.neighs),
            fdb: minus(&want.fdb, &have.fdb),
            routes: minus(&want.routes, &have.routes),
            direct: minus(&want.direct, &have.direct),
        },
        remove: Entries {
            neighs: minus(&have.neighs, &want.neighs),
            fdb: minus(&have.fdb, &want.fdb),
            routes: minus(&have.routes, &want.routes),
            direct: minus(&have.direct, &want.direct),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Mac;

    fn peer(u: &str, subnets: &[&str]) -> Peer {
        Peer { underlay: u.parse().unwrap(), subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(), mac: None }
    }

    fn never(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn desired_skips_self_and_covers_each_subnet() {
        let peers = vec![
            peer("198.18.0.1", &["10.244.1.0/24"]),
            peer("198.18.0.2", &["10.244.2.0/24", "fd00:244:0:2::/64"]),
            peer("198.18.0.3", &["10.244.3.0/24"]),
        ];
        let e = desired(&peers, "198.18.0.1".parse().unwrap(), &[], never);
        assert_eq!(e.fdb.len(), 2);
        assert_eq!(e.neighs.len(), 3);
        assert_eq!(e.routes.len(), 3);
        assert!(e.routes.contains(&("10.244.2.0/24".parse().unwrap(), "10.244.2.0".parse().unwrap())));
        let mac2 = Mac::from_ip("198.18.0.2".parse().unwrap()).octets();
        assert!(e.neighs.contains(&("fd00:244:0:2::".parse().unwrap(), mac2)));
    }

    #[test]
    fn a_published_mac_wins_over_the_derived_one() {
        let mut p = peer("198.18.0.2", &["10.244.2.0/24"]);
        p.mac = Some("c6:d2:32:6f:8f:44".parse().unwrap());
        let e = desired(&[p], "198.18.0.1".parse().unwrap(), &[], never);
        let m = [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44];
        assert!(e.fdb.contains(&(m, "198.18.0.2".parse().unwrap())));
        assert!(e.neighs.contains(&("10.244.2.0".parse().unwrap(), m)));
    }

    #[test]
    fn direct_peers_get_a_plain_route_and_no_tunnel_entries() {
        let peers =
            vec![peer("198.18.0.2", &["10.244.2.0/24", "fd00:244:0:2::/64"]), peer("203.0.113.3", &["10.244.3.0/24"])];
        let near = |u: IpAddr| u.to_string().starts_with("198.18.0.");
        let e = desired(&peers, "198.18.0.1".parse().unwrap(), &[], near);
        assert!(e.direct.contains(&("10.244.2.0/24".parse().unwrap(), "198.18.0.2".parse().unwrap())));
        assert_eq!(e.direct.len(), 1, "the IPv6 subnet of an IPv4 peer still rides the tunnel");
        assert_eq!(e.routes.len(), 2);
        assert_eq!(e.fdb.len(), 2);
    }

    #[test]
    fn this_node_under_another_address_is_skipped() {
        let own: Vec<IpNetwork> = vec!["10.244.1.0/24".parse().unwrap()];
        let peers = vec![peer("192.0.2.10", &["10.244.1.0/24"]), peer("198.18.0.2", &["10.244.2.0/24"])];
        let e = desired(&peers, "198.18.0.1".parse().unwrap(), &own, never);
        assert_eq!(e.routes.len(), 1, "only the real peer: {e:?}");
        assert_eq!(e.fdb.len(), 1);
        assert!(!e.routes.iter().any(|(d, _)| d.to_string() == "10.244.1.0/24"));
    }

    #[test]
    fn diff_touches_only_changes() {
        let own: IpAddr = "198.18.0.1".parse().unwrap();
        let before =
            desired(&[peer("198.18.0.2", &["10.244.2.0/24"]), peer("198.18.0.3", &["10.244.3.0/24"])], own, &[], never);
        let after =
            desired(&[peer("198.18.0.2", &["10.244.2.0/24"]), peer("198.18.0.4", &["10.244.4.0/24"])], own, &[], never);
        let d = diff(&after, &before);
        assert_eq!(d.add.len(), 3, "peer .4: neigh, fdb, route");
        assert_eq!(d.remove.len(), 3, "peer .3: neigh, fdb, route");
        assert!(diff(&after, &after).is_empty());
    }
}
