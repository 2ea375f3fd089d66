//! The nftables backend: one base chain, two rules and four sets per network in table `inet rcni`
//! (layout in the module documentation of `masq`). Structure is written with the `nft` binary when a
//! netlink probe finds it missing or outdated; pod elements are read and written over nf_tables netlink.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::{Element, Error, Owner, PodEntry, Result, sha512_hex};
use crate::net::command::Command;
use crate::net::nft::{BatchOp, NFPROTO_INET, NetlinkError, Nfnl, SetElem, absent, retryable};

pub const TABLE: &str = "rcni";
/// Bumped when the rules change shape; part of the fingerprint, so an upgrade rewrites old chains.
const LAYOUT_VERSION: u32 = 1;
/// How often a read-modify-write is retried when the ruleset changed under it.
const MAX_ATTEMPTS: usize = 30;

/// The object names of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub chain: String,
    pub pods4: String,
    pub pods6: String,
    pub exempt4: String,
    pub exempt6: String,
}

impl Names {
    pub fn new(network: &str) -> Names {
        let h = &sha512_hex(network)[..16];
        Names {
            chain: format!("masq-{h}"),
            pods4: format!("pods4-{h}"),
            pods6: format!("pods6-{h}"),
            exempt4: format!("exempt4-{h}"),
            exempt6: format!("exempt6-{h}"),
        }
    }

    fn pods(&self, addr: &IpAddr) -> &str {
        match addr {
            IpAddr::V4(_) => &self.pods4,
            IpAddr::V6(_) => &self.pods6,
        }
    }
}

/// Exempt prefixes normalised: network addresses, per family, sorted, without prefixes contained in
/// another (an interval set rejects overlaps).
fn normalize_exempt(exempt: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let mut all: Vec<IpNetwork> = exempt
        .iter()
        .map(|n| IpNetwork::new(n.network(), n.prefix()).expect("prefix of a valid network"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // shortest prefixes first so that a contained prefix is dropped
    all.sort_by_key(|n| n.prefix());
    let mut kept: Vec<IpNetwork> = Vec::new();
    for n in all {
        if !kept.iter().any(|k| k.contains(n.network())) {
            kept.push(n);
        }
    }
    kept.sort();
    kept.into_iter().partition(|n| n.is_ipv4())
}

/// The address families that get a masquerade rule: those with exempt prefixes (the network's own
/// families), or both when no prefix is given. An IPv4-only network thus has exactly one rule.
fn families(ex4: &[IpNetwork], ex6: &[IpNetwork]) -> (bool, bool) {
    if ex4.is_empty() && ex6.is_empty() { (true, true) } else { (!ex4.is_empty(), !ex6.is_empty()) }
}

/// The rule comments that identify an up-to-date structure for (network, exempt), sorted.
fn rule_comments(network: &str, ex4: &[IpNetwork], ex6: &[IpNetwork]) -> Vec<String> {
    let mut input = format!("v{LAYOUT_VERSION}\n{network}\n");
    for n in ex4.iter().chain(ex6) {
        input.push_str(&format!("{n}\n"));
    }
    let fp = &sha512_hex(&input)[..16];
    let (v4, v6) = families(ex4, ex6);
    let mut out = Vec::new();
    if v4 {
        out.push(format!("rcni-masq v{LAYOUT_VERSION} ip {fp}"));
    }
    if v6 {
        out.push(format!("rcni-masq v{LAYOUT_VERSION} ip6 {fp}"));
    }
    out.sort();
    out
}

/// A string safe inside an nft double-quoted comment, at most 100 bytes.
pub(super) fn comment_safe(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '"' | '\\' | '\n' | '\r') && !c.is_control()).take(64).collect()
}

/// The masquerade rule of one family: pod sources to anything but the exempt prefixes and multicast.
fn masq_rule(chain: &str, fam: &str, pods: &str, exempt: &str, multicast: &str, comment: &str) -> String {
    format!(
        "add rule inet {TABLE} {chain} {fam} saddr @{pods} {fam} daddr != @{exempt} {fam} daddr != {multicast} \
         masquerade comment \"{comment}\"\n"
    )
}

