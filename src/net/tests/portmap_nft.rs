//! The portmap structure and a condition set, written from typed objects, against `nft -f` of the nft
//! text they stand for: in two throwaway namespaces, `nft list` and the expressions nft reads back
//! (`--debug=netlink`) must be the same.

use std::process::Command;

use super::harness::{TestNs, require_root};
use crate::net::netns::run_in_netns;
use crate::net::nft::Nfnl;
use crate::net::portmap::TABLE;
use crate::net::portmap::conditions::Conditions;
use crate::net::portmap::structure::Structure;

/// The structure with mark bit 13, as nft text (what rcni wrote with `nft -f` before the typed layer).
const STRUCTURE_NFT: &str = r#"
add table inet rcni
add map inet rcni hostipport4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; comment "rcni portmap: IPv4 host IP ports"; }
add map inet rcni hostiprange4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr; flags interval; comment "rcni portmap: IPv4 host IP port ranges"; }
add map inet rcni hostport4 { type inet_proto . inet_service : ipv4_addr . inet_service; comment "rcni portmap: IPv4 host ports"; }
add map inet rcni hostportrange4 { type inet_proto . inet_service : ipv4_addr; flags interval; comment "rcni portmap: IPv4 host port ranges"; }
add map inet rcni hostipport6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; comment "rcni portmap: IPv6 host IP ports"; }
add map inet rcni hostiprange6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr; flags interval; comment "rcni portmap: IPv6 host IP port ranges"; }
add map inet rcni hostport6 { type inet_proto . inet_service : ipv6_addr . inet_service; comment "rcni portmap: IPv6 host ports"; }
add map inet rcni hostportrange6 { type inet_proto . inet_service : ipv6_addr; flags interval; comment "rcni portmap: IPv6 host port ranges"; }
add set inet rcni hairpin4 { type ipv4_addr . ipv4_addr; flags interval; comment "rcni portmap: sources . pods to masquerade"; }
add set inet rcni hairpin6 { type ipv6_addr . ipv6_addr; flags interval; comment "rcni portmap: sources . pods to masquerade"; }
add chain inet rcni portmap-dnat
add chain inet rcni portmap-pre { type nat hook prerouting priority dstnat; policy accept; }
add chain inet rcni portmap-out { type nat hook output priority -100; policy accept; }
add chain inet rcni portmap-post { type nat hook postrouting priority srcnat; policy accept; }
add chain inet rcni portmap-guard { type filter hook input priority 0; policy accept; }
add rule inet rcni portmap-pre fib daddr type local jump portmap-dnat comment "rcni-portmap v2 bit13 portmap-pre#0"
add rule inet rcni portmap-out fib daddr type local jump portmap-dnat comment "rcni-portmap v2 bit13 portmap-out#1"
add rule inet rcni portmap-dnat ip daddr . meta l4proto . th dport @hostipport4 ct mark set ct mark | 0x00002000 dnat ip to ip daddr . meta l4proto . th dport map @hostipport4 comment "rcni-portmap v2 bit13 portmap-dnat#2"
add rule inet rcni portmap-dnat ip daddr . meta l4proto . th dport @hostiprange4 ct mark set ct mark | 0x00002000 dnat ip to ip daddr . meta l4proto . th dport map @hostiprange4 comment "rcni-portmap v2 bit13 portmap-dnat#3"
add rule inet rcni portmap-dnat meta nfproto ipv4 meta l4proto . th dport @hostport4 ct mark set ct mark | 0x00002000 dnat ip to meta l4proto . th dport map @hostport4 comment "rcni-portmap v2 bit13 portmap-dnat#4"
add rule inet rcni portmap-dnat meta nfproto ipv4 meta l4proto . th dport @hostportrange4 ct mark set ct mark | 0x00002000 dnat ip to meta l4proto . th dport map @hostportrange4 comment "rcni-portmap v2 bit13 portmap-dnat#5"
add rule inet rcni portmap-dnat ip6 daddr . meta l4proto . th dport @hostipport6 ct mark set ct mark | 0x00002000 dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostipport6 comment "rcni-portmap v2 bit13 portmap-dnat#6"
add rule inet rcni portmap-dnat ip6 daddr . meta l4proto . th dport @hostiprange6 ct mark set ct mark | 0x00002000 dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostiprange6 comment "rcni-portmap v2 bit13 portmap-dnat#7"
add rule inet rcni portmap-dnat meta nfproto ipv6 meta l4proto . th dport @hostport6 ct mark set ct mark | 0x00002000 dnat ip6 to meta l4proto . th dport map @hostport6 comment "rcni-portmap v2 bit13 portmap-dnat#8"
add rule inet rcni portmap-dnat meta nfproto ipv6 meta l4proto . th dport @hostportrange6 ct mark set ct mark | 0x00002000 dnat ip6 to meta l4proto . th dport map @hostportrange6 comment "rcni-portmap v2 bit13 portmap-dnat#9"
add rule inet rcni portmap-post ct mark & 0x00002000 == 0x00002000 ip saddr 127.0.0.0/8 masquerade comment "rcni-portmap v2 bit13 portmap-post#10"
add rule inet rcni portmap-post ct mark & 0x00002000 == 0x00002000 ip saddr . ip daddr @hairpin4 masquerade comment "rcni-portmap v2 bit13 portmap-post#11"
add rule inet rcni portmap-post ct mark & 0x00002000 == 0x00002000 ip6 saddr . ip6 daddr @hairpin6 masquerade comment "rcni-portmap v2 bit13 portmap-post#12"
add rule inet rcni portmap-guard iifname != "lo" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct status & dnat != dnat drop comment "rcni-portmap v2 bit13 portmap-guard#13"
"#;

