//! Per-attachment elements of the portmap maps and hairpin sets, over nf_tables netlink: encoding,
//! owner-checked add (with the conflict policy), removal by owner, exact comparison for CHECK, GC.
//!
//! Keys and data are concatenations as the kernel stores them: every field padded to a 4-byte register
//! (`inet_proto` 1 byte + 3, `inet_service` 2 bytes big endian + 2, addresses as they are). Hairpin
//! elements are ranges of a concatenated interval set: key = (first source . pod), key end = (last
//! source . pod).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::conditions::Conditions;
use super::ledger::Listed;
use super::structure::{
    ELEMENT_SETS, MAP_HOSTIPPORT4, MAP_HOSTIPPORT6, MAP_HOSTIPRANGE4, MAP_HOSTIPRANGE6, MAP_HOSTPORT4, MAP_HOSTPORT6,
    MAP_RANGE4, MAP_RANGE6, SET_HAIRPIN4, SET_HAIRPIN6,
};
use super::{ConflictPolicy, Error, Hairpin, Mapping, Owner, PortRange, Proto, Result, TABLE, nl_err};
use crate::net::nft::{BatchOp, FullElem, NFPROTO_INET, NetlinkError, Nfnl, absent, retryable};

/// How often a read-modify-write is retried when the ruleset changed under it.
const MAX_ATTEMPTS: usize = 30;

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

/// An element another owner had under the same key, replaced by an ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displaced {
    pub element: Element,
    pub owner: String,
}

/// An element removed by DEL or GC, with its owner tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Removed {
    pub element: Element,
    pub owner: String,
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

/// What one ADD changed: for undo.
#[derive(Debug, Default)]
pub struct Applied {
    /// Elements this ADD added (set, element with comment).
    added: Vec<Listed>,
    /// Elements it deleted to make room (another owner's, or its own with other data).
    replaced: Vec<Listed>,
    /// Other owners' elements it replaced.
    pub displaced: Vec<Displaced>,
}

/// An element with the map or set it goes to (the shared one, or a condition set's).
pub type Placed = (String, Element);

/// Where each element goes: mappings of a family with conditions to that condition set's maps, the rest
/// to the shared maps and sets. Condition sets have no range maps: a range of such a family is placed as
/// its single ports (the plugin does not make ranges there; this keeps the conditions if one does).
pub fn place(elements: &[Element], conds: &[Conditions]) -> Vec<Placed> {
    let cond_of = |v4: bool| conds.iter().find(|c| c.v4 == v4);
    let mut out = Vec::new();
    for el in elements {
        match el {
            Element::Mapping(m) => match cond_of(m.target.is_ipv4()) {
                Some(c) => out.push((c.map(m.host_ip.is_some()), *el)),
                None => out.push((encode(el).0.to_string(), *el)),
            },
            Element::Range(r) => match cond_of(r.target.is_ipv4()) {
                Some(c) => out.extend((r.first..=r.last).map(|port| {
                    let m = Mapping {
                        proto: r.proto,
                        host_port: port,
                        host_ip: r.host_ip,
                        target: r.target,
                        target_port: port,
                    };
                    (c.map(r.host_ip.is_some()), Element::Mapping(m))
                })),
                None => out.push((encode(el).0.to_string(), *el)),
            },
            Element::Hairpin(_) => out.push((encode(el).0.to_string(), *el)),
        }
    }
    out
}

/// The elements as the ledger records them: (set, element without comment).
pub fn encoded(placed: &[Placed]) -> Vec<Listed> {
    placed.iter().map(|(set, el)| (set.clone(), encode(el).1)).collect()
}

fn same_key(a: &Listed, b: &Listed) -> bool {
    a.0 == b.0 && a.1.key == b.1.key && a.1.key_end == b.1.key_end
}

/// `list` grouped by set, sets in the order they first appear.
fn by_set(list: &[Listed]) -> Vec<(&str, Vec<FullElem>)> {
    let mut out: Vec<(&str, Vec<FullElem>)> = Vec::new();
    for (set, e) in list {
        match out.iter_mut().find(|(s, _)| *s == set.as_str()) {
            Some((_, v)) => v.push(e.clone()),
            None => out.push((set.as_str(), vec![e.clone()])),
        }
    }
    out
}

