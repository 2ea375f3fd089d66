//! The native nftables backend (`backend: "nftables"`, rcni's own): the restrictive part of the
//! firewall in rcni's table `inet rcni`, over the nf_tables layer (`crate::net::nft`).
//!
//! ```text
//! chain firewall-forward { type filter hook forward priority filter; policy accept;
//!     jump firewall-isolation                       (structure)
//!     jump CNI-ADMIN                                (structure, one per admin chain name in use)
//! }
//! chain CNI-ADMIN { }                               (the operator's rules; never written or removed here)
//! chain firewall-isolation {                        (per network with same-bridge / isolated, owner = network)
//!     iifname "br" oifname "br" return              (same-bridge only: the bridge's own traffic passes)
//!     iifname "br" jump firewall-isolation-2
//! }
//! chain firewall-isolation-2 {
//!     oifname "br" drop                             (owner = network)
//! }
//! ```
//! The reference's isolation semantics (`CNI-ISOLATION-STAGE-1/2`): traffic from an isolating bridge to
//! any isolating bridge is dropped, except within a `same-bridge` bridge; the isolation comes before the
//! admin chain, as the reference's stage-1 jump comes before CNI-FORWARD.
//!
//! There are no accept rules: an nftables `accept` ends only its own base chain, so in a node whose
//! other forward chains accept, accepting is already what happens, and in a node with a DROP policy
//! (iptables' FORWARD, or another table's forward base chain) nothing in this table could lift it.
//! [`drop_policies`] finds those so ADD can refuse instead of promising traffic it cannot deliver.
//!
//! Rules per network carry the network as their owner tag; [`remove_network`] deletes exactly those,
//! when the ledger says the network's last attachment on the node is gone.

use super::{Error, Result};
use crate::net::command::Command;
use crate::net::nft::{
    BatchOp, Chain, Hook, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NetlinkError, Nfnl, Rule, RuleInfo, Stmt, absent,
    hooks, retryable,
};

pub const TABLE: &str = "rcni";
pub const BASE_CHAIN: &str = "firewall-forward";
pub const ISOLATION: &str = "firewall-isolation";
pub const ISOLATION2: &str = "firewall-isolation-2";
/// Owner tag of the base chain's jumps (shared by every network).
const STRUCTURE_OWNER: &str = "rcni-firewall";
const MAX_ATTEMPTS: usize = 30;

/// What one network asks of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub network: String,
    pub admin_chain: String,
    /// The bridge and whether it is `isolated` (else `same-bridge`); `None` for `open`.
    pub isolation: Option<super::iptables::Isolation>,
}

fn nl_err(what: &str, e: NetlinkError) -> Error {
    Error::Nft(format!("firewall (nftables backend): {what} in table inet {TABLE}: {e}"))
}

fn base_hook() -> Hook {
    Hook::accept("filter", hooks::FORWARD, hooks::FILTER)
}

/// The network's own rules (chain, statements), in order.
fn network_rules(iso: &super::iptables::Isolation) -> Vec<(&'static str, Vec<Stmt>)> {
    let br = &iso.bridge;
    let mut v = Vec::new();
    if !iso.isolated {
        v.push((ISOLATION, vec![Stmt::iifname(br), Stmt::oifname(br), Stmt::Return]));
    }
    v.push((ISOLATION, vec![Stmt::iifname(br), Stmt::Jump(ISOLATION2.into())]));
    v.push((ISOLATION2, vec![Stmt::oifname(br), Stmt::Drop]));
    v
}

fn structure_rules(admin: &str) -> Vec<Vec<Stmt>> {
    vec![vec![Stmt::Jump(ISOLATION.into())], vec![Stmt::Jump(admin.into())]]
}

/// Statements compared without counters (an operator may add them).
fn same(a: &[Stmt], b: &[Stmt]) -> bool {
    let strip = |s: &[Stmt]| s.iter().filter(|x| **x != Stmt::Counter).cloned().collect::<Vec<_>>();
    strip(a) == strip(b)
}

fn has(rules: &[RuleInfo], chain: &str, stmts: &[Stmt], owner: Option<&str>) -> bool {
    rules
        .iter()
        .any(|r| r.chain == chain && same(&r.stmts, stmts) && owner.is_none_or(|o| r.owner.as_deref() == Some(o)))
}

fn comment_for(network: &str) -> String {
    let mut c: String = format!("rcni firewall: network {network}").chars().filter(|c| *c != '"').collect();
    c.truncate(120);
    c
}

/// Creates the structure and the network's rules that are missing, in one generation-checked batch.
pub fn add(cfg: &Config) -> Result<()> {
    let mut nl = Nfnl::open().map_err(|e| nl_err("opening nf_tables netlink", e))?;
    let mut last = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = nl.generation().map_err(|e| nl_err("reading the generation", e))?;
        let rules = nl.dump_table_rules(NFPROTO_INET, TABLE).map_err(|e| nl_err("listing the rules", e))?;
        let chains = [
            Chain::base(BASE_CHAIN, base_hook()).comment("rcni firewall: isolation and admin chain of pod traffic"),
            Chain::regular(ISOLATION),
            Chain::regular(ISOLATION2),
            Chain::regular(&cfg.admin_chain),
        ];
        let mut new_rules = Vec::new();
        for stmts in structure_rules(&cfg.admin_chain) {
            if !has(&rules, BASE_CHAIN, &stmts, None) {
                new_rules.push(Rule::new(BASE_CHAIN, stmts).owner(STRUCTURE_OWNER));
            }
        }
        if let Some(iso) = &cfg.isolation {
            let comment = comment_for(&cfg.network);
            for (chain, stmts) in network_rules(iso) {
                if !has(&rules, chain, &stmts, Some(&cfg.network)) {
                    new_rules.push(Rule::new(chain, stmts).comment(&comment).owner(&cfg.network));
                }
            }
        }
        let mut ops = vec![BatchOp::AddTable { comment: None }];
        ops.extend(chains.iter().map(BatchOp::AddChain));
        ops.extend(new_rules.iter().map(BatchOp::AddRule));
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last = Some(e),
            Err(e) => return Err(nl_err(&format!("adding the rules of network {:?}", cfg.network), e)),
        }
    }
    Err(nl_err("adding rules (the ruleset kept changing; retry)", last.expect("at least one attempt")))
}

