//! The choice of an address, pure: the store hands over the reservations ([`Reservations`]) and the
//! `last_reserved_ip.<N>` values; the answer is the address to reserve, or an error that says why not.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::range::{canonical, to_u128};
use super::range_set::RangeSet;
use super::reservation::Holder;

/// Current reservations of the network: address → holder.
pub type Taken = HashMap<IpAddr, Holder>;

/// What the allocator asks about existing reservations. The store answers from its index without decoding
/// every holder; `Taken` answers for tests.
pub trait Reservations {
    fn is_reserved(&self, ip: IpAddr) -> bool;
    fn holder(&self, ip: IpAddr) -> Option<Holder>;
    /// The reservations that [`Holder::belongs_to`] `(id, ifname)`.
    fn belonging_to(&self, id: &str, ifname: &str) -> Vec<(IpAddr, Holder)>;
}

impl Reservations for Taken {
    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.contains_key(&ip)
    }

    fn holder(&self, ip: IpAddr) -> Option<Holder> {
        self.get(&ip).cloned()
    }

    fn belonging_to(&self, id: &str, ifname: &str) -> Vec<(IpAddr, Holder)> {
        self.iter().filter(|(_, h)| h.belongs_to(id, ifname)).map(|(ip, h)| (*ip, h.clone())).collect()
    }
}

/// An address chosen for range set `set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub set: usize,
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// Requested addresses that no range set takes (outside every set, or a second one for a set).
    Unfulfilled(Vec<IpAddr>),
    RequestedReserved {
        set: usize,
        ip: IpAddr,
        what: &'static str,
    },
    RequestedTaken {
        set: usize,
        ip: IpAddr,
        range_set: String,
        holder: Holder,
    },
    Duplicate {
        set: usize,
        ip: IpAddr,
        id: String,
        ifname: Option<String>,
    },
    Exhausted {
        set: usize,
        range_set: String,
        capacity: u128,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::Unfulfilled(ips) => {
                write!(f, "failed to allocate all requested IPs:")?;
                for ip in ips {
                    write!(f, " {ip}")?;
                }
                write!(
                    f,
                    " (each requested IP must lie between rangeStart and rangeEnd of a range set, \
                     at most one per range set)"
                )
            }
            AllocError::RequestedReserved { set, ip, what } => {
                if *what == "gateway" {
                    write!(f, "failed to allocate for range {set}: requested ip {ip} is subnet's gateway")
                } else {
                    write!(f, "failed to allocate for range {set}: requested ip {ip} is the subnet's {what}")
                }
            }
            AllocError::RequestedTaken { set, ip, range_set, holder } => write!(
                f,
                "failed to allocate for range {set}: requested IP address {ip} is not available in range set \
                 {range_set}: it is held by {holder} (DEL that attachment first, or request another IP)"
            ),
            AllocError::Duplicate { set, ip, id, ifname } => {
                write!(
                    f,
                    "failed to allocate for range {set}: {ip} has been allocated to {id}, duplicate allocation is not allowed"
                )?;
                match ifname {
                    Some(i) => {
                        write!(f, " (interface {i} already holds it: DEL the attachment before adding it again)")
                    }
                    None => write!(f, " (DEL the container before adding it again)"),
                }
            }
            AllocError::Exhausted { set, range_set, capacity } => write!(
                f,
                "failed to allocate for range {set}: no IP addresses available in range set: {range_set} \
                 (all {capacity} allocatable addresses are reserved: release stale reservations with DEL or GC, \
                 or add a range)"
            ),
        }
    }
}

/// Give each range set the requested address that lies in it (first match in request order).
/// Addresses left over make the whole request fail, as in the reference. Range sets are disjoint, so at
/// most one holds an address: it is found by binary search, whatever the number of sets and requests.
pub fn assign_requested(sets: &[RangeSet], requested: &[IpAddr]) -> Result<Vec<Option<IpAddr>>, AllocError> {
    let mut out = vec![None; sets.len()];
    let mut left = Vec::new();
    let finder = SetFinder::new(sets);
    for &ip in requested {
        let ip = canonical(ip);
        match finder.set_of(ip).filter(|&i| out[i].is_none()) {
            Some(i) => out[i] = Some(ip),
            None => left.push(ip),
        }
    }
    if left.is_empty() { Ok(out) } else { Err(AllocError::Unfulfilled(left)) }
}

