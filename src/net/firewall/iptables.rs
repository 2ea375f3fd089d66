//! The reference firewall plugin's iptables layout, table `filter`, per address family:
//! ```text
//! -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD                 (inserted first)
//! -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN      (inserted first)
//! -A CNI-FORWARD -d 10.88.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT          (per address)
//! -A CNI-FORWARD -s 10.88.0.2/32 -j ACCEPT                                                     (per address)
//! ```
//! and for `ingressPolicy: same-bridge` / `isolated` the isolation chains `CNI-ISOLATION-STAGE-1/2`
//! jumped from the top of FORWARD (see [`isolation_rules`]). The reference runs one `iptables` command per check and change; here a family's table is
//! read once (`iptables-save -t filter`), the changes are planned on that listing with the reference's
//! "insert first / append unless present" rules (so the result is the same line for line), and applied in
//! one `iptables-restore --noflush` transaction. User chains are declared only when missing: a declaration
//! in `--noflush` mode flushes an existing chain.
//!
//! rcni's addition, off unless asked for (`dnat`): per address
//! `-A CNI-FORWARD -d <ip> -m conntrack --ctstate DNAT -m comment --comment "rcni firewall: host port (DNAT) connections" -j ACCEPT`,
//! so that new connections to a host port reach the pod when the FORWARD policy is DROP. The reference
//! accepts only established traffic towards the pod and leaves new connections to the policy.
//!
//! Shared structure (chains, jumps, isolation rules) is never removed, as in the reference: other pods
//! and the other implementation use it.

use std::net::IpAddr;

use super::{Error, Result};
use crate::net::IpFamily;
use crate::net::command::Command;

pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const JUMP_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";
/// `same-bridge` as the reference 1.1 writes it (every isolation rule carries this comment).
const SAME_BRIDGE_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge)";
/// `isolated` exists only in the reference 1.7 and later, which changed the comments: the shared rules
/// (FORWARD jump, RETURNs, stage-2 drop) carry this one, the per-bridge stage-1 rules [`ISOLATED_COMMENT`].
const SHARED_1_7_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)";
const ISOLATED_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: isolated)";
pub const DNAT_COMMENT: &str = "rcni firewall: host port (DNAT) connections";
/// iptables' limit for chain names (29 bytes with the NUL).
const MAX_CHAIN: usize = 28;

/// What an attachment gets besides its accept rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The admin override chain (`iptablesAdminChainName`).
    pub admin_chain: String,
    /// `ingressPolicy: same-bridge` or `isolated`: the bridge whose pods are isolated.
    pub isolation: Option<Isolation>,
    /// Also accept new connections DNAT'ed to the pod (host ports behind a FORWARD DROP policy).
    pub dnat: bool,
}

/// The bridge whose pods are isolated from other bridges (`same-bridge`), and with `isolated` also
/// from each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    pub bridge: String,
    pub isolated: bool,
}

/// Checks a chain name as iptables would take it, before anything is run.
pub fn check_chain_name(field: &str, name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("{field} {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_CHAIN {
        return bad(&format!("is longer than iptables' {MAX_CHAIN} characters"));
    }
    if name.starts_with(['-', '!']) {
        return bad("starts with '-' or '!', which iptables takes for an option");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'' || c == '\\') {
        return bad("contains whitespace, a quote, a backslash or a control character");
    }
    if ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING", FORWARD_CHAIN].contains(&name) {
        return bad("is a built-in chain or the plugin's own CNI-FORWARD");
    }
    Ok(())
}

/// The families that `ips` use, v4 first.
pub fn families(ips: &[IpAddr]) -> Vec<IpFamily> {
    IpFamily::used_by(ips.iter().copied())
}

/// `"..."` as iptables-save quotes a comment.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A rule as iptables-save prints it, without the `-A <chain> ` prefix.
fn forward_jump() -> String {
    format!("-m comment --comment {} -j {FORWARD_CHAIN}", quote(JUMP_COMMENT))
}

