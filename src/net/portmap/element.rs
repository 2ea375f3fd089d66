//! What a portmap element stands for, and its bytes in the maps and sets.
//!
//! Keys and data are concatenations as the kernel stores them: every field padded to a 4-byte register
//! (`inet_proto` 1 byte + 3, `inet_service` 2 bytes big endian + 2, addresses as they are). Hairpin
//! elements are ranges of a concatenated interval set: key = (first source . pod), key end = (last
//! source . pod).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::structure::{
    MAP_HOSTIPPORT4, MAP_HOSTIPPORT6, MAP_HOSTIPRANGE4, MAP_HOSTIPRANGE6, MAP_HOSTPORT4, MAP_HOSTPORT6, MAP_RANGE4,
    MAP_RANGE6, SET_HAIRPIN4, SET_HAIRPIN6,
};
use super::{Hairpin, Mapping, PortRange, Proto};
use crate::net::nft::FullElem;

/// What an element stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Element {
    Mapping(Mapping),
    Range(PortRange),
    Hairpin(Hairpin),
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Element::Mapping(m) => write!(f, "{m}"),
            Element::Range(r) => write!(f, "{r}"),
            Element::Hairpin(h) => write!(f, "hairpin masquerade {} -> {}", h.sources, h.pod),
        }
    }
}

fn proto_reg(p: Proto) -> [u8; 4] {
    [p.number(), 0, 0, 0]
}

fn port_reg(port: u16) -> [u8; 4] {
    let b = port.to_be_bytes();
    [b[0], b[1], 0, 0]
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn last_addr(n: &IpNetwork) -> IpAddr {
    match n {
        IpNetwork::V4(n) => IpAddr::V4(n.broadcast()),
        IpNetwork::V6(n) => {
            let bits = 128 - n.prefix() as u32;
            let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | mask))
        }
    }
}

/// The set and element (without comment) that stand for `e`.
pub fn encode(e: &Element) -> (&'static str, FullElem) {
    match e {
        Element::Mapping(m) => {
            let mut key = Vec::with_capacity(24);
            if let Some(h) = &m.host_ip {
                key.extend_from_slice(&addr_bytes(h));
            }
            key.extend_from_slice(&proto_reg(m.proto));
            key.extend_from_slice(&port_reg(m.host_port));
            let mut data = addr_bytes(&m.target);
            data.extend_from_slice(&port_reg(m.target_port));
            let set = match (m.target.is_ipv4(), m.host_ip.is_some()) {
                (true, false) => MAP_HOSTPORT4,
                (true, true) => MAP_HOSTIPPORT4,
                (false, false) => MAP_HOSTPORT6,
                (false, true) => MAP_HOSTIPPORT6,
            };
            (set, FullElem { key, key_end: None, data: Some(data), comment: None })
        }
        Element::Range(r) => {
            let mut key = Vec::with_capacity(24);
            if let Some(h) = &r.host_ip {
                key.extend_from_slice(&addr_bytes(h));
            }
            key.extend_from_slice(&proto_reg(r.proto));
            let mut end = key.clone();
            key.extend_from_slice(&port_reg(r.first));
            end.extend_from_slice(&port_reg(r.last));
            let set = match (r.target.is_ipv4(), r.host_ip.is_some()) {
                (true, false) => MAP_RANGE4,
                (true, true) => MAP_HOSTIPRANGE4,
                (false, false) => MAP_RANGE6,
                (false, true) => MAP_HOSTIPRANGE6,
            };
            (set, FullElem { key, key_end: Some(end), data: Some(addr_bytes(&r.target)), comment: None })
        }
        Element::Hairpin(h) => {
            let pod = addr_bytes(&h.pod);
            let mut key = addr_bytes(&h.sources.network());
            key.extend_from_slice(&pod);
            let mut end = addr_bytes(&last_addr(&h.sources));
            end.extend_from_slice(&pod);
            let set = if h.pod.is_ipv4() { SET_HAIRPIN4 } else { SET_HAIRPIN6 };
            (set, FullElem { key, key_end: Some(end), data: None, comment: None })
        }
    }
}

fn addr_at(b: &[u8], v4: bool) -> Option<IpAddr> {
    if v4 {
        Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?)))
    } else {
        Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?)))
    }
}

