//! The layout of one network's masquerade in table `inet rcni` (documented in `masq`) as typed nf_tables
//! objects: object names, the exempt prefixes, the rules and the fingerprint comments that identify them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::sha512_hex;
use crate::net::IpFamily;
use crate::net::nft::{AddrField, BatchOp, Chain, CmpOp, DataType, Hook, Rule, Set, Stmt};

pub const TABLE: &str = "rcni";
/// Bumped when the rules change shape; part of the fingerprint, so an upgrade rewrites old chains.
const LAYOUT_VERSION: u32 = 1;

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

    pub(super) fn pods(&self, addr: &IpAddr) -> &str {
        match addr {
            IpAddr::V4(_) => &self.pods4,
            IpAddr::V6(_) => &self.pods6,
        }
    }
}

/// Exempt prefixes normalised: network addresses, per family, sorted, without prefixes contained in
/// another (an interval set rejects overlaps).
pub(super) fn normalize_exempt(exempt: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
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
pub(super) fn rule_comments(network: &str, ex4: &[IpNetwork], ex6: &[IpNetwork]) -> Vec<String> {
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

/// A string safe inside an nft double-quoted comment (how `nft list` shows it), at most 64 characters.
pub(super) fn comment_safe(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '"' | '\\' | '\n' | '\r') && !c.is_control()).take(64).collect()
}

/// The table's comment, written with every structure.
pub(super) const TABLE_COMMENT: &str = "rcni: masquerade of pod addresses";

/// The masquerade rule of one family: `ip saddr @<sources> ip daddr != @<exempt> ip daddr != 224.0.0.0/4
/// masquerade` (`ip6 ... ff00::/8`).
pub(super) fn masq_rule(chain: &str, fam: IpFamily, sources: &str, exempt: &str, comment: &str) -> Rule {
    let multicast: IpNetwork = fam.multicast().parse().expect("a valid prefix");
    Rule::new(
        chain,
        vec![
            Stmt::addr_in_set(fam, AddrField::Saddr, sources, false),
            Stmt::addr_in_set(fam, AddrField::Daddr, exempt, true),
            Stmt::addr(AddrField::Daddr, CmpOp::Neq, multicast),
            Stmt::Masquerade,
        ],
    )
    .comment(comment)
}

/// The structure of one network, and the rule comments that identify it.
pub struct Structure {
    pub(super) names: Names,
    sets: Vec<Set>,
    chain: Chain,
    rules: Vec<Rule>,
    exempt4: Vec<IpNetwork>,
    exempt6: Vec<IpNetwork>,
    /// The rule comments (fingerprints) of an intact structure, sorted.
    pub(super) comments: Vec<String>,
}

impl Structure {
    pub fn new(network: &str, exempt: &[IpNetwork]) -> Structure {
        let names = Names::new(network);
        let (exempt4, exempt6) = normalize_exempt(exempt);
        let (v4, v6) = families(&exempt4, &exempt6);
        let comments = rule_comments(network, &exempt4, &exempt6);
        let find = |fam: &str| comments.iter().find(|c| c.contains(&format!(" {fam} "))).cloned().unwrap_or_default();
        let name = comment_safe(network);
        let pods = format!("pods of network {name}");
        let exempt_of = format!("not masqueraded destinations of network {name}");
        let sets = vec![
            Set::new(&names.pods4, vec![DataType::Ipv4Addr]).comment(&pods),
            Set::new(&names.pods6, vec![DataType::Ipv6Addr]).comment(&pods),
            Set::new(&names.exempt4, vec![DataType::Ipv4Addr]).interval().comment(&exempt_of),
            Set::new(&names.exempt6, vec![DataType::Ipv6Addr]).interval().comment(&exempt_of),
        ];
        let chain =
            Chain::base(&names.chain, Hook::nat_postrouting()).comment(&format!("rcni masquerade for network {name}"));
        let mut rules = Vec::new();
        if v4 {
            rules.push(masq_rule(&names.chain, IpFamily::V4, &names.pods4, &names.exempt4, &find("ip")));
        }
        if v6 {
            rules.push(masq_rule(&names.chain, IpFamily::V6, &names.pods6, &names.exempt6, &find("ip6")));
        }
        Structure { names, sets, chain, rules, exempt4, exempt6, comments }
    }

    /// The batch that (re)writes it: idempotent, O(1) in the number of pods (the pod sets are kept).
    pub fn ops(&self) -> Vec<BatchOp<'_>> {
        let n = &self.names;
        let mut ops = vec![BatchOp::AddTable { comment: Some(TABLE_COMMENT) }];
        ops.extend(self.sets.iter().map(BatchOp::AddSet));
        ops.push(BatchOp::AddChain(&self.chain));
        ops.push(BatchOp::FlushChain { chain: &n.chain });
        ops.extend(self.rules.iter().map(BatchOp::AddRule));
        for (set, list) in [(&n.exempt4, &self.exempt4), (&n.exempt6, &self.exempt6)] {
            ops.push(BatchOp::FlushSet { set });
            if !list.is_empty() {
                ops.push(BatchOp::AddPrefixes { set, prefixes: list.clone() });
            }
        }
        ops
    }
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
    fn structure_has_everything() {
        let s = Structure::new("my\"net", &["10.244.1.0/24".parse().unwrap()]);
        assert_eq!(s.sets[0].comment.as_deref(), Some("pods of network mynet"));
        let ops = s.ops();
        let prefixes: Vec<(&str, &Vec<IpNetwork>)> = ops
            .iter()
            .filter_map(|o| if let BatchOp::AddPrefixes { set, prefixes } = o { Some((*set, prefixes)) } else { None })
            .collect();
        assert_eq!(prefixes, vec![(s.names.exempt4.as_str(), &vec!["10.244.1.0/24".parse().unwrap()])]);
        assert!(ops.iter().any(|o| matches!(o, BatchOp::FlushChain { chain } if *chain == s.names.chain)));
        let c = rule_comments("my\"net", &["10.244.1.0/24".parse().unwrap()], &[]);
        assert_eq!(c.len(), 1, "an IPv4-only network has one rule: {c:?}");
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.rules[0].comment.as_ref(), Some(&c[0]));
        let shown: Vec<String> = s.rules[0].stmts.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            shown.join(" "),
            format!("ip saddr @{} ip daddr != @{} ip daddr != 224.0.0.0/4 masquerade", s.names.pods4, s.names.exempt4)
        );
        let other = rule_comments("my\"net", &["10.244.2.0/24".parse().unwrap()], &[]);
        assert_ne!(other, c);
        assert_eq!(rule_comments("n", &[], &[]).len(), 2, "no exempt prefix: both families");
        assert_eq!(Structure::new("n", &[]).rules.len(), 2);
    }
}