/// Deletes the rules owned by `network` (structure and the admin chain stay). Nothing to do without
/// nf_tables or the table.
pub fn remove_network(network: &str) -> Result<()> {
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(nl_err("opening nf_tables netlink", e)),
    };
    let mut last = None;
    for _ in 0..MAX_ATTEMPTS {
        let gen_id = match nl.generation() {
            Ok(g) => g,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(nl_err("reading the generation", e)),
        };
        let rules = match nl.dump_table_rules(NFPROTO_INET, TABLE) {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(nl_err("listing the rules", e)),
        };
        let ops: Vec<BatchOp<'_>> = rules
            .iter()
            .filter(|r| (r.chain == ISOLATION || r.chain == ISOLATION2) && r.owner.as_deref() == Some(network))
            .map(|r| BatchOp::DelRule { chain: &r.chain, handle: r.handle })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        match nl.batch(Some(gen_id), NFPROTO_INET, TABLE, &ops) {
            Ok(()) => return Ok(()),
            Err(e) if retryable(&e) => last = Some(e),
            Err(e) => return Err(nl_err(&format!("removing the rules of network {network:?}"), e)),
        }
    }
    Err(nl_err("removing rules (the ruleset kept changing; retry)", last.expect("at least one attempt")))
}

/// Verifies the base chain (hook, policy accept), its jumps and the network's rules.
pub fn check(cfg: &Config) -> Result<()> {
    let mut nl = Nfnl::open().map_err(|e| nl_err("opening nf_tables netlink", e))?;
    let chains = nl.dump_chains(NFPROTO_INET, TABLE).map_err(|e| nl_err("listing the chains", e))?;
    let Some(chains) = chains else {
        return Err(Error::Check(format!("firewall: table inet {TABLE} is missing; re-create the attachment")));
    };
    let base = chains.iter().find(|c| c.name == BASE_CHAIN);
    match base.and_then(|c| c.hook.as_ref()) {
        Some(h) if h.hooknum == hooks::FORWARD && h.policy == libc::NF_ACCEPT as u32 => {}
        _ => {
            return Err(Error::Check(format!(
                "firewall: chain inet {TABLE} {BASE_CHAIN} is missing or not a forward base chain with policy accept"
            )));
        }
    }
    let rules = nl.dump_table_rules(NFPROTO_INET, TABLE).map_err(|e| nl_err("listing the rules", e))?;
    let mut want: Vec<(&str, Vec<Stmt>, Option<&str>)> =
        structure_rules(&cfg.admin_chain).into_iter().map(|s| (BASE_CHAIN, s, None)).collect();
    if let Some(iso) = &cfg.isolation {
        want.extend(network_rules(iso).into_iter().map(|(c, s)| (c, s, Some(cfg.network.as_str()))));
    }
    for (chain, stmts, owner) in want {
        if !has(&rules, chain, &stmts, owner) {
            let text = stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
            return Err(Error::Check(format!(
                "firewall: rule `{text}` is missing from chain inet {TABLE} {chain}; re-create the attachment"
            )));
        }
    }
    Ok(())
}

/// The forward DROP policies of this node that an nftables accept in table `inet rcni` cannot lift:
/// iptables' / ip6tables' FORWARD policy (legacy or nft; `iptables-save`) and every other nftables base
/// chain of a routed family (ip, ip6, inet) on the forward hook with policy drop, listed over netlink.
/// Bridge-family chains see only switched frames, which no chain of table `inet rcni` sees. Each entry
/// says where.
pub fn drop_policies() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = Command::new(tool).args(["-t", "filter"]).run();
        if let Ok(o) = out
            && o.stdout.lines().any(|l| l.starts_with(":FORWARD DROP"))
        {
            found.push(format!("{} FORWARD policy DROP ({tool})", tool.trim_end_matches("-save")));
        }
    }
    let listing =
        |what: &str, e: NetlinkError| Error::Nft(format!("firewall: listing the nftables chains ({what}): {e}"));
    let mut nl = Nfnl::open().map_err(|e| listing("opening the netlink socket", e))?;
    for (fam, label) in [(NFPROTO_IPV4, "ip"), (NFPROTO_IPV6, "ip6"), (NFPROTO_INET, "inet")] {
        let chains = match nl.dump_all_chains(fam) {
            Ok(c) => c,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(listing(&format!("family {label}"), e)),
        };
        for (table, c) in chains {
            let drops =
                c.hook.as_ref().is_some_and(|h| h.hooknum == hooks::FORWARD && h.policy == libc::NF_DROP as u32);
            if drops && !(fam == NFPROTO_INET && table == TABLE) {
                found.push(format!("nftables chain {label} {table} {} (hook forward, policy drop)", c.name));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}
