//! Masquerade of a whole cluster network, for the overlay agent's `--ip-masq` (flanneld's semantics):
//! traffic from the cluster network to a destination outside it (and not multicast) leaves with the
//! node's address; traffic between pods, also across nodes, keeps its addresses. One rule per address
//! family and one interval element per prefix, whatever the number of pods or nodes:
//!
//! ```text
//! table inet rcni {
//!     set net4-<h> { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 } }
//!     chain masqnet-<h> {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @net4-<h> ip daddr != @net4-<h> ip daddr != 224.0.0.0/4 masquerade comment "rcni-masqnet v1 ip <fp>"
//!     }
//! }
//! ```
//!
//! `<h>` hashes the owner name as in the per-pod layout; `<fp>` fingerprints the owner and the prefixes,
//! so a changed network is rewritten. The same set is both the source match and the exempt destinations:
//! that is exactly "from the cluster network, leaving it". flanneld's extra rules are not needed here:
//! its RETURNs for pod subnet ↔ cluster network are covered by the exempt destinations, and traffic from
//! outside the cluster to pods on other nodes (NodePort) is masqueraded by kube-proxy itself.
//!
//! The structure is written by the `nft` binary in one transaction when a netlink probe (rule comments
//! and set elements) finds it missing or different; the probe alone is what a periodic `ensure` costs.

use ipnetwork::IpNetwork;

use super::nft::{TABLE, comment_safe};
use super::{Error, Result, sha512_hex};
use crate::net::command::Command;
use crate::net::nft::{NFPROTO_INET, NetlinkError, Nfnl, absent};

const LAYOUT_VERSION: u32 = 1;

/// The nft object names of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub chain: String,
    pub net4: String,
    pub net6: String,
}

impl Names {
    pub fn new(owner: &str) -> Names {
        let h = &sha512_hex(owner)[..16];
        Names { chain: format!("masqnet-{h}"), net4: format!("net4-{h}"), net6: format!("net6-{h}") }
    }
}

fn err(owner: &str, what: &str, e: NetlinkError) -> Error {
    Error::Netlink { what: format!("cluster masquerade {owner:?}: {what}"), err: e }
}

/// The prefixes as network addresses, sorted, without duplicates, split per family.
fn normalize(networks: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let mut all: Vec<IpNetwork> =
        networks.iter().map(|n| IpNetwork::new(n.network(), n.prefix()).expect("prefix of a valid network")).collect();
    all.sort();
    all.dedup();
    all.into_iter().partition(|n| n.is_ipv4())
}

fn rule_comment(owner: &str, fam: &str, nets: &[IpNetwork]) -> String {
    let mut input = format!("v{LAYOUT_VERSION}\n{owner}\n{fam}\n");
    for n in nets {
        input.push_str(&format!("{n}\n"));
    }
    format!("rcni-masqnet v{LAYOUT_VERSION} {fam} {}", &sha512_hex(&input)[..16])
}

/// The nft script that (re)writes the owner's chain and sets for `networks` (one transaction).
pub fn script(owner: &str, networks: &[IpNetwork]) -> String {
    let n = Names::new(owner);
    let (v4, v6) = normalize(networks);
    let name = comment_safe(owner);
    let mut s = format!("add table inet {TABLE} {{ comment \"rcni: masquerade of pod addresses\"; }}\n");
    s.push_str(&format!(
        "add chain inet {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; \
         comment \"rcni masquerade of cluster network {name}\"; }}\nflush chain inet {TABLE} {chain}\n",
        chain = n.chain
    ));
    for (set, ty, fam, multicast, nets) in
        [(&n.net4, "ipv4_addr", "ip", "224.0.0.0/4", &v4), (&n.net6, "ipv6_addr", "ip6", "ff00::/8", &v6)]
    {
        if nets.is_empty() {
            continue;
        }
        let elems: Vec<String> = nets.iter().map(|p| p.to_string()).collect();
        s.push_str(&format!(
            "add set inet {TABLE} {set} {{ type {ty}; flags interval; comment \"cluster network {name}\"; }}\n\
             flush set inet {TABLE} {set}\n\
             add element inet {TABLE} {set} {{ {} }}\n\
             add rule inet {TABLE} {chain} {fam} saddr @{set} {fam} daddr != @{set} {fam} daddr != {multicast} \
             masquerade comment \"{}\"\n",
            elems.join(", "),
            rule_comment(owner, fam, nets),
            chain = n.chain,
        ));
    }
    s
}