/// Which of disjoint range sets holds an address: every range of every set, sorted by family and start.
struct SetFinder<'a> {
    sets: &'a [RangeSet],
    ranges: Vec<(bool, u128, usize)>,
}

impl<'a> SetFinder<'a> {
    fn new(sets: &'a [RangeSet]) -> SetFinder<'a> {
        let mut ranges: Vec<(bool, u128, usize)> = sets
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.ranges.iter().map(move |r| (!r.is_v4(), to_u128(r.start), i)))
            .collect();
        ranges.sort_unstable();
        SetFinder { sets, ranges }
    }

    fn set_of(&self, ip: IpAddr) -> Option<usize> {
        let key = (!ip.is_ipv4(), to_u128(ip));
        let after = self.ranges.partition_point(|&(v6, start, _)| (v6, start) <= key);
        let (_, _, set) = *self.ranges.get(after.checked_sub(1)?)?;
        self.sets[set].contains(ip).then_some(set)
    }
}

/// Choose the address for range set `idx` for attachment `(id, ifname)`.
pub fn pick(
    set: &RangeSet,
    idx: usize,
    requested: Option<IpAddr>,
    last_reserved: Option<IpAddr>,
    taken: &impl Reservations,
    id: &str,
    ifname: &str,
) -> Result<Pick, AllocError> {
    // A second address in this set for the same attachment is refused (plugins PR #328), also when one is
    // requested (stricter than the reference, which skips the guard then): a repeated ADD of a live
    // attachment asking for another address must fail here, before it holds two.
    let dup = taken.belonging_to(id, ifname).into_iter().filter(|(ip, _)| set.contains(*ip)).min_by_key(|(ip, _)| *ip);
    if let Some((ip, h)) = dup {
        return Err(AllocError::Duplicate { set: idx, ip, id: h.container_id, ifname: h.ifname });
    }
    if let Some(ip) = requested {
        let ip = canonical(ip);
        let Some(r) = set.range_for(ip) else {
            return Err(AllocError::Unfulfilled(vec![ip]));
        };
        if let Some(what) = r.reserved_reason(ip) {
            return Err(AllocError::RequestedReserved { set: idx, ip, what });
        }
        if let Some(holder) = taken.holder(ip) {
            return Err(AllocError::RequestedTaken { set: idx, ip, range_set: set.to_string(), holder });
        }
        return Ok(Pick { set: idx, ip, prefix: r.prefix, gateway: r.gateway });
    }
    for (ip, r) in set.iter_from(last_reserved) {
        if !taken.is_reserved(ip) {
            return Ok(Pick { set: idx, ip, prefix: r.prefix, gateway: r.gateway });
        }
    }
    Err(AllocError::Exhausted { set: idx, range_set: set.to_string(), capacity: set.capacity() })
}