/// A condition set `! -s 198.18.0.0/24,198.18.1.1 -i eth+ ! -p udp` with id `<id>`, as nft text.
const CONDITIONS_NFT: &str = r#"
add table inet rcni
add map inet rcni hostport4-c<id> { type inet_proto . inet_service : ipv4_addr . inet_service; comment "rcni portmap: host ports with conditions <id>"; }
add map inet rcni hostipport4-c<id> { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; comment "rcni portmap: host IP ports with conditions <id>"; }
add set inet rcni portmap-c<id>-0 { type ipv4_addr; flags interval; comment "rcni portmap: conditions <id>"; }
add element inet rcni portmap-c<id>-0 { 198.18.0.0/24, 198.18.1.1 }
add chain inet rcni portmap-c<id>
add chain inet rcni portmap-c<id>-pre { type nat hook prerouting priority dstnat - 1; policy accept; }
add chain inet rcni portmap-c<id>-out { type nat hook output priority -101; policy accept; }
add rule inet rcni portmap-c<id> ip daddr . meta l4proto . th dport @hostipport4-c<id> ct mark set ct mark | 0x00002000 dnat ip to ip daddr . meta l4proto . th dport map @hostipport4-c<id> comment "rcni-portmap cond v1 <id>"
add rule inet rcni portmap-c<id> meta nfproto ipv4 meta l4proto . th dport @hostport4-c<id> ct mark set ct mark | 0x00002000 dnat ip to meta l4proto . th dport map @hostport4-c<id> comment "rcni-portmap cond v1 <id>"
add rule inet rcni portmap-c<id>-pre meta nfproto ipv4 fib daddr type local ip saddr != @portmap-c<id>-0 iifname "eth*" meta l4proto != udp jump portmap-c<id> comment "rcni-portmap cond v1 <id>"
"#;

/// `nft list table` and `nft --debug=netlink list table` of table inet rcni in `ns`.
fn listing(ns: &TestNs) -> String {
    let mut out = String::new();
    for debug in [&[][..], &["--debug=netlink"][..]] {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft"])
            .args(debug)
            .args(["list", "table", "inet", TABLE])
            .output()
            .expect("run nft");
        assert!(o.status.success(), "nft list: {}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        // The raw interval elements differ in one way that changes nothing: nft also sends an
        // interval end at address 0 before a set's first range. The elements themselves are compared
        // by the listing without --debug.
        out.extend(
            text.lines().filter(|l| !(debug.len() == 1 && l.starts_with("\telement "))).map(|l| format!("{l}\n")),
        );
    }
    out
}

/// The listings are equal; else the lines that differ.
fn same_listing(typed: &str, by_nft: &str) {
    let differ: Vec<(usize, &str, &str)> = typed
        .lines()
        .zip(by_nft.lines())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, a, b))
        .collect();
    assert!(
        differ.is_empty() && typed.lines().count() == by_nft.lines().count(),
        "typed vs nft -f, lines that differ: {differ:#?}"
    );
}

fn nft_f(ns: &TestNs, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "nft -f: {}\n{script}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_typed_structure_is_what_nft_writes_for_its_text() {
    require_root!();
    let by_nft = TestNs::new("pm-asnft-a");
    let typed = TestNs::new("pm-asnft-b");
    let tokens: Vec<String> =
        "! -s 198.18.0.0/24,198.18.1.1 -i eth+ ! -p udp".split_whitespace().map(str::to_string).collect();
    let cond = Conditions::parse("conditionsV4", true, &tokens).unwrap();
    nft_f(&by_nft, STRUCTURE_NFT);
    nft_f(&by_nft, &CONDITIONS_NFT.replace("<id>", &cond.id()));
    run_in_netns(&typed.ns, || {
        let mut nl = Nfnl::open().unwrap();
        let s = Structure::default();
        assert!(!s.intact(&mut nl).unwrap());
        s.ensure(&mut nl).unwrap();
        assert!(s.intact(&mut nl).unwrap(), "the probe recognises what was written");
        cond.ensure(&mut nl, &s).unwrap();
        assert!(cond.intact(&mut nl).unwrap());
    })
    .unwrap();
    same_listing(&listing(&typed), &listing(&by_nft));
    run_in_netns(&by_nft.ns, || {
        let mut nl = Nfnl::open().unwrap();
        assert!(Structure::default().intact(&mut nl).unwrap(), "what nft wrote is recognised as intact");
        assert!(cond.intact(&mut nl).unwrap());
    })
    .unwrap();
}

/// A rewrite (of a flushed chain) keeps every element, and STATUS's check applies nothing.
#[test]
fn a_rewrite_keeps_the_elements_and_a_check_changes_nothing() {
    require_root!();
    let ns = TestNs::new("pm-asnft-c");
    nft_f(&ns, STRUCTURE_NFT);
    nft_f(&ns, "add element inet rcni hostport4 { tcp . 8080 : 10.1.0.2 . 80 }\nflush chain inet rcni portmap-guard\n");
    let before = listing(&ns);
    run_in_netns(&ns.ns, || {
        let mut nl = Nfnl::open().unwrap();
        let s = Structure::default();
        assert!(!s.intact(&mut nl).unwrap());
        assert!(s.ready(&mut nl).unwrap().is_ok(), "a flushed chain is repairable");
    })
    .unwrap();
    assert_eq!(listing(&ns), before, "the check applied nothing");
    run_in_netns(&ns.ns, || Structure::default().ensure(&mut Nfnl::open().unwrap()).unwrap()).unwrap();
    let after = listing(&ns);
    assert!(after.contains("tcp . 8080 : 10.1.0.2 . 80"), "{after}");
    assert!(after.contains("portmap-guard#13"), "{after}");
}
