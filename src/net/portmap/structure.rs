//! The portmap structure in table `inet rcni`: maps, sets, chains and their rules (layout in the module
//! documentation of `portmap`). Written with `nft -f` when a netlink probe finds it missing or of another
//! layout; pods never rewrite it. Every rule carries a comment with the layout version, the mark bit and
//! its place, so the probe recognises an intact structure from one rule dump of the table.

use super::{Error, Result, TABLE, nl_err};
use crate::net::command::Command;
use crate::net::nft::{NFPROTO_INET, Nfnl, absent};

/// The layout version (`v1`: bump it when the rules change shape, so an upgrade rewrites the structure)
/// and the start of the mark bit, as every rule comment begins.
const COMMENT_PREFIX: &str = "rcni-portmap v2 bit";

pub const MAP_HOSTPORT4: &str = "hostport4";
pub const MAP_HOSTIPPORT4: &str = "hostipport4";
pub const MAP_HOSTPORT6: &str = "hostport6";
pub const MAP_HOSTIPPORT6: &str = "hostipport6";
/// Interval maps of port ranges (data: the target address; the port is kept).
pub const MAP_RANGE4: &str = "hostportrange4";
pub const MAP_HOSTIPRANGE4: &str = "hostiprange4";
pub const MAP_RANGE6: &str = "hostportrange6";
pub const MAP_HOSTIPRANGE6: &str = "hostiprange6";
pub const SET_HAIRPIN4: &str = "hairpin4";
pub const SET_HAIRPIN6: &str = "hairpin6";
/// Every map and set holding per-attachment elements.
pub const ELEMENT_SETS: [&str; 10] = [
    MAP_HOSTPORT4,
    MAP_HOSTIPPORT4,
    MAP_HOSTPORT6,
    MAP_HOSTIPPORT6,
    MAP_RANGE4,
    MAP_HOSTIPRANGE4,
    MAP_RANGE6,
    MAP_HOSTIPRANGE6,
    SET_HAIRPIN4,
    SET_HAIRPIN6,
];

pub const CHAIN_PRE: &str = "portmap-pre";
pub const CHAIN_OUT: &str = "portmap-out";
pub const CHAIN_DNAT: &str = "portmap-dnat";
pub const CHAIN_POST: &str = "portmap-post";
pub const CHAIN_GUARD: &str = "portmap-guard";
const CHAINS: [&str; 5] = [CHAIN_PRE, CHAIN_OUT, CHAIN_DNAT, CHAIN_POST, CHAIN_GUARD];

/// The rule DNATing packets whose key is in `map` (of family `fam`, `ip` or `ip6`) to the map's data:
/// keyed by destination address too for the host-IP maps; the data is address and port for single
/// mappings, the address alone (the port is kept) for ranges.
pub(crate) fn dnat_rule(fam: &str, mark: &str, map: &str) -> String {
    if map.starts_with("hostip") {
        let key = format!("{fam} daddr . meta l4proto . th dport");
        format!("{key} @{map} {mark} dnat {fam} to {key} map @{map}")
    } else {
        let nfproto = if fam == "ip" { "ipv4" } else { "ipv6" };
        format!(
            "meta nfproto {nfproto} meta l4proto . th dport @{map} {mark} dnat {fam} to meta l4proto . th dport map @{map}"
        )
    }
}

/// The node-wide part of the configuration that the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    /// The connection mark bit that says "DNATed by a host port" (`markMasqBit`, reference default 13).
    pub mark_bit: u8,
}

impl Default for Structure {
    fn default() -> Self {
        Structure { mark_bit: 13 }
    }
}

impl Structure {
    fn mark(&self) -> String {
        format!("0x{:08x}", 1u32 << self.mark_bit)
    }

    /// The statement marking a connection as DNATed by a host port.
    pub(crate) fn mark_expr(&self) -> String {
        format!("ct mark set ct mark | {}", self.mark())
    }

