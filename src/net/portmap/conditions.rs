//! `conditionsV4` / `conditionsV6`: extra matches a network puts on its host ports (the reference appends
//! them, as iptables arguments, to the network's entry rules in `CNI-HOSTPORT-DNAT`). We take the common
//! iptables subset, translate it to nft, and give each distinct (family, conditions) its own maps and a
//! pair of base chains that run just before the shared ones:
//!
//! ```text
//! chain portmap-c<id>-pre { nat prerouting dstnat - 1: fib daddr type local <conditions> jump portmap-c<id> }
//! chain portmap-c<id>-out { nat output -101:           fib daddr type local <conditions> jump portmap-c<id> }
//! chain portmap-c<id>     { the two DNAT rules of the family, on maps hostport4-c<id> / hostipport4-c<id> }
//! ```
//! A packet that matches the conditions and a mapping is DNATed there (the first NAT decision of a
//! connection is the one that holds); one that does not falls through to the shared chains, whose maps do
//! not hold the network's mappings, so it is not forwarded: the iptables semantics, per network, still
//! O(1) in pods (one more chain pair per distinct condition set, not per pod). The connection mark and
//! the hairpin sets are the shared ones, so masquerade works the same.
//!
//! Supported tokens (each may follow a `!`): `-s`/`--source`, `-d`/`--destination` (addresses or prefixes,
//! comma lists), `-i`/`--in-interface` and `-o`/`--out-interface` (a trailing `+` is a prefix match),
//! `-p`/`--protocol` (a name of the common protocols, a number, or `all`). An address list is a set of its
//! own (`portmap-c<id>-<n>`). Like iptables, an output interface never matches in prerouting (so `-o X` leaves
//! only locally generated connections, `! -o X` is true there). Anything else is refused (code 7).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::structure::{
    MAP_HOSTIPPORT4, MAP_HOSTIPPORT6, MAP_HOSTPORT4, MAP_HOSTPORT6, Objects, Structure, dnat_rule, failed,
    host_port_map,
};
use super::{Result, TABLE, nl_err};
use crate::net::addr::IpFamily;
use crate::net::masq::sha512_hex;
use crate::net::nft::{
    AddrField, Chain, CmpOp, DataType, Hook, IfDir, NFPROTO_INET, Nfnl, Rule, Set, Stmt, absent, hooks,
};

/// What a term does in one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Always,
    Never,
    Match(Stmt),
}

/// One family's translated conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    pub v4: bool,
    /// The tokens as configured (for messages and the fingerprint).
    pub tokens: Vec<String>,
    pre: Vec<Term>,
    out: Vec<Term>,
    /// The address lists (`-s a,b`) as sets of their own: (set name, prefixes).
    lists: Vec<(String, Vec<IpNetwork>)>,
}

fn addr_list(v: &str, v4: bool, field: &str, opt: &str) -> std::result::Result<Vec<IpNetwork>, String> {
    let mut items = Vec::new();
    for a in v.split(',') {
        let n: IpNetwork = a
            .parse()
            .or_else(|_| a.parse::<IpAddr>().map(IpNetwork::from))
            .map_err(|_| format!("{field}: {opt} {a:?} is not an address or prefix"))?;
        if n.is_ipv4() != v4 {
            return Err(format!("{field}: {opt} {a} is not an {} address", if v4 { "IPv4" } else { "IPv6" }));
        }
        items.push(IpNetwork::new(n.network(), n.prefix()).expect("the prefix of a valid network"));
    }
    Ok(items)
}

/// The name as an nft interface match: a trailing `+` (iptables' prefix match) becomes nft's `*`.
fn ifname(v: &str, field: &str, opt: &str) -> std::result::Result<String, String> {
    let base = v.strip_suffix('+').unwrap_or(v);
    let ok = base.len() <= 15 && base.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !ok || (base.is_empty() && !v.ends_with('+')) {
        return Err(format!("{field}: {opt} {v:?} is not an interface name"));
    }
    Ok(if v.ends_with('+') { format!("{base}*") } else { base.to_string() })
}