fn key_of(n: &IpNetwork) -> Vec<u8> {
    match n.network() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether the chain holds exactly the rules for `networks` and each set starts an interval at each
/// prefix (an interval set lists a start and an end element per prefix).
fn in_place(nl: &mut Nfnl, owner: &str, networks: &[IpNetwork]) -> Result<bool> {
    let n = Names::new(owner);
    let (v4, v6) = normalize(networks);
    let mut want: Vec<String> = Vec::new();
    for (fam, nets) in [("ip", &v4), ("ip6", &v6)] {
        if !nets.is_empty() {
            want.push(rule_comment(owner, fam, nets));
        }
    }
    want.sort();
    let rules = nl
        .dump_rules(NFPROTO_INET, TABLE, &n.chain)
        .map_err(|e| err(owner, &format!("listing chain inet {TABLE} {}", n.chain), e))?;
    let mut found: Vec<String> = rules.into_iter().filter_map(|r| r.comment).collect();
    found.sort();
    if found != want {
        return Ok(false);
    }
    for (set, nets) in [(&n.net4, &v4), (&n.net6, &v6)] {
        if nets.is_empty() {
            continue;
        }
        let keys: Vec<Vec<u8>> = match nl.dump_elems(NFPROTO_INET, TABLE, set) {
            Ok(Some(elems)) => elems.into_iter().map(|e| e.key).collect(),
            Ok(None) => return Ok(false),
            Err(e) => return Err(err(owner, &format!("listing set inet {TABLE} {set}"), e)),
        };
        if !nets.iter().all(|p| keys.contains(&key_of(p))) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn run_nft(owner: &str, script: &str) -> Result<()> {
    Command::new("nft").args(["-f", "-"]).stdin(script).run().map(|_| ()).map_err(|e| {
        let hint = if e.is_not_installed() {
            " (install the nftables package)".to_string()
        } else {
            format!("\nscript:\n{script}")
        };
        Error::Command {
            what: format!("cluster masquerade {owner:?}: writing chain inet {TABLE} {}", Names::new(owner).chain),
            err: e,
            hint,
        }
    })
}

/// Makes traffic from `networks` to anything outside them leave with the node's address. Idempotent:
/// returns whether anything had to be (re)written.
pub fn ensure(owner: &str, networks: &[IpNetwork]) -> Result<bool> {
    if owner.is_empty() || networks.is_empty() {
        return Err(Error::Invalid("cluster masquerade: the owner name and at least one network are needed".into()));
    }
    let mut nl = Nfnl::open().map_err(|e| err(owner, "opening the nf_tables netlink socket", e))?;
    if in_place(&mut nl, owner, networks)? {
        return Ok(false);
    }
    // Sets of a family the network no longer has are removed with the rewrite.
    let mut s = script(owner, networks);
    let (v4, v6) = normalize(networks);
    let n = Names::new(owner);
    for (set, nets) in [(&n.net4, &v4), (&n.net6, &v6)] {
        if nets.is_empty() && set_exists(&mut nl, owner, set)? {
            s.push_str(&format!("delete set inet {TABLE} {set}\n"));
        }
    }
    run_nft(owner, &s)?;
    Ok(true)
}

fn set_exists(nl: &mut Nfnl, owner: &str, set: &str) -> Result<bool> {
    match nl.dump_elems(NFPROTO_INET, TABLE, set) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if absent(&e) => Ok(false),
        Err(e) => Err(err(owner, &format!("listing set inet {TABLE} {set}"), e)),
    }
}

/// Removes the owner's chain and sets; returns whether there was anything to remove.
pub fn remove(owner: &str) -> Result<bool> {
    let n = Names::new(owner);
    let mut nl = match Nfnl::open() {
        Ok(nl) => nl,
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(err(owner, "opening the nf_tables netlink socket", e)),
    };
    let mut s = String::new();
    match nl.chain_exists(NFPROTO_INET, TABLE, &n.chain) {
        Ok(true) => s.push_str(&format!("delete chain inet {TABLE} {}\n", n.chain)),
        Ok(false) => {}
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(err(owner, &format!("looking up chain inet {TABLE} {}", n.chain), e)),
    }
    for set in [&n.net4, &n.net6] {
        if set_exists(&mut nl, owner, set)? {
            s.push_str(&format!("delete set inet {TABLE} {set}\n"));
        }
    }
    if s.is_empty() {
        return Ok(false);
    }
    run_nft(owner, &s)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_and_one_element_per_family() {
        let s = script("rcni-overlay /coreos.com/network", &["10.244.0.0/16".parse().unwrap()]);
        let n = Names::new("rcni-overlay /coreos.com/network");
        assert_eq!(s.matches("masquerade comment").count(), 1, "{s}");
        assert!(s.contains(&format!("add element inet rcni {} {{ 10.244.0.0/16 }}", n.net4)), "{s}");
        assert!(s.contains(&format!("ip saddr @{0} ip daddr != @{0} ip daddr != 224.0.0.0/4 masquerade", n.net4)));
        assert!(!s.contains("ip6"), "no IPv6 rule for an IPv4 network: {s}");
        assert_ne!(
            rule_comment("o", "ip", &["10.244.0.0/16".parse().unwrap()]),
            rule_comment("o", "ip", &["10.245.0.0/16".parse().unwrap()]),
            "another network is another fingerprint"
        );
        let (v4, v6) = normalize(&["10.244.3.4/16".parse().unwrap(), "fd00::1/64".parse().unwrap()]);
        assert_eq!((v4[0].to_string(), v6[0].to_string()), ("10.244.0.0/16".into(), "fd00::/64".into()));
    }
}
