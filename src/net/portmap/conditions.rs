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
//! `-p`/`--protocol`. Like iptables, an output interface never matches in prerouting (so `-o X` leaves
//! only locally generated connections, `! -o X` is true there). Anything else is refused (code 7).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::structure::{MAP_HOSTIPPORT4, MAP_HOSTIPPORT6, MAP_HOSTPORT4, MAP_HOSTPORT6, Structure, dnat_rule};
use super::{Error, Result, TABLE, nl_err};
use crate::net::command::Command;
use crate::net::masq::sha512_hex;
use crate::net::nft::{NFPROTO_INET, Nfnl, absent};

/// What a term does in one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Always,
    Never,
    Expr(String),
}

/// One family's translated conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    pub v4: bool,
    /// The tokens as configured (for messages and the fingerprint).
    pub tokens: Vec<String>,
    pre: Vec<Term>,
    out: Vec<Term>,
}

fn addr_list(v: &str, v4: bool, field: &str, opt: &str) -> std::result::Result<String, String> {
    let mut items = Vec::new();
    for a in v.split(',') {
        let n: IpNetwork = a
            .parse()
            .or_else(|_| a.parse::<IpAddr>().map(IpNetwork::from))
            .map_err(|_| format!("{field}: {opt} {a:?} is not an address or prefix"))?;
        if n.is_ipv4() != v4 {
            return Err(format!("{field}: {opt} {a} is not an {} address", if v4 { "IPv4" } else { "IPv6" }));
        }
        items.push(n.to_string());
    }
    Ok(if items.len() == 1 { items.remove(0) } else { format!("{{ {} }}", items.join(", ")) })
}

fn ifname(v: &str, field: &str, opt: &str) -> std::result::Result<String, String> {
    let base = v.strip_suffix('+').unwrap_or(v);
    // Stricter than the kernel: the name ends up inside an nft script.
    let ok = base.len() <= 15 && base.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !ok || (base.is_empty() && !v.ends_with('+')) {
        return Err(format!("{field}: {opt} {v:?} is not an interface name"));
    }
    Ok(if v.ends_with('+') { format!("\"{base}*\"") } else { format!("\"{base}\"") })
}