/// The protocols `-p` takes by name (iptables also reads /etc/protocols; these are the ones a host
/// port condition can mean), else a number. `None`: every protocol (`all`).
fn protocol(v: &str, field: &str) -> std::result::Result<Option<u8>, String> {
    const NAMED: [(&str, u8); 11] = [
        ("icmp", 1),
        ("tcp", 6),
        ("udp", 17),
        ("dccp", 33),
        ("gre", 47),
        ("esp", 50),
        ("ah", 51),
        ("icmpv6", 58),
        ("ipv6-icmp", 58),
        ("sctp", 132),
        ("udplite", 136),
    ];
    let p = v.to_ascii_lowercase();
    if p == "all" || p == "0" {
        return Ok(None);
    }
    if let Some((_, n)) = NAMED.iter().find(|(name, _)| *name == p) {
        return Ok(Some(*n));
    }
    p.parse::<u8>().map(Some).map_err(|_| {
        let names: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
        format!("{field}: -p {v:?} is not a protocol name or number (names: {}, all)", names.join(", "))
    })
}

/// The id naming the maps and chains of (family, tokens).
fn id_of(v4: bool, tokens: &[String]) -> String {
    let text = format!("{}\n{}", if v4 { 4 } else { 6 }, tokens.join("\u{0}"));
    sha512_hex(&text)[..10].to_string()
}

impl Conditions {
    /// Translates `tokens` (iptables match arguments) of `field` (`conditionsV4`/`conditionsV6`); the
    /// error names the field and the token that cannot be taken.
    pub fn parse(field: &str, v4: bool, tokens: &[String]) -> std::result::Result<Conditions, String> {
        let fam = if v4 { IpFamily::V4 } else { IpFamily::V6 };
        let id = id_of(v4, tokens);
        let mut c = Conditions { v4, tokens: tokens.to_vec(), pre: Vec::new(), out: Vec::new(), lists: Vec::new() };
        let mut i = 0;
        while i < tokens.len() {
            let mut neg = false;
            if tokens[i] == "!" {
                neg = true;
                i += 1;
            }
            let Some(opt) = tokens.get(i) else {
                return Err(format!("{field}: \"!\" at the end, with nothing to negate"));
            };
            let value = tokens.get(i + 1).ok_or_else(|| format!("{field}: {opt} needs a value"))?;
            let op = if neg { CmpOp::Neq } else { CmpOp::Eq };
            let unless_neg = |t: Term| if neg { Term::Always } else { t };
            let (p, o) = match opt.as_str() {
                "-s" | "--source" | "-d" | "--destination" => {
                    let addr =
                        if matches!(opt.as_str(), "-s" | "--source") { AddrField::Saddr } else { AddrField::Daddr };
                    let mut nets = addr_list(value, v4, field, opt)?;
                    let e = if nets.len() == 1 {
                        Stmt::addr(addr, op, nets.remove(0))
                    } else {
                        let set = format!("portmap-c{id}-{}", c.lists.len());
                        c.lists.push((set.clone(), nets));
                        Stmt::addr_in_set(fam, addr, &set, neg)
                    };
                    (Term::Match(e.clone()), Term::Match(e))
                }
                "-i" | "--in-interface" => {
                    let e = Stmt::IfName { dir: IfDir::In, op, name: ifname(value, field, opt)? };
                    // Locally generated packets have no input interface: `-i X` never matches them.
                    (Term::Match(e), unless_neg(Term::Never))
                }
                "-o" | "--out-interface" => {
                    let e = Stmt::IfName { dir: IfDir::Out, op, name: ifname(value, field, opt)? };
                    (unless_neg(Term::Never), Term::Match(e))
                }
                "-p" | "--protocol" => {
                    let t = match protocol(value, field)? {
                        Some(n) => Term::Match(Stmt::L4Proto(op, n)),
                        None if neg => Term::Never,
                        None => Term::Always,
                    };
                    (t.clone(), t)
                }
                other => {
                    return Err(format!(
                        "{field}: {other:?} is not supported by rcni's portmap (it takes -s, -d, -i, -o, -p, each \
                         optionally negated with \"!\"); remove it or express it with those"
                    ));
                }
            };
            c.pre.push(p);
            c.out.push(o);
            i += 2;
        }
        Ok(c)
    }

    /// The short id naming this condition set's maps and chains (family and tokens).
    pub fn id(&self) -> String {
        id_of(self.v4, &self.tokens)
    }