/// Adds the `placed` elements for `owner` in one generation-checked batch. An element already there with
/// the same owner and data stays; one with the same key and another owner is replaced (and reported) or,
/// with [`ConflictPolicy::Error`], fails the whole ADD before anything changes. For a port range "the same
/// key" is every range of its map that shares a port with it (found in a dump of that range map, which
/// holds one element per range, not per port; the kernel would accept a range containing another). A
/// single port inside another owner's range is no conflict: the single port is more specific and wins
/// for that port, as a host-IP mapping wins over a wildcard one. `previous` is what the owner's last ADD
/// recorded: those of its keys that are no longer wanted and still belong to the owner are removed in the
/// same batch (a re-ADD with changed mappings leaves no old element).
pub fn apply(
    nl: &mut Nfnl,
    owner: &Owner,
    placed: &[Placed],
    policy: ConflictPolicy,
    previous: &[Listed],
) -> Result<Applied> {
    let tag = owner.tag();
    let wanted = encoded(placed);
    let dropped: Vec<&Listed> = previous.iter().filter(|p| !wanted.iter().any(|w| same_key(p, w))).collect();
    let mut range_sets: Vec<&str> =
        placed.iter().filter(|(_, e)| matches!(e, Element::Range(_))).map(|(s, _)| s.as_str()).collect();
    range_sets.sort();
    range_sets.dedup();
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = nl.generation().map_err(|e| nl_err("reading the nf_tables generation", e))?;
        let mut applied = Applied::default();
        for (set, old) in &dropped {
            if let Some(c) = lookup_exact(nl, set, old)? {
                if c.comment.as_deref() == Some(tag.as_str()) {
                    applied.replaced.push((set.clone(), c));
                }
            }
        }
        let mut ranges_now: Vec<Listed> = Vec::new();
        for set in &range_sets {
            ranges_now.extend(dump(nl, set)?.into_iter().map(|e| (set.to_string(), e)));
        }
        for (set, el) in placed {
            let (_, mut want) = encode(el);
            want.comment = Some(tag.clone());
            let current: Vec<FullElem> = if matches!(el, Element::Range(_)) {
                ranges_now.iter().filter(|(s, c)| s == set && overlaps(c, &want)).map(|(_, c)| c.clone()).collect()
            } else {
                nl.get_full(NFPROTO_INET, TABLE, set, &want.key, want.key_end.as_deref())
                    .map_err(|e| nl_err(format!("looking up {el} in map inet {TABLE} {set}"), e))?
                    .into_iter()
                    .collect()
            };
            let stays = |c: &FullElem| {
                c.comment == want.comment
                    && (c.data == want.data || want.data.is_none())
                    && (c.key_end == want.key_end || !matches!(el, Element::Range(_)))
            };
            if current.len() == 1 && stays(&current[0]) {
                continue;
            }
            for c in current {
                let other = c.comment.clone().unwrap_or_default();
                if other != tag {
                    if policy == ConflictPolicy::Error && !matches!(el, Element::Hairpin(_)) {
                        return Err(Error::Conflict { what: el.to_string(), owner: other });
                    }
                    if let Some(old) = decode(set, &c) {
                        applied.displaced.push(Displaced { element: old, owner: other });
                    }
                }
                let c = (set.clone(), c);
                if !applied.replaced.iter().any(|r| same_key(r, &c)) {
                    applied.replaced.push(c);
                }
            }
            applied.added.push((set.clone(), want));
        }
        let (del, add) = (by_set(&applied.replaced), by_set(&applied.added));
        let mut ops: Vec<BatchOp<'_>> = del.into_iter().map(|(set, elems)| BatchOp::DelFull { set, elems }).collect();
        ops.extend(add.into_iter().map(|(set, elems)| BatchOp::AddFull { set, elems, excl: true }));
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(applied),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(batch_err(owner, e)),
        }
    }
    Err(batch_err(owner, last_err.expect("at least one attempt")))
}

