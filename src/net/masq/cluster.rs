//! Masquerade of a whole cluster network, for the overlay agent's `--ip-masq` (flanneld's semantics):
//! traffic from the cluster network to a destination outside it (and not multicast) leaves with the
//! node's address; traffic between pods, also across nodes, keeps its addresses. One rule per address
//! family and one interval element per prefix, whatever the number of pods or nodes:
//!
//! ```text
//! table inet rcni {
//!     set net4-<h> { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 } }
//!     chain masqnet-<h> {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @net4-<h> ip daddr != @net4-<h> ip daddr != 224.0.0.0/4 masquerade comment "rcni-masqnet v1 ip <fp>"
//!     }
//! }
//! ```
//!
//! `<h>` hashes the owner name as in the per-pod layout; `<fp>` fingerprints the owner and the prefixes,
//! so a changed network is rewritten. The same set is both the source match and the exempt destinations:
//! that is exactly "from the cluster network, leaving it". flanneld's extra rules are not needed here:
//! its RETURNs for pod subnet ↔ cluster network are covered by the exempt destinations, and traffic from
//! outside the cluster to pods on other nodes (NodePort) is masqueraded by kube-proxy itself.
//!
//! The structure is written over nf_tables netlink from typed objects, in one batch checked against the
//! generation read before a probe (rule comments and set elements) found it missing or different; the
//! probe alone is what a periodic `ensure` costs.

use ipnetwork::IpNetwork;

use super::layout::{TABLE, TABLE_COMMENT, comment_safe, masq_rule};
use super::{Error, Result, sha512_hex};
use crate::net::IpFamily;
use crate::net::nft::{BatchOp, Chain, DataType, Hook, NFPROTO_INET, NetlinkError, Nfnl, Set, absent, retryable};

/// How often a write is planned again when the ruleset changed under it.
const MAX_ATTEMPTS: usize = 30;

const LAYOUT_VERSION: u32 = 1;

/// The nft object names of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub chain: String,
    pub net4: String,
    pub net6: String,
}

impl Names {
    pub fn new(owner: &str) -> Names {
        let h = &sha512_hex(owner)[..16];
        Names { chain: format!("masqnet-{h}"), net4: format!("net4-{h}"), net6: format!("net6-{h}") }
    }
}

fn err(owner: &str, what: &str, e: NetlinkError) -> Error {
    Error::Netlink { what: format!("cluster masquerade {owner:?}: {what}"), err: e }
}

/// The prefixes as network addresses, sorted, without duplicates, split per family.
fn normalize(networks: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let mut all: Vec<IpNetwork> =
        networks.iter().map(|n| IpNetwork::new(n.network(), n.prefix()).expect("prefix of a valid network")).collect();
    all.sort();
    all.dedup();
    all.into_iter().partition(|n| n.is_ipv4())
}

fn rule_comment(owner: &str, fam: &str, nets: &[IpNetwork]) -> String {
    let mut input = format!("v{LAYOUT_VERSION}\n{owner}\n{fam}\n");
    for n in nets {
        input.push_str(&format!("{n}\n"));
    }
    format!("rcni-masqnet v{LAYOUT_VERSION} {fam} {}", &sha512_hex(&input)[..16])
}

/// The owner's chain, and per family with prefixes its set and rule.
struct Structure {
    names: Names,
    chain: Chain,
    /// (set, its prefixes, the family's rule)
    families: Vec<(Set, Vec<IpNetwork>, crate::net::nft::Rule)>,
}