fn port_at(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Reads an element of `set` back; `None` for anything this layout never writes.
pub fn decode(set: &str, e: &FullElem) -> Option<Element> {
    let set = super::conditions::base_map(set);
    let (v4, host_ip) = match set {
        MAP_HOSTPORT4 => (true, false),
        MAP_HOSTIPPORT4 => (true, true),
        MAP_HOSTPORT6 => (false, false),
        MAP_HOSTIPPORT6 => (false, true),
        MAP_RANGE4 | MAP_HOSTIPRANGE4 | MAP_RANGE6 | MAP_HOSTIPRANGE6 => return decode_range(set, e),
        SET_HAIRPIN4 | SET_HAIRPIN6 => {
            let v4 = set == SET_HAIRPIN4;
            let len = if v4 { 4 } else { 16 };
            let end = e.key_end.as_deref()?;
            if e.key.len() != 2 * len || end.len() != 2 * len || e.key[len..] != end[len..] {
                return None;
            }
            let (first, last) = (addr_at(&e.key, v4)?, addr_at(end, v4)?);
            let pod = addr_at(&e.key[len..], v4)?;
            let prefix = prefix_of(&first, &last)?;
            return Some(Element::Hairpin(Hairpin { sources: IpNetwork::new(first, prefix).ok()?, pod }));
        }
        _ => return None,
    };
    let alen = if v4 { 4 } else { 16 };
    let (host, rest) = if host_ip { (Some(addr_at(&e.key, v4)?), e.key.get(alen..)?) } else { (None, &e.key[..]) };
    if rest.len() != 8 {
        return None;
    }
    let proto = Proto::from_number(rest[0])?;
    let host_port = port_at(&rest[4..])?;
    let data = e.data.as_deref()?;
    if data.len() != alen + 4 {
        return None;
    }
    let target = addr_at(data, v4)?;
    let target_port = port_at(&data[alen..])?;
    Some(Element::Mapping(Mapping { proto, host_port, host_ip: host, target, target_port }))
}

fn decode_range(set: &str, e: &FullElem) -> Option<Element> {
    let v4 = matches!(set, MAP_RANGE4 | MAP_HOSTIPRANGE4);
    let alen = if v4 { 4 } else { 16 };
    let host_ip = matches!(set, MAP_HOSTIPRANGE4 | MAP_HOSTIPRANGE6);
    let end = e.key_end.as_deref()?;
    let head = if host_ip { alen + 4 } else { 4 };
    if e.key.len() != head + 4 || end.len() != head + 4 || e.key[..head] != end[..head] {
        return None;
    }
    let host = if host_ip { Some(addr_at(&e.key, v4)?) } else { None };
    let proto = Proto::from_number(e.key[head - 4])?;
    let (first, last) = (port_at(&e.key[head..])?, port_at(&end[head..])?);
    let data = e.data.as_deref()?;
    if data.len() != alen || first > last {
        return None;
    }
    let target = addr_at(data, v4)?;
    Some(Element::Range(PortRange { proto, first, last, host_ip: host, target }))
}

/// The prefix length of the range first..=last, if it is one prefix.
fn prefix_of(first: &IpAddr, last: &IpAddr) -> Option<u8> {
    let (f, l, bits) = match (first, last) {
        (IpAddr::V4(f), IpAddr::V4(l)) => (u32::from(*f) as u128, u32::from(*l) as u128, 32),
        (IpAddr::V6(f), IpAddr::V6(l)) => (u128::from(*f), u128::from(*l), 128),
        _ => return None,
    };
    let span = f ^ l;
    let host_bits = 128 - span.leading_zeros();
    let mask = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    (span == mask && f & mask == 0 && host_bits <= bits).then(|| (bits - host_bits) as u8)
}

/// Whether two elements of one range map share a port: same host IP and protocol (the key before the
/// port register), intersecting port intervals.
pub(super) fn overlaps(a: &FullElem, b: &FullElem) -> bool {
    let (Some(ae), Some(be)) = (a.key_end.as_deref(), b.key_end.as_deref()) else { return false };
    let n = a.key.len();
    if n < 4 || b.key.len() != n || ae.len() != n || be.len() != n || a.key[..n - 4] != b.key[..n - 4] {
        return false;
    }
    let port = |k: &[u8]| port_at(&k[n - 4..]);
    match (port(&a.key), port(ae), port(&b.key), port(be)) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) => a0 <= b1 && b0 <= a1,
        _ => false,
    }
}