    fn fam(&self) -> IpFamily {
        if self.v4 { IpFamily::V4 } else { IpFamily::V6 }
    }

    /// The map the wildcard (`host_ip` false) or host-IP mappings of this family go to.
    pub fn map(&self, host_ip: bool) -> String {
        let base = match (self.v4, host_ip) {
            (true, false) => MAP_HOSTPORT4,
            (true, true) => MAP_HOSTIPPORT4,
            (false, false) => MAP_HOSTPORT6,
            (false, true) => MAP_HOSTIPPORT6,
        };
        format!("{base}-c{}", self.id())
    }

    fn chain(&self) -> String {
        format!("portmap-c{}", self.id())
    }

    fn fingerprint(&self) -> String {
        format!("rcni-portmap cond v1 {}", self.id())
    }

    /// The matches of one hook's rule, or `None` when a term can never match there.
    fn hook_rule(terms: &[Term]) -> Option<Vec<Stmt>> {
        if terms.contains(&Term::Never) {
            return None;
        }
        Some(terms.iter().filter_map(|t| if let Term::Match(s) = t { Some(s.clone()) } else { None }).collect())
    }

    /// This condition set's maps, address-list sets, chains and rules (maps never flushed).
    fn objects(&self, s: &Structure) -> Objects {
        let fam = self.fam();
        let (wild, hip) = (self.map(false), self.map(true));
        let chain = self.chain();
        let fp = self.fingerprint();
        let id = self.id();
        let mut sets = vec![
            host_port_map(&wild, fam, false, false, &format!("rcni portmap: host ports with conditions {id}")),
            host_port_map(&hip, fam, true, false, &format!("rcni portmap: host IP ports with conditions {id}")),
        ];
        let addr = if self.v4 { DataType::Ipv4Addr } else { DataType::Ipv6Addr };
        for (name, _) in &self.lists {
            sets.push(Set::new(name, vec![addr]).interval().comment(&format!("rcni portmap: conditions {id}")));
        }
        let mut chains = vec![Chain::regular(&chain)];
        let mut rules = Vec::new();
        for (map, host_ip) in [(&hip, true), (&wild, false)] {
            rules.push(Rule::new(&chain, dnat_rule(fam, s.mark(), map, host_ip, false)).comment(&fp));
        }
        for (suffix, hook, terms) in [
            ("pre", Hook::accept("nat", hooks::PREROUTING, hooks::DSTNAT - 1), &self.pre),
            ("out", Hook::accept("nat", hooks::OUTPUT, hooks::DSTNAT - 1), &self.out),
        ] {
            let base = format!("{chain}-{suffix}");
            chains.push(Chain::base(&base, hook));
            if let Some(matches) = Self::hook_rule(terms) {
                let mut stmts = vec![Stmt::NfProto(fam), Stmt::FibDaddrLocal];
                stmts.extend(matches);
                stmts.push(Stmt::Jump(chain.clone()));
                rules.push(Rule::new(&base, stmts).comment(&fp));
            }
        }
        Objects { sets, chains, rules, prefixes: self.lists.clone() }
    }

    /// How many rules an intact condition set has (two DNAT rules, plus one per hook that can match).
    fn rule_count(&self) -> usize {
        2 + [&self.pre, &self.out].iter().filter(|t| Self::hook_rule(t).is_some()).count()
    }

    /// Whether this condition set's chains are on the node with their rules.
    pub fn intact(&self, nl: &mut Nfnl) -> Result<bool> {
        let rules = match nl.dump_table_rules(NFPROTO_INET, TABLE) {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(false),
            Err(e) => return Err(nl_err(format!("listing the rules of table inet {TABLE}"), e)),
        };
        let chain = self.chain();
        let fp = self.fingerprint();
        let ours = rules.iter().filter(|r| r.chain.starts_with(&chain) && r.comment.as_deref() == Some(fp.as_str()));
        Ok(ours.count() == self.rule_count())
    }

