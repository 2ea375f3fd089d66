//! The pure part of host-local: ranges, range sets, the round-robin iterator and the choice of an address.
//!
//! Nothing here touches the disk. The store hands us a snapshot of the reservations ([`Reservations`]) and the
//! `last_reserved_ip.<N>` values; we answer with the address to reserve, or an error that says why not.
//!
//! Behaviour follows the reference allocator (containernetworking/plugins `backend/allocator`):
//! - default `rangeStart` = network + 1, default `rangeEnd` = broadcast − 1 (IPv4) / last address (IPv6),
//!   default `gateway` = network + 1;
//! - subnets leaving fewer than 2 host bits (/31, /32, /127, /128) are refused;
//! - scanning starts after `last_reserved_ip.<N>` when it lies in the set, else at the first range's start,
//!   walks every range in order, wraps around, and stops when it is back where it started;
//! - the gateway is never handed out.
//!
//! Stricter than the reference (so a config error is caught instead of silently misbehaving): `rangeEnd`
//! before `rangeStart` and a gateway outside its subnet are refused, and the network address and the IPv4
//! broadcast address are never handed out even when a configured range includes them.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as a number, for arithmetic; the family travels separately.
fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// All-ones in the low `host_bits` bits (0..=128).
fn host_mask(host_bits: u32) -> u128 {
    if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 { IpAddr::V4(Ipv4Addr::from(n as u32)) } else { IpAddr::V6(Ipv6Addr::from(n)) }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address, as in the reference.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Why a single range is invalid. `field()` names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    TooSmall { subnet: String },
    TooLarge { subnet: String },
    HostBits { prefix: u8, network: IpAddr },
    Mapped { subnet: String },
    FamilyMismatch { field: &'static str, ip: IpAddr, subnet: String },
    StartOutside { start: IpAddr, subnet: String },
    EndOutside { end: IpAddr, subnet: String },
    StartAfterEnd { start: IpAddr, end: IpAddr },
    GatewayOutside { gateway: IpAddr, subnet: String },
    GatewayReserved { gateway: IpAddr, what: &'static str },
}

impl RangeError {
    pub fn field(&self) -> &'static str {
        match self {
            RangeError::TooSmall { .. }
            | RangeError::TooLarge { .. }
            | RangeError::HostBits { .. }
            | RangeError::Mapped { .. } => "subnet",
            RangeError::FamilyMismatch { field, .. } => field,
            RangeError::StartOutside { .. } => "rangeStart",
            RangeError::EndOutside { .. } | RangeError::StartAfterEnd { .. } => "rangeEnd",
            RangeError::GatewayOutside { .. } | RangeError::GatewayReserved { .. } => "gateway",
        }
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::TooSmall { subnet } => write!(
                f,
                "Network {subnet} too small to allocate from: it needs at least 2 host bits \
                 (IPv4 /30 or shorter, IPv6 /126 or shorter)"
            ),
            RangeError::TooLarge { subnet } => write!(
                f,
                "Network {subnet} is too large: a range's subnet needs a prefix of at least /{MIN_PREFIX_V4} \
                 (IPv4) or /{MIN_PREFIX_V6} (IPv6); a shorter one would put a connected route to most of the \
                 address space on the bridge"
            ),
            RangeError::HostBits { prefix, network } => write!(
                f,
                "Network has host bits set. For a subnet mask of length {prefix} the network address is {network}"
            ),
            RangeError::Mapped { subnet } => {
                write!(f, "subnet {subnet} is an IPv4-mapped IPv6 network: write the IPv4 subnet instead")
            }
            RangeError::FamilyMismatch { field, ip, subnet } => {
                write!(f, "{field} {ip} is not of the same IP family as subnet {subnet}")
            }
            RangeError::StartOutside { start, subnet } => {
                write!(f, "RangeStart {start} not in network {subnet}")
            }
            RangeError::EndOutside { end, subnet } => {
                write!(f, "RangeEnd {end} not in network {subnet}")
            }
            RangeError::StartAfterEnd { start, end } => {
                write!(f, "RangeEnd {end} is before RangeStart {start}: swap them or fix one of them")
            }
            RangeError::GatewayOutside { gateway, subnet } => write!(
                f,
                "gateway {gateway} not in network {subnet}: use an address of the subnet or omit it (default: first address)"
            ),
            RangeError::GatewayReserved { gateway, what } => write!(
                f,
                "gateway {gateway} is the subnet's {what}: use a host address of the subnet or omit it \
                 (default: first address)"
            ),
        }
    }
}