    /// (chain, rule text) of every rule, in order.
    fn rules(&self) -> Vec<(&'static str, String)> {
        let m = self.mark();
        let mark = self.mark_expr();
        vec![
            (CHAIN_PRE, format!("fib daddr type local jump {CHAIN_DNAT}")),
            (CHAIN_OUT, format!("fib daddr type local jump {CHAIN_DNAT}")),
            // Most specific first: a host IP over every local address, a single port over a range.
            (CHAIN_DNAT, dnat_rule("ip", &mark, MAP_HOSTIPPORT4)),
            (CHAIN_DNAT, dnat_rule("ip", &mark, MAP_HOSTIPRANGE4)),
            (CHAIN_DNAT, dnat_rule("ip", &mark, MAP_HOSTPORT4)),
            (CHAIN_DNAT, dnat_rule("ip", &mark, MAP_RANGE4)),
            (CHAIN_DNAT, dnat_rule("ip6", &mark, MAP_HOSTIPPORT6)),
            (CHAIN_DNAT, dnat_rule("ip6", &mark, MAP_HOSTIPRANGE6)),
            (CHAIN_DNAT, dnat_rule("ip6", &mark, MAP_HOSTPORT6)),
            (CHAIN_DNAT, dnat_rule("ip6", &mark, MAP_RANGE6)),
            // Localhost (needs route_localnet on the pod's host interface) and hairpin: masqueraded so
            // the pod's answer comes back through the node's conntrack.
            (CHAIN_POST, format!("ct mark & {m} == {m} ip saddr 127.0.0.0/8 masquerade")),
            (CHAIN_POST, format!("ct mark & {m} == {m} ip saddr . ip daddr @{SET_HAIRPIN4} masquerade")),
            (CHAIN_POST, format!("ct mark & {m} == {m} ip6 saddr . ip6 daddr @{SET_HAIRPIN6} masquerade")),
            (
                CHAIN_GUARD,
                "iifname != \"lo\" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct status & dnat != dnat drop"
                    .to_string(),
            ),
        ]
    }

    /// The comments of an intact structure, sorted.
    fn comments(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.rules().iter().enumerate().map(|(i, (chain, _))| self.comment(chain, i)).collect();
        v.sort();
        v
    }

    fn comment(&self, chain: &str, i: usize) -> String {
        format!("{COMMENT_PREFIX}{} {chain}#{i}", self.mark_bit)
    }

    /// The nft script that (re)writes the structure in one transaction. Maps and sets are created if
    /// missing, never flushed: the elements (every pod's mappings) survive a rewrite.
    pub fn script(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("add table inet {TABLE}\n"));
        for (name, ty, what) in [
            (MAP_HOSTPORT4, "inet_proto . inet_service : ipv4_addr . inet_service", "IPv4 host ports"),
            (MAP_HOSTIPPORT4, "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service", "IPv4 host IP ports"),
            (MAP_HOSTPORT6, "inet_proto . inet_service : ipv6_addr . inet_service", "IPv6 host ports"),
            (MAP_HOSTIPPORT6, "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service", "IPv6 host IP ports"),
        ] {
            s.push_str(&format!("add map inet {TABLE} {name} {{ type {ty}; comment \"rcni portmap: {what}\"; }}\n"));
        }
        for (name, ty, what) in [
            (MAP_RANGE4, "inet_proto . inet_service : ipv4_addr", "IPv4 host port ranges"),
            (MAP_HOSTIPRANGE4, "ipv4_addr . inet_proto . inet_service : ipv4_addr", "IPv4 host IP port ranges"),
            (MAP_RANGE6, "inet_proto . inet_service : ipv6_addr", "IPv6 host port ranges"),
            (MAP_HOSTIPRANGE6, "ipv6_addr . inet_proto . inet_service : ipv6_addr", "IPv6 host IP port ranges"),
        ] {
            s.push_str(&format!(
                "add map inet {TABLE} {name} {{ type {ty}; flags interval; comment \"rcni portmap: {what}\"; }}\n"
            ));
        }
        for (name, ty) in [(SET_HAIRPIN4, "ipv4_addr . ipv4_addr"), (SET_HAIRPIN6, "ipv6_addr . ipv6_addr")] {
            s.push_str(&format!(
                "add set inet {TABLE} {name} {{ type {ty}; flags interval; comment \"rcni portmap: sources . pods \
                 to masquerade\"; }}\n"
            ));
        }
        s.push_str(&format!("add chain inet {TABLE} {CHAIN_DNAT}\n"));
        for (chain, hook) in [
            (CHAIN_PRE, "type nat hook prerouting priority dstnat"),
            (CHAIN_OUT, "type nat hook output priority -100"),
            (CHAIN_POST, "type nat hook postrouting priority srcnat"),
            (CHAIN_GUARD, "type filter hook input priority 0"),
        ] {
            s.push_str(&format!("add chain inet {TABLE} {chain} {{ {hook}; policy accept; }}\n"));
        }
        for chain in CHAINS {
            s.push_str(&format!("flush chain inet {TABLE} {chain}\n"));
        }
        for (i, (chain, rule)) in self.rules().iter().enumerate() {
            s.push_str(&format!("add rule inet {TABLE} {chain} {rule} comment \"{}\"\n", self.comment(chain, i)));
        }
        s
    }

    /// The comments found on the rules of our chains, sorted (empty when there is no structure).
    fn found(nl: &mut Nfnl) -> Result<Vec<String>> {
        let rules = match nl.dump_table_rules(NFPROTO_INET, TABLE) {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err(format!("listing the rules of table inet {TABLE}"), e)),
        };
        let mut v: Vec<String> = rules
            .into_iter()
            .filter(|r| CHAINS.contains(&r.chain.as_str()))
            .map(|r| r.comment.unwrap_or_default())
            .collect();
        v.sort();
        Ok(v)
    }

    /// Whether the structure on the node is exactly this one.
    pub fn intact(&self, nl: &mut Nfnl) -> Result<bool> {
        Ok(Self::found(nl)? == self.comments())
    }

    /// Writes the structure unless it is intact. Another mark bit in an intact structure is an error
    /// (rewriting it would change every other network's mark).
    pub fn ensure(&self, nl: &mut Nfnl) -> Result<()> {
        let found = Self::found(nl)?;
        if found == self.comments() {
            return Ok(());
        }
        if let Some(bit) = found.first().and_then(|c| parse_bit(c)) {
            let other = Structure { mark_bit: bit };
            if bit != self.mark_bit && found == other.comments() {
                return Err(Error::MarkBit { wanted: self.mark_bit, found: bit });
            }
        }
        let script = self.script();
        Command::new("nft").args(["-f", "-"]).stdin(script.as_str()).run().map(|_| ()).map_err(|e| {
            let hint = if e.is_not_installed() {
                " (install the nftables package: rcni writes the portmap rules once with `nft`)".to_string()
            } else {
                format!("\nscript:\n{script}")
            };
            Error::Command { what: format!("portmap: writing the portmap rules of table inet {TABLE}"), err: e, hint }
        })
    }
}