fn admin_jump(admin: &str) -> String {
    format!("-m comment --comment {} -j {admin}", quote(ADMIN_COMMENT))
}

/// The reference's two rules for an address, then rcni's DNAT rule when asked for.
fn address_rules(ip: &IpAddr, dnat: bool) -> Vec<String> {
    let host = format!("{ip}/{}", IpFamily::of(ip).host_prefix());
    let mut v =
        vec![format!("-d {host} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"), format!("-s {host} -j ACCEPT")];
    if dnat {
        v.push(dnat_rule(ip));
    }
    v
}

fn dnat_rule(ip: &IpAddr) -> String {
    format!(
        "-d {ip}/{} -m conntrack --ctstate DNAT -m comment --comment {} -j ACCEPT",
        IpFamily::of(ip).host_prefix(),
        quote(DNAT_COMMENT)
    )
}

/// (chain, rule, insert first) of the isolation structure, in the reference's order.
///
/// `same-bridge` is the reference 1.1 layout (the one the reference binary on this machine writes, and
/// tests/firewall.rs compares against). `isolated` is the reference 1.7 layout (its ingresspolicy.go):
/// the same chains plus `-i br -o br -j DROP` inserted at the top of stage 1, so bridged traffic between
/// two pods of the bridge is dropped too, with 1.7's comments. A node running both policies (or both
/// reference versions) gets a second FORWARD jump and RETURN with the other comment: harmless, both
/// evaluate the same chains, and that is what the two reference versions do to each other as well.
fn isolation_rules(iso: &Isolation) -> Vec<(&'static str, String, bool)> {
    let br = &iso.bridge;
    let (shared, own) = if iso.isolated {
        (quote(SHARED_1_7_COMMENT), quote(ISOLATED_COMMENT))
    } else {
        (quote(SAME_BRIDGE_COMMENT), quote(SAME_BRIDGE_COMMENT))
    };
    let mut v = vec![
        ("FORWARD", format!("-m comment --comment {shared} -j {STAGE1}"), true),
        (STAGE1, format!("-i {br} ! -o {br} -m comment --comment {own} -j {STAGE2}"), true),
    ];
    if iso.isolated {
        v.push((STAGE1, format!("-i {br} -o {br} -m comment --comment {own} -j DROP"), true));
    }
    v.extend([
        (STAGE1, format!("-m comment --comment {shared} -j RETURN"), false),
        (STAGE2, format!("-o {br} -m comment --comment {shared} -j DROP"), true),
        (STAGE2, format!("-m comment --comment {shared} -j RETURN"), false),
    ]);
    v
}

fn run(tool: &str, args: &[&str], stdin: Option<&str>, what: &str) -> Result<String> {
    let mut cmd = Command::new(tool).args(args.iter().copied());
    if let Some(input) = stdin {
        cmd = cmd.stdin(input);
    }
    cmd.run().map(|o| o.stdout).map_err(|err| {
        let hint = if err.is_not_installed() {
            " (install iptables: the firewall plugin's iptables backend runs iptables-save and iptables-restore)"
                .to_string()
        } else {
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        };
        Error::Command { what: format!("firewall (iptables backend): {what}"), err, hint }
    })
}

/// A family's `filter` table as iptables-save lists it, and the changes planned on it.
struct Table {
    fam: IpFamily,
    chains: Vec<String>,
    /// `-A <chain> <rule>` lines in order.
    rules: Vec<String>,
    /// iptables-restore lines of the planned changes.
    changes: Vec<String>,
}

impl Table {
    fn read(fam: IpFamily) -> Result<Table> {
        let out = run(&format!("{}-save", fam.iptables()), &["-t", "filter"], None, "reading table filter")?;
        let mut t = Table { fam, chains: Vec::new(), rules: Vec::new(), changes: Vec::new() };
        for l in out.lines() {
            if let Some(decl) = l.strip_prefix(':') {
                t.chains.extend(decl.split_whitespace().next().map(str::to_string));
            } else if l.starts_with("-A ") {
                t.rules.push(l.to_string());
            }
        }
        Ok(t)
    }

    fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    fn has(&self, chain: &str, rule: &str) -> bool {
        let line = format!("-A {chain} {rule}");
        self.rules.contains(&line)
    }

    fn ensure_chain(&mut self, chain: &str) {
        if !self.has_chain(chain) {
            self.changes.push(format!(":{chain} - [0:0]"));
            self.chains.push(chain.to_string());
        }
    }

    /// The reference's "insert at position 1 unless present" (first = true) or "append unless present".
    fn ensure_rule(&mut self, chain: &str, rule: &str, first: bool) -> bool {
        if self.has(chain, rule) {
            return false;
        }
        let line = format!("-A {chain} {rule}");
        let prefix = format!("-A {chain} ");
        if first {
            self.changes.push(format!("-I {chain} 1 {rule}"));
            let at = self.rules.iter().position(|r| r.starts_with(&prefix)).unwrap_or(self.rules.len());
            self.rules.insert(at, line);
        } else {
            self.changes.push(line.clone());
            self.rules.push(line);
        }
        true
    }

    fn delete_rule(&mut self, chain: &str, rule: &str) {
        let line = format!("-A {chain} {rule}");
        if let Some(at) = self.rules.iter().position(|r| *r == line) {
            self.rules.remove(at);
            self.changes.push(format!("-D {chain} {rule}"));
        }
    }

    fn apply(&mut self, what: &str) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let mut input = String::from("*filter\n");
        for c in self.changes.drain(..) {
            input.push_str(&c);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        run(&format!("{}-restore", self.fam.iptables()), &["-w", "--noflush"], Some(&input), what).map(|_| ())
    }
}

