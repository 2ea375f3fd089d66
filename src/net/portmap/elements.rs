//! Per-attachment elements of the portmap maps and hairpin sets, over nf_tables netlink: owner-checked
//! add (with the conflict policy), removal by owner, exact comparison for CHECK, GC. What an element is
//! and its bytes: `element`.

use super::conditions::Conditions;
use super::element::overlaps;
pub use super::element::{Element, decode, encode};
use super::ledger::Listed;
use super::structure::ELEMENT_SETS;
use super::{ConflictPolicy, Error, Mapping, Owner, Result, TABLE, nl_err};
use crate::net::nft::{BatchOp, FullElem, NFPROTO_INET, NetlinkError, Nfnl, absent, retryable};

/// How often a read-modify-write is retried when the ruleset changed under it.
const MAX_ATTEMPTS: usize = 30;

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
    remove_picked(nl, what, |nl| {
        Ok(dump_all(nl)?.into_iter().filter(|(_, e)| stale(e.comment.as_deref().unwrap_or(""))).collect())
    })
}

/// Deletes what `pick` chooses, read and deleted within one ruleset generation: picked again from scratch
/// when the ruleset changed in between (another plugin's commit), up to [`MAX_ATTEMPTS`] times.
fn remove_picked(
    nl: &mut Nfnl,
    what: &str,
    mut pick: impl FnMut(&mut Nfnl) -> Result<Vec<Listed>>,
) -> Result<Vec<Removed>> {
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err("reading the nf_tables generation", e)),
        };
        let doomed = pick(nl)?;
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
    remove_picked(nl, &owner.to_string(), |nl| {
        let mut doomed = Vec::new();
        for (set, e) in listed {
            if let Some(c) = lookup_exact(nl, set, e)? {
                if c.comment.as_deref() == Some(tag.as_str()) {
                    doomed.push((set.clone(), c));
                }
            }
        }
        Ok(doomed)
    })
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
    use crate::net::portmap::structure::*;
    use crate::net::portmap::{Hairpin, PortRange, Proto};

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