/// Why the node cannot serve an ADD, for STATUS.
#[derive(Debug)]
pub enum NotReady {
    /// The structure is intact but made for another mark bit (an ADD would fail).
    MarkBit(u8),
    /// The structure is missing or changed and `nft --check` says the rewrite an ADD would do fails.
    Unwritable(String),
}

impl Structure {
    /// STATUS: whether an ADD can use the structure: intact with this mark bit, or missing or changed in a
    /// way the rewrite repairs, which `nft --check` of the very script an ADD would run decides (no change
    /// is made). Errors reading the table are the caller's (nf_tables unusable).
    pub fn ready(&self, nl: &mut Nfnl) -> Result<Result<(), NotReady>> {
        let found = Self::found(nl)?;
        if found == self.comments() {
            return Ok(Ok(()));
        }
        if let Some(bit) = found.first().and_then(|c| parse_bit(c)) {
            if bit != self.mark_bit && found == (Structure { mark_bit: bit }).comments() {
                return Ok(Err(NotReady::MarkBit(bit)));
            }
        }
        let script = self.script();
        Ok(Command::new("nft").args(["--check", "-f", "-"]).stdin(script.as_str()).run().map(|_| ()).map_err(|e| {
            let why = match e.stderr() {
                Some(err) if !err.is_empty() => format!("`nft --check` of the rewrite fails: {err}"),
                _ => e.to_string(),
            };
            NotReady::Unwritable(why)
        }))
    }
}

fn parse_bit(comment: &str) -> Option<u8> {
    comment.strip_prefix(COMMENT_PREFIX)?.split(' ').next()?.parse().ok().filter(|b| *b < 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_carry_the_bit_and_parse_back() {
        let s = Structure { mark_bit: 5 };
        let c = s.comments();
        assert_eq!(c.len(), 14);
        assert!(c.iter().all(|c| parse_bit(c) == Some(5)), "{c:?}");
        assert_ne!(c, Structure::default().comments());
        let script = s.script();
        assert!(script.contains("ct mark | 0x00000020"), "{script}");
        for c in &c {
            assert!(script.contains(c.as_str()), "{c} not in {script}");
        }
        assert!(!script.contains("flush map") && !script.contains("flush set"), "elements survive: {script}");
    }
}