/// The shortest prefixes a range's subnet may have (stricter than the reference, which takes even /0).
/// A pod network of a node is far smaller; these still admit a whole 10.0.0.0/8, or an IPv6 /16.
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;

/// One range: a subnet and the inclusive stretch `start..=end` of it that may be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network address (host bits clear).
    pub network: IpAddr,
    pub prefix: u8,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    /// Build and validate a range; `None` fields take the reference defaults.
    pub fn new(
        subnet_ip: IpAddr,
        prefix: u8,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        let shown = format!("{subnet_ip}/{prefix}");
        if let IpAddr::V6(a) = subnet_ip {
            if a.to_ipv4_mapped().is_some() {
                return Err(RangeError::Mapped { subnet: shown });
            }
        }
        let v4 = subnet_ip.is_ipv4();
        let bits: u8 = if v4 { 32 } else { 128 };
        if prefix > bits || bits - prefix < 2 {
            return Err(RangeError::TooSmall { subnet: shown });
        }
        if prefix < if v4 { MIN_PREFIX_V4 } else { MIN_PREFIX_V6 } {
            return Err(RangeError::TooLarge { subnet: shown });
        }
        let host_mask = host_mask((bits - prefix) as u32);
        let raw = to_u128(subnet_ip);
        let net = raw & !host_mask;
        if raw != net {
            return Err(RangeError::HostBits { prefix, network: from_u128(v4, net) });
        }
        let last = net | host_mask;
        let network = from_u128(v4, net);
        let subnet_str = format!("{network}/{prefix}");
        let check = |field: &'static str, ip: IpAddr| -> Result<u128, RangeError> {
            let ip = canonical(ip);
            if ip.is_ipv4() != v4 {
                return Err(RangeError::FamilyMismatch { field, ip, subnet: subnet_str.clone() });
            }
            Ok(to_u128(ip))
        };
        let gw = match gateway {
            Some(g) => {
                let n = check("gateway", g)?;
                if n < net || n > last {
                    return Err(RangeError::GatewayOutside { gateway: canonical(g), subnet: subnet_str });
                }
                let what = if n == net { Some("network address") } else { None };
                if let Some(what) = what.or((v4 && n == last).then_some("broadcast address")) {
                    return Err(RangeError::GatewayReserved { gateway: canonical(g), what });
                }
                n
            }
            None => net + 1,
        };
        let s = match start {
            Some(ip) => {
                let n = check("rangeStart", ip)?;
                if n < net || n > last {
                    return Err(RangeError::StartOutside { start: canonical(ip), subnet: subnet_str });
                }
                n
            }
            None => net + 1,
        };
        let e = match end {
            Some(ip) => {
                let n = check("rangeEnd", ip)?;
                if n < net || n > last {
                    return Err(RangeError::EndOutside { end: canonical(ip), subnet: subnet_str });
                }
                n
            }
            None if v4 => last - 1,
            None => last,
        };
        if e < s {
            return Err(RangeError::StartAfterEnd { start: from_u128(v4, s), end: from_u128(v4, e) });
        }
        Ok(Range { network, prefix, start: from_u128(v4, s), end: from_u128(v4, e), gateway: from_u128(v4, gw) })
    }

    pub fn is_v4(&self) -> bool {
        self.network.is_ipv4()
    }

    fn bounds(&self) -> (u128, u128) {
        (to_u128(self.start), to_u128(self.end))
    }

    fn last_of_subnet(&self) -> u128 {
        let bits = if self.is_v4() { 32 } else { 128 };
        to_u128(self.network) | host_mask(bits - self.prefix as u32)
    }

    /// `ip` lies in `start..=end` (same family). Like the reference's `Range.Contains`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.is_v4() {
            return false;
        }
        let (s, e) = self.bounds();
        let n = to_u128(ip);
        s <= n && n <= e
    }

    /// Why `ip` (inside the range) can never be handed out, if it cannot.
    pub fn reserved_reason(&self, ip: IpAddr) -> Option<&'static str> {
        let n = to_u128(canonical(ip));
        if n == to_u128(self.gateway) {
            Some("gateway")
        } else if n == to_u128(self.network) {
            Some("network address")
        } else if self.is_v4() && n == self.last_of_subnet() {
            Some("broadcast address")
        } else {
            None
        }
    }

    fn allocatable_n(&self, n: u128) -> bool {
        n != to_u128(self.gateway) && n != to_u128(self.network) && !(self.is_v4() && n == self.last_of_subnet())
    }

    /// How many addresses of this range can be handed out (saturating for huge IPv6 ranges). Each address
    /// that is never handed out is counted once, even if it is both (say) the gateway and the broadcast.
    pub fn capacity(&self) -> u128 {
        let (s, e) = self.bounds();
        let mut never = vec![to_u128(self.gateway), to_u128(self.network)];
        if self.is_v4() {
            never.push(self.last_of_subnet());
        }
        never.sort_unstable();
        never.dedup();
        let excluded = never.iter().filter(|&&x| s <= x && x <= e).count() as u128;
        (e - s).saturating_add(1).saturating_sub(excluded)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        if self.is_v4() != other.is_v4() {
            return false;
        }
        let (a1, b1) = self.bounds();
        let (a2, b2) = other.bounds();
        a1 <= b2 && a2 <= b1
    }
}

