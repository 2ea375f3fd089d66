//! The spoof-check objects of table `bridge nat`, read over nf_tables netlink, and their grouping by
//! attachment.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::names::{BASE_CHAIN, CHAIN_PREFIX, COMMENT_PREFIX, Names, TABLE};
use super::{Error, Result};
use crate::net::Mac;
use crate::net::nft::{CmpOp, Hook, IfDir, NFPROTO_BRIDGE, NetlinkError, Nfnl, RuleInfo, Stmt, absent};

/// A rule of the table.
pub type Rule = RuleInfo;

/// Table `bridge nat` as far as spoof checks care.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    /// Chain name -> hook (None for a regular chain).
    pub chains: BTreeMap<String, Option<Hook>>,
    pub rules: Vec<Rule>,
}

impl Ruleset {
    pub fn rules_of(&self, chain: &str) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.chain == chain).collect()
    }
}

pub(super) fn nl_err(label: &str, what: &str, err: NetlinkError) -> Error {
    Error::Netlink { what: format!("{label}: {what}"), err }
}

/// The whole table; `None` when it does not exist (or nf_tables is not available).
pub(super) fn read_table(nl: &mut Nfnl, label: &str) -> Result<Option<Ruleset>> {
    let chains = match nl.dump_chains(NFPROTO_BRIDGE, TABLE) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(nl_err(label, &format!("listing the chains of table bridge {TABLE}"), e)),
    };
    let rules = nl
        .dump_table_rules(NFPROTO_BRIDGE, TABLE)
        .map_err(|e| nl_err(label, &format!("listing the rules of table bridge {TABLE}"), e))?;
    Ok(Some(Ruleset { chains: chains.into_iter().map(|c| (c.name, c.hook)).collect(), rules }))
}

/// The rules of [`BASE_CHAIN`] (empty when it or the table does not exist).
pub(super) fn read_base_chain(nl: &mut Nfnl, label: &str) -> Result<Vec<Rule>> {
    match nl.dump_rules(NFPROTO_BRIDGE, TABLE, BASE_CHAIN) {
        Ok(r) => Ok(r),
        Err(e) if absent(&e) => Ok(Vec::new()),
        Err(e) => Err(nl_err(label, &format!("listing chain bridge {TABLE} {BASE_CHAIN}"), e)),
    }
}

/// The statements without counters.
pub fn core(r: &Rule) -> Vec<&Stmt> {
    r.stmts.iter().filter(|s| **s != Stmt::Counter).collect()
}

/// The rule as `nft list` would print it, for messages.
pub fn text(r: &Rule) -> String {
    let mut s: Vec<String> = r.stmts.iter().map(Stmt::to_string).collect();
    if let Some(c) = &r.comment {
        s.push(format!("comment {c:?}"));
    }
    s.join(" ")
}

fn targets(r: &Rule) -> impl Iterator<Item = &str> {
    r.stmts.iter().filter_map(Stmt::target)
}

/// Rules of `PREROUTING` that belong to the attachment: its comment, or a jump/goto to its chain.
pub fn attachment_rules<'a>(base: impl IntoIterator<Item = &'a Rule>, n: &Names) -> Vec<&'a Rule> {
    base.into_iter()
        .filter(|r| r.chain == BASE_CHAIN)
        .filter(|r| r.comment.as_deref() == Some(n.comment.as_str()) || targets(r).any(|t| t == n.iface_chain))
        .collect()
}

/// The jump rule setup writes (owner tag aside).
pub fn is_expected_jump(r: &Rule, n: &Names, host_veth: &str) -> bool {
    r.comment.as_deref() == Some(n.comment.as_str())
        && core(r) == [&Stmt::iifname(host_veth), &Stmt::Jump(n.iface_chain.clone())]
}

