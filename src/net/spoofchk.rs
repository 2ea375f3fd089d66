//! MAC spoof protection for a pod's bridge port (the bridge plugin's `macspoofchk: true`): frames that
//! arrive from the pod's host veth with a source MAC other than the pod interface's MAC are dropped.
//!
//! Everything here works in the network namespace of the calling thread (the node's netns when a plugin
//! runs); nothing here changes netns.
//!
//! # Layout (identical to the reference plugins, so either implementation's DEL cleans the other's ADD)
//!
//! Measured with the reference bridge 1.1.1 (`nft list table bridge nat`, containerID `ctr-abc123`,
//! ifname `eth0`); the layout is unchanged up to the reference's main branch (later versions changed only
//! how the rules are read and applied, not what they are):
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING {
//!         type filter hook prerouting priority dstnat; policy accept;        # dstnat = -300 in bridge
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
//! The table and `PREROUTING` are shared (ebtables-nft uses the same table and chain for `ebtables -t
//! nat`) and are never deleted; an attachment owns its two regular chains and its `PREROUTING` rule.
//!
//! # How it talks to nftables
//!
//! Through the `nft` binary with JSON input and output (`nft -j`), like the reference does: JSON takes
//! any chain name (containerIDs may start with a digit, which nft's text syntax rejects unquoted, and
//! nft 1.0 does not accept quoted chain names) and needs no escaping. Writes are one `nft -j -f -`
//! transaction each (all or nothing):
//!
//! * [`setup`]: reads `PREROUTING` (one `nft -j list chain`), then one transaction that creates table and
//!   chains if missing, flushes and refills the two regular chains, and replaces this attachment's
//!   `PREROUTING` rule(s) — an up-to-date rule is kept, so repeating an ADD adds nothing. (The reference
//!   appends another `PREROUTING` rule on every repeated ADD.)
//! * [`teardown`]: reads `PREROUTING` only (not the whole table), then deletes the rules commented
//!   `macspoofchk-<containerID>-<ifname>` or jumping to the attachment's chain, and both chains, in one
//!   transaction. Needs neither the veth nor the MAC.
//!
//! A transaction that fails because something changed between the read and the write (a rule deleted
//! by a concurrent DEL: ENOENT/EBUSY) is planned again from a fresh read, a few times. Every `nft` run
//! is killed after 55 s (as in the reference), so a stuck nft cannot hang a CNI call.
//!
//! # GC and networks
//!
//! The names carry containerID and ifname but no network, so [`gc`] cannot tell which network an
//! attachment belongs to: called with one network's valid attachments it would also remove another
//! network's spoof checks. The bridge plugin should call [`gc_filtered`] with a scope, e.g. "the host
//! veth is a port of this network's bridge, or no longer exists".
//!
//! Cost (release build, kernel 6.18, nft 1.0.6, 200 attachments present, `cargo test --release --test
//! spoofchk -- --ignored --nocapture bench`): setup ≈ 20 ms, teardown ≈ 20 ms, check ≈ 25 ms, teardown
//! of an absent attachment ≈ 8 ms. A read is ≈ 5 ms (process start, nft's cache fill); a write waits
//! for the kernel's nf_tables commit (RCU grace periods after flushing/deleting rules), ≈ 10–15 ms.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::net::Mac;
use crate::net::command::Command;

/// The shared table (family `bridge`).
pub const TABLE: &str = "nat";
/// The shared base chain in [`TABLE`].
pub const BASE_CHAIN: &str = "PREROUTING";
/// Priority of [`BASE_CHAIN`] (`dstnat` in the bridge family).
pub const BASE_PRIORITY: i64 = -300;
/// Prefix of the per-attachment chains.
pub const CHAIN_PREFIX: &str = "cni-br-iface-";
/// Prefix of the rule comments.
pub const COMMENT_PREFIX: &str = "macspoofchk-";

/// How often a read-then-write is planned again when the ruleset changed in between.
const MAX_ATTEMPTS: usize = 4;
/// How long one `nft` run may take before it is killed (the reference allows 55 s).
const NFT_TIMEOUT: Duration = Duration::from_secs(55);
/// Kernel limit for chain names (NFT_NAME_MAXLEN, including the terminating NUL).
const MAX_NAME: usize = 255;
/// Kernel limit for rule user data (NFT_USERDATA_MAXLEN) minus the TLV header nft adds.
const MAX_COMMENT: usize = 250;

/// Errors of this module; the messages say which table/chain, what failed and what to do.
#[derive(Debug)]
pub enum Error {
    /// Invalid input (empty container ID, ...).
    Invalid(String),
    /// `nft` could not be run or failed.
    Command { what: String, command: String, detail: String },
    /// `nft -j` printed something we do not understand.
    Parse { what: String, detail: String },
    /// CHECK found the rules different from what ADD sets up.
    Check(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(msg) | Error::Check(msg) => write!(f, "{msg}"),
            Error::Command { what, detail, .. } => write!(f, "{what}: {detail}"),
            Error::Parse { what, detail } => write!(f, "{what}: unexpected output of `nft -j`: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The nft names of one attachment (containerID, ifname), as the reference plugins spell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `<containerID>-<ifname>`.
    pub ref_id: String,
    /// `cni-br-iface-<containerID>-<ifname>`.
    pub iface_chain: String,
    /// `cni-br-iface-<containerID>-<ifname>-mac`.
    pub mac_chain: String,
    /// `macspoofchk-<containerID>-<ifname>`, on every rule.
    pub comment: String,
}

impl Names {
    pub fn new(container_id: &str, ifname: &str) -> Names {
        Names::from_ref_id(&format!("{container_id}-{ifname}"))
    }

    fn from_ref_id(ref_id: &str) -> Names {
        let iface_chain = format!("{CHAIN_PREFIX}{ref_id}");
        Names {
            ref_id: ref_id.to_string(),
            mac_chain: format!("{iface_chain}-mac"),
            iface_chain,
            comment: format!("{COMMENT_PREFIX}{ref_id}"),
        }
    }

    /// `c1/eth0`-like label for messages.
    fn label(&self) -> String {
        format!("macspoofchk of attachment {:?}", self.ref_id)
    }
}

fn validate(container_id: &str, ifname: &str) -> Result<Names> {
    let what = format!("macspoofchk for container {container_id:?} interface {ifname:?}");
    if container_id.is_empty() {
        return Err(Error::Invalid(format!("{what}: the container ID is empty")));
    }
    if ifname.is_empty() {
        return Err(Error::Invalid(format!("{what}: the interface name is empty")));
    }
    if container_id.contains('\0') || ifname.contains('\0') {
        return Err(Error::Invalid(format!("{what}: NUL character in the container ID or interface name")));
    }
    let n = Names::new(container_id, ifname);
    if n.mac_chain.len() > MAX_NAME || n.comment.len() > MAX_COMMENT {
        return Err(Error::Invalid(format!(
            "{what}: chain name {:?} is longer than nftables allows ({MAX_NAME} bytes); use a shorter \
             container ID",
            n.mac_chain
        )));
    }
    Ok(n)
}

fn validate_veth(n: &Names, host_veth: &str) -> Result<()> {
    if crate::validate::device_name(host_veth).is_err() {
        return Err(Error::Invalid(format!("{}: invalid host interface name {host_veth:?}", n.label())));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The ruleset as `nft -j` shows it

/// One statement of a rule, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stmt {
    /// `iifname "<name>"`
    IifName(String),
    /// `ether saddr <mac>` (as nft prints it: lower case).
    EtherSaddr(String),
    Jump(String),
    Goto(String),
    Return,
    Drop,
    Accept,
    /// `counter` (ignored when comparing: an operator may add counters).
    Counter,
    /// Anything else, as JSON.
    Other(String),
}

impl Stmt {
    fn parse(v: &Value) -> Stmt {
        let other = || Stmt::Other(v.to_string());
        let Some(obj) = v.as_object() else { return other() };
        if let Some(m) = obj.get("match") {
            let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
            let right = m.get("right").and_then(Value::as_str);
            if op != "==" {
                return other();
            }
            let left = m.get("left");
            if let (Some(key), Some(r)) = (left.and_then(|l| l.pointer("/meta/key")).and_then(Value::as_str), right) {
                if key == "iifname" {
                    return Stmt::IifName(r.to_string());
                }
            }
            if let (Some(p), Some(r)) = (left.and_then(|l| l.get("payload")), right) {
                if p.get("protocol").and_then(Value::as_str) == Some("ether")
                    && p.get("field").and_then(Value::as_str) == Some("saddr")
                {
                    return Stmt::EtherSaddr(r.to_ascii_lowercase());
                }
            }
            return other();
        }
        let target = |k: &str| obj.get(k).and_then(|j| j.get("target")).and_then(Value::as_str).map(str::to_string);
        if let Some(t) = target("jump") {
            return Stmt::Jump(t);
        }
        if let Some(t) = target("goto") {
            return Stmt::Goto(t);
        }
        if obj.len() == 1 {
            match obj.keys().next().map(String::as_str) {
                Some("return") => return Stmt::Return,
                Some("drop") => return Stmt::Drop,
                Some("accept") => return Stmt::Accept,
                Some("counter") => return Stmt::Counter,
                _ => {}
            }
        }
        other()
    }

    fn target(&self) -> Option<&str> {
        match self {
            Stmt::Jump(t) | Stmt::Goto(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::IifName(n) => write!(f, "iifname {n:?}"),
            Stmt::EtherSaddr(m) => write!(f, "ether saddr {m}"),
            Stmt::Jump(t) => write!(f, "jump {t}"),
            Stmt::Goto(t) => write!(f, "goto {t}"),
            Stmt::Return => write!(f, "return"),
            Stmt::Drop => write!(f, "drop"),
            Stmt::Accept => write!(f, "accept"),
            Stmt::Counter => write!(f, "counter"),
            Stmt::Other(j) => write!(f, "{j}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    chain: String,
    handle: u64,
    comment: Option<String>,
    stmts: Vec<Stmt>,
}

impl Rule {
    /// The statements without counters.
    fn core(&self) -> Vec<&Stmt> {
        self.stmts.iter().filter(|s| **s != Stmt::Counter).collect()
    }

    fn text(&self) -> String {
        let mut s: Vec<String> = self.stmts.iter().map(Stmt::to_string).collect();
        if let Some(c) = &self.comment {
            s.push(format!("comment {c:?}"));
        }
        s.join(" ")
    }

    fn targets(&self) -> impl Iterator<Item = &str> {
        self.stmts.iter().filter_map(Stmt::target)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseHook {
    ty: String,
    hook: String,
    prio: i64,
    policy: String,
}

#[derive(Debug, Clone, Default)]
struct Ruleset {
    /// Chain name -> base chain properties (None for a regular chain).
    chains: BTreeMap<String, Option<BaseHook>>,
    rules: Vec<Rule>,
}

impl Ruleset {
    fn parse(out: &str) -> Result<Ruleset, String> {
        let v: Value = serde_json::from_str(out).map_err(|e| format!("{e}"))?;
        let items = v.get("nftables").and_then(Value::as_array).ok_or("no \"nftables\" array")?;
        let mut rs = Ruleset::default();
        for item in items {
            if let Some(c) = item.get("chain") {
                if c.get("family").and_then(Value::as_str) != Some("bridge")
                    || c.get("table").and_then(Value::as_str) != Some(TABLE)
                {
                    continue;
                }
                let name = c.get("name").and_then(Value::as_str).ok_or("chain without name")?;
                let base = c.get("hook").and_then(Value::as_str).map(|hook| BaseHook {
                    ty: c.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
                    hook: hook.to_string(),
                    prio: c.get("prio").and_then(Value::as_i64).unwrap_or_default(),
                    policy: c.get("policy").and_then(Value::as_str).unwrap_or("accept").to_string(),
                });
                rs.chains.insert(name.to_string(), base);
            } else if let Some(r) = item.get("rule") {
                if r.get("family").and_then(Value::as_str) != Some("bridge")
                    || r.get("table").and_then(Value::as_str) != Some(TABLE)
                {
                    continue;
                }
                let chain = r.get("chain").and_then(Value::as_str).ok_or("rule without chain")?;
                let handle = r.get("handle").and_then(Value::as_u64).ok_or("rule without handle")?;
                let stmts = r.get("expr").and_then(Value::as_array).map(|a| a.iter().map(Stmt::parse).collect());
                rs.rules.push(Rule {
                    chain: chain.to_string(),
                    handle,
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
                    stmts: stmts.unwrap_or_default(),
                });
            }
        }
        Ok(rs)
    }

    fn rules_of(&self, chain: &str) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.chain == chain).collect()
    }
}

/// Rules of `PREROUTING` that belong to the attachment: its comment, or a jump/goto to its chain.
fn attachment_rules<'a>(rs: &'a Ruleset, n: &Names) -> Vec<&'a Rule> {
    rs.rules_of(BASE_CHAIN)
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some(n.comment.as_str()) || r.targets().any(|t| t == n.iface_chain))
        .collect()
}

fn is_expected_jump(r: &Rule, n: &Names, host_veth: &str) -> bool {
    r.comment.as_deref() == Some(n.comment.as_str())
        && r.core() == [&Stmt::IifName(host_veth.to_string()), &Stmt::Jump(n.iface_chain.clone())]
}

// ------------------------------------------------------------------------------------------------
// Running nft

/// Why running `nft` failed.
#[derive(Debug)]
struct NftFailure {
    command: String,
    detail: String,
    /// The failure means "the object does not exist" (or was changed by someone else in between).
    raced: bool,
    absent: bool,
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftFailure> {
    // strerror() texts are matched below; keep them in English.
    let mut cmd = Command::new("nft").args(args.iter().copied()).env("LC_ALL", "C").timeout(NFT_TIMEOUT);
    if let Some(script) = stdin {
        cmd = cmd.stdin(script);
    }
    cmd.run().map(|out| out.stdout).map_err(|e| {
        let stderr = e.stderr().unwrap_or_default();
        let absent = stderr.contains("No such file or directory");
        let raced = absent || stderr.contains("Device or resource busy");
        let hint = if e.is_not_installed() { " (is the nftables package installed?)" } else { "" };
        NftFailure { command: cmd.line(), detail: format!("{e}{hint}"), raced, absent }
    })
}

/// `nft -j list <what...>`; `None` when the table/chain does not exist.
fn nft_list(what: &[&str], label: &str) -> Result<Option<Ruleset>> {
    let mut args = vec!["-j", "list"];
    args.extend_from_slice(what);
    match nft(&args, None) {
        Ok(out) => Ruleset::parse(&out)
            .map(Some)
            .map_err(|detail| Error::Parse { what: format!("{label}: reading {}", what.join(" ")), detail }),
        Err(f) if f.absent => Ok(None),
        Err(f) => Err(Error::Command {
            what: format!("{label}: reading {}", what.join(" ")),
            command: f.command,
            detail: format!("{} (does the kernel support nf_tables for the bridge family?)", f.detail),
        }),
    }
}

fn read_base_chain(label: &str) -> Result<Option<Ruleset>> {
    nft_list(&["chain", "bridge", TABLE, BASE_CHAIN], label)
}

fn read_table(label: &str) -> Result<Option<Ruleset>> {
    nft_list(&["table", "bridge", TABLE], label)
}

/// Runs one transaction; `Ok(false)` when it failed because the ruleset changed since it was planned.
fn apply(script: &Value, label: &str, what: &str, last: bool) -> Result<bool> {
    let text = script.to_string();
    match nft(&["-j", "-f", "-"], Some(&text)) {
        Ok(_) => Ok(true),
        Err(f) if f.raced && !last => Ok(false),
        Err(f) => Err(Error::Command {
            what: format!("{label}: {what}"),
            command: f.command,
            detail: format!(
                "{}{}\nscript: {text}",
                f.detail,
                if f.raced {
                    " (the rules kept changing while this ran; retry)"
                } else {
                    " (`nft list table bridge nat` shows the current state)"
                }
            ),
        }),
    }
}

// ------------------------------------------------------------------------------------------------
// Scripts (nft JSON commands)

fn chain_obj(name: &str) -> Value {
    json!({"family": "bridge", "table": TABLE, "name": name})
}

fn rule_obj(chain: &str, comment: &str, expr: Value) -> Value {
    json!({"rule": {"family": "bridge", "table": TABLE, "chain": chain, "comment": comment, "expr": expr}})
}

fn delete_rule(chain: &str, handle: u64) -> Value {
    json!({"delete": {"rule": {"family": "bridge", "table": TABLE, "chain": chain, "handle": handle}}})
}

/// The setup transaction: table and chains (created if missing), the regular chains flushed and
/// refilled, the `PREROUTING` rules with the given handles deleted and, if `add_jump`, the jump added.
fn setup_script(n: &Names, host_veth: &str, mac: Mac, delete_handles: &[u64], add_jump: bool) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": {"family": "bridge", "name": TABLE}}}),
        json!({"add": {"chain": {
            "family": "bridge", "table": TABLE, "name": BASE_CHAIN,
            "type": "filter", "hook": "prerouting", "prio": BASE_PRIORITY, "policy": "accept"
        }}}),
        json!({"add": {"chain": chain_obj(&n.iface_chain)}}),
        json!({"add": {"chain": chain_obj(&n.mac_chain)}}),
        json!({"flush": {"chain": chain_obj(&n.iface_chain)}}),
        json!({"flush": {"chain": chain_obj(&n.mac_chain)}}),
    ];
    cmds.extend(delete_handles.iter().map(|h| delete_rule(BASE_CHAIN, *h)));
    if add_jump {
        cmds.push(json!({"add": rule_obj(BASE_CHAIN, &n.comment, json!([
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": host_veth}},
            {"jump": {"target": n.iface_chain}}
        ]))}));
    }
    cmds.push(json!({"add": rule_obj(&n.iface_chain, &n.comment, json!([{"jump": {"target": n.mac_chain}}]))}));
    cmds.push(json!({"add": rule_obj(&n.mac_chain, &n.comment, json!([
        {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": mac.to_string()}},
        {"return": null}
    ]))}));
    cmds.push(json!({"add": rule_obj(&n.mac_chain, &n.comment, json!([{"drop": null}]))}));
    json!({ "nftables": cmds })
}

/// The removal transaction: `PREROUTING` rules by handle first (they reference the chains), then chains.
fn teardown_script(rule_handles: &[u64], chains: &[&str]) -> Value {
    let mut cmds: Vec<Value> = rule_handles.iter().map(|h| delete_rule(BASE_CHAIN, *h)).collect();
    cmds.extend(chains.iter().map(|c| json!({"delete": {"chain": chain_obj(c)}})));
    json!({ "nftables": cmds })
}

// ------------------------------------------------------------------------------------------------
// API

/// Installs the spoof check of attachment (`container_id`, `ifname`): frames entering the bridge from
/// `host_veth` pass only with source MAC `container_mac`. Idempotent (a repeated call leaves exactly one
/// rule set, updated to the given veth and MAC); one transaction, all or nothing.
pub fn setup(container_id: &str, ifname: &str, host_veth: &str, container_mac: Mac) -> Result<()> {
    let n = validate(container_id, ifname)?;
    validate_veth(&n, host_veth)?;
    let label = n.label();
    for attempt in 1..=MAX_ATTEMPTS {
        let current = read_base_chain(&label)?.unwrap_or_default();
        let mine = attachment_rules(&current, &n);
        let keep = mine.len() == 1 && is_expected_jump(mine[0], &n, host_veth);
        let handles: Vec<u64> = if keep { Vec::new() } else { mine.iter().map(|r| r.handle).collect() };
        let script = setup_script(&n, host_veth, container_mac, &handles, !keep);
        let what = format!(
            "writing chains bridge {TABLE} {}, {} and the jump from {BASE_CHAIN} for {host_veth:?} (MAC \
             {container_mac}); check that the kernel has nf_tables with bridge support \
             (nft_chain_nat/nf_tables_bridge) and that chain bridge {TABLE} {BASE_CHAIN}, if it already \
             exists, is `type filter hook prerouting priority {BASE_PRIORITY}`",
            n.iface_chain, n.mac_chain
        );
        if apply(&script, &label, &what, attempt == MAX_ATTEMPTS)? {
            return Ok(());
        }
    }
    unreachable!("the last attempt returns")
}

/// Removes the spoof check of attachment (`container_id`, `ifname`): its `PREROUTING` rule(s) (found by
/// comment, or by their jump to the attachment's chain) and both of its chains, whoever made them (this
/// module or the reference plugins). Works without the veth or the MAC; absent counts as success. The
/// shared table and `PREROUTING` stay.
pub fn teardown(container_id: &str, ifname: &str) -> Result<()> {
    let n = validate(container_id, ifname)?;
    let label = n.label();
    let what = format!(
        "deleting the {BASE_CHAIN} rule(s) commented {:?} and chains bridge {TABLE} {}, {}",
        n.comment, n.iface_chain, n.mac_chain
    );
    let mut optimistic = true;
    for attempt in 1..=MAX_ATTEMPTS {
        let last = attempt == MAX_ATTEMPTS;
        // Cheap path: only PREROUTING is read; its jump proves the attachment's chains exist.
        let base = match read_base_chain(&label)? {
            Some(base) => base,
            None => {
                if read_table(&label)?.is_none() {
                    return Ok(()); // no table: nothing of anyone's spoof checks exists
                }
                optimistic = false;
                Ruleset::default()
            }
        };
        let handles: Vec<u64> = attachment_rules(&base, &n).iter().map(|r| r.handle).collect();
        let chains: Vec<&str> = if optimistic && !handles.is_empty() {
            vec![n.iface_chain.as_str(), n.mac_chain.as_str()]
        } else {
            // Which of the chains exist (e.g. a half-made reference setup without the jump).
            let Some(table) = nft_list(&["chains", "bridge"], &label)? else { return Ok(()) };
            [n.iface_chain.as_str(), n.mac_chain.as_str()]
                .into_iter()
                .filter(|c| table.chains.contains_key(*c))
                .collect()
        };
        if handles.is_empty() && chains.is_empty() {
            return Ok(());
        }
        if apply(&teardown_script(&handles, &chains), &label, &what, last)? {
            return Ok(());
        }
        optimistic = false;
    }
    unreachable!("the last attempt returns")
}

/// Verifies that the spoof check of the attachment is in place for `host_veth` and `container_mac`;
/// the error names the missing or different table, chain or rule and what to do.
pub fn check(container_id: &str, ifname: &str, host_veth: &str, container_mac: Mac) -> Result<()> {
    let n = validate(container_id, ifname)?;
    validate_veth(&n, host_veth)?;
    let label = n.label();
    let fix = "ADD sets it up again (re-create the pod)";
    let Some(rs) = read_table(&label)? else {
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
        Some(Some(h)) if h.hook != "prerouting" || h.ty != "filter" => {
            return Err(Error::Check(format!(
                "{label}: chain bridge {TABLE} {BASE_CHAIN} is `type {} hook {}`, expected `type filter \
                 hook prerouting`",
                h.ty, h.hook
            )));
        }
        Some(Some(_)) => {}
    }
    let mine = attachment_rules(&rs, &n);
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
            bad.text(),
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
            rules.iter().map(|r| format!("`{}`", r.text())).collect::<Vec<_>>().join(", ")
        }
    };
    let iface = chain_rules(&n.iface_chain)?;
    if !(iface.len() == 1 && iface[0].core() == [&Stmt::Jump(n.mac_chain.clone())]) {
        return Err(Error::Check(format!(
            "{label}: chain bridge {TABLE} {} holds {}, expected only `jump {}`; {fix}",
            n.iface_chain,
            describe(&iface),
            n.mac_chain
        )));
    }
    let mac_rules = chain_rules(&n.mac_chain)?;
    let want_mac = Stmt::EtherSaddr(container_mac.to_string());
    let ok = mac_rules.len() == 2
        && mac_rules[0].core() == [&want_mac, &Stmt::Return]
        && mac_rules[1].core() == [&Stmt::Drop];
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

/// One attachment's spoof check as found in the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// `<containerID>-<ifname>` (the names do not say where the ID ends).
    pub ref_id: String,
    /// The `iifname` of its `PREROUTING` jump, if there is one.
    pub host_veth: Option<String>,
    /// The MAC its chain lets pass, if readable.
    pub mac: Option<Mac>,
    chains: BTreeSet<String>,
    rule_handles: BTreeSet<u64>,
}

/// Groups the objects of the table that follow our naming (chains `cni-br-iface-*`, `PREROUTING`
/// rules commented `macspoofchk-*` or jumping to such a chain) by attachment.
fn attachments(rs: &Ruleset) -> Vec<Attachment> {
    fn entry<'a>(m: &'a mut BTreeMap<String, Attachment>, r: &str) -> &'a mut Attachment {
        m.entry(r.to_string()).or_insert_with(|| Attachment {
            ref_id: r.to_string(),
            host_veth: None,
            mac: None,
            chains: BTreeSet::new(),
            rule_handles: BTreeSet::new(),
        })
    }
    let mut by_ref: BTreeMap<String, Attachment> = BTreeMap::new();
    // PREROUTING rules give ref IDs (from the jump target, else the comment) and veths.
    for r in rs.rules_of(BASE_CHAIN) {
        let from_target = r.targets().find_map(|t| t.strip_prefix(CHAIN_PREFIX));
        let from_comment = r.comment.as_deref().and_then(|c| c.strip_prefix(COMMENT_PREFIX));
        let Some(ref_id) = from_target.or(from_comment) else { continue };
        let a = entry(&mut by_ref, ref_id);
        a.rule_handles.insert(r.handle);
        if a.host_veth.is_none() {
            a.host_veth = r.stmts.iter().find_map(|s| match s {
                Stmt::IifName(v) => Some(v.clone()),
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

/// The attachments that have spoof-check rules or chains in the calling thread's netns, sorted.
pub fn list() -> Result<Vec<Attachment>> {
    read_table("macspoofchk").map(|rs| rs.map(|rs| attachments(&rs)).unwrap_or_default())
}

/// Removes the spoof checks (chains and `PREROUTING` rules with our naming) of every attachment not in
/// `valid` (`(containerID, ifname)` pairs). Returns what was removed.
///
/// The names carry no network: an attachment of another network that uses macspoofchk is removed too
/// unless it is in `valid`. Use [`gc_filtered`] to limit the collection (e.g. to attachments whose host
/// veth is gone or is a port of this network's bridge).
pub fn gc(valid: &[(&str, &str)]) -> Result<Vec<Attachment>> {
    gc_filtered(valid, |_| true)
}

/// Like [`gc`], but only removes attachments for which `in_scope` is true.
pub fn gc_filtered(valid: &[(&str, &str)], in_scope: impl Fn(&Attachment) -> bool) -> Result<Vec<Attachment>> {
    let keep: Vec<Names> = valid.iter().map(|(c, i)| Names::new(c, i)).collect();
    let keep_refs: HashSet<&str> = keep.iter().map(|n| n.ref_id.as_str()).collect();
    let keep_chains: HashSet<&str> = keep.iter().flat_map(|n| [n.iface_chain.as_str(), n.mac_chain.as_str()]).collect();
    let label = "macspoofchk garbage collection";
    for attempt in 1..=MAX_ATTEMPTS {
        let Some(rs) = read_table(label)? else { return Ok(Vec::new()) };
        let mut stale: Vec<Attachment> =
            attachments(&rs).into_iter().filter(|a| !keep_refs.contains(a.ref_id.as_str()) && in_scope(a)).collect();
        for a in &mut stale {
            a.chains.retain(|c| !keep_chains.contains(c.as_str()));
        }
        // A chain still referenced from a chain that stays (someone else's rule) cannot be deleted:
        // leave that attachment's chains alone rather than failing the whole collection.
        let removed_chains: HashSet<&str> = stale.iter().flat_map(|a| a.chains.iter().map(String::as_str)).collect();
        let stale_handles: HashSet<u64> = stale.iter().flat_map(|a| a.rule_handles.iter().copied()).collect();
        let referenced_from_outside: HashSet<&str> = rs
            .rules
            .iter()
            .filter(|r| !removed_chains.contains(r.chain.as_str()))
            .filter(|r| !(r.chain == BASE_CHAIN && stale_handles.contains(&r.handle)))
            .flat_map(|r| r.targets())
            .filter(|t| removed_chains.contains(t))
            .collect();
        stale.retain(|a| !a.chains.iter().any(|c| referenced_from_outside.contains(c.as_str())));
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let handles: Vec<u64> = stale.iter().flat_map(|a| a.rule_handles.iter().copied()).collect();
        // iface chains before their mac chains (an iface chain's rule references the mac chain; inside
        // one transaction the order does not matter to the kernel, but keep it readable).
        let mut chains: Vec<&str> = stale.iter().flat_map(|a| a.chains.iter().map(String::as_str)).collect();
        chains.sort_by_key(|c| (c.ends_with("-mac"), c.to_string()));
        let what = format!("deleting the spoof-check chains {} and their {BASE_CHAIN} rules", chains.join(", "));
        if apply(&teardown_script(&handles, &chains), label, &what, attempt == MAX_ATTEMPTS)? {
            stale.sort();
            return Ok(stale);
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "b2:f2:df:50:60:44".parse().unwrap()
    }

    #[test]
    fn names_match_the_reference() {
        let n = Names::new("ctr-abc123", "eth0");
        assert_eq!(n.ref_id, "ctr-abc123-eth0");
        assert_eq!(n.iface_chain, "cni-br-iface-ctr-abc123-eth0");
        assert_eq!(n.mac_chain, "cni-br-iface-ctr-abc123-eth0-mac");
        assert_eq!(n.comment, "macspoofchk-ctr-abc123-eth0");
    }

    #[test]
    fn validation() {
        assert!(validate("", "eth0").unwrap_err().to_string().contains("container ID is empty"));
        assert!(validate("c", "").unwrap_err().to_string().contains("interface name is empty"));
        assert!(validate(&"x".repeat(300), "eth0").unwrap_err().to_string().contains("longer than nftables allows"));
        let n = validate("9abc", "eth0").unwrap();
        assert!(validate_veth(&n, "").is_err());
        assert!(validate_veth(&n, "a-very-long-name-x").is_err());
        validate_veth(&n, "veth1234abcd").unwrap();
    }

    #[test]
    fn setup_script_creates_and_fills_in_one_transaction() {
        let n = Names::new("ctr-abc123", "eth0");
        let s = setup_script(&n, "vethc5b5470d", mac(), &[], true);
        let expected = json!({"nftables": [
            {"add": {"table": {"family": "bridge", "name": "nat"}}},
            {"add": {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING", "type": "filter",
                "hook": "prerouting", "prio": -300, "policy": "accept"}}},
            {"add": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0"}}},
            {"add": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0-mac"}}},
            {"flush": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0"}}},
            {"flush": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0-mac"}}},
            {"add": {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING",
                "comment": "macspoofchk-ctr-abc123-eth0", "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "vethc5b5470d"}},
                    {"jump": {"target": "cni-br-iface-ctr-abc123-eth0"}}]}}},
            {"add": {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0",
                "comment": "macspoofchk-ctr-abc123-eth0", "expr": [
                    {"jump": {"target": "cni-br-iface-ctr-abc123-eth0-mac"}}]}}},
            {"add": {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0-mac",
                "comment": "macspoofchk-ctr-abc123-eth0", "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                        "right": "b2:f2:df:50:60:44"}},
                    {"return": null}]}}},
            {"add": {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0-mac",
                "comment": "macspoofchk-ctr-abc123-eth0", "expr": [{"drop": null}]}}}
        ]});
        assert_eq!(s, expected);
    }

    #[test]
    fn setup_script_replaces_old_jumps_or_keeps_the_current_one() {
        let n = Names::new("c1", "eth0");
        let s = setup_script(&n, "veth1", mac(), &[4, 9], true);
        let cmds = s["nftables"].as_array().unwrap();
        // deletions come after the flushes and before the new jump
        assert_eq!(
            cmds[6],
            json!({"delete": {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 4}}})
        );
        assert_eq!(cmds[7]["delete"]["rule"]["handle"], 9);
        assert_eq!(cmds[8]["add"]["rule"]["chain"], "PREROUTING");
        let kept = setup_script(&n, "veth1", mac(), &[], false);
        let kept = kept["nftables"].as_array().unwrap();
        assert_eq!(kept.len(), 9);
        assert!(kept.iter().all(|c| c["add"]["rule"]["chain"] != "PREROUTING"));
    }

    #[test]
    fn teardown_script_deletes_rules_before_chains() {
        let s = teardown_script(&[7], &["cni-br-iface-c1-eth0", "cni-br-iface-c1-eth0-mac"]);
        assert_eq!(
            s,
            json!({"nftables": [
                {"delete": {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 7}}},
                {"delete": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-c1-eth0"}}},
                {"delete": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-c1-eth0-mac"}}}
            ]})
        );
    }

    /// `nft -j list table bridge nat` after a reference ADD (bridge 1.1.1), plus a foreign rule.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "bridge", "name": "nat", "handle": 1}},
        {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}},
        {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0", "handle": 2}},
        {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr-abc123-eth0-mac", "handle": 3}},
        {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-orphan-mac", "handle": 9}},
        {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 4, "comment": "macspoofchk-ctr-abc123-eth0", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "vethc5b5470d"}}, {"jump": {"target": "cni-br-iface-ctr-abc123-eth0"}}]}},
        {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 8, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
        {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0", "handle": 5, "comment": "macspoofchk-ctr-abc123-eth0", "expr": [{"jump": {"target": "cni-br-iface-ctr-abc123-eth0-mac"}}]}},
        {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0-mac", "handle": 6, "comment": "macspoofchk-ctr-abc123-eth0", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "b2:f2:df:50:60:44"}}, {"return": null}]}},
        {"rule": {"family": "bridge", "table": "nat", "chain": "cni-br-iface-ctr-abc123-eth0-mac", "handle": 7, "comment": "macspoofchk-ctr-abc123-eth0", "expr": [{"drop": null}]}}
    ]}"#;

    #[test]
    fn parse_listing() {
        let rs = Ruleset::parse(LISTING).unwrap();
        assert_eq!(rs.chains.len(), 4);
        assert_eq!(
            rs.chains["PREROUTING"],
            Some(BaseHook { ty: "filter".into(), hook: "prerouting".into(), prio: -300, policy: "accept".into() })
        );
        let n = Names::new("ctr-abc123", "eth0");
        let mine = attachment_rules(&rs, &n);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].handle, 4);
        assert!(is_expected_jump(mine[0], &n, "vethc5b5470d"));
        assert!(!is_expected_jump(mine[0], &n, "vethother"));
        assert_eq!(
            mine[0].text(),
            r#"iifname "vethc5b5470d" jump cni-br-iface-ctr-abc123-eth0 comment "macspoofchk-ctr-abc123-eth0""#
        );
        let mac_rules = rs.rules_of(&n.mac_chain);
        assert_eq!(mac_rules[0].core(), [&Stmt::EtherSaddr("b2:f2:df:50:60:44".into()), &Stmt::Return]);
        assert_eq!(mac_rules[1].core(), [&Stmt::Drop]);
        assert!(Ruleset::parse("{}").is_err());
        assert!(Ruleset::parse("not json").is_err());
    }

    #[test]
    fn attachments_grouping() {
        let rs = Ruleset::parse(LISTING).unwrap();
        let a = attachments(&rs);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0].ref_id, "ctr-abc123-eth0");
        assert_eq!(a[0].host_veth.as_deref(), Some("vethc5b5470d"));
        assert_eq!(a[0].mac, Some(mac()));
        assert_eq!(a[0].rule_handles, BTreeSet::from([4]));
        assert_eq!(a[0].chains.len(), 2);
        // a lone `-mac` chain without its iface chain is an attachment of its own name
        assert_eq!(a[1].ref_id, "orphan-mac");
        assert_eq!(a[1].host_veth, None);
        assert_eq!(a[1].chains, BTreeSet::from(["cni-br-iface-orphan-mac".to_string()]));
    }

    #[test]
    fn stmt_parse_other() {
        assert_eq!(Stmt::parse(&json!({"counter": {"packets": 1, "bytes": 2}})), Stmt::Counter);
        assert_eq!(Stmt::parse(&json!({"goto": {"target": "x"}})), Stmt::Goto("x".into()));
        let neq = json!({"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "v"}});
        assert!(matches!(Stmt::parse(&neq), Stmt::Other(_)));
        assert_eq!(
            Stmt::parse(
                &json!({"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "AA:BB:CC:DD:EE:FF"}})
            ),
            Stmt::EtherSaddr("aa:bb:cc:dd:ee:ff".into())
        );
    }
}
