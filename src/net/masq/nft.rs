//! The nftables backend: one base chain, two rules and four sets per network in table `inet rcni`
//! (layout in the module documentation of `masq`), all over nf_tables netlink: the structure from typed
//! objects when a probe finds it missing or outdated, in the same generation-checked batch as the pod's
//! elements.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::layout::Structure;
pub use super::layout::{Names, TABLE};
pub use super::reference::{gc_reference, teardown_reference};
use super::{Element, Error, Owner, PodEntry, Result};
use crate::net::nft::{BatchOp, NFPROTO_INET, NetlinkError, Nfnl, SetElem, absent, retryable};

/// How often a read-modify-write is retried when the ruleset changed under it.
pub(super) const MAX_ATTEMPTS: usize = 30;

pub(super) fn nl_err(network: &str, what: &str, err: NetlinkError) -> Error {
    Error::Netlink { what: format!("masquerade for network {network:?}: {what}"), err }
}

fn open(network: &str) -> Result<Nfnl> {
    Nfnl::open().map_err(|e| nl_err(network, "opening the nf_tables netlink socket", e))
}

/// Whether the chain holds exactly the rules of the structure's (network, exempt) fingerprint.
fn structure_ok(nl: &mut Nfnl, network: &str, s: &Structure) -> Result<bool> {
    let chain = &s.names.chain;
    let rules = nl
        .dump_rules(NFPROTO_INET, TABLE, chain)
        .map_err(|e| nl_err(network, &format!("listing chain inet {TABLE} {chain}"), e))?;
    let mut found: Vec<String> = rules.into_iter().filter_map(|r| r.comment).collect();
    found.sort();
    Ok(found == s.comments)
}

fn key_of(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn addr_of(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key).ok()?))),
        _ => None,
    }
}

fn pod_addrs(pod: &PodEntry) -> Vec<IpAddr> {
    pod.ips.iter().map(|n| n.ip()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Adds the pod's addresses with its owner tag, replacing other owners, and (re)writes the network's
/// structure when the probe finds it missing or outdated: one transaction, checked against the
/// generation read before the probe, so a concurrent change makes it plan again.
pub fn setup(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let structure = Structure::new(network, exempt);
    let n = &structure.names;
    let tag = pod.owner().tag();
    let addrs = pod_addrs(pod);
    let mut nl = open(network)?;
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = nl.generation().map_err(|e| nl_err(network, "reading the nf_tables generation", e))?;
        let mut ops = if structure_ok(&mut nl, network, &structure)? { Vec::new() } else { structure.ops() };
        let writes_structure = !ops.is_empty();
        let (mut del, mut add): (Vec<&IpAddr>, Vec<&IpAddr>) = (Vec::new(), Vec::new());
        for a in &addrs {
            let cur = nl
                .get_elem(NFPROTO_INET, TABLE, n.pods(a), &key_of(a))
                .map_err(|e| nl_err(network, &format!("looking up {a} in set inet {TABLE} {}", n.pods(a)), e))?;
            match cur {
                Some(SetElem { comment, .. }) if comment.as_deref() == Some(tag.as_str()) => {}
                Some(_) => {
                    del.push(a);
                    add.push(a);
                }
                None => add.push(a),
            }
        }
        ops.extend(element_ops(n, &del, &add, &tag));
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) if writes_structure => return Err(structure_err(network, n, e)),
            Err(e) => return Err(element_err(network, n, &add, pod, e)),
        }
    }
    Err(element_err(network, n, &addrs.iter().collect::<Vec<_>>(), pod, last_err.expect("at least one attempt")))
}

fn structure_err(network: &str, n: &Names, e: NetlinkError) -> Error {
    nl_err(
        network,
        &format!(
            "writing table inet {TABLE} (chain {}, sets {}/{}/{}/{}; `nft list table inet {TABLE}` shows what \
             is there, deleting the table makes the next ADD recreate it)",
            n.chain, n.pods4, n.pods6, n.exempt4, n.exempt6
        ),
        e,
    )
}

fn element_err(network: &str, n: &Names, addrs: &[&IpAddr], pod: &PodEntry, e: NetlinkError) -> Error {
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    nl_err(
        network,
        &format!(
            "adding {} of {} to sets inet {TABLE} {}/{} (the ruleset kept changing or the sets are \
             broken; `nft list table inet {TABLE}` shows the state, deleting the table makes the next \
             ADD recreate it)",
            list.join(", "),
            pod.owner(),
            n.pods4,
            n.pods6
        ),
        e,
    )
}

/// Deletions first, then additions (excl), grouped per set.
fn element_ops<'a>(n: &'a Names, del: &[&IpAddr], add: &[&IpAddr], tag: &str) -> Vec<BatchOp<'a>> {
    let mut ops = Vec::new();
    for set in [&n.pods4, &n.pods6] {
        let keys: Vec<Vec<u8>> = del.iter().filter(|a| n.pods(a) == set).map(|a| key_of(a)).collect();
        if !keys.is_empty() {
            ops.push(BatchOp::DelElems { set, keys });
        }
    }
    for set in [&n.pods4, &n.pods6] {
        let elems: Vec<(Vec<u8>, String)> =
            add.iter().filter(|a| n.pods(a) == set).map(|a| (key_of(a), tag.to_string())).collect();
        if !elems.is_empty() {
            ops.push(BatchOp::AddElems { set, elems, excl: true });
        }
    }
    ops
}