/// One attachment's spoof check as found in the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// `<containerID>-<ifname>` (the names do not say where the ID ends).
    pub ref_id: String,
    /// The owner tag of its `PREROUTING` rule: the network that made it. `None` for rules of the
    /// reference plugins and of rcni before tags.
    pub network: Option<String>,
    /// The `iifname` of its `PREROUTING` jump, if there is one.
    pub host_veth: Option<String>,
    /// The MAC its chain lets pass, if readable.
    pub mac: Option<Mac>,
    pub(super) chains: BTreeSet<String>,
    pub(super) rule_handles: BTreeSet<u64>,
}

/// Groups the objects of the table that follow our naming (chains `cni-br-iface-*`, `PREROUTING`
/// rules commented `macspoofchk-*` or jumping to such a chain) by attachment.
pub fn attachments(rs: &Ruleset) -> Vec<Attachment> {
    fn entry<'a>(m: &'a mut BTreeMap<String, Attachment>, r: &str) -> &'a mut Attachment {
        m.entry(r.to_string()).or_insert_with(|| Attachment {
            ref_id: r.to_string(),
            network: None,
            host_veth: None,
            mac: None,
            chains: BTreeSet::new(),
            rule_handles: BTreeSet::new(),
        })
    }
    let mut by_ref: BTreeMap<String, Attachment> = BTreeMap::new();
    // PREROUTING rules give ref IDs (from the jump target, else the comment), veths and owners.
    for r in rs.rules_of(BASE_CHAIN) {
        let from_target = targets(r).find_map(|t| t.strip_prefix(CHAIN_PREFIX));
        let from_comment = r.comment.as_deref().and_then(|c| c.strip_prefix(COMMENT_PREFIX));
        let Some(ref_id) = from_target.or(from_comment) else { continue };
        let a = entry(&mut by_ref, ref_id);
        a.rule_handles.insert(r.handle);
        if a.network.is_none() {
            a.network = r.owner.clone();
        }
        if a.host_veth.is_none() {
            a.host_veth = r.stmts.iter().find_map(|s| match s {
                Stmt::IfName { dir: IfDir::In, op: CmpOp::Eq, name } => Some(name.clone()),
                _ => None,
            });
        }
    }
    // Chains: `<prefix><ref>` and `<prefix><ref>-mac`. A `-mac` chain belongs to the ref without the
    // suffix if that one is known (jump or iface chain), else it is an iface chain of its own.
    let ours: Vec<&String> = rs.chains.keys().filter(|c| c.starts_with(CHAIN_PREFIX)).collect();
    let iface_names: HashSet<&str> = ours.iter().map(|c| c.as_str()).collect();
    for c in &ours {
        let rest = &c[CHAIN_PREFIX.len()..];
        let ref_id = match rest.strip_suffix("-mac") {
            Some(base)
                if by_ref.contains_key(base) || iface_names.contains(format!("{CHAIN_PREFIX}{base}").as_str()) =>
            {
                base
            }
            _ => rest,
        };
        let a = entry(&mut by_ref, ref_id);
        a.chains.insert(c.to_string());
        if c.ends_with("-mac") && ref_id != rest {
            a.mac = rs.rules_of(c).into_iter().flat_map(|r| r.stmts.iter()).find_map(|s| match s {
                Stmt::EtherSaddr(m) => m.parse().ok(),
                _ => None,
            });
        }
    }
    by_ref.into_values().collect()
}