impl fmt::Display for Range {
    /// `start-end`, as the reference prints a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    Empty,
    MixedFamilies,
    Overlap(Box<(Range, Range)>),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Empty => write!(f, "empty range set"),
            SetError::MixedFamilies => write!(
                f,
                "mixed address families: a range set holds either IPv4 or IPv6 ranges; \
                 put the other family in its own range set for dual-stack"
            ),
            SetError::Overlap(p) => write!(f, "subnets {} and {} overlap", p.0, p.1),
        }
    }
}

/// A list of ranges of one family; one address is taken from each range set per ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, SetError> {
        let Some(first) = ranges.first() else {
            return Err(SetError::Empty);
        };
        if ranges.iter().any(|r| r.is_v4() != first.is_v4()) {
            return Err(SetError::MixedFamilies);
        }
        if let Some((a, b)) = first_overlap(&ranges.iter().collect::<Vec<_>>()) {
            return Err(SetError::Overlap(Box::new((ranges[a].clone(), ranges[b].clone()))));
        }
        Ok(RangeSet { ranges })
    }

    pub fn is_v4(&self) -> bool {
        self.ranges[0].is_v4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub fn capacity(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Iterate the allocatable addresses in the reference's order: after `last_reserved` if it lies in
    /// the set, else from the first range's start; wrapping once around the whole set.
    pub fn iter_from(&self, last_reserved: Option<IpAddr>) -> SetIter<'_> {
        let mut idx = 0;
        let mut cur = to_u128(self.ranges[0].start);
        if let Some(last) = last_reserved.map(canonical) {
            if let Some(i) = self.ranges.iter().position(|r| r.contains(last)) {
                let n = to_u128(last);
                let (_, e) = self.ranges[i].bounds();
                if n == e {
                    idx = (i + 1) % self.ranges.len();
                    cur = to_u128(self.ranges[idx].start);
                } else {
                    idx = i;
                    cur = n + 1;
                }
            }
        }
        let total = self
            .ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add((r.bounds().1 - r.bounds().0).saturating_add(1)));
        SetIter { set: self, idx, cur, left: total }
    }
}

/// Two overlapping ranges of `ranges`, by their positions (lower first); None if all are disjoint. Sorted by
/// family and start, two ranges overlap only if some neighbours do (a range that overlaps a later one
/// overlaps the one right after it too), so this is O(n log n): ranges may come from the runtime.
pub fn first_overlap(ranges: &[&Range]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_unstable_by_key(|&i| (!ranges[i].is_v4(), to_u128(ranges[i].start)));
    order.windows(2).find(|w| ranges[w[0]].overlaps(ranges[w[1]])).map(|w| (w[0].min(w[1]), w[0].max(w[1])))
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Yields `(address, range)` pairs; visits every position of the set at most once.
pub struct SetIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: u128,
    left: u128,
}

impl<'a> Iterator for SetIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            self.left -= 1;
            let r = &self.set.ranges[self.idx];
            let n = self.cur;
            if n == r.bounds().1 {
                self.idx = (self.idx + 1) % self.set.ranges.len();
                self.cur = to_u128(self.set.ranges[self.idx].start);
            } else {
                self.cur = n + 1;
            }
            if r.allocatable_n(n) {
                return Some((from_u128(r.is_v4(), n), r));
            }
        }
        None
    }
}

/// Who holds a reservation, as read from `<dataDir>/<network>/<ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub container_id: String,
    /// `None` for files written by very old versions (container ID only).
    pub ifname: Option<String>,
}

