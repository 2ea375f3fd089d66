//! The portmap structure in table `inet rcni`: maps, sets, chains and their rules (layout in the module
//! documentation of `portmap`). Written from typed objects in one netlink batch when a probe finds it
//! missing or of another layout; pods never rewrite it. Every rule carries a comment with the layout version, the mark bit and
//! its place, so the probe recognises an intact structure from one rule dump of the table.

use ipnetwork::IpNetwork;

use super::{Error, Result, TABLE, nl_err};
use crate::net::addr::IpFamily;
use crate::net::nft::{
    AddrField, BatchOp, CT_STATUS_DNAT, Chain, CmpOp, CtKey, DataType, Hook, IfDir, Key, NFPROTO_INET, Nfnl, Rule, Set,
    Stmt, absent, hooks,
};

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

/// One map of host ports: its name, family, whether keyed by host IP too, and whether it holds port
/// ranges (an interval map whose data is the address alone: the port is kept).
struct MapSpec {
    name: &'static str,
    fam: IpFamily,
    host_ip: bool,
    ranges: bool,
    what: &'static str,
}

/// The shared maps, most specific first per family (the order of the DNAT rules): a host IP over every
/// local address, a single port over a range.
const MAPS: [MapSpec; 8] = [
    MapSpec { name: MAP_HOSTIPPORT4, fam: IpFamily::V4, host_ip: true, ranges: false, what: "IPv4 host IP ports" },
    MapSpec {
        name: MAP_HOSTIPRANGE4,
        fam: IpFamily::V4,
        host_ip: true,
        ranges: true,
        what: "IPv4 host IP port ranges",
    },
    MapSpec { name: MAP_HOSTPORT4, fam: IpFamily::V4, host_ip: false, ranges: false, what: "IPv4 host ports" },
    MapSpec { name: MAP_RANGE4, fam: IpFamily::V4, host_ip: false, ranges: true, what: "IPv4 host port ranges" },
    MapSpec { name: MAP_HOSTIPPORT6, fam: IpFamily::V6, host_ip: true, ranges: false, what: "IPv6 host IP ports" },
    MapSpec {
        name: MAP_HOSTIPRANGE6,
        fam: IpFamily::V6,
        host_ip: true,
        ranges: true,
        what: "IPv6 host IP port ranges",
    },
    MapSpec { name: MAP_HOSTPORT6, fam: IpFamily::V6, host_ip: false, ranges: false, what: "IPv6 host ports" },
    MapSpec { name: MAP_RANGE6, fam: IpFamily::V6, host_ip: false, ranges: true, what: "IPv6 host port ranges" },
];

fn addr_type(fam: IpFamily) -> DataType {
    match fam {
        IpFamily::V4 => DataType::Ipv4Addr,
        IpFamily::V6 => DataType::Ipv6Addr,
    }
}

/// The map `name` of host ports of `fam` (keyed by host IP too with `host_ip`; with `ranges` an
/// interval map of port ranges to addresses).
pub(crate) fn host_port_map(name: &str, fam: IpFamily, host_ip: bool, ranges: bool, comment: &str) -> Set {
    let addr = addr_type(fam);
    let mut key = vec![DataType::InetProto, DataType::InetService];
    if host_ip {
        key.insert(0, addr);
    }
    let data = if ranges { vec![addr] } else { vec![addr, DataType::InetService] };
    let map = Set::map(name, key, data).comment(comment);
    if ranges { map.interval() } else { map }
}