/// Chains of `stale` that a rule staying in the table still jumps to (someone else's rule): those
/// attachments are left alone rather than failing the whole collection.
pub(super) fn referenced_from_outside<'a>(rs: &'a Ruleset, stale: &[Attachment]) -> HashSet<&'a str> {
    let removed_chains: HashSet<&str> = stale.iter().flat_map(|a| a.chains.iter().map(String::as_str)).collect();
    let stale_handles: HashSet<u64> = stale.iter().flat_map(|a| a.rule_handles.iter().copied()).collect();
    rs.rules
        .iter()
        .filter(|r| !removed_chains.contains(r.chain.as_str()))
        .filter(|r| !(r.chain == BASE_CHAIN && stale_handles.contains(&r.handle)))
        .flat_map(targets)
        .filter(|t| removed_chains.contains(t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(chain: &str, handle: u64, comment: Option<&str>, owner: Option<&str>, stmts: Vec<Stmt>) -> Rule {
        Rule {
            chain: chain.into(),
            handle,
            comment: comment.map(str::to_string),
            owner: owner.map(str::to_string),
            stmts,
        }
    }

    /// Table `bridge nat` after a reference ADD (bridge 1.1.1), an rcni ADD, a foreign rule and a lone chain.
    fn listing() -> Ruleset {
        let c = "macspoofchk-ctr-abc123-eth0";
        let mut rs = Ruleset::default();
        for name in ["PREROUTING", "cni-br-iface-ctr-abc123-eth0", "cni-br-iface-ctr-abc123-eth0-mac"] {
            rs.chains.insert(name.into(), None);
        }
        rs.chains.insert("cni-br-iface-orphan-mac".into(), None);
        rs.chains.insert("cni-br-iface-c2-eth0".into(), None);
        rs.rules = vec![
            rule(
                "PREROUTING",
                4,
                Some(c),
                None,
                vec![Stmt::iifname("vethc5b5470d"), Stmt::Jump("cni-br-iface-ctr-abc123-eth0".into())],
            ),
            rule("PREROUTING", 8, None, None, vec![Stmt::Counter, Stmt::Accept]),
            rule(
                "PREROUTING",
                9,
                Some("macspoofchk-c2-eth0"),
                Some("netb"),
                vec![Stmt::iifname("veth2"), Stmt::Jump("cni-br-iface-c2-eth0".into())],
            ),
            rule(
                "cni-br-iface-ctr-abc123-eth0",
                5,
                Some(c),
                None,
                vec![Stmt::Jump("cni-br-iface-ctr-abc123-eth0-mac".into())],
            ),
            rule(
                "cni-br-iface-ctr-abc123-eth0-mac",
                6,
                Some(c),
                None,
                vec![Stmt::EtherSaddr("b2:f2:df:50:60:44".into()), Stmt::Return],
            ),
            rule("cni-br-iface-ctr-abc123-eth0-mac", 7, Some(c), None, vec![Stmt::Drop]),
        ];
        rs
    }

    #[test]
    fn attachment_rules_and_text() {
        let rs = listing();
        let n = Names::new("ctr-abc123", "eth0");
        let mine = attachment_rules(&rs.rules, &n);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].handle, 4);
        assert!(is_expected_jump(mine[0], &n, "vethc5b5470d"));
        assert!(!is_expected_jump(mine[0], &n, "vethother"));
        assert_eq!(
            text(mine[0]),
            r#"iifname "vethc5b5470d" jump cni-br-iface-ctr-abc123-eth0 comment "macspoofchk-ctr-abc123-eth0""#
        );
    }

    #[test]
    fn attachments_grouping() {
        let a = attachments(&listing());
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0].ref_id, "c2-eth0");
        assert_eq!(a[0].network.as_deref(), Some("netb"));
        assert_eq!(a[1].ref_id, "ctr-abc123-eth0");
        assert_eq!(a[1].network, None);
        assert_eq!(a[1].host_veth.as_deref(), Some("vethc5b5470d"));
        assert_eq!(a[1].mac, Some("b2:f2:df:50:60:44".parse().unwrap()));
        assert_eq!(a[1].rule_handles, BTreeSet::from([4]));
        assert_eq!(a[1].chains.len(), 2);
        // a lone `-mac` chain without its iface chain is an attachment of its own name
        assert_eq!(a[2].ref_id, "orphan-mac");
        assert_eq!(a[2].host_veth, None);
        assert_eq!(a[2].chains, BTreeSet::from(["cni-br-iface-orphan-mac".to_string()]));
    }
}