/// Whether two elements of one range map share a port: same host IP and protocol (the key before the
/// port register), intersecting port intervals.
fn overlaps(a: &FullElem, b: &FullElem) -> bool {
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

fn dump(nl: &mut Nfnl, set: &str) -> Result<Vec<FullElem>> {
    match nl.dump_full(NFPROTO_INET, TABLE, set) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(e) if absent(&e) => Ok(Vec::new()),
        Err(e) => Err(nl_err(format!("listing map inet {TABLE} {set}"), e)),
    }
}

fn batch_err(owner: &Owner, e: NetlinkError) -> Error {
    nl_err(
        format!(
            "writing the host port elements of {owner} to table inet {TABLE} (the ruleset kept changing or the \
             maps are broken; `nft list table inet {TABLE}` shows the state)"
        ),
        e,
    )
}

/// Takes back what [`apply`] did: removes what it added and puts back what it replaced.
pub fn undo(nl: &mut Nfnl, applied: &Applied) -> Result<()> {
    let (del, add) = (by_set(&applied.added), by_set(&applied.replaced));
    let mut ops: Vec<BatchOp<'_>> = del.into_iter().map(|(set, elems)| BatchOp::DelFull { set, elems }).collect();
    ops.extend(add.into_iter().map(|(set, elems)| BatchOp::AddFull { set, elems, excl: true }));
    nl.batch(None, NFPROTO_INET, TABLE, &ops).map_err(|e| nl_err("undoing this ADD's host port elements", e))
}

/// Every element of every portmap map and set: (set, raw element).
fn dump_all(nl: &mut Nfnl) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut sets: Vec<String> = ELEMENT_SETS.iter().map(|s| s.to_string()).collect();
    sets.extend(super::conditions::maps_on_node(nl)?);
    for set in &sets {
        match nl.dump_full(NFPROTO_INET, TABLE, set) {
            Ok(Some(v)) => out.extend(v.into_iter().map(|e| (set.clone(), e))),
            Ok(None) => {}
            Err(e) if absent(&e) => {}
            Err(e) => return Err(nl_err(format!("listing map inet {TABLE} {set}"), e)),
        }
    }
    Ok(out)
}

/// Every element with its owner tag, decoded (elements of another layout are left out).
pub fn list(nl: &mut Nfnl) -> Result<Vec<Removed>> {
    let mut v: Vec<Removed> = dump_all(nl)?
        .into_iter()
        .filter_map(|(set, e)| Some(Removed { element: decode(&set, &e)?, owner: e.comment.unwrap_or_default() }))
        .collect();
    v.sort();
    Ok(v)
}

/// Removes every element whose owner tag satisfies `stale`, in one generation-checked batch (from a
/// fresh dump on every attempt). Returns what was removed.
pub fn remove_where(nl: &mut Nfnl, what: &str, stale: impl Fn(&str) -> bool) -> Result<Vec<Removed>> {
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err("reading the nf_tables generation", e)),
        };
        let doomed: Vec<Listed> =
            dump_all(nl)?.into_iter().filter(|(_, e)| stale(e.comment.as_deref().unwrap_or(""))).collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        match delete_batch(nl, gen_id, &doomed) {
            Ok(()) => return Ok(removed_of(doomed)),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(nl_err(format!("removing the host port elements of {what}"), e)),
        }
    }
    Err(nl_err(
        format!("removing the host port elements of {what}: the ruleset kept changing; retry"),
        last_err.expect("at least one attempt"),
    ))
}

fn lookup(nl: &mut Nfnl, set: &str, e: &FullElem) -> Result<Option<FullElem>> {
    match nl.get_full(NFPROTO_INET, TABLE, set, &e.key, e.key_end.as_deref()) {
        Ok(c) => Ok(c),
        Err(err) if absent(&err) => Ok(None),
        Err(err) => Err(nl_err(format!("looking up an element of map inet {TABLE} {set}"), err)),
    }
}

/// The element with exactly `e`'s key (and key end): a lookup in an interval map answers with the
/// element containing the key's start, which may be another one.
fn lookup_exact(nl: &mut Nfnl, set: &str, e: &FullElem) -> Result<Option<FullElem>> {
    Ok(lookup(nl, set, e)?.filter(|c| c.key == e.key && c.key_end == e.key_end))
}

