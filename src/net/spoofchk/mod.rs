//! MAC spoof protection for a pod's bridge port (the bridge plugin's `macspoofchk: true`): frames that
//! arrive from the pod's host veth with a source MAC other than the pod interface's MAC are dropped.
//!
//! Everything here works in the network namespace of the calling thread (the node's netns when a plugin
//! runs) and talks nf_tables netlink through [`crate::net::nft`]; nothing is executed.
//!
//! # Layout (that of the reference plugins, so either implementation's DEL cleans the other's ADD)
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING {
//!         type filter hook prerouting priority dstnat; policy accept;
//!         iifname "vethc5b5470d" jump cni-br-iface-ctr-abc123-eth0 comment "macspoofchk-ctr-abc123-eth0"
//!     }
//!     chain cni-br-iface-ctr-abc123-eth0 {
//!         jump cni-br-iface-ctr-abc123-eth0-mac comment "macspoofchk-ctr-abc123-eth0"
//!     }
//!     chain cni-br-iface-ctr-abc123-eth0-mac {
//!         ether saddr b2:f2:df:50:60:44 return comment "macspoofchk-ctr-abc123-eth0"
//!         drop comment "macspoofchk-ctr-abc123-eth0"
//!     }
//! }
//! ```
//!
//! The table and `PREROUTING` are shared (ebtables-nft uses them for `ebtables -t nat`) and never
//! deleted; an attachment owns its two regular chains and its `PREROUTING` rule.
//!
//! # Owners
//!
//! The names carry containerID and ifname but no network, and a GC's valid list is per network. So
//! rcni tags the `PREROUTING` rule it writes with the owning network (a userdata TLV `nft list` does not
//! show, so the layout stays the reference's). [`gc`] of a network removes the stale attachments tagged
//! with it, never those tagged with another network, and untagged ones (the reference's, or rcni's
//! before tags) only when the caller's scope says so.
//!
//! # Consistency
//!
//! Every change is one batch checked against the generation of the ruleset it was planned from; when
//! the ruleset changed in between (ERESTART, or ENOENT/EBUSY from an object another DEL removed) it is
//! planned again from a fresh read, up to `MAX_ATTEMPTS` times.

mod names;
mod plan;
mod ruleset;

use std::collections::HashSet;
use std::fmt;

pub use names::{BASE_CHAIN, BASE_PRIORITY, CHAIN_PREFIX, COMMENT_PREFIX, Names, TABLE, owner_tag};
pub use ruleset::Attachment;
use ruleset::{Rule, attachment_rules, attachments, core, is_expected_jump, nl_err, read_base_chain, read_table, text};

use crate::attachment::Attachment as Key;
use crate::net::Mac;
use crate::net::nft::{NFPROTO_BRIDGE, NetlinkError, Nfnl, Stmt, absent, retryable};

/// How often a read-then-write is planned again when the ruleset changed in between. The generation is the
/// whole netns's: every commit of every concurrent plugin (masquerade elements too) invalidates a plan, so
/// with a runtime's usual parallelism (16 DELs at once, two commits each) a handful of attempts can starve.
const MAX_ATTEMPTS: usize = 64;

/// Errors of this module; the messages say which table/chain, what failed and what to do.
#[derive(Debug)]
pub enum Error {
    /// Invalid input (empty container ID, ...).
    Invalid(String),
    /// An nf_tables netlink operation failed.
    Netlink { what: String, err: NetlinkError },
    /// CHECK found the rules different from what ADD sets up.
    Check(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(msg) | Error::Check(msg) => write!(f, "{msg}"),
            Error::Netlink { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn open(label: &str) -> Result<Option<Nfnl>> {
    match Nfnl::open() {
        Ok(nl) => Ok(Some(nl)),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(nl_err(label, "opening the nf_tables netlink socket", e)),
    }
}

fn generation(nl: &mut Nfnl, label: &str) -> Result<u32> {
    nl.generation().map_err(|e| nl_err(label, "reading the nf_tables generation", e))
}

/// Does chain `name` of table bridge `TABLE` exist (no table counts as no)?
fn chain_exists(nl: &mut Nfnl, label: &str, name: &str) -> Result<bool> {
    match nl.chain_exists(NFPROTO_BRIDGE, TABLE, name) {
        Ok(found) => Ok(found),
        Err(e) if absent(&e) => Ok(false),
        Err(e) => Err(nl_err(label, &format!("looking up chain bridge {TABLE} {name}"), e)),
    }
}

/// Applies a planned batch: `Ok(false)` when the ruleset changed since it was planned (plan again),
/// unless this was the last attempt.
fn apply(
    nl: &mut Nfnl,
    gen_id: u32,
    ops: &[crate::net::nft::BatchOp<'_>],
    label: &str,
    what: &str,
    last: bool,
) -> Result<bool> {
    match nl.batch(Some(gen_id), NFPROTO_BRIDGE, TABLE, ops) {
        Ok(()) => Ok(true),
        Err(e) if retryable(&e) && !last => Ok(false),
        Err(e) => {
            let hint = if retryable(&e) {
                " (the rules kept changing while this ran; retry)".to_string()
            } else {
                format!(" (`nft list table bridge {TABLE}` shows the current state)")
            };
            Err(nl_err(label, &format!("{what}{hint}"), e))
        }
    }
}

/// Installs the spoof check of attachment (`container_id`, `ifname`) of `network`: frames entering the
/// bridge from `host_veth` pass only with source MAC `container_mac`. Idempotent (a repeated call leaves
/// exactly one rule set, updated to the given veth and MAC); one transaction, all or nothing.
pub fn setup(network: &str, container_id: &str, ifname: &str, host_veth: &str, container_mac: Mac) -> Result<()> {
    let n = names::validate(container_id, ifname)?;
    names::validate_veth(&n, host_veth)?;
    names::validate_network(&n, network)?;
    let label = n.label();
    let owner = owner_tag(network);
    let what = format!(
        "writing chains bridge {TABLE} {}, {} and the jump from {BASE_CHAIN} for {host_veth:?} (MAC \
         {container_mac}); check that the kernel has nf_tables with bridge support \
         (nft_chain_nat/nf_tables_bridge) and that chain bridge {TABLE} {BASE_CHAIN}, if it already \
         exists, is `type filter hook prerouting priority {BASE_PRIORITY}`",
        n.iface_chain, n.mac_chain
    );
    let Some(mut nl) = open(&label)? else {
        return Err(Error::Invalid(format!("{label}: {what}: nf_tables is not available in this kernel")));
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let gen_id = generation(&mut nl, &label)?;
        // A new attachment (the usual ADD) has no chain yet, so no rule can jump to it: nothing to replace,
        // and no need to list `PREROUTING`, a read as long as the node has attachments, during which every
        // other plugin's commit would invalidate the plan (16 parallel ADDs at 300 pods ran out of attempts).
        let base =
            if chain_exists(&mut nl, &label, &n.iface_chain)? { read_base_chain(&mut nl, &label)? } else { Vec::new() };
        let mine = attachment_rules(&base, &n);
        let keep = mine.len() == 1
            && is_expected_jump(mine[0], &n, host_veth)
            && mine[0].owner.as_deref() == Some(owner.as_str());
        let handles: Vec<u64> = if keep { Vec::new() } else { mine.iter().map(|r| r.handle).collect() };
        let ops = plan::setup(&n, host_veth, container_mac, &handles, (!keep).then_some(owner.as_str()));
        if apply(&mut nl, gen_id, &ops, &label, &what, attempt == MAX_ATTEMPTS)? {
            return Ok(());
        }
    }
    unreachable!("the last attempt returns")
}

/// Removes the spoof check of attachment (`container_id`, `ifname`): its `PREROUTING` rule(s) (found by
/// comment, or by their jump to the attachment's chain) and both of its chains, whoever made them (this
/// module, an older rcni or the reference plugins). Works without the veth or the MAC; absent counts as
/// success. The shared table and `PREROUTING` stay.
pub fn teardown(container_id: &str, ifname: &str) -> Result<()> {
    let n = names::validate(container_id, ifname)?;
    let label = n.label();
    let what = format!(
        "deleting the {BASE_CHAIN} rule(s) commented {:?} and chains bridge {TABLE} {}, {}",
        n.comment, n.iface_chain, n.mac_chain
    );
    let Some(mut nl) = open(&label)? else { return Ok(()) };
    for attempt in 1..=MAX_ATTEMPTS {
        let gen_id = generation(&mut nl, &label)?;
        let base = read_base_chain(&mut nl, &label)?;
        let handles: Vec<u64> = attachment_rules(&base, &n).iter().map(|r| r.handle).collect();
        let mut chains = Vec::new();
        for c in [n.iface_chain.as_str(), n.mac_chain.as_str()] {
            if chain_exists(&mut nl, &label, c)? {
                chains.push(c);
            }
        }
        if handles.is_empty() && chains.is_empty() {
            return Ok(());
        }
        if apply(&mut nl, gen_id, &plan::teardown(&handles, &chains), &label, &what, attempt == MAX_ATTEMPTS)? {
            return Ok(());
        }
    }
    unreachable!("the last attempt returns")
}

const BRIDGE_HOOKS: [&str; 5] = ["prerouting", "input", "forward", "output", "postrouting"];

/// Verifies that the spoof check of the attachment is in place for `host_veth` and `container_mac`;
/// the error names the missing or different table, chain or rule and what to do.
pub fn check(container_id: &str, ifname: &str, host_veth: &str, container_mac: Mac) -> Result<()> {
    let n = names::validate(container_id, ifname)?;
    names::validate_veth(&n, host_veth)?;
    let label = n.label();
    let fix = "ADD sets it up again (re-create the pod)";
    let rs = match open(&label)? {
        Some(mut nl) => read_table(&mut nl, &label)?,
        None => None,
    };
    let Some(rs) = rs else {
        return Err(Error::Check(format!("{label}: table bridge {TABLE} does not exist; {fix}")));
    };
    match rs.chains.get(BASE_CHAIN) {
        None => {
            return Err(Error::Check(format!("{label}: chain bridge {TABLE} {BASE_CHAIN} does not exist; {fix}")));
        }
        Some(None) => {
            return Err(Error::Check(format!(
                "{label}: chain bridge {TABLE} {BASE_CHAIN} is not a base chain (no hook), so no frame \
                 passes it; delete it (`nft delete table bridge {TABLE}` if nothing else uses it) and {fix}"
            )));
        }
        Some(Some(h)) if h.hooknum != names::HOOK_PREROUTING || h.chain_type != "filter" => {
            return Err(Error::Check(format!(
                "{label}: chain bridge {TABLE} {BASE_CHAIN} is `type {} hook {}`, expected `type filter \
                 hook prerouting`",
                h.chain_type,
                BRIDGE_HOOKS.get(h.hooknum as usize).copied().unwrap_or("?")
            )));
        }
        Some(Some(_)) => {}
    }
    let mine = attachment_rules(&rs.rules, &n);
    if mine.is_empty() {
        return Err(Error::Check(format!(
            "{label}: chain bridge {TABLE} {BASE_CHAIN} has no rule commented {:?} (frames from {host_veth} \
             are not checked); {fix}",
            n.comment
        )));
    }
    if let Some(bad) = mine.iter().find(|r| !is_expected_jump(r, &n, host_veth)) {
        return Err(Error::Check(format!(
            "{label}: rule `{}` in chain bridge {TABLE} {BASE_CHAIN} differs from the expected `iifname \
             {host_veth:?} jump {} comment {:?}` (another host veth?); {fix}",
            text(bad),
            n.iface_chain,
            n.comment
        )));
    }
    let chain_rules = |name: &str| -> Result<Vec<&Rule>> {
        if !rs.chains.contains_key(name) {
            return Err(Error::Check(format!("{label}: chain bridge {TABLE} {name} does not exist; {fix}")));
        }
        Ok(rs.rules_of(name))
    };
    let describe = |rules: &[&Rule]| -> String {
        if rules.is_empty() {
            "no rules".to_string()
        } else {
            rules.iter().map(|r| format!("`{}`", text(r))).collect::<Vec<_>>().join(", ")
        }
    };
    let iface = chain_rules(&n.iface_chain)?;
    if !(iface.len() == 1 && core(iface[0]) == [&Stmt::Jump(n.mac_chain.clone())]) {
        return Err(Error::Check(format!(
            "{label}: chain bridge {TABLE} {} holds {}, expected only `jump {}`; {fix}",
            n.iface_chain,
            describe(&iface),
            n.mac_chain
        )));
    }
    let mac_rules = chain_rules(&n.mac_chain)?;
    let want_mac = Stmt::ether_saddr(container_mac);
    let ok =
        mac_rules.len() == 2 && core(mac_rules[0]) == [&want_mac, &Stmt::Return] && core(mac_rules[1]) == [&Stmt::Drop];
    if !ok {
        let other_mac = mac_rules.iter().flat_map(|r| r.stmts.iter()).find_map(|s| match s {
            Stmt::EtherSaddr(m) if *s != want_mac => Some(m.clone()),
            _ => None,
        });
        return Err(Error::Check(match other_mac {
            Some(m) => format!(
                "{label}: chain bridge {TABLE} {} allows source MAC {m}, but the container interface has \
                 {container_mac}: its frames are dropped; {fix}",
                n.mac_chain
            ),
            None => format!(
                "{label}: chain bridge {TABLE} {} holds {}, expected `ether saddr {container_mac} return` \
                 then `drop`; {fix}",
                n.mac_chain,
                describe(&mac_rules)
            ),
        }));
    }
    Ok(())
}

/// The attachments that have spoof-check rules or chains in the calling thread's netns, sorted.
pub fn list() -> Result<Vec<Attachment>> {
    let label = "macspoofchk";
    let Some(mut nl) = open(label)? else { return Ok(Vec::new()) };
    Ok(read_table(&mut nl, label)?.map(|rs| attachments(&rs)).unwrap_or_default())
}

/// Garbage collection for `network`: removes the spoof checks (chains and `PREROUTING` rules) of the
/// attachments not in `valid` (`(containerID, ifname)` pairs) that are
/// * tagged with `network`, or
/// * untagged (the reference plugins', or rcni's before owner tags) and `in_scope` — the caller's
///   judgement, e.g. "its host veth is gone", since nothing says which network they belong to.
///
/// An attachment tagged with another network is never removed. Returns what was removed.
pub fn gc(network: &str, valid: &[Key], in_scope: impl Fn(&Attachment) -> bool) -> Result<Vec<Attachment>> {
    let owner = owner_tag(network);
    let keep: Vec<Names> = valid.iter().map(|k| Names::new(&k.container_id, &k.ifname)).collect();
    let keep_refs: HashSet<&str> = keep.iter().map(|n| n.ref_id.as_str()).collect();
    let keep_chains: HashSet<&str> = keep.iter().flat_map(|n| [n.iface_chain.as_str(), n.mac_chain.as_str()]).collect();
    let label = format!("macspoofchk garbage collection of network {network:?}");
    let Some(mut nl) = open(&label)? else { return Ok(Vec::new()) };
    for attempt in 1..=MAX_ATTEMPTS {
        let gen_id = generation(&mut nl, &label)?;
        let Some(rs) = read_table(&mut nl, &label)? else { return Ok(Vec::new()) };
        let mut stale: Vec<Attachment> = attachments(&rs)
            .into_iter()
            .filter(|a| !keep_refs.contains(a.ref_id.as_str()))
            .filter(|a| match &a.network {
                Some(tag) => *tag == owner,
                None => in_scope(a),
            })
            .collect();
        for a in &mut stale {
            a.chains.retain(|c| !keep_chains.contains(c.as_str()));
        }
        let outside = ruleset::referenced_from_outside(&rs, &stale);
        stale.retain(|a| !a.chains.iter().any(|c| outside.contains(c.as_str())));
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let handles: Vec<u64> = stale.iter().flat_map(|a| a.rule_handles.iter().copied()).collect();
        let mut chains: Vec<&str> = stale.iter().flat_map(|a| a.chains.iter().map(String::as_str)).collect();
        chains.sort_by_key(|c| (c.ends_with("-mac"), c.to_string()));
        let what = format!("deleting the spoof-check chains {} and their {BASE_CHAIN} rules", chains.join(", "));
        if apply(&mut nl, gen_id, &plan::teardown(&handles, &chains), &label, &what, attempt == MAX_ATTEMPTS)? {
            stale.sort();
            return Ok(stale);
        }
    }
    unreachable!("the last attempt returns")
}