/// The nft script that (re)writes the structure of a network (idempotent, one transaction).
pub fn structure_script(network: &str, exempt: &[IpNetwork]) -> String {
    let n = Names::new(network);
    let (ex4, ex6) = normalize_exempt(exempt);
    let (v4, v6) = families(&ex4, &ex6);
    let comments = rule_comments(network, &ex4, &ex6);
    let find = |fam: &str| comments.iter().find(|c| c.contains(&format!(" {fam} "))).cloned().unwrap_or_default();
    let (c4, c6) = (find("ip"), find("ip6"));
    let name = comment_safe(network);
    let mut s = String::new();
    s.push_str(&format!("add table inet {TABLE} {{ comment \"rcni: masquerade of pod addresses\"; }}\n"));
    for (set, ty, interval, what) in [
        (&n.pods4, "ipv4_addr", false, "pods of"),
        (&n.pods6, "ipv6_addr", false, "pods of"),
        (&n.exempt4, "ipv4_addr", true, "not masqueraded destinations of"),
        (&n.exempt6, "ipv6_addr", true, "not masqueraded destinations of"),
    ] {
        let flags = if interval { " flags interval;" } else { "" };
        s.push_str(&format!("add set inet {TABLE} {set} {{ type {ty};{flags} comment \"{what} network {name}\"; }}\n"));
    }
    s.push_str(&format!(
        "add chain inet {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; \
         comment \"rcni masquerade for network {name}\"; }}\n\
         flush chain inet {TABLE} {chain}\n\
         {r4}{r6}\
         flush set inet {TABLE} {e4}\n\
         flush set inet {TABLE} {e6}\n",
        chain = n.chain,
        e4 = n.exempt4,
        e6 = n.exempt6,
        r4 = if v4 { masq_rule(&n.chain, "ip", &n.pods4, &n.exempt4, "224.0.0.0/4", &c4) } else { String::new() },
        r6 = if v6 { masq_rule(&n.chain, "ip6", &n.pods6, &n.exempt6, "ff00::/8", &c6) } else { String::new() },
    ));
    for (set, list) in [(&n.exempt4, &ex4), (&n.exempt6, &ex6)] {
        if !list.is_empty() {
            let elems: Vec<String> = list.iter().map(|p| p.to_string()).collect();
            s.push_str(&format!("add element inet {TABLE} {set} {{ {} }}\n", elems.join(", ")));
        }
    }
    s
}

fn run_nft(network: &str, script: &str) -> Result<()> {
    let cmd = Command::new("nft").args(["-f", "-"]).stdin(script);
    cmd.run().map(|_| ()).map_err(|e| {
        let hint = if e.is_not_installed() {
            " (install the nftables package, or set ipMasqBackend to \"iptables\")".to_string()
        } else {
            format!("\nscript:\n{script}")
        };
        Error::Command {
            what: format!(
                "masquerade for network {network:?}: writing table inet {TABLE} (chain {})",
                Names::new(network).chain
            ),
            err: e,
            hint,
        }
    })
}

fn nl_err(network: &str, what: &str, err: NetlinkError) -> Error {
    Error::Netlink { what: format!("masquerade for network {network:?}: {what}"), err }
}

fn open(network: &str) -> Result<Nfnl> {
    Nfnl::open().map_err(|e| nl_err(network, "opening the nf_tables netlink socket", e))
}

/// Whether the chain holds exactly the rules of the current (network, exempt) fingerprint.
fn structure_ok(nl: &mut Nfnl, network: &str, exempt: &[IpNetwork]) -> Result<bool> {
    let n = Names::new(network);
    let (ex4, ex6) = normalize_exempt(exempt);
    let expected = rule_comments(network, &ex4, &ex6);
    let rules = nl
        .dump_rules(NFPROTO_INET, TABLE, &n.chain)
        .map_err(|e| nl_err(network, &format!("listing chain inet {TABLE} {}", n.chain), e))?;
    let mut found: Vec<String> = rules.into_iter().filter_map(|r| r.comment).collect();
    found.sort();
    Ok(found == expected)
}