/// Removes the `listed` elements (what the owner's ADD recorded) that still belong to `owner`, one
/// lookup each, in one generation-checked batch: other owners' elements are never read. Returns what was
/// removed.
pub fn remove_listed(nl: &mut Nfnl, owner: &Owner, listed: &[Listed]) -> Result<Vec<Removed>> {
    let tag = owner.tag();
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err("reading the nf_tables generation", e)),
        };
        let mut doomed: Vec<Listed> = Vec::new();
        for (set, e) in listed {
            if let Some(c) = lookup_exact(nl, set, e)? {
                if c.comment.as_deref() == Some(tag.as_str()) {
                    doomed.push((set.clone(), c));
                }
            }
        }
        match delete_batch(nl, gen_id, &doomed) {
            Ok(()) => return Ok(removed_of(doomed)),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(nl_err(format!("removing the host port elements of {owner}"), e)),
        }
    }
    Err(nl_err(
        format!("removing the host port elements of {owner}: the ruleset kept changing; retry"),
        last_err.expect("at least one attempt"),
    ))
}

fn delete_batch(nl: &mut Nfnl, gen_id: u32, doomed: &[Listed]) -> Result<(), NetlinkError> {
    if doomed.is_empty() {
        return Ok(());
    }
    let ops: Vec<BatchOp<'_>> =
        by_set(doomed).into_iter().map(|(set, elems)| BatchOp::DelFull { set, elems }).collect();
    nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops)
}

fn removed_of(doomed: Vec<Listed>) -> Vec<Removed> {
    let mut removed: Vec<Removed> = doomed
        .into_iter()
        .filter_map(|(set, e)| Some(Removed { element: decode(&set, &e)?, owner: e.comment.unwrap_or_default() }))
        .collect();
    removed.sort();
    removed
}

/// Removes the elements of `owner` found by a dump of every map (the fallback when its ledger record is
/// missing; nothing of another owner is touched).
pub fn remove_owner(nl: &mut Nfnl, owner: &Owner) -> Result<Vec<Removed>> {
    let tag = owner.tag();
    remove_where(nl, &owner.to_string(), |t| t == tag)
}

