//! Migration: removes what the reference portmap left on the node for one container, so a node can swap
//! the reference binary for ours with pods running (their DEL comes to us).
//!
//! * The iptables backend (v1.1.1, the default): the chain `CNI-DN-<21 hex of sha512(network ‖
//!   containerID)>` in table nat, the entry rules in `CNI-HOSTPORT-DNAT` that jump to it and, once no other
//!   container's `CNI-DN-*` chain is left, the shared chains `CNI-HOSTPORT-DNAT`, `-SETMARK`, `-MASQ` and
//!   the jumps to them from PREROUTING, OUTPUT and POSTROUTING. Removed with one `iptables-save -t nat` and
//!   one `iptables-restore --noflush` per family (the system's iptables, as the reference used; both with a
//!   deadline), so the change is one transaction.
//! * The nftables backend (v1.6+): the rules of tables `ip`/`ip6 cni_hostport` whose comment is the bare
//!   container ID (the reference's own DEL matches the same way, across networks), over netlink.
//!
//! The common case is a node without any of it, so every family starts with a probe that costs no
//! process: the nf_tables chain `CNI-DN-<hash>` (iptables-nft keeps iptables rules in nf_tables) or, for
//! iptables-legacy, the x_tables nat table listed in /proc/net/ip{,6}_tables_names.

use super::{Error, Result, iptables, nl_err};
use crate::net::addr::IpFamily;
use crate::net::masq::sha512_hex;
use crate::net::nft::{BatchOp, NFPROTO_IPV4, NFPROTO_IPV6, Nfnl, absent};

pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The reference's nftables table (families ip and ip6) and the chains with per-container rules.
pub const NFT_TABLE: &str = "cni_hostport";
const NFT_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

/// The reference's per-container chain name.
pub fn dn_chain(network: &str, container_id: &str) -> String {
    format!("CNI-DN-{}", &sha512_hex(&format!("{network}{container_id}"))[..21])
}

/// Where the x_tables (iptables-legacy) nat table of a family is listed when loaded.
fn proc_names(fam: IpFamily) -> &'static str {
    match fam {
        IpFamily::V4 => "/proc/net/ip_tables_names",
        IpFamily::V6 => "/proc/net/ip6_tables_names",
    }
}

/// The `iptables-restore --noflush` script that removes `dn` and its entry rules from the nat table
/// `save` (an `iptables-save -t nat` listing), plus the shared chains when `dn` was the last container
/// chain; `None` when `dn` is not in it.
pub fn removal_script(save: &str, dn: &str) -> Option<String> {
    let chain_decl = |l: &str| l.strip_prefix(':').and_then(|r| r.split(' ').next()).map(str::to_string);
    let chains: Vec<String> = save.lines().filter_map(chain_decl).collect();
    if !chains.iter().any(|c| c == dn) {
        return None;
    }
    let target = |l: &str| l.split(" -j ").nth(1).and_then(|t| t.split(' ').next()).map(str::to_string);
    let rules: Vec<&str> = save.lines().filter(|l| l.starts_with("-A ")).collect();
    let mut s = String::from("*nat\n");
    let others = chains.iter().any(|c| c.starts_with("CNI-DN-") && c != dn);
    if others {
        for r in &rules {
            if r.starts_with(&format!("-A {DNAT_CHAIN} ")) && target(r).as_deref() == Some(dn) {
                s.push_str(&format!("-D{}\n", &r[2..]));
            }
        }
        s.push_str(&format!("-F {dn}\n-X {dn}\n"));
    } else {
        // The last container: everything goes by flushing. (iptables-nft-restore drops a -D of a rule in
        // a chain that the same script flushes later, so deleting the entry rule and then the chain fails
        // with EBUSY; flushes first, deletions after, is the order it keeps.)
        let shared: Vec<&str> =
            [DNAT_CHAIN, SETMARK_CHAIN, MASQ_CHAIN].into_iter().filter(|c| chains.iter().any(|x| x == c)).collect();
        for r in &rules {
            let chain = r.split(' ').nth(1).unwrap_or("");
            if chain != dn && !shared.contains(&chain) && target(r).is_some_and(|t| shared.contains(&t.as_str())) {
                s.push_str(&format!("-D{}\n", &r[2..]));
            }
        }
        for c in shared.iter().copied().chain([dn]) {
            s.push_str(&format!("-F {c}\n"));
        }
        for c in [dn].into_iter().chain(shared.iter().copied()) {
            s.push_str(&format!("-X {c}\n"));
        }
    }
    s.push_str("COMMIT\n");
    Some(s)
}

fn legacy_nat_loaded(proc_names: &str) -> bool {
    std::fs::read_to_string(proc_names).is_ok_and(|s| s.lines().any(|l| l.trim() == "nat"))
}

fn cmd_err(what: String, err: crate::net::command::CommandError) -> Error {
    Error::Command { what, err, hint: String::new() }
}