/// Does range set `set` still have a free address? (STATUS.) Stops at the first free one.
pub fn has_free(set: &RangeSet, last_reserved: Option<IpAddr>, taken: &dyn Fn(&IpAddr) -> bool) -> bool {
    set.iter_from(last_reserved).any(|(ip, _)| !taken(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::host_local::range::tests::{ip, range};
    use crate::ipam::host_local::range::{Range, RangeError};
    use crate::ipam::host_local::range_set::tests::set;

    fn holder(id: &str, ifn: &str) -> Holder {
        Holder { container_id: id.into(), ifname: Some(ifn.into()) }
    }
    #[test]
    fn gateway_on_network_or_broadcast_is_refused_and_capacity_never_underflows() {
        for (gw, what) in [("10.0.0.0", "network address"), ("10.0.0.3", "broadcast address")] {
            let e =
                Range::new(ip("10.0.0.0"), 30, Some(ip("10.0.0.3")), Some(ip("10.0.0.3")), Some(ip(gw))).unwrap_err();
            assert_eq!(e, RangeError::GatewayReserved { gateway: ip(gw), what });
            assert_eq!(e.field(), "gateway");
        }
        let e = Range::new(ip("fd00::"), 64, None, None, Some(ip("fd00::"))).unwrap_err();
        assert!(matches!(e, RangeError::GatewayReserved { what: "network address", .. }), "{e}");
        // The range is only the broadcast address, which is never handed out.
        let r = Range::new(ip("10.0.0.0"), 30, Some(ip("10.0.0.3")), Some(ip("10.0.0.3")), None).unwrap();
        assert_eq!(r.capacity(), 0);
        // Built directly with a gateway on the broadcast (as before the refusal): still counted once.
        let odd = Range { gateway: ip("10.0.0.3"), ..r };
        assert_eq!(odd.capacity(), 0);
        let s = set(vec![odd]);
        assert!(pick(&s, 0, None, None, &Taken::new(), "c", "eth0").is_err());
    }
    #[test]
    fn pick_round_robin_and_exhaustion() {
        let s = set(vec![range("10.0.0.0/29")]);
        let mut taken = Taken::new();
        let mut last = None;
        let mut got = vec![];
        for i in 0..5 {
            let p = pick(&s, 0, None, last, &taken, &format!("c{i}"), "eth0").unwrap();
            assert_eq!(p.prefix, 29);
            assert_eq!(p.gateway, ip("10.0.0.1"));
            taken.insert(p.ip, holder(&format!("c{i}"), "eth0"));
            last = Some(p.ip);
            got.push(p.ip.to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        let e = pick(&s, 0, None, last, &taken, "c9", "eth0").unwrap_err();
        assert_eq!(e, AllocError::Exhausted { set: 0, range_set: "10.0.0.1-10.0.0.6".into(), capacity: 5 });
        assert!(
            e.to_string().starts_with(
                "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6"
            )
        );
        assert!(!has_free(&s, last, &|a| taken.contains_key(a)));
        // Free .3: round-robin from .6 wraps and finds it.
        taken.remove(&ip("10.0.0.3"));
        assert!(has_free(&s, last, &|a| taken.contains_key(a)));
        assert_eq!(pick(&s, 0, None, last, &taken, "c9", "eth0").unwrap().ip, ip("10.0.0.3"));
        // Round-robin: freeing .2 after .3 was handed out does not hand out .2 before .4.. wrap.
        taken.insert(ip("10.0.0.3"), holder("c9", "eth0"));
        taken.remove(&ip("10.0.0.2"));
        taken.remove(&ip("10.0.0.5"));
        assert_eq!(pick(&s, 0, None, Some(ip("10.0.0.3")), &taken, "c10", "eth0").unwrap().ip, ip("10.0.0.5"));
    }
    /// Audit finding 23: requested addresses are matched to their set by lookup, for many sets and ranges.
    #[test]
    fn requested_ips_find_their_set_among_many() {
        let sets: Vec<RangeSet> = (0..2000u32)
            .map(|i| {
                let base = std::net::Ipv4Addr::from(0x0a00_0000 + i * 256);
                set(vec![Range::new(base.into(), 24, None, None, None).unwrap()])
            })
            .rev()
            .chain([set(vec![range("fd00::/120")])])
            .collect();
        let want = [ip("10.0.3.7"), ip("fd00::9"), ip("10.7.207.200")];
        let a = assign_requested(&sets, &want).unwrap();
        assert_eq!(a.iter().flatten().count(), 3);
        assert_eq!(a[2000 - 1 - 3], Some(ip("10.0.3.7")));
        assert_eq!(a[2000], Some(ip("fd00::9")));
        assert_eq!(a[2000 - 1 - 0x7cf], Some(ip("10.7.207.200")));
        // Outside every set (the gap of a range's broadcast, another /8), or a second one for a set.
        let e = assign_requested(&sets, &[ip("10.0.3.255"), ip("11.0.0.1"), ip("10.0.3.8"), ip("10.0.3.9")]);
        assert_eq!(e, Err(AllocError::Unfulfilled(vec![ip("10.0.3.255"), ip("11.0.0.1"), ip("10.0.3.9")])));
    }

    #[test]
    fn pick_ipv6_large() {
        let s = set(vec![range("fd00:10::/64")]);
        let p = pick(&s, 1, None, None, &Taken::new(), "c", "eth0").unwrap();
        assert_eq!(p.ip, ip("fd00:10::2"));
        assert_eq!(p.prefix, 64);
        assert_eq!(p.set, 1);
        let p = pick(&s, 1, None, Some(ip("fd00:10::ffff:ffff:ffff:fffe")), &Taken::new(), "c", "eth0").unwrap();
        assert_eq!(p.ip, ip("fd00:10::ffff:ffff:ffff:ffff"));
        let p = pick(&s, 1, None, Some(ip("fd00:10::ffff:ffff:ffff:ffff")), &Taken::new(), "c", "eth0").unwrap();
        assert_eq!(p.ip, ip("fd00:10::2"));
        assert_eq!(s.capacity(), (1u128 << 64) - 2);
    }
    #[test]
    fn duplicate_guard() {
        let s = set(vec![range("10.0.0.0/24")]);
        let mut taken = Taken::new();
        taken.insert(ip("10.0.0.7"), holder("c1", "eth0"));
        let e = pick(&s, 0, None, None, &taken, "c1", "eth0").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "failed to allocate for range 0: 10.0.0.7 has been allocated to c1, duplicate allocation is not allowed"
            ),
            "{e}"
        );
        // Another interface of the same container is a different attachment.
        assert_eq!(pick(&s, 0, None, None, &taken, "c1", "eth1").unwrap().ip, ip("10.0.0.2"));
        // An address of this attachment outside this set does not count.
        let s6 = set(vec![range("fd00::/120")]);
        assert!(pick(&s6, 1, None, None, &taken, "c1", "eth0").is_ok());
        // Legacy files (container ID only) count for any interface of that container.
        taken.insert(ip("10.0.0.9"), Holder { container_id: "c2".into(), ifname: None });
        assert!(matches!(pick(&s, 0, None, None, &taken, "c2", "net1"), Err(AllocError::Duplicate { .. })));
    }
    #[test]
    fn requested_ips() {
        let v4 = set(vec![range("10.0.0.0/24")]);
        let v6 = set(vec![range("fd00::/120")]);
        let sets = [v4.clone(), v6.clone()];
        let a = assign_requested(&sets, &[ip("fd00::9"), ip("10.0.0.9")]).unwrap();
        assert_eq!(a, vec![Some(ip("10.0.0.9")), Some(ip("fd00::9"))]);
        let a = assign_requested(&sets, &[ip("::ffff:10.0.0.9")]).unwrap();
        assert_eq!(a, vec![Some(ip("10.0.0.9")), None]);
        // Two for one set, one outside every set.
        let e = assign_requested(&sets, &[ip("10.0.0.9"), ip("10.0.0.10"), ip("192.168.0.1")]).unwrap_err();
        assert_eq!(e, AllocError::Unfulfilled(vec![ip("10.0.0.10"), ip("192.168.0.1")]));
        assert!(e.to_string().starts_with("failed to allocate all requested IPs: 10.0.0.10 192.168.0.1"));
        // Outside start..end but inside the subnet: not in the set.
        assert!(assign_requested(&sets, &[ip("10.0.0.255")]).is_err());

        let mut taken = Taken::new();
        let p = pick(&v4, 0, Some(ip("10.0.0.9")), None, &taken, "c1", "eth0").unwrap();
        assert_eq!((p.ip, p.prefix, p.gateway), (ip("10.0.0.9"), 24, ip("10.0.0.1")));
        taken.insert(ip("10.0.0.9"), holder("other", "eth3"));
        let e = pick(&v4, 0, Some(ip("10.0.0.9")), None, &taken, "c1", "eth0").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with(
            "failed to allocate for range 0: requested IP address 10.0.0.9 is not available in range set 10.0.0.1-10.0.0.254"
        ));
        assert!(m.contains("held by container other interface eth3"), "{m}");
        let e = pick(&v4, 0, Some(ip("10.0.0.1")), None, &taken, "c1", "eth0").unwrap_err();
        assert_eq!(e.to_string(), "failed to allocate for range 0: requested ip 10.0.0.1 is subnet's gateway");
        // Requested IPs pass the duplicate guard too (stricter than the reference: audit finding 1).
        taken.insert(ip("10.0.0.20"), holder("c1", "eth0"));
        let e = pick(&v4, 0, Some(ip("10.0.0.21")), None, &taken, "c1", "eth0").unwrap_err();
        assert!(matches!(e, AllocError::Duplicate { ip: a, .. } if a == ip("10.0.0.20")), "{e}");
        assert!(pick(&v4, 0, Some(ip("10.0.0.21")), None, &taken, "c1", "eth1").is_ok());
        // Broadcast inside an explicit range is refused when requested.
        let r = Range::new(ip("10.1.0.0"), 24, None, Some(ip("10.1.0.255")), None).unwrap();
        let e = pick(&set(vec![r]), 0, Some(ip("10.1.0.255")), None, &Taken::new(), "c", "eth0").unwrap_err();
        assert!(matches!(e, AllocError::RequestedReserved { what: "broadcast address", .. }));
    }
}