    /// Writes the condition set's maps and chains unless intact, in one transaction.
    pub fn ensure(&self, nl: &mut Nfnl, s: &Structure) -> Result<()> {
        if self.intact(nl)? {
            return Ok(());
        }
        let objects = self.objects(s);
        let names: Vec<&str> = objects.chains.iter().map(|c| c.name.as_str()).collect();
        let ops = objects.ops(&names);
        nl.batch(None, NFPROTO_INET, TABLE, &ops).map_err(|e| {
            let what =
                format!("writing the chains of conditions {:?} to table inet {TABLE}{}", self.tokens, failed(nl, &ops));
            nl_err(what, e)
        })
    }
}

/// The condition maps on the node (found by their chains), for the dump by owner.
pub fn maps_on_node(nl: &mut Nfnl) -> Result<Vec<String>> {
    let chains = match nl.dump_chains(NFPROTO_INET, TABLE) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(Vec::new()),
        Err(e) if absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(nl_err(format!("listing the chains of table inet {TABLE}"), e)),
    };
    let mut out = Vec::new();
    for c in chains {
        let Some(id) = c.name.strip_prefix("portmap-c").filter(|id| !id.contains('-')) else { continue };
        for base in [MAP_HOSTPORT4, MAP_HOSTIPPORT4, MAP_HOSTPORT6, MAP_HOSTIPPORT6] {
            out.push(format!("{base}-c{id}"));
        }
    }
    Ok(out)
}

/// The layout map a (possibly conditional) map name stands for.
pub fn base_map(set: &str) -> &str {
    match set.rsplit_once("-c") {
        Some((base, id)) if id.len() == 10 && id.chars().all(|c| c.is_ascii_hexdigit()) => base,
        _ => set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_iptables_subset_translates() {
        use crate::net::nft::AddrField::*;
        use crate::net::nft::CmpOp::*;
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let c =
            Conditions::parse("conditionsV4", true, &toks("! -s 198.18.0.2 -d 198.18.0.0/24 -i eth+ -p tcp")).unwrap();
        assert_eq!(
            Conditions::hook_rule(&c.pre).unwrap(),
            [
                Stmt::addr(Saddr, Neq, net("198.18.0.2/32")),
                Stmt::addr(Daddr, Eq, net("198.18.0.0/24")),
                Stmt::IfName { dir: IfDir::In, op: Eq, name: "eth*".into() },
                Stmt::L4Proto(Eq, 6),
            ]
        );
        assert_eq!(Conditions::hook_rule(&c.out), None, "-i never matches locally generated packets");
        let c = Conditions::parse("conditionsV6", false, &toks("! -o lo -s fd00::1,fd00::/64")).unwrap();
        let list = format!("portmap-c{}-0", c.id());
        assert_eq!(c.lists, [(list.clone(), vec![net("fd00::1/128"), net("fd00::/64")])]);
        let in_list = Stmt::addr_in_set(IpFamily::V6, Saddr, &list, false);
        assert_eq!(Conditions::hook_rule(&c.pre).unwrap(), std::slice::from_ref(&in_list));
        assert_eq!(
            Conditions::hook_rule(&c.out).unwrap(),
            [Stmt::IfName { dir: IfDir::Out, op: Neq, name: "lo".into() }, in_list]
        );
        assert_eq!(base_map(&c.map(true)), MAP_HOSTIPPORT6);
        assert_eq!(base_map(MAP_HOSTPORT4), MAP_HOSTPORT4);
        let all = Conditions::parse("conditionsV4", true, &toks("-p all")).unwrap();
        assert_eq!(Conditions::hook_rule(&all.pre).unwrap(), [], "-p all matches every packet");
        let none = Conditions::parse("conditionsV4", true, &toks("! -p all")).unwrap();
        assert_eq!(Conditions::hook_rule(&none.pre), None);
    }

    #[test]
    fn anything_else_is_refused_naming_field_and_token() {
        for (t, needle) in [
            ("-m set --match-set x src", "\"-m\""),
            ("-s 10.0.0.1 -j DROP", "\"-j\""),
            ("-s", "-s needs a value"),
            ("-s fd00::1", "not an IPv4"),
            ("-s 1.2.3", "not an address"),
            ("-p tcp;drop", "not a protocol"),
            ("-i a\"b", "not an interface"),
            ("!", "nothing to negate"),
        ] {
            let e = Conditions::parse("conditionsV4", true, &toks(t)).unwrap_err();
            assert!(e.starts_with("conditionsV4: ") && e.contains(needle), "{t}: {e}");
        }
    }
}