/// The rule DNATing packets whose key is in the map `name` to the map's data (`meta l4proto . th dport`,
/// with `ip daddr .` first for host-IP maps), marking the connection with `mark`.
pub(crate) fn dnat_rule(fam: IpFamily, mark: u32, name: &str, host_ip: bool, ranges: bool) -> Vec<Stmt> {
    let mut keys = vec![Key::L4Proto, Key::ThDport];
    let mut stmts = Vec::new();
    if host_ip {
        keys.insert(0, Key::Addr(fam, AddrField::Daddr));
    } else {
        // No address in the key says the family, so the rule says it.
        stmts.push(Stmt::NfProto(fam));
    }
    stmts.push(Stmt::Lookup { keys: keys.clone(), set: name.to_string(), ranges });
    stmts.push(Stmt::CtMarkOr(mark));
    stmts.push(Stmt::DnatMap { fam, keys, map: name.to_string(), ranges });
    stmts
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
    /// The connection mark of "DNATed by a host port".
    pub(crate) fn mark(&self) -> u32 {
        1u32 << self.mark_bit
    }

    /// (chain, statements) of every rule, in order.
    fn rules(&self) -> Vec<(&'static str, Vec<Stmt>)> {
        let m = self.mark();
        let marked = Stmt::CtMasked { key: CtKey::Mark, mask: m, op: CmpOp::Eq, value: m };
        let loopback: IpNetwork = "127.0.0.0/8".parse().expect("a prefix");
        let hairpin = |fam| Stmt::Lookup {
            keys: vec![Key::Addr(fam, AddrField::Saddr), Key::Addr(fam, AddrField::Daddr)],
            set: if fam == IpFamily::V4 { SET_HAIRPIN4 } else { SET_HAIRPIN6 }.to_string(),
            ranges: true,
        };
        let mut v = vec![(CHAIN_PRE, vec![Stmt::FibDaddrLocal, Stmt::Jump(CHAIN_DNAT.into())])];
        v.push((CHAIN_OUT, vec![Stmt::FibDaddrLocal, Stmt::Jump(CHAIN_DNAT.into())]));
        for map in &MAPS {
            v.push((CHAIN_DNAT, dnat_rule(map.fam, m, map.name, map.host_ip, map.ranges)));
        }
        // Localhost (needs route_localnet on the pod's host interface) and hairpin: masqueraded so the
        // pod's answer comes back through the node's conntrack.
        v.push((CHAIN_POST, vec![marked.clone(), Stmt::addr(AddrField::Saddr, CmpOp::Eq, loopback), Stmt::Masquerade]));
        v.push((CHAIN_POST, vec![marked.clone(), hairpin(IpFamily::V4), Stmt::Masquerade]));
        v.push((CHAIN_POST, vec![marked, hairpin(IpFamily::V6), Stmt::Masquerade]));
        // Packets to 127.0.0.0/8 from elsewhere that no host port DNATed (route_localnet would let them in).
        v.push((
            CHAIN_GUARD,
            vec![
                Stmt::IfName { dir: IfDir::In, op: CmpOp::Neq, name: "lo".into() },
                Stmt::addr(AddrField::Daddr, CmpOp::Eq, loopback),
                Stmt::addr(AddrField::Saddr, CmpOp::Neq, loopback),
                Stmt::CtMasked { key: CtKey::Status, mask: CT_STATUS_DNAT, op: CmpOp::Neq, value: CT_STATUS_DNAT },
                Stmt::Drop,
            ],
        ));
        v
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

    /// The maps, sets, chains and rules of the structure.
    fn objects(&self) -> Objects {
        let mut sets: Vec<Set> = MAPS
            .iter()
            .map(|m| host_port_map(m.name, m.fam, m.host_ip, m.ranges, &format!("rcni portmap: {}", m.what)))
            .collect();
        for (name, fam) in [(SET_HAIRPIN4, IpFamily::V4), (SET_HAIRPIN6, IpFamily::V6)] {
            let ty = addr_type(fam);
            sets.push(Set::new(name, vec![ty, ty]).interval().comment("rcni portmap: sources . pods to masquerade"));
        }
        let mut chains = vec![Chain::regular(CHAIN_DNAT)];
        for (name, hook) in [
            (CHAIN_PRE, Hook::accept("nat", hooks::PREROUTING, hooks::DSTNAT)),
            (CHAIN_OUT, Hook::accept("nat", hooks::OUTPUT, hooks::DSTNAT)),
            (CHAIN_POST, Hook::nat_postrouting()),
            (CHAIN_GUARD, Hook::accept("filter", hooks::INPUT, hooks::FILTER)),
        ] {
            chains.push(Chain::base(name, hook));
        }
        let rules = self
            .rules()
            .into_iter()
            .enumerate()
            .map(|(i, (chain, stmts))| Rule::new(chain, stmts).comment(&self.comment(chain, i)))
            .collect();
        Objects { sets, chains, rules, prefixes: Vec::new() }
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

    /// Writes the structure unless it is intact, in one transaction. Another mark bit in an intact
    /// structure is an error (rewriting it would change every other network's mark).
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
        let objects = self.objects();
        let ops = objects.ops(&CHAINS);
        nl.batch(None, NFPROTO_INET, TABLE, &ops)
            .map_err(|e| nl_err(format!("writing the portmap rules of table inet {TABLE}{}", failed(nl, &ops)), e))
    }
}

impl Structure {
    /// For the iptables backend, which uses only the guard of the structure: an intact structure of
    /// any mark bit will do; else this one is written.
    pub fn ensure_guard(&self, nl: &mut Nfnl) -> Result<()> {
        let found = Self::found(nl)?;
        let bit = found.first().and_then(|c| parse_bit(c));
        if bit.is_some_and(|b| found == (Structure { mark_bit: b }).comments()) {
            return Ok(());
        }
        self.ensure(nl)
    }
}

/// The objects of a structure, written in one batch: maps and sets created if missing, never flushed
/// (the elements, every pod's mappings, survive a rewrite) except the sets of fixed prefixes, which are
/// refilled; chains created if missing and flushed; then the rules.
pub(crate) struct Objects {
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
    /// Sets (declared in `sets`) holding exactly these prefixes.
    pub prefixes: Vec<(String, Vec<IpNetwork>)>,
}

impl Objects {
    /// The batch, flushing the chains `flush`.
    pub(crate) fn ops<'a>(&'a self, flush: &[&'a str]) -> Vec<BatchOp<'a>> {
        let mut ops = vec![BatchOp::AddTable { comment: None }];
        ops.extend(self.sets.iter().map(BatchOp::AddSet));
        for (set, prefixes) in &self.prefixes {
            ops.push(BatchOp::FlushSet { set });
            ops.push(BatchOp::AddPrefixes { set, prefixes: prefixes.clone() });
        }
        ops.extend(self.chains.iter().map(BatchOp::AddChain));
        ops.extend(flush.iter().map(|chain| BatchOp::FlushChain { chain }));
        ops.extend(self.rules.iter().map(BatchOp::AddRule));
        ops
    }
}

/// ": <the change>" the last batch on `nl` failed on, if the kernel named it.
pub(crate) fn failed(nl: &Nfnl, ops: &[BatchOp<'_>]) -> String {
    nl.failed_op().and_then(|i| ops.get(i)).map(|op| format!(" ({})", op.describe())).unwrap_or_default()
}

/// Why the node cannot serve an ADD, for STATUS.
#[derive(Debug)]
pub enum NotReady {
    /// The structure is intact but made for another mark bit (an ADD would fail).
    MarkBit(u8),
    /// The structure is missing or changed and the kernel refuses the rewrite an ADD would do.
    Unwritable(String),
}

impl Structure {
    /// STATUS: whether an ADD can use the structure: intact with this mark bit, or missing or changed in a
    /// way the rewrite repairs, which the kernel decides by checking the very batch an ADD would send
    /// (and applying nothing). Errors reading the table are the caller's (nf_tables unusable).
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
        let objects = self.objects();
        let ops = objects.ops(&CHAINS);
        Ok(nl
            .check(NFPROTO_INET, TABLE, &ops)
            .map_err(|e| NotReady::Unwritable(format!("the kernel refuses the rewrite{}: {e}", failed(nl, &ops)))))
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
        let objects = s.objects();
        assert!(
            objects.rules.iter().filter(|r| r.chain == CHAIN_DNAT).all(|r| r.stmts.contains(&Stmt::CtMarkOr(0x20)))
        );
        let mut on_rules: Vec<String> = objects.rules.iter().filter_map(|r| r.comment.clone()).collect();
        on_rules.sort();
        assert_eq!(on_rules, c, "every rule carries its comment");
        let ops = objects.ops(&CHAINS);
        assert!(
            !ops.iter().any(|op| matches!(op, BatchOp::FlushSet { .. } | BatchOp::DelSet { .. })),
            "elements survive"
        );
    }
}
