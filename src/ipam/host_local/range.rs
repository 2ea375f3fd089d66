//! One range of host-local: a subnet and the stretch of it that may be handed out, validated, with the
//! address arithmetic (in u128, the family travelling separately).
//!
//! Behaviour follows the reference (containernetworking/plugins `backend/allocator/range.go`):
//! - default `rangeStart` = network + 1, default `rangeEnd` = broadcast − 1 (IPv4) / last address (IPv6),
//!   default `gateway` = network + 1;
//! - subnets leaving fewer than 2 host bits (/31, /32, /127, /128) are refused;
//! - the gateway is never handed out.
//!
//! Stricter than the reference (so a config error is caught instead of silently misbehaving): `rangeEnd`
//! before `rangeStart`, a gateway outside its subnet or on its network or broadcast address, and subnets
//! shorter than [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`] are refused; the network address and the IPv4
//! broadcast address are never handed out even when a configured range includes them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as a number, for arithmetic; the family travels separately.
pub(super) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// All-ones in the low `host_bits` bits (0..=128).
fn host_mask(host_bits: u32) -> u128 {
    if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
}

pub(super) fn from_u128(v4: bool, n: u128) -> IpAddr {
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

    pub(super) fn bounds(&self) -> (u128, u128) {
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

    pub(super) fn allocatable_n(&self, n: u128) -> bool {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn range(cidr: &str) -> Range {
        let (a, p) = cidr.split_once('/').unwrap();
        Range::new(ip(a), p.parse().unwrap(), None, None, None).unwrap()
    }

    pub(crate) fn range_se(cidr: &str, s: &str, e: &str) -> Range {
        let (a, p) = cidr.split_once('/').unwrap();
        Range::new(ip(a), p.parse().unwrap(), Some(ip(s)), Some(ip(e)), None).unwrap()
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