/// Adds the accept rules of `ips` (and the structure they need). All or nothing: when a family fails,
/// the address rules this call added in the families before it are removed again.
pub fn add(cfg: &Config, ips: &[IpAddr]) -> Result<()> {
    let mut done: Vec<(IpFamily, Vec<(String, String)>)> = Vec::new();
    for fam in families(ips) {
        match add_family(cfg, fam, ips) {
            Ok(added) => done.push((fam, added)),
            Err(e) => {
                for (fam, added) in done {
                    if let Ok(mut t) = Table::read(fam) {
                        for (chain, rule) in &added {
                            t.delete_rule(chain, rule);
                        }
                        let _ = t.apply("undoing a failed ADD");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Returns the per-address rules it added (chain, rule).
fn add_family(cfg: &Config, fam: IpFamily, ips: &[IpAddr]) -> Result<Vec<(String, String)>> {
    let mut t = Table::read(fam)?;
    t.ensure_chain(FORWARD_CHAIN);
    t.ensure_chain(&cfg.admin_chain);
    t.ensure_rule("FORWARD", &forward_jump(), true);
    t.ensure_rule(FORWARD_CHAIN, &admin_jump(&cfg.admin_chain), true);
    let mut added = Vec::new();
    for ip in ips.iter().filter(|ip| IpFamily::of(ip) == fam) {
        for rule in address_rules(ip, cfg.dnat) {
            if t.ensure_rule(FORWARD_CHAIN, &rule, false) {
                added.push((FORWARD_CHAIN.to_string(), rule));
            }
        }
    }
    if let Some(iso) = &cfg.isolation {
        t.ensure_chain(STAGE1);
        t.ensure_chain(STAGE2);
        for (chain, rule, first) in isolation_rules(iso) {
            t.ensure_rule(chain, &rule, first);
        }
    }
    t.apply(&format!("adding the accept rules of {} to chain {FORWARD_CHAIN}", list(ips, fam)))?;
    Ok(added)
}

fn list(ips: &[IpAddr], fam: IpFamily) -> String {
    ips.iter().filter(|ip| IpFamily::of(ip) == fam).map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
}

/// Removes the accept rules of `ips` (the reference's two and rcni's DNAT rule), whoever added them.
/// Absent rules and a missing table count as removed.
pub fn del(ips: &[IpAddr]) -> Result<()> {
    for fam in families(ips) {
        let mut t = Table::read(fam)?;
        if !t.has_chain(FORWARD_CHAIN) {
            continue;
        }
        for ip in ips.iter().filter(|ip| IpFamily::of(ip) == fam) {
            for rule in address_rules(ip, true) {
                t.delete_rule(FORWARD_CHAIN, &rule);
            }
        }
        t.apply(&format!("removing the accept rules of {} from chain {FORWARD_CHAIN}", list(ips, fam)))?;
    }
    Ok(())
}

/// Verifies that every rule [`add`] makes for `ips` is in place; the error names the first one missing.
pub fn check(cfg: &Config, ips: &[IpAddr]) -> Result<()> {
    for fam in families(ips) {
        let t = Table::read(fam)?;
        let tool = fam.iptables();
        for chain in [FORWARD_CHAIN, cfg.admin_chain.as_str()] {
            if !t.has_chain(chain) {
                return Err(Error::Check(format!("firewall: {tool} chain {chain} of table filter is missing")));
            }
        }
        let mut want = vec![("FORWARD", forward_jump()), (FORWARD_CHAIN, admin_jump(&cfg.admin_chain))];
        for ip in ips.iter().filter(|ip| IpFamily::of(ip) == fam) {
            want.extend(address_rules(ip, cfg.dnat).into_iter().map(|r| (FORWARD_CHAIN, r)));
        }
        if let Some(iso) = &cfg.isolation {
            want.extend(isolation_rules(iso).into_iter().map(|(c, r, _)| (c, r)));
        }
        for (chain, rule) in want {
            if !t.has(chain, &rule) {
                return Err(Error::Check(format!(
                    "firewall: {tool} rule `-A {chain} {rule}` is missing from table filter (removed by hand or by \
                     a firewall reload?); re-create the pod's network attachment"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[&str]) -> Table {
        let mut t = Table { fam: IpFamily::V4, chains: Vec::new(), rules: Vec::new(), changes: Vec::new() };
        for l in lines {
            if let Some(d) = l.strip_prefix(':') {
                t.chains.push(d.split_whitespace().next().unwrap().to_string());
            } else {
                t.rules.push(l.to_string());
            }
        }
        t
    }

    #[test]
    fn insert_first_goes_before_the_chains_rules_and_declares_only_missing_chains() {
        let mut t = table(&[":FORWARD ACCEPT [0:0]", ":CNI-FORWARD - [0:0]", "-A FORWARD -j OTHER"]);
        t.ensure_chain(FORWARD_CHAIN);
        t.ensure_chain(DEFAULT_ADMIN_CHAIN);
        assert!(t.ensure_rule("FORWARD", &forward_jump(), true));
        assert!(!t.ensure_rule("FORWARD", &forward_jump(), true), "present: not again");
        assert_eq!(
            t.changes,
            vec![
                ":CNI-ADMIN - [0:0]".to_string(),
                "-I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD".to_string(),
            ]
        );
        assert_eq!(t.rules[0], "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD");
    }

    #[test]
    fn address_rules_are_the_references() {
        let r = address_rules(&"fd00::2".parse().unwrap(), false);
        assert_eq!(
            r,
            vec![
                "-d fd00::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
                "-s fd00::2/128 -j ACCEPT".to_string(),
            ]
        );
    }

    #[test]
    fn chain_names() {
        check_chain_name("f", "CNI-ADMIN").unwrap();
        for bad in ["", "-x", "a b", "FORWARD", "CNI-FORWARD", &"x".repeat(29), "a\"b"] {
            assert!(check_chain_name("iptablesAdminChainName", bad).is_err(), "{bad:?}");
        }
    }
}