/// Removes the reference's iptables and nftables leftovers of (`network`, `container_id`); returns
/// what it removed, for the log. Nothing there costs a few netlink probes and no process.
pub fn remove_leftovers(nl: &mut Nfnl, network: &str, container_id: &str) -> Result<Vec<String>> {
    let dn = dn_chain(network, container_id);
    let mut done = Vec::new();
    for fam in IpFamily::BOTH {
        let in_nft = match nl.chain_exists(fam.nfproto(), "nat", &dn) {
            Ok(b) => b,
            Err(e) if absent(&e) => false,
            Err(e) => return Err(nl_err(format!("probing for the reference's chain {dn}"), e)),
        };
        if !in_nft && !legacy_nat_loaded(proc_names(fam)) {
            continue;
        }
        let save = match iptables::save_nat(fam) {
            Ok(o) => o,
            Err(e) if e.is_not_installed() && !in_nft => continue,
            Err(e) => return Err(cmd_err(format!("portmap: listing the reference portmap's {dn}"), e)),
        };
        let Some(script) = removal_script(&save, &dn) else { continue };
        iptables::restore(fam, &script)
            .map_err(|e| cmd_err(format!("portmap: removing the reference portmap's {dn}"), e))?;
        done.push(format!("{} chain {dn}", fam.iptables()));
    }
    for (family, name) in [(NFPROTO_IPV4, "ip"), (NFPROTO_IPV6, "ip6")] {
        let rules = match nl.dump_table_rules(family, NFT_TABLE) {
            Ok(r) => r,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(nl_err(format!("listing table {name} {NFT_TABLE}"), e)),
        };
        let ops: Vec<BatchOp<'_>> = rules
            .iter()
            .filter(|r| NFT_CHAINS.contains(&r.chain.as_str()) && r.comment.as_deref() == Some(container_id))
            .map(|r| BatchOp::DelRule { chain: r.chain.as_str(), handle: r.handle })
            .collect();
        if ops.is_empty() {
            continue;
        }
        nl.batch(None, family, NFT_TABLE, &ops)
            .map_err(|e| nl_err(format!("removing {container_id}'s rules from table {name} {NFT_TABLE}"), e))?;
        done.push(format!("{} rules of table {name} {NFT_TABLE}", ops.len()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_name_is_the_references() {
        // What /usr/lib/cni/portmap 1.1.1 named the chain of network mynet, container ctrA.
        assert_eq!(dn_chain("mynet", "ctrA"), "CNI-DN-f55d1ff5e9696738bd206");
    }

    const SAVE: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-DN-aaaaaaaaaaaaaaaaaaaaa - [0:0]
:CNI-DN-bbbbbbbbbbbbbbbbbbbbb - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-DN-aaaaaaaaaaaaaaaaaaaaa -s 10.88.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-aaaaaaaaaaaaaaaaaaaaa -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80
-A CNI-DN-bbbbbbbbbbbbbbbbbbbbb -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.88.0.3:80
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"a\"" -m multiport --dports 8080 -j CNI-DN-aaaaaaaaaaaaaaaaaaaaa
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"b\"" -m multiport --dports 9090 -j CNI-DN-bbbbbbbbbbbbbbbbbbbbb
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
COMMIT
"#;

    #[test]
    fn removal_keeps_the_shared_chains_while_another_container_uses_them() {
        let s = removal_script(SAVE, "CNI-DN-aaaaaaaaaaaaaaaaaaaaa").unwrap();
        assert_eq!(
            s,
            "*nat\n-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \\\"a\\\"\" -m \
             multiport --dports 8080 -j CNI-DN-aaaaaaaaaaaaaaaaaaaaa\n-F CNI-DN-aaaaaaaaaaaaaaaaaaaaa\n-X \
             CNI-DN-aaaaaaaaaaaaaaaaaaaaa\nCOMMIT\n"
        );
        assert_eq!(removal_script(SAVE, "CNI-DN-ccccccccccccccccccccc"), None);
    }

    #[test]
    fn the_last_container_takes_the_shared_chains_and_jumps_with_it() {
        let one: String = SAVE.lines().filter(|l| !l.contains("bbbbb")).map(|l| format!("{l}\n")).collect();
        let s = removal_script(&one, "CNI-DN-aaaaaaaaaaaaaaaaaaaaa").unwrap();
        for want in [
            "-D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n",
            "-D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n",
            "-D POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n",
            "-F CNI-HOSTPORT-SETMARK\n",
            "-X CNI-DN-aaaaaaaaaaaaaaaaaaaaa\n-X CNI-HOSTPORT-DNAT\n-X CNI-HOSTPORT-SETMARK\n-X CNI-HOSTPORT-MASQ\n",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
        assert!(!s.contains("-D CNI-HOSTPORT-DNAT"), "flushed, not deleted rule by rule: {s}");
        assert!(s.rfind("-F ").unwrap() < s.find("-X ").unwrap(), "every flush before the first delete: {s}");
    }
}