/// Writes the network's structure unless the probe shows it is already there.
fn ensure_structure(nl: &mut Nfnl, network: &str, exempt: &[IpNetwork]) -> Result<()> {
    if structure_ok(nl, network, exempt)? {
        return Ok(());
    }
    let script = structure_script(network, exempt);
    match run_nft(network, &script) {
        Ok(()) => Ok(()),
        // A concurrent ADD of the same network may have raced us; fine if the result is right.
        Err(e) => {
            if structure_ok(nl, network, exempt)? {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
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

/// Adds the pod's addresses with its owner tag; replaces other owners; one transaction.
pub fn setup(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let n = Names::new(network);
    let tag = pod.owner().tag();
    let addrs = pod_addrs(pod);
    let mut nl = open(network)?;
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        ensure_structure(&mut nl, network, exempt)?;
        let gen_id = nl.generation().map_err(|e| nl_err(network, "reading the nf_tables generation", e))?;
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
        let ops = element_ops(&n, &del, &add, &tag);
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(element_err(network, &n, &add, pod, e)),
        }
    }
    Err(element_err(network, &n, &addrs.iter().collect::<Vec<_>>(), pod, last_err.expect("at least one attempt")))
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

/// The reference plugins' nftables backend (v1.6+): table `inet cni_plugins_masquerade`, one rule per
/// pod address in chain `masq_checks`, commented `<h16(network)>-<h16(ifname:containerID)>, net: ...`.
const REF_TABLE: &str = "cni_plugins_masquerade";
const REF_CHAIN: &str = "masq_checks";

fn ref_network_hash(network: &str) -> String {
    sha512_hex(network)[..16].to_string()
}

fn ref_instance_hash(network: &str, owner: &Owner) -> String {
    format!("{}-{}", ref_network_hash(network), &sha512_hex(&format!("{}:{}", owner.ifname, owner.container_id))[..16])
}

/// Deletes the reference nftables rules matching `stale` (a predicate on the rule comment). One rule
/// dump when the reference table does not exist.
fn remove_reference_rules(nl: &mut Nfnl, network: &str, stale: impl Fn(&str) -> bool) -> Result<()> {
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(nl_err(network, "reading the nf_tables generation", e)),
        };
        let rules = match nl.dump_rules(NFPROTO_INET, REF_TABLE, REF_CHAIN) {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => {
                return Err(nl_err(network, &format!("listing chain inet {REF_TABLE} {REF_CHAIN}"), e));
            }
        };
        let ops: Vec<BatchOp<'_>> = rules
            .iter()
            .filter(|r| r.comment.as_deref().is_some_and(&stale))
            .map(|r| BatchOp::DelRule { chain: REF_CHAIN, handle: r.handle })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        match nl.batch(Some(gen_id), NFPROTO_INET, REF_TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => {
                return Err(nl_err(
                    network,
                    &format!("deleting rules of the reference plugins from chain inet {REF_TABLE} {REF_CHAIN}"),
                    e,
                ));
            }
        }
    }
    Err(nl_err(
        network,
        &format!("deleting rules from chain inet {REF_TABLE} {REF_CHAIN}: the ruleset kept changing; retry"),
        last_err.expect("at least one attempt"),
    ))
}

/// Removes the rules the reference plugins' nftables backend made for this pod (if any).
pub fn teardown_reference(network: &str, pod: &PodEntry) -> Result<()> {
    let prefix = ref_instance_hash(network, &pod.owner());
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    remove_reference_rules(&mut nl, network, |c| c.starts_with(&prefix))
}

/// Removes the reference plugins' nftables rules of `network` whose attachment is not valid.
pub fn gc_reference(network: &str, valid: &[Owner]) -> Result<()> {
    let net_prefix = format!("{}-", ref_network_hash(network));
    let valid: Vec<String> = valid.iter().map(|o| ref_instance_hash(network, o)).collect();
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err(network, "opening the nf_tables netlink socket", e)),
    };
    remove_reference_rules(&mut nl, network, |c| {
        c.starts_with(&net_prefix) && !valid.iter().any(|v| c.starts_with(v.as_str()))
    })
}

/// Verifies structure and the pod's elements.
pub fn check(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let n = Names::new(network);
    let tag = pod.owner().tag();
    let mut nl = open(network)?;
    if !structure_ok(&mut nl, network, exempt)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_stable() {
        let n = Names::new("brnet");
        assert_eq!(n.chain.len(), 5 + 16);
        assert!(n.pods4.starts_with("pods4-"));
        assert_eq!(&n.chain[5..], &n.pods6[6..]);
        assert_ne!(Names::new("brnet2").chain, n.chain);
    }

    #[test]
    fn exempt_normalised() {
        let ex: Vec<IpNetwork> = ["10.244.1.5/24", "10.244.0.0/16", "192.168.0.0/24", "fd00::5/64", "10.244.1.0/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let (v4, v6) = normalize_exempt(&ex);
        assert_eq!(v4.iter().map(|n| n.to_string()).collect::<Vec<_>>(), vec!["10.244.0.0/16", "192.168.0.0/24"]);
        assert_eq!(v6.iter().map(|n| n.to_string()).collect::<Vec<_>>(), vec!["fd00::/64"]);
    }

    #[test]
    fn script_mentions_everything() {
        let s = structure_script("my\"net", &["10.244.1.0/24".parse().unwrap()]);
        assert!(s.contains("network mynet"), "{s}");
        assert!(s.contains("add element inet rcni exempt4-"), "{s}");
        assert!(!s.contains("add element inet rcni exempt6-"), "{s}");
        assert!(s.contains("flush chain inet rcni masq-"), "{s}");
        let c = rule_comments("my\"net", &["10.244.1.0/24".parse().unwrap()], &[]);
        assert_eq!(c.len(), 1, "an IPv4-only network has one rule: {c:?}");
        assert!(s.contains(&c[0]) && !s.contains("ip6 saddr"), "{s}");
        let other = rule_comments("my\"net", &["10.244.2.0/24".parse().unwrap()], &[]);
        assert_ne!(other, c);
        assert_eq!(rule_comments("n", &[], &[]).len(), 2, "no exempt prefix: both families");
    }
}