impl Conditions {
    /// Translates `tokens` (iptables match arguments) of `field` (`conditionsV4`/`conditionsV6`); the
    /// error names the field and the token that cannot be taken.
    pub fn parse(field: &str, v4: bool, tokens: &[String]) -> std::result::Result<Conditions, String> {
        let ip = if v4 { "ip" } else { "ip6" };
        let mut pre = Vec::new();
        let mut out = Vec::new();
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
            let op = if neg { "!= " } else { "" };
            let (p, o) = match opt.as_str() {
                "-s" | "--source" => {
                    let e = Term::Expr(format!("{ip} saddr {op}{}", addr_list(value, v4, field, opt)?));
                    (e.clone(), e)
                }
                "-d" | "--destination" => {
                    let e = Term::Expr(format!("{ip} daddr {op}{}", addr_list(value, v4, field, opt)?));
                    (e.clone(), e)
                }
                "-i" | "--in-interface" => {
                    let e = Term::Expr(format!("iifname {op}{}", ifname(value, field, opt)?));
                    // Locally generated packets have no input interface: `-i X` never matches them.
                    (e, if neg { Term::Always } else { Term::Never })
                }
                "-o" | "--out-interface" => {
                    let e = Term::Expr(format!("oifname {op}{}", ifname(value, field, opt)?));
                    (if neg { Term::Always } else { Term::Never }, e)
                }
                "-p" | "--protocol" => {
                    let p = value.to_ascii_lowercase();
                    if !p.chars().all(|c| c.is_ascii_alphanumeric()) || p.is_empty() {
                        return Err(format!("{field}: -p {value:?} is not a protocol name or number"));
                    }
                    let e = Term::Expr(format!("meta l4proto {op}{p}"));
                    (e.clone(), e)
                }
                other => {
                    return Err(format!(
                        "{field}: {other:?} is not supported by rcni's portmap (it takes -s, -d, -i, -o, -p, each \
                         optionally negated with \"!\"); remove it or express it with those"
                    ));
                }
            };
            pre.push(p);
            out.push(o);
            i += 2;
        }
        Ok(Conditions { v4, tokens: tokens.to_vec(), pre, out })
    }

    /// The short id naming this condition set's maps and chains (family and tokens).
    pub fn id(&self) -> String {
        let text = format!("{}\n{}", if self.v4 { 4 } else { 6 }, self.tokens.join("\u{0}"));
        sha512_hex(&text)[..10].to_string()
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

    fn hook_rule(terms: &[Term]) -> Option<String> {
        if terms.contains(&Term::Never) {
            return None;
        }
        let exprs: Vec<&str> =
            terms.iter().filter_map(|t| if let Term::Expr(e) = t { Some(e.as_str()) } else { None }).collect();
        Some(exprs.join(" "))
    }

    /// The nft script writing this condition set's maps and chains (maps never flushed).
    pub fn script(&self, s: &Structure) -> String {
        let (addr, fam) = if self.v4 { ("ipv4_addr", "ip") } else { ("ipv6_addr", "ip6") };
        let chain = self.chain();
        let fp = self.fingerprint();
        let (wild, hip) = (self.map(false), self.map(true));
        let mut out = format!("add table inet {TABLE}\n");
        out.push_str(&format!(
            "add map inet {TABLE} {wild} {{ type inet_proto . inet_service : {addr} . inet_service; comment \"rcni \
             portmap: host ports with conditions {}\"; }}\n",
            self.id()
        ));
        out.push_str(&format!(
            "add map inet {TABLE} {hip} {{ type {addr} . inet_proto . inet_service : {addr} . inet_service; comment \
             \"rcni portmap: host IP ports with conditions {}\"; }}\n",
            self.id()
        ));
        out.push_str(&format!("add chain inet {TABLE} {chain}\nflush chain inet {TABLE} {chain}\n"));
        let mark = s.mark_expr();
        let nfproto = if self.v4 { "ipv4" } else { "ipv6" };
        for map in [&hip, &wild] {
            let rule = dnat_rule(fam, &mark, map);
            out.push_str(&format!("add rule inet {TABLE} {chain} {rule} comment \"{fp}\"\n"));
        }
        for (suffix, hook, terms) in [
            ("pre", "type nat hook prerouting priority dstnat - 1", &self.pre),
            ("out", "type nat hook output priority -101", &self.out),
        ] {
            let base = format!("{chain}-{suffix}");
            out.push_str(&format!("add chain inet {TABLE} {base} {{ {hook}; policy accept; }}\n"));
            out.push_str(&format!("flush chain inet {TABLE} {base}\n"));
            if let Some(m) = Self::hook_rule(terms) {
                out.push_str(&format!(
                    "add rule inet {TABLE} {base} meta nfproto {nfproto} fib daddr type local {m} jump {chain} comment \
                     \"{fp}\"\n"
                ));
            }
        }
        out
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

    /// Writes the condition set's maps and chains unless intact.
    pub fn ensure(&self, nl: &mut Nfnl, s: &Structure) -> Result<()> {
        if self.intact(nl)? {
            return Ok(());
        }
        let script = self.script(s);
        Command::new("nft").args(["-f", "-"]).stdin(script.as_str()).run().map(|_| ()).map_err(|e| Error::Command {
            what: format!("portmap: writing the chains of conditions {:?} to table inet {TABLE}", self.tokens),
            err: e,
            hint: format!("\nscript:\n{script}"),
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
        let c =
            Conditions::parse("conditionsV4", true, &toks("! -s 198.18.0.2 -d 198.18.0.0/24 -i eth+ -p tcp")).unwrap();
        assert_eq!(
            Conditions::hook_rule(&c.pre).unwrap(),
            "ip saddr != 198.18.0.2/32 ip daddr 198.18.0.0/24 iifname \"eth*\" meta l4proto tcp"
        );
        assert_eq!(Conditions::hook_rule(&c.out), None, "-i never matches locally generated packets");
        let c = Conditions::parse("conditionsV6", false, &toks("! -o lo -s fd00::1,fd00::/64")).unwrap();
        assert_eq!(Conditions::hook_rule(&c.pre).unwrap(), "ip6 saddr { fd00::1/128, fd00::/64 }");
        assert_eq!(Conditions::hook_rule(&c.out).unwrap(), "oifname != \"lo\" ip6 saddr { fd00::1/128, fd00::/64 }");
        assert_eq!(base_map(&c.map(true)), MAP_HOSTIPPORT6);
        assert_eq!(base_map(MAP_HOSTPORT4), MAP_HOSTPORT4);
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