/// CHECK: every element is there with exactly this data and owner.
pub fn verify(nl: &mut Nfnl, owner: &Owner, placed: &[Placed]) -> Result<()> {
    let tag = owner.tag();
    for (set, el) in placed {
        let (_, want) = encode(el);
        let cur = nl
            .get_full(NFPROTO_INET, TABLE, set, &want.key, want.key_end.as_deref())
            .map_err(|e| nl_err(format!("looking up {el} in map inet {TABLE} {set}"), e))?;
        match cur {
            None => {
                return Err(Error::Check(format!(
                    "portmap: {el} of {owner} is missing from inet {TABLE} {set}; an ADD puts it back"
                )));
            }
            Some(c) if c.comment.as_deref() != Some(tag.as_str()) => {
                return Err(Error::Check(format!(
                    "portmap: {el}: the key in inet {TABLE} {set} belongs to {:?}, not to {tag} (a newer mapping \
                     of the same host port replaced it)",
                    c.comment.unwrap_or_default()
                )));
            }
            Some(c)
                if (want.data.is_some() && c.data != want.data) || c.key != want.key || c.key_end != want.key_end =>
            {
                let now = decode(set, &c).map(|e| e.to_string()).unwrap_or_else(|| "something else".into());
                return Err(Error::Check(format!(
                    "portmap: {el} of {owner} is in inet {TABLE} {set} as {now}; an ADD rewrites it"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_what_nft_writes() {
        // `nft --debug=netlink add element inet rcni hostport4 { tcp . 8080 : 10.88.0.2 . 80 }` prints
        // `element 00000006 0000901f : 0200580a 00005000` (32-bit words, host order).
        let m = Mapping {
            proto: Proto::Tcp,
            host_port: 8080,
            host_ip: None,
            target: "10.88.0.2".parse().unwrap(),
            target_port: 80,
        };
        let (set, e) = encode(&Element::Mapping(m));
        assert_eq!(set, MAP_HOSTPORT4);
        assert_eq!(e.key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e.data.as_deref(), Some(&[10, 88, 0, 2, 0, 80, 0, 0][..]));
        assert_eq!(decode(set, &e), Some(Element::Mapping(m)));
        // `{ 10.88.0.0/24 . 10.88.0.2 }` in hairpin4: `element 0000580a 0200580a - ff00580a 0200580a`
        let h = Hairpin { sources: "10.88.0.0/24".parse().unwrap(), pod: "10.88.0.2".parse().unwrap() };
        let (set, e) = encode(&Element::Hairpin(h));
        assert_eq!(set, SET_HAIRPIN4);
        assert_eq!(e.key, [10, 88, 0, 0, 10, 88, 0, 2]);
        assert_eq!(e.key_end.as_deref(), Some(&[10, 88, 0, 255, 10, 88, 0, 2][..]));
        assert_eq!(decode(set, &e), Some(Element::Hairpin(h)));
    }

    #[test]
    fn ranges_roundtrip_and_overlap_by_port() {
        let r = PortRange {
            proto: Proto::Tcp,
            first: 20000,
            last: 20999,
            host_ip: None,
            target: "10.88.0.2".parse().unwrap(),
        };
        let (set, e) = encode(&Element::Range(r));
        assert_eq!(set, MAP_RANGE4);
        assert_eq!(e.key, [6, 0, 0, 0, 0x4e, 0x20, 0, 0]);
        assert_eq!(e.key_end.as_deref(), Some(&[6u8, 0, 0, 0, 0x52, 0x07, 0, 0][..]));
        assert_eq!(e.data.as_deref(), Some(&[10u8, 88, 0, 2][..]));
        assert_eq!(decode(set, &e), Some(Element::Range(r)));
        let h = PortRange { host_ip: Some("fd00::1".parse().unwrap()), target: "fd00::2".parse().unwrap(), ..r };
        let (set6, e6) = encode(&Element::Range(h));
        assert_eq!((set6, e6.key.len()), (MAP_HOSTIPRANGE6, 24));
        assert_eq!(decode(set6, &e6), Some(Element::Range(h)));
        let with = |first, last, proto| encode(&Element::Range(PortRange { first, last, proto, ..r })).1;
        assert!(overlaps(&e, &with(20999, 21500, Proto::Tcp)), "shares the last port");
        assert!(overlaps(&e, &with(19000, 22000, Proto::Tcp)), "contains it");
        assert!(!overlaps(&e, &with(21000, 21500, Proto::Tcp)));
        assert!(!overlaps(&e, &with(20000, 20999, Proto::Udp)), "another protocol");
    }

    #[test]
    fn a_range_under_conditions_is_placed_as_single_ports() {
        let r =
            PortRange { proto: Proto::Udp, first: 53, last: 55, host_ip: None, target: "10.0.0.2".parse().unwrap() };
        let c = Conditions::parse("conditionsV4", true, &["-s".to_string(), "198.18.0.0/24".to_string()]).unwrap();
        let placed = place(&[Element::Range(r)], std::slice::from_ref(&c));
        assert_eq!(placed.len(), 3);
        assert!(placed.iter().all(|(set, e)| *set == c.map(false) && matches!(e, Element::Mapping(m) if r.covers(m))));
        assert_eq!(place(&[Element::Range(r)], &[]), vec![(MAP_RANGE4.to_string(), Element::Range(r))]);
    }

    #[test]
    fn v6_and_host_ip_roundtrip() {
        let m = Mapping {
            proto: Proto::Udp,
            host_port: 53,
            host_ip: Some("fd00::1".parse().unwrap()),
            target: "fd00::2".parse().unwrap(),
            target_port: 5353,
        };
        let (set, e) = encode(&Element::Mapping(m));
        assert_eq!((set, e.key.len(), e.data.as_ref().unwrap().len()), (MAP_HOSTIPPORT6, 24, 20));
        assert_eq!(decode(set, &e), Some(Element::Mapping(m)));
        for (src, pod) in [("::/0", "fd00::2"), ("fd00::/64", "fd00::3"), ("0.0.0.0/0", "10.0.0.1")] {
            let h = Hairpin { sources: src.parse().unwrap(), pod: pod.parse().unwrap() };
            let (set, e) = encode(&Element::Hairpin(h));
            assert_eq!(decode(set, &e), Some(Element::Hairpin(h)), "{src}");
        }
    }
}