impl Structure {
    fn new(owner: &str, networks: &[IpNetwork]) -> Structure {
        let names = Names::new(owner);
        let (v4, v6) = normalize(networks);
        let name = comment_safe(owner);
        let chain = Chain::base(&names.chain, Hook::nat_postrouting())
            .comment(&format!("rcni masquerade of cluster network {name}"));
        let mut families = Vec::new();
        for (set, ty, fam, word, nets) in [
            (&names.net4, DataType::Ipv4Addr, IpFamily::V4, "ip", v4),
            (&names.net6, DataType::Ipv6Addr, IpFamily::V6, "ip6", v6),
        ] {
            if nets.is_empty() {
                continue;
            }
            let rule = masq_rule(&names.chain, fam, set, set, &rule_comment(owner, word, &nets));
            families.push((Set::new(set, vec![ty]).interval().comment(&format!("cluster network {name}")), nets, rule));
        }
        Structure { names, chain, families }
    }

    /// The batch that (re)writes it; `stale` are sets of families the network no longer has (removed).
    fn ops<'a>(&'a self, stale: &[&'a str]) -> Vec<BatchOp<'a>> {
        let mut ops = vec![
            BatchOp::AddTable { comment: Some(TABLE_COMMENT) },
            BatchOp::AddChain(&self.chain),
            BatchOp::FlushChain { chain: &self.names.chain },
        ];
        for (set, nets, rule) in &self.families {
            ops.push(BatchOp::AddSet(set));
            ops.push(BatchOp::FlushSet { set: &set.name });
            ops.push(BatchOp::AddPrefixes { set: &set.name, prefixes: nets.clone() });
            ops.push(BatchOp::AddRule(rule));
        }
        ops.extend(stale.iter().map(|set| BatchOp::DelSet { set }));
        ops
    }
}

fn key_of(n: &IpNetwork) -> Vec<u8> {
    match n.network() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether the chain holds exactly the rules for `networks` and each set starts an interval at each
/// prefix (an interval set lists a start and an end element per prefix).
fn in_place(nl: &mut Nfnl, owner: &str, networks: &[IpNetwork]) -> Result<bool> {
    let n = Names::new(owner);
    let (v4, v6) = normalize(networks);
    let mut want: Vec<String> = Vec::new();
    for (fam, nets) in [("ip", &v4), ("ip6", &v6)] {
        if !nets.is_empty() {
            want.push(rule_comment(owner, fam, nets));
        }
    }
    want.sort();
    let rules = nl
        .dump_rules(NFPROTO_INET, TABLE, &n.chain)
        .map_err(|e| err(owner, &format!("listing chain inet {TABLE} {}", n.chain), e))?;
    let mut found: Vec<String> = rules.into_iter().filter_map(|r| r.comment).collect();
    found.sort();
    if found != want {
        return Ok(false);
    }
    for (set, nets) in [(&n.net4, &v4), (&n.net6, &v6)] {
        if nets.is_empty() {
            continue;
        }
        let keys: Vec<Vec<u8>> = match nl.dump_elems(NFPROTO_INET, TABLE, set) {
            Ok(Some(elems)) => elems.into_iter().map(|e| e.key).collect(),
            Ok(None) => return Ok(false),
            Err(e) => return Err(err(owner, &format!("listing set inet {TABLE} {set}"), e)),
        };
        if !nets.iter().all(|p| keys.contains(&key_of(p))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies `plan`'s batch checked against a fresh generation, planning again while the ruleset changes.
fn write<'a>(
    nl: &mut Nfnl,
    owner: &str,
    what: &str,
    mut plan: impl FnMut(&mut Nfnl) -> Result<Option<Vec<BatchOp<'a>>>>,
) -> Result<bool> {
    let mut last_err = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = nl.generation().map_err(|e| err(owner, "reading the nf_tables generation", e))?;
        let Some(ops) = plan(nl)? else {
            return Ok(false);
        };
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(true),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(err(owner, what, e)),
        }
    }
    Err(err(owner, &format!("{what}: the ruleset kept changing; retry"), last_err.expect("at least one attempt")))
}

/// Makes traffic from `networks` to anything outside them leave with the node's address. Idempotent:
/// returns whether anything had to be (re)written.
pub fn ensure(owner: &str, networks: &[IpNetwork]) -> Result<bool> {
    if owner.is_empty() || networks.is_empty() {
        return Err(Error::Invalid("cluster masquerade: the owner name and at least one network are needed".into()));
    }
    let mut nl = Nfnl::open().map_err(|e| err(owner, "opening the nf_tables netlink socket", e))?;
    let s = Structure::new(owner, networks);
    let what = format!("writing chain inet {TABLE} {}", s.names.chain);
    write(&mut nl, owner, &what, |nl| {
        if in_place(nl, owner, networks)? {
            return Ok(None);
        }
        // Sets of a family the network no longer has are removed with the rewrite.
        let mut stale = Vec::new();
        for set in [&s.names.net4, &s.names.net6] {
            if !s.families.iter().any(|(have, _, _)| &have.name == set) && set_exists(nl, owner, set)? {
                stale.push(set.as_str());
            }
        }
        Ok(Some(s.ops(&stale)))
    })
}

fn set_exists(nl: &mut Nfnl, owner: &str, set: &str) -> Result<bool> {
    match nl.dump_elems(NFPROTO_INET, TABLE, set) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if absent(&e) => Ok(false),
        Err(e) => Err(err(owner, &format!("listing set inet {TABLE} {set}"), e)),
    }
}

/// Removes the owner's chain and sets; returns whether there was anything to remove.
pub fn remove(owner: &str) -> Result<bool> {
    let n = Names::new(owner);
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(err(owner, "opening the nf_tables netlink socket", e)),
    };
    let what = format!("removing chain inet {TABLE} {} and its sets", n.chain);
    let r = write(&mut nl, owner, &what, |nl| {
        let mut ops = Vec::new();
        match nl.chain_exists(NFPROTO_INET, TABLE, &n.chain) {
            Ok(true) => ops.push(BatchOp::DelChain { chain: &n.chain }),
            Ok(false) => {}
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(err(owner, &format!("looking up chain inet {TABLE} {}", n.chain), e)),
        }
        for set in [&n.net4, &n.net6] {
            if set_exists(nl, owner, set)? {
                ops.push(BatchOp::DelSet { set });
            }
        }
        Ok((!ops.is_empty()).then_some(ops))
    });
    match r {
        Err(Error::Netlink { err: e, .. }) if absent(&e) => Ok(false),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_and_one_element_per_family() {
        let s = Structure::new("rcni-overlay /coreos.com/network", &["10.244.0.0/16".parse().unwrap()]);
        let n = Names::new("rcni-overlay /coreos.com/network");
        assert_eq!(s.families.len(), 1, "no IPv6 rule for an IPv4 network");
        let (set, nets, rule) = &s.families[0];
        assert_eq!((set.name.as_str(), set.interval), (n.net4.as_str(), true));
        assert_eq!(nets, &vec!["10.244.0.0/16".parse::<IpNetwork>().unwrap()]);
        let shown: Vec<String> = rule.stmts.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            shown.join(" "),
            format!("ip saddr @{0} ip daddr != @{0} ip daddr != 224.0.0.0/4 masquerade", n.net4)
        );
        let ops = s.ops(&[&n.net6]);
        assert_eq!(ops.iter().filter(|o| matches!(o, BatchOp::AddRule(_))).count(), 1);
        assert!(matches!(ops.last(), Some(BatchOp::DelSet { set }) if *set == n.net6));
        assert_ne!(
            rule_comment("o", "ip", &["10.244.0.0/16".parse().unwrap()]),
            rule_comment("o", "ip", &["10.245.0.0/16".parse().unwrap()]),
            "another network is another fingerprint"
        );
        let (v4, v6) = normalize(&["10.244.3.4/16".parse().unwrap(), "fd00::1/64".parse().unwrap()]);
        assert_eq!((v4[0].to_string(), v6[0].to_string()), ("10.244.0.0/16".into(), "fd00::/64".into()));
    }
}