impl Holder {
    /// Parse file content: `containerID` CRLF `ifname`, or a bare container ID. Whitespace-trimmed.
    pub fn parse(content: &str) -> Holder {
        let t = content.trim();
        match t.split_once("\r\n") {
            Some((id, ifname)) => Holder { container_id: id.to_string(), ifname: Some(ifname.to_string()) },
            None => Holder { container_id: t.to_string(), ifname: None },
        }
    }

    /// Exactly this attachment (new-format file).
    pub fn is(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id.trim() && self.ifname.as_deref() == Some(ifname)
    }

    /// This attachment, or a legacy file of the same container.
    pub fn belongs_to(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id.trim() && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ifname {
            Some(i) => write!(f, "container {} interface {}", self.container_id, i),
            None => write!(f, "container {}", self.container_id),
        }
    }
}

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
/// Addresses left over make the whole request fail, as in the reference.
pub fn assign_requested(sets: &[RangeSet], requested: &[IpAddr]) -> Result<Vec<Option<IpAddr>>, AllocError> {
    let mut out = vec![None; sets.len()];
    let mut left = Vec::new();
    'ips: for &ip in requested {
        let ip = canonical(ip);
        for (i, s) in sets.iter().enumerate() {
            if out[i].is_none() && s.contains(ip) {
                out[i] = Some(ip);
                continue 'ips;
            }
        }
        left.push(ip);
    }
    if left.is_empty() { Ok(out) } else { Err(AllocError::Unfulfilled(left)) }
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(cidr: &str) -> Range {
        let (a, p) = cidr.split_once('/').unwrap();
        Range::new(ip(a), p.parse().unwrap(), None, None, None).unwrap()
    }

    fn range_se(cidr: &str, s: &str, e: &str) -> Range {
        let (a, p) = cidr.split_once('/').unwrap();
        Range::new(ip(a), p.parse().unwrap(), Some(ip(s)), Some(ip(e)), None).unwrap()
    }

    fn set(r: Vec<Range>) -> RangeSet {
        RangeSet::new(r).unwrap()
    }

    fn all(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        s.iter_from(last.map(ip)).map(|(a, _)| a.to_string()).collect()
    }

    fn holder(id: &str, ifn: &str) -> Holder {
        Holder { container_id: id.into(), ifname: Some(ifn.into()) }
    }

    #[test]
    fn defaults_ipv4() {
        let r = range("10.1.2.0/24");
        assert_eq!(r.start, ip("10.1.2.1"));
        assert_eq!(r.end, ip("10.1.2.254"));
        assert_eq!(r.gateway, ip("10.1.2.1"));
        assert_eq!(r.capacity(), 253);
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
    }

    #[test]
    fn defaults_ipv6() {
        let r = range("fd00:1::/120");
        assert_eq!(r.start, ip("fd00:1::1"));
        assert_eq!(r.end, ip("fd00:1::ff"));
        assert_eq!(r.gateway, ip("fd00:1::1"));
        assert_eq!(r.capacity(), 254);
    }

    #[test]
    fn small_prefixes() {
        for (c, ok) in [
            ("10.0.0.0/30", true),
            ("10.0.0.0/31", false),
            ("10.0.0.0/32", false),
            ("fd00::/126", true),
            ("fd00::/127", false),
            ("fd00::/128", false),
        ] {
            let (a, p) = c.split_once('/').unwrap();
            let r = Range::new(ip(a), p.parse().unwrap(), None, None, None);
            assert_eq!(r.is_ok(), ok, "{c}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().starts_with(&format!("Network {c} too small to allocate from")), "{e}");
                assert_eq!(e.field(), "subnet");
            }
        }
        // /30: .0 network, .1 gateway, .3 broadcast: only .2 is left.
        let s = set(vec![range("10.0.0.0/30")]);
        assert_eq!(all(&s, None), vec!["10.0.0.2"]);
        assert_eq!(s.capacity(), 1);
        // /126: ::0 network, ::1 gateway; ::2 and ::3 (no broadcast in IPv6).
        let s = set(vec![range("fd00::/126")]);
        assert_eq!(all(&s, None), vec!["fd00::2", "fd00::3"]);
        assert_eq!(s.capacity(), 2);
    }

    #[test]
    fn validation_errors() {
        let e = Range::new(ip("10.0.0.5"), 24, None, None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0"
        );
        let e = Range::new(ip("10.0.0.0"), 24, Some(ip("10.0.1.1")), None, None).unwrap_err();
        assert_eq!(e.to_string(), "RangeStart 10.0.1.1 not in network 10.0.0.0/24");
        assert_eq!(e.field(), "rangeStart");
        let e = Range::new(ip("10.0.0.0"), 24, None, Some(ip("10.0.1.1")), None).unwrap_err();
        assert_eq!(e.to_string(), "RangeEnd 10.0.1.1 not in network 10.0.0.0/24");
        let e = Range::new(ip("10.0.0.0"), 24, Some(ip("10.0.0.9")), Some(ip("10.0.0.8")), None).unwrap_err();
        assert!(matches!(e, RangeError::StartAfterEnd { .. }));
        assert_eq!(e.field(), "rangeEnd");
        let e = Range::new(ip("10.0.0.0"), 24, None, None, Some(ip("10.0.1.1"))).unwrap_err();
        assert!(e.to_string().starts_with("gateway 10.0.1.1 not in network 10.0.0.0/24"));
        let e = Range::new(ip("10.0.0.0"), 24, None, None, Some(ip("fd00::1"))).unwrap_err();
        assert_eq!(e.field(), "gateway");
        assert!(matches!(e, RangeError::FamilyMismatch { .. }));
        let e = Range::new(ip("::ffff:10.0.0.0"), 120, None, None, None).unwrap_err();
        assert!(matches!(e, RangeError::Mapped { .. }));
        // IPv4-mapped start in an IPv4 range is the IPv4 address.
        let r = Range::new(ip("10.0.0.0"), 24, Some(ip("::ffff:10.0.0.7")), None, None).unwrap();
        assert_eq!(r.start, ip("10.0.0.7"));
    }

    #[test]
    fn set_validation() {
        assert_eq!(RangeSet::new(vec![]), Err(SetError::Empty));
        assert_eq!(RangeSet::new(vec![range("10.0.0.0/24"), range("fd00::/64")]), Err(SetError::MixedFamilies));
        let e =
            RangeSet::new(vec![range("10.0.0.0/24"), range_se("10.0.0.0/16", "10.0.0.200", "10.0.1.10")]).unwrap_err();
        assert_eq!(e.to_string(), "subnets 10.0.0.1-10.0.0.254 and 10.0.0.200-10.0.1.10 overlap");
        // Same subnet, disjoint stretches: fine (overlap is tested on start/end like the reference).
        set(vec![range_se("10.0.0.0/24", "10.0.0.1", "10.0.0.9"), range_se("10.0.0.0/24", "10.0.0.10", "10.0.0.20")]);
    }

    /// Audit finding 13: a gateway on the network or broadcast address is refused, and the capacity of a
    /// range whose never-handed-out addresses coincide counts each once (no underflow).
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

    /// Audit finding 22: prefixes shorter than /8 (IPv4) or /16 (IPv6) are refused; those bounds pass.
    #[test]
    fn too_short_prefixes_are_refused() {
        for (c, ok) in [("0.0.0.0/0", false), ("10.0.0.0/7", false), ("10.0.0.0/8", true), ("::/0", false)] {
            let (a, p) = c.split_once('/').unwrap();
            let r = Range::new(ip(a), p.parse().unwrap(), None, None, None);
            assert_eq!(r.is_ok(), ok, "{c}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e, RangeError::TooLarge { subnet: c.into() });
                assert_eq!(e.field(), "subnet");
            }
        }
        assert!(Range::new(ip("fd00::"), 15, None, None, None).is_err());
        assert!(Range::new(ip("fd00::"), 16, None, None, None).is_ok());
    }

    /// Audit finding 23: overlaps are found by sorting, also between ranges far apart in the list, and a
    /// long list of disjoint ranges passes.
    #[test]
    fn overlap_check_finds_any_overlapping_pair() {
        let many: Vec<Range> = (0..20_000u32)
            .map(|i| {
                let base = Ipv4Addr::from(0x0a00_0000 + i * 4);
                let start = Ipv4Addr::from(u32::from(base) + 1);
                let end = Ipv4Addr::from(u32::from(base) + 2);
                Range::new(base.into(), 30, Some(start.into()), Some(end.into()), None).unwrap()
            })
            .rev()
            .collect();
        assert!(RangeSet::new(many.clone()).is_ok());
        let mut clash = many.clone();
        clash.insert(7, range_se("10.0.0.0/24", "10.0.0.5", "10.0.0.6"));
        let e = RangeSet::new(clash.clone()).unwrap_err();
        assert_eq!(e.to_string(), "subnets 10.0.0.5-10.0.0.6 and 10.0.0.5-10.0.0.6 overlap");
        let refs: Vec<&Range> = clash.iter().collect();
        let (a, b) = first_overlap(&refs).unwrap();
        assert!(a < b && clash[a].overlaps(&clash[b]), "{a} {b}");
        // Families never overlap each other.
        let mixed = [range("10.0.0.0/24"), range("fd00::/120")];
        assert_eq!(first_overlap(&mixed.iter().collect::<Vec<_>>()), None);
    }

    #[test]
    fn iteration_skips_gateway_network_broadcast() {
        // Gateway in the middle, explicit start at the network address and end at the broadcast.
        let r =
            Range::new(ip("10.0.0.0"), 29, Some(ip("10.0.0.0")), Some(ip("10.0.0.7")), Some(ip("10.0.0.4"))).unwrap();
        let s = set(vec![r]);
        assert_eq!(all(&s, None), vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(s.capacity(), 5);
        // With a non-.1 gateway, .1 is allocatable (the reference's default start).
        let r = Range::new(ip("10.0.0.0"), 29, None, None, Some(ip("10.0.0.6"))).unwrap();
        assert_eq!(all(&set(vec![r]), None), vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        // IPv6: the last address is allocatable, ::0 is not.
        let r = Range::new(ip("fd00::"), 125, Some(ip("fd00::")), None, None).unwrap();
        assert_eq!(all(&set(vec![r]), None).last().unwrap(), "fd00::7");
        assert_eq!(all(&set(vec![range("fd00::/125")]), None).len(), 6);
    }

    #[test]
    fn round_robin_and_wrap() {
        let s = set(vec![range("10.0.0.0/29")]); // .2 .. .6 allocatable
        assert_eq!(all(&s, Some("10.0.0.4")), vec!["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        // Last reserved at the end: wraps to the start.
        assert_eq!(all(&s, Some("10.0.0.6"))[0], "10.0.0.2");
        // Last reserved outside the set (config changed): start from the beginning.
        assert_eq!(all(&s, Some("10.9.0.4"))[0], "10.0.0.2");
        assert_eq!(all(&s, Some("fd00::4"))[0], "10.0.0.2");
    }

    #[test]
    fn multi_range_wrap() {
        let s = set(vec![
            range_se("10.0.0.0/24", "10.0.0.10", "10.0.0.11"),
            range_se("10.0.5.0/24", "10.0.5.1", "10.0.5.3"),
        ]);
        // 10.0.5.1 is range 2's gateway.
        assert_eq!(all(&s, None), vec!["10.0.0.10", "10.0.0.11", "10.0.5.2", "10.0.5.3"]);
        assert_eq!(all(&s, Some("10.0.0.11")), vec!["10.0.5.2", "10.0.5.3", "10.0.0.10", "10.0.0.11"]);
        assert_eq!(all(&s, Some("10.0.5.3")), vec!["10.0.0.10", "10.0.0.11", "10.0.5.2", "10.0.5.3"]);
        assert_eq!(s.to_string(), "10.0.0.10-10.0.0.11,10.0.5.1-10.0.5.3");
        assert_eq!(s.capacity(), 4);
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

    #[test]
    fn holder_parsing() {
        assert_eq!(Holder::parse("abc\r\neth0"), holder("abc", "eth0"));
        assert_eq!(Holder::parse("  abc\r\neth0\n"), holder("abc", "eth0"));
        assert_eq!(Holder::parse("abc\n"), Holder { container_id: "abc".into(), ifname: None });
        assert!(holder("abc", "eth0").is("abc", "eth0"));
        assert!(!holder("abc", "eth0").is("abc", "eth1"));
        assert!(Holder::parse("abc").belongs_to("abc", "eth1"));
        assert!(!Holder::parse("abc").is("abc", "eth1"));
    }

    #[test]
    fn ipv6_names_are_go_canonical() {
        // Go's net.IP.String and Rust's Display agree on RFC 5952 compression.
        for (i, o) in [
            ("FD00:0:0:0:0:0:0:1", "fd00::1"),
            ("fd00:0:0:1:0:0:0:1", "fd00:0:0:1::1"),
            ("fd00:1:0:0:1:0:0:1", "fd00:1::1:0:0:1"),
            ("fd00:0:1:1:1:1:1:1", "fd00:0:1:1:1:1:1:1"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(canonical(ip(i)).to_string(), o);
        }
    }
}