/// Removes the pod's elements that it still owns. Without the pod's addresses (a DEL with neither
/// prevResult nor netns) they are found by owner in the network's sets: one dump instead of a lookup,
/// but nothing leaks.
pub fn teardown(network: &str, pod: &PodEntry) -> Result<()> {
    let n = Names::new(network);
    let tag = pod.owner().tag();
    let addrs = if pod.ips.is_empty() {
        list(network)?.into_iter().filter(|e| e.owner == tag).map(|e| e.addr).collect()
    } else {
        pod_addrs(pod)
    };
    if addrs.is_empty() {
        return Ok(());
    }
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(nl_err(network, "reading the nf_tables generation", e)),
        };
        let mut del = Vec::new();
        for a in &addrs {
            match nl.get_elem(NFPROTO_INET, TABLE, n.pods(a), &key_of(a)) {
                Ok(Some(SetElem { comment, .. })) if comment.as_deref() == Some(tag.as_str()) => del.push(a),
                Ok(_) => {}
                Err(e) if absent(&e) => {}
                Err(e) => {
                    return Err(nl_err(network, &format!("looking up {a} in set inet {TABLE} {}", n.pods(a)), e));
                }
            }
        }
        if del.is_empty() {
            return Ok(());
        }
        let ops = element_ops(&n, &del, &[], &tag);
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(del_err(network, &n, pod, e)),
        }
    }
    Err(del_err(network, &n, pod, last_err.expect("at least one attempt")))
}

fn del_err(network: &str, n: &Names, pod: &PodEntry, e: NetlinkError) -> Error {
    nl_err(
        network,
        &format!(
            "removing the addresses of {} from sets inet {TABLE} {}/{} (the ruleset kept changing; \
             retry the DEL)",
            pod.owner(),
            n.pods4,
            n.pods6
        ),
        e,
    )
}

/// Verifies structure and the pod's elements.
pub fn check(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let structure = Structure::new(network, exempt);
    let n = &structure.names;
    let tag = pod.owner().tag();
    let mut nl = open(network)?;
    if !structure_ok(&mut nl, network, &structure)? {
        return Err(Error::Check(format!(
            "masquerade for network {network:?}: chain inet {TABLE} {} is missing or does not hold the \
             expected masquerade rules for the configured exempt prefixes (changed by hand, or the \
             config changed since ADD); an ADD rewrites it",
            n.chain
        )));
    }
    for a in pod_addrs(pod) {
        let set = n.pods(&a);
        let cur = nl
            .get_elem(NFPROTO_INET, TABLE, set, &key_of(&a))
            .map_err(|e| nl_err(network, &format!("looking up {a} in set inet {TABLE} {set}"), e))?;
        match cur {
            None => {
                return Err(Error::Check(format!(
                    "masquerade for network {network:?}: address {a} of {} is missing from set inet \
                     {TABLE} {set}, so its traffic is not masqueraded; re-create the pod (or its \
                     network attachment)",
                    pod.owner()
                )));
            }
            Some(SetElem { comment, .. }) if comment.as_deref() != Some(tag.as_str()) => {
                return Err(Error::Check(format!(
                    "masquerade for network {network:?}: address {a} in set inet {TABLE} {set} belongs \
                     to {:?}, not to {} (the address is in use by another attachment?)",
                    comment.unwrap_or_default(),
                    tag
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn dump_all(nl: &mut Nfnl, network: &str, n: &Names) -> Result<Vec<(Element, Vec<u8>, String)>> {
    let mut out = Vec::new();
    for set in [&n.pods4, &n.pods6] {
        let elems = match nl.dump_elems(NFPROTO_INET, TABLE, set) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) if absent(&e) => continue,
            Err(e) => {
                return Err(nl_err(network, &format!("listing set inet {TABLE} {set}"), e));
            }
        };
        for e in elems {
            if let Some(addr) = addr_of(&e.key) {
                out.push((Element { addr, owner: e.comment.unwrap_or_default() }, e.key, set.clone()));
            }
        }
    }
    Ok(out)
}

/// The pod elements of the network, sorted.
pub fn list(network: &str) -> Result<Vec<Element>> {
    let n = Names::new(network);
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    let mut v: Vec<Element> = dump_all(&mut nl, network, &n)?.into_iter().map(|(e, _, _)| e).collect();
    v.sort();
    Ok(v)
}

/// Removes elements whose owner is not valid; returns them.
pub fn gc(network: &str, valid: &[Owner]) -> Result<Vec<Element>> {
    let n = Names::new(network);
    let valid: HashSet<String> = valid.iter().map(Owner::tag).collect();
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err(network, "reading the nf_tables generation", e)),
        };
        let stale: Vec<_> =
            dump_all(&mut nl, network, &n)?.into_iter().filter(|(e, _, _)| !valid.contains(&e.owner)).collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let mut ops = Vec::new();
        for set in [&n.pods4, &n.pods6] {
            let keys: Vec<Vec<u8>> = stale.iter().filter(|(_, _, s)| s == set).map(|(_, k, _)| k.clone()).collect();
            if !keys.is_empty() {
                ops.push(BatchOp::DelElems { set, keys });
            }
        }
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => {
                let mut removed: Vec<Element> = stale.into_iter().map(|(e, _, _)| e).collect();
                removed.sort();
                return Ok(removed);
            }
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => {
                return Err(nl_err(
                    network,
                    &format!("removing stale elements from sets inet {TABLE} {}/{}", n.pods4, n.pods6),
                    e,
                ));
            }
        }
    }
    Err(nl_err(
        network,
        "garbage collection: the ruleset kept changing; retry",
        last_err.expect("at least one attempt"),
    ))
}
