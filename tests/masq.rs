//! Integration tests of `rcni::net::masq` in throwaway network namespaces (needs root).
//!
//! Every test creates its own netns `rcni-masq-<test>-<pid>` and runs the library on a thread that
//! `setns`'d into it; shell commands run under `ip netns exec`. The host's netns is never touched and
//! the namespaces are deleted on drop (also on panic).

mod support;

use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use ipnetwork::IpNetwork;
use rcni::net::masq::{self, Backend, Element, Owner, PodEntry};

/// A throwaway netns (the support guard removes it on drop, also on panic) with helpers for these tests.
struct Netns {
    name: String,
    ns: support::NodeNs,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let ns = support::NodeNs::new(&format!("masq-{tag}"));
        Netns { name: ns.name().to_string(), ns }
    }

    /// Runs `f` on a thread inside this netns.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run_inside(f)
    }

    /// Runs a command inside this netns; panics on failure; returns stdout.
    fn exec(&self, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        sh(&full)
    }

    fn try_exec(&self, cmd: &[&str]) -> Result<String, String> {
        let out = Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn nft_rules(&self, network: &str) -> Vec<String> {
        let chain = masq::nft_names(network).chain;
        self.exec(&["nft", "list", "chain", "inet", "rcni", &chain])
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(" masquerade") && !l.starts_with("comment"))
            .map(str::to_string)
            .collect()
    }
}

fn sh(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn pod(id: &str, ifname: &str, ips: &[&str]) -> PodEntry {
    PodEntry { container_id: id.to_string(), ifname: ifname.to_string(), ips: ips.iter().map(|s| net(s)).collect() }
}

fn elem(addr: &str, owner: &str) -> Element {
    Element { addr: addr.parse::<IpAddr>().unwrap(), owner: owner.to_string() }
}

#[test]
fn nft_setup_idempotent_many_pods_and_delete_all() {
    let ns = Netns::new("many");
    let exempt = [net("10.244.1.0/24")];
    let pods: Vec<PodEntry> =
        (0..100).map(|i| pod(&format!("ctr{i}"), "eth0", &[&format!("10.244.1.{}/24", i + 2)])).collect();
    ns.run(|| {
        masq::setup(Backend::Nftables, "brnet", &exempt, &pods[0]).unwrap();
        masq::setup(Backend::Nftables, "brnet", &exempt, &pods[0]).unwrap();
    });
    assert_eq!(ns.nft_rules("brnet").len(), 1, "one rule for an IPv4-only network");
    ns.run(|| {
        for p in &pods {
            masq::setup(Backend::Nftables, "brnet", &exempt, p).unwrap();
        }
        let l = masq::list("brnet").unwrap();
        assert_eq!(l.len(), 100);
        for p in &pods {
            masq::check(Backend::Nftables, "brnet", &exempt, p).unwrap();
        }
    });
    let rules = ns.nft_rules("brnet");
    assert_eq!(rules.len(), 1, "{rules:?}");
    // Elements written over netlink read back correctly with nft, comment included.
    let n = masq::nft_names("brnet");
    let set = ns.exec(&["nft", "-j", "list", "set", "inet", "rcni", &n.pods4]);
    assert!(set.contains(r#"{"elem": {"val": "10.244.1.2", "comment": "ctr0/eth0"}}"#), "{set}");
    assert_eq!(set.matches("\"comment\": \"ctr").count(), 100);
    let exempt_set = ns.exec(&["nft", "list", "set", "inet", "rcni", &n.exempt4]);
    assert!(exempt_set.contains("10.244.1.0/24"), "{exempt_set}");
    ns.run(|| {
        for p in &pods {
            masq::teardown("brnet", p).unwrap();
        }
        assert_eq!(masq::list("brnet").unwrap(), vec![]);
        // teardown is idempotent
        masq::teardown("brnet", &pods[0]).unwrap();
    });
    assert_eq!(ns.nft_rules("brnet").len(), 1);
}

#[test]
fn nft_owner_check() {
    let ns = Netns::new("owner");
    let exempt = [net("10.244.1.0/24")];
    let old = pod("old", "eth0", &["10.244.1.7/24"]);
    let new = pod("new", "eth0", &["10.244.1.7/24"]);
    let other_if = pod("old", "net1", &["10.244.1.7/24"]);
    ns.run(|| {
        masq::setup(Backend::Nftables, "brnet", &exempt, &old).unwrap();
        // the new pod got the same IP before the old one's DEL ran: owner replaced
        masq::setup(Backend::Nftables, "brnet", &exempt, &new).unwrap();
        assert_eq!(masq::list("brnet").unwrap(), vec![elem("10.244.1.7", "new/eth0")]);
        let err = masq::check(Backend::Nftables, "brnet", &exempt, &old).unwrap_err().to_string();
        assert!(err.contains("belongs to \"new/eth0\""), "{err}");
        // late DEL of the old pod (and of another ifname of it) leaves the new one alone
        masq::teardown("brnet", &old).unwrap();
        masq::teardown("brnet", &other_if).unwrap();
        assert_eq!(masq::list("brnet").unwrap(), vec![elem("10.244.1.7", "new/eth0")]);
        masq::check(Backend::Nftables, "brnet", &exempt, &new).unwrap();
        masq::teardown("brnet", &new).unwrap();
        assert_eq!(masq::list("brnet").unwrap(), vec![]);
    });
}

#[test]
fn nft_teardown_without_ips_finds_the_owner() {
    let ns = Netns::new("noips");
    let exempt = [net("10.244.1.0/24"), net("fd00:a::/64")];
    let a = pod("a", "eth0", &["10.244.1.5/24", "fd00:a::5/64"]);
    let b = pod("b", "eth0", &["10.244.1.6/24"]);
    ns.run(|| {
        masq::setup(Backend::Nftables, "brnet", &exempt, &a).unwrap();
        masq::setup(Backend::Nftables, "brnet", &exempt, &b).unwrap();
        // A DEL that knows neither prevResult nor the pod's netns: only the owner.
        masq::teardown("brnet", &pod("a", "eth0", &[])).unwrap();
        assert_eq!(masq::list("brnet").unwrap(), vec![elem("10.244.1.6", "b/eth0")]);
        masq::teardown("brnet", &pod("a", "eth0", &[])).unwrap();
        masq::teardown("nonexistent-net", &pod("a", "eth0", &[])).unwrap();
    });
}

#[test]
fn nft_dual_stack_and_networks_are_independent() {
    let ns = Netns::new("dual");
    let ex_a = [net("10.244.1.0/24"), net("fd00:a::/64")];
    let ex_b = [net("10.10.0.0/16")];
    let a = pod("c1", "eth0", &["10.244.1.5/24", "fd00:a::5/64"]);
    let b = pod("c2", "eth0", &["10.10.3.4/16"]);
    ns.run(|| {
        masq::setup(Backend::Nftables, "net-a", &ex_a, &a).unwrap();
        masq::setup(Backend::Nftables, "net-b", &ex_b, &b).unwrap();
        assert_eq!(masq::list("net-a").unwrap(), vec![elem("10.244.1.5", "c1/eth0"), elem("fd00:a::5", "c1/eth0")]);
        assert_eq!(masq::list("net-b").unwrap(), vec![elem("10.10.3.4", "c2/eth0")]);
        masq::check(Backend::Nftables, "net-a", &ex_a, &a).unwrap();
    });
    let rules = ns.nft_rules("net-a");
    assert_eq!(rules.len(), 2, "{rules:?}");
    let n = masq::nft_names("net-a");
    assert!(
        rules.iter().any(|r| r.starts_with(&format!(
            "ip6 saddr @{} ip6 daddr != @{} ip6 daddr != ff00::/8 masquerade",
            n.pods6, n.exempt6
        ))),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|r| r.starts_with(&format!(
            "ip saddr @{} ip daddr != @{} ip daddr != 224.0.0.0/4 masquerade",
            n.pods4, n.exempt4
        ))),
        "{rules:?}"
    );
    let ex6 = ns.exec(&["nft", "list", "set", "inet", "rcni", &n.exempt6]);
    assert!(ex6.contains("fd00:a::/64"), "{ex6}");
    ns.run(|| {
        masq::teardown("net-a", &a).unwrap();
        assert_eq!(masq::list("net-a").unwrap(), vec![]);
        assert_eq!(masq::list("net-b").unwrap().len(), 1);
        // an unknown network lists empty and tears down fine
        assert_eq!(masq::list("nope").unwrap(), vec![]);
        masq::teardown("nope", &a).unwrap();
    });
}

#[test]
fn nft_exempt_change_rewrites_structure() {
    let ns = Netns::new("exempt");
    let p = pod("c1", "eth0", &["10.244.1.5/24"]);
    ns.run(|| {
        masq::setup(Backend::Nftables, "n", &[net("10.244.1.0/24")], &p).unwrap();
        masq::setup(Backend::Nftables, "n", &[net("10.244.0.0/16")], &p).unwrap();
        let err = masq::check(Backend::Nftables, "n", &[net("10.244.1.0/24")], &p).unwrap_err();
        assert!(err.to_string().contains("exempt"), "{err}");
        masq::check(Backend::Nftables, "n", &[net("10.244.0.0/16")], &p).unwrap();
    });
    let n = masq::nft_names("n");
    let ex = ns.exec(&["nft", "list", "set", "inet", "rcni", &n.exempt4]);
    assert!(ex.contains("10.244.0.0/16") && !ex.contains("10.244.1.0/24"), "{ex}");
    assert_eq!(ns.nft_rules("n").len(), 1);
    ns.run(|| assert_eq!(masq::list("n").unwrap().len(), 1));
}

#[test]
fn nft_check_reports_hand_deletions_and_setup_repairs() {
    let ns = Netns::new("check");
    let exempt = [net("10.244.1.0/24")];
    let p = pod("c1", "eth0", &["10.244.1.5/24"]);
    ns.run(|| masq::setup(Backend::Nftables, "brnet", &exempt, &p).unwrap());
    let n = masq::nft_names("brnet");
    ns.exec(&["nft", "delete", "element", "inet", "rcni", &n.pods4, "{ 10.244.1.5 }"]);
    let err = ns.run(|| masq::check(Backend::Nftables, "brnet", &exempt, &p)).unwrap_err().to_string();
    assert!(err.contains("address 10.244.1.5 of c1/eth0 is missing from set inet rcni pods4-"), "{err}");
    // a rule deleted by hand
    ns.run(|| masq::setup(Backend::Nftables, "brnet", &exempt, &p).unwrap());
    let listing = ns.exec(&["nft", "-a", "list", "chain", "inet", "rcni", &n.chain]);
    let handle = listing
        .lines()
        .find(|l| l.contains("ip saddr"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap()
        .trim()
        .to_string();
    ns.exec(&["nft", "delete", "rule", "inet", "rcni", &n.chain, "handle", &handle]);
    let err = ns.run(|| masq::check(Backend::Nftables, "brnet", &exempt, &p)).unwrap_err().to_string();
    assert!(err.contains(&format!("chain inet rcni {}", n.chain)), "{err}");
    // ADD repairs the chain and keeps the elements
    ns.run(|| {
        masq::setup(Backend::Nftables, "brnet", &exempt, &p).unwrap();
        masq::check(Backend::Nftables, "brnet", &exempt, &p).unwrap();
    });
    assert_eq!(ns.nft_rules("brnet").len(), 1);
}

#[test]
fn nft_gc() {
    let ns = Netns::new("gc");
    let exempt = [net("10.244.1.0/24")];
    let keep = pod("keep", "eth0", &["10.244.1.2/24", "fd00::2/64"]);
    let gone1 = pod("gone1", "eth0", &["10.244.1.3/24", "fd00::3/64"]);
    let gone2 = pod("keep", "net1", &["10.244.1.4/24"]);
    ns.run(|| {
        for p in [&keep, &gone1, &gone2] {
            masq::setup(Backend::Nftables, "brnet", &exempt, p).unwrap();
        }
        let removed = masq::gc("brnet", &[Owner::new("keep", "eth0")]).unwrap();
        assert_eq!(
            removed,
            vec![elem("10.244.1.3", "gone1/eth0"), elem("10.244.1.4", "keep/net1"), elem("fd00::3", "gone1/eth0"),]
        );
        assert_eq!(masq::list("brnet").unwrap(), vec![elem("10.244.1.2", "keep/eth0"), elem("fd00::2", "keep/eth0")]);
        assert_eq!(masq::gc("brnet", &[Owner::new("keep", "eth0")]).unwrap(), vec![]);
        assert_eq!(masq::gc("nope", &[]).unwrap(), vec![]);
    });
}

/// Audit finding 11: a batch deleting thousands of elements used to be encoded with its element nest
/// length truncated to 16 bits, so the kernel rejected it and GC could never clean up.
#[test]
fn nft_gc_of_thousands_of_stale_elements() {
    let ns = Netns::new("gcmany");
    let exempt = [net("10.240.0.0/12")];
    let keep = pod("keep", "eth0", &["10.240.0.2/12"]);
    const STALE: u32 = 5000;
    ns.run(|| masq::setup(Backend::Nftables, "bignet", &exempt, &keep).unwrap());
    let set = masq::nft_names("bignet").pods4;
    let mut script = String::new();
    for i in 0..STALE {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 241, 0, 0)) + i);
        script.push_str(&format!("add element inet rcni {set} {{ {ip} comment \"stale-{i}/eth0\" }}\n"));
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(out.success(), "nft -f of {STALE} elements");
    ns.run(|| {
        assert_eq!(masq::list("bignet").unwrap().len(), STALE as usize + 1);
        let removed = masq::gc("bignet", &[keep.owner()]).unwrap();
        assert_eq!(removed.len(), STALE as usize);
        assert_eq!(masq::list("bignet").unwrap(), vec![elem("10.240.0.2", "keep/eth0")]);
    });
}

const REF_CHAIN: &str = "CNI-2fbf118d4cafd020f013271b";
const REF_COMMENT: &str = r#""name: \"brnet\" id: \"ctr1\"""#;

#[test]
fn iptables_reference_layout_and_teardown() {
    let ns = Netns::new("ipt");
    let p = pod("ctr1", "eth0", &["10.88.0.5/16", "fd88::5/64"]);
    let exempt = [net("10.88.0.0/16"), net("fd88::/64")];
    ns.run(|| {
        masq::setup(Backend::Iptables, "brnet", &exempt, &p).unwrap();
        masq::setup(Backend::Iptables, "brnet", &exempt, &p).unwrap();
        masq::check(Backend::Iptables, "brnet", &exempt, &p).unwrap();
    });
    let v4 = ns.exec(&["iptables-save", "-t", "nat"]);
    let expected4 = [
        format!(":{REF_CHAIN} - [0:0]"),
        format!("-A POSTROUTING -s 10.88.0.5/32 -m comment --comment {REF_COMMENT} -j {REF_CHAIN}"),
        format!("-A {REF_CHAIN} -d 10.88.0.0/16 -m comment --comment {REF_COMMENT} -j ACCEPT"),
        format!("-A {REF_CHAIN} ! -d 224.0.0.0/4 -m comment --comment {REF_COMMENT} -j MASQUERADE"),
    ];
    for e in &expected4 {
        assert_eq!(v4.lines().filter(|l| l == e).count(), 1, "{e}\n{v4}");
    }
    let v6 = ns.exec(&["ip6tables-save", "-t", "nat"]);
    for e in [
        format!("-A POSTROUTING -s fd88::5/128 -m comment --comment {REF_COMMENT} -j {REF_CHAIN}"),
        format!("-A {REF_CHAIN} -d fd88::/64 -m comment --comment {REF_COMMENT} -j ACCEPT"),
        format!("-A {REF_CHAIN} ! -d ff00::/8 -m comment --comment {REF_COMMENT} -j MASQUERADE"),
    ] {
        assert_eq!(v6.lines().filter(|l| *l == e).count(), 1, "{e}\n{v6}");
    }
    // a deleted jump is reported by CHECK
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-D",
        "POSTROUTING",
        "-s",
        "10.88.0.5/32",
        "-m",
        "comment",
        "--comment",
        r#"name: "brnet" id: "ctr1""#,
        "-j",
        REF_CHAIN,
    ]);
    let err = ns.run(|| masq::check(Backend::Iptables, "brnet", &exempt, &p)).unwrap_err().to_string();
    assert!(err.contains("-A POSTROUTING -s 10.88.0.5/32"), "{err}");
    // teardown without any IPs (no prevResult) still removes everything
    let no_ips = pod("ctr1", "eth0", &[]);
    ns.run(|| {
        masq::setup(Backend::Iptables, "brnet", &exempt, &p).unwrap();
        masq::teardown("brnet", &no_ips).unwrap();
        masq::teardown("brnet", &no_ips).unwrap();
    });
    let v4 = ns.exec(&["iptables-save", "-t", "nat"]);
    let v6 = ns.exec(&["ip6tables-save", "-t", "nat"]);
    assert!(!v4.contains("CNI-") && !v6.contains("CNI-"), "{v4}\n{v6}");
}

#[test]
fn iptables_teardown_of_reference_made_rules() {
    // Rules as the reference plugin makes them, command by command, incl. the legacy `-s ip/prefix` jump.
    let ns = Netns::new("iptref");
    let c = r#"name: "brnet" id: "ctr1""#;
    ns.exec(&["iptables", "-w", "-t", "nat", "-N", REF_CHAIN]);
    ns.exec(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        REF_CHAIN,
        "-d",
        "10.88.0.5/16",
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        c,
    ]);
    ns.exec(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        REF_CHAIN,
        "!",
        "-d",
        "224.0.0.0/4",
        "-j",
        "MASQUERADE",
        "-m",
        "comment",
        "--comment",
        c,
    ]);
    ns.exec(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.88.0.5",
        "-j",
        REF_CHAIN,
        "-m",
        "comment",
        "--comment",
        c,
    ]);
    ns.exec(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.88.0.5/16",
        "-j",
        REF_CHAIN,
        "-m",
        "comment",
        "--comment",
        c,
    ]);
    // an unrelated rule survives
    ns.exec(&["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.0.0/16", "-j", "MASQUERADE"]);
    let p = pod("ctr1", "eth0", &["10.88.0.5/16"]);
    ns.run(|| {
        masq::check(Backend::Iptables, "brnet", &[net("10.88.0.0/16")], &p).unwrap();
        masq::teardown("brnet", &p).unwrap();
    });
    let v4 = ns.exec(&["iptables-save", "-t", "nat"]);
    assert!(!v4.contains("CNI-"), "{v4}");
    assert!(v4.contains("-A POSTROUTING -s 10.1.0.0/16 -j MASQUERADE"), "{v4}");
}

#[test]
fn iptables_gc() {
    let ns = Netns::new("iptgc");
    let exempt = [net("10.88.0.0/16")];
    let keep = pod("keep", "eth0", &["10.88.0.2/16"]);
    let gone = pod("gone", "eth0", &["10.88.0.3/16"]);
    let other_net = pod("gone", "eth0", &["10.99.0.3/16"]);
    ns.run(|| {
        masq::setup(Backend::Iptables, "brnet", &exempt, &keep).unwrap();
        masq::setup(Backend::Iptables, "brnet", &exempt, &gone).unwrap();
        masq::setup(Backend::Iptables, "other", &[net("10.99.0.0/16")], &other_net).unwrap();
        masq::gc("brnet", &[Owner::new("keep", "eth0")]).unwrap();
        masq::check(Backend::Iptables, "brnet", &exempt, &keep).unwrap();
        masq::check(Backend::Iptables, "other", &[net("10.99.0.0/16")], &other_net).unwrap();
        assert!(masq::check(Backend::Iptables, "brnet", &exempt, &gone).is_err());
    });
    let v4 = ns.exec(&["iptables-save", "-t", "nat"]);
    let gone_chain = masq::reference_chain_name("brnet", "gone");
    assert!(!v4.contains(&gone_chain), "{v4}");
}

#[test]
fn unknown_backend_and_invalid_input() {
    let err = Backend::parse(Some("ipfw")).unwrap_err().to_string();
    assert!(err.contains("\"ipfw\"") && err.contains("\"nftables\""), "{err}");
    let p = pod("", "eth0", &["10.0.0.2/24"]);
    assert!(masq::setup(Backend::Nftables, "n", &[], &p).is_err());
    assert!(masq::list("").is_err());
}

/// Pod traffic really leaves with the router's address: pod ns -- veth -- router ns -- veth -- server ns.
#[test]
fn nft_real_traffic_is_masqueraded() {
    let pid = std::process::id();
    let router = Netns::new("rt-r");
    let podns = Netns::new("rt-p");
    let server = Netns::new("rt-s");
    let (vp, vs) = (format!("rmp{pid}"), format!("rms{pid}"));
    // veths are created inside the router ns and one end moved out, so the host never sees them
    router.exec(&["ip", "link", "add", &vp, "type", "veth", "peer", "name", "pod0"]);
    router.exec(&["ip", "link", "set", "pod0", "netns", &podns.name]);
    router.exec(&["ip", "link", "add", &vs, "type", "veth", "peer", "name", "srv0"]);
    router.exec(&["ip", "link", "set", "srv0", "netns", &server.name]);
    router.exec(&["ip", "addr", "add", "10.244.1.1/24", "dev", &vp]);
    router.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", &vs]);
    router.exec(&["ip", "link", "set", &vp, "up"]);
    router.exec(&["ip", "link", "set", &vs, "up"]);
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    podns.exec(&["ip", "addr", "add", "10.244.1.5/24", "dev", "pod0"]);
    podns.exec(&["ip", "link", "set", "pod0", "up"]);
    podns.exec(&["ip", "route", "add", "default", "via", "10.244.1.1"]);
    server.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "srv0"]);
    server.exec(&["ip", "link", "set", "srv0", "up"]);
    server.exec(&["ip", "link", "set", "lo", "up"]);
    // the server has no route back to 10.244.1.0/24: only masqueraded traffic gets an answer
    assert!(podns.try_exec(&["ping", "-c1", "-W1", "192.0.2.2"]).is_err());
    let p = pod("c1", "eth0", &["10.244.1.5/24"]);
    router.run(|| masq::setup(Backend::Nftables, "rt", &[net("10.244.1.0/24")], &p).unwrap());
    podns.exec(&["ping", "-c1", "-W2", "192.0.2.2"]);
    let ct = router.try_exec(&["conntrack", "-L"]).unwrap_or_default();
    if !ct.is_empty() {
        assert!(ct.contains("192.0.2.1"), "{ct}");
    }
    router.run(|| masq::teardown("rt", &p).unwrap());
    let _ = router.try_exec(&["conntrack", "-F"]);
    assert!(podns.try_exec(&["ping", "-c1", "-W1", "192.0.2.2"]).is_err());
}

/// Cost per pod add / delete with the nft backend (run with
/// `cargo test --release --test masq -- --ignored --nocapture bench`).
#[test]
#[ignore]
fn bench_nft_pod_add_delete() {
    let ns = Netns::new("bench");
    let exempt = [net("10.244.0.0/16")];
    let n = 1000;
    let pods: Vec<PodEntry> = (0..n)
        .map(|i| pod(&format!("{i:064x}"), "eth0", &[&format!("10.244.{}.{}/16", i / 250, i % 250 + 2)]))
        .collect();
    ns.run(|| {
        masq::setup(Backend::Nftables, "bench", &exempt, &pods[0]).unwrap();
        let t = Instant::now();
        for p in &pods {
            masq::setup(Backend::Nftables, "bench", &exempt, p).unwrap();
        }
        let add = t.elapsed() / n as u32;
        let t = Instant::now();
        for p in &pods {
            masq::teardown("bench", p).unwrap();
        }
        let del = t.elapsed() / n as u32;
        println!("nft backend, {n} pods: add {add:?}/pod, delete {del:?}/pod");
        let t = Instant::now();
        masq::setup(Backend::Iptables, "bench", &exempt, &pods[0]).unwrap();
        let ipt_add = t.elapsed();
        let t = Instant::now();
        masq::teardown("bench", &pods[0]).unwrap();
        println!("iptables backend: add {ipt_add:?}, delete {:?}", t.elapsed());
    });
}

/// The rule comments (fingerprints) of a listing, in order.
fn listed_comments(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.contains(" masquerade comment "))
        .map(|l| l.rsplit_once("comment ").unwrap().1.trim_matches('"').to_string())
        .collect()
}

/// What rcni writes over netlink lists exactly as what `nft -f` makes of the layout's text (the
/// structure was written with that text before): the same table, sets, chain, rules and elements.
#[test]
fn nft_structure_lists_as_the_same_nft_text() {
    let ours = Netns::new("struct-ours");
    let theirs = Netns::new("struct-text");
    let exempt = [net("10.244.0.0/16"), net("192.168.0.0/24"), net("fd00:244::/64"), net("240.0.0.0/4")];
    let p = pod("c1", "eth0", &["10.244.1.2/16", "fd00:244::2/64"]);
    ours.run(|| masq::setup(Backend::Nftables, "brnet", &exempt, &p).unwrap());
    let listing = ours.exec(&["nft", "list", "table", "inet", "rcni"]);
    let c = listed_comments(&listing);
    assert_eq!(c.len(), 2, "{listing}");
    let n = masq::nft_names("brnet");
    let script = format!(
        "add table inet rcni {{ comment \"rcni: masquerade of pod addresses\"; }}\n\
         add set inet rcni {p4} {{ type ipv4_addr; comment \"pods of network brnet\"; }}\n\
         add set inet rcni {p6} {{ type ipv6_addr; comment \"pods of network brnet\"; }}\n\
         add set inet rcni {e4} {{ type ipv4_addr; flags interval; comment \"not masqueraded destinations of network brnet\"; }}\n\
         add set inet rcni {e6} {{ type ipv6_addr; flags interval; comment \"not masqueraded destinations of network brnet\"; }}\n\
         add chain inet rcni {ch} {{ type nat hook postrouting priority srcnat; policy accept; comment \"rcni masquerade for network brnet\"; }}\n\
         add rule inet rcni {ch} ip saddr @{p4} ip daddr != @{e4} ip daddr != 224.0.0.0/4 masquerade comment \"{c0}\"\n\
         add rule inet rcni {ch} ip6 saddr @{p6} ip6 daddr != @{e6} ip6 daddr != ff00::/8 masquerade comment \"{c1}\"\n\
         add element inet rcni {e4} {{ 10.244.0.0/16, 192.168.0.0/24, 240.0.0.0/4 }}\n\
         add element inet rcni {e6} {{ fd00:244::/64 }}\n\
         add element inet rcni {p4} {{ 10.244.1.2 comment \"c1/eth0\" }}\n\
         add element inet rcni {p6} {{ fd00:244::2 comment \"c1/eth0\" }}\n",
        p4 = n.pods4,
        p6 = n.pods6,
        e4 = n.exempt4,
        e6 = n.exempt6,
        ch = n.chain,
        c0 = c[0],
        c1 = c[1],
    );
    let dir = support::TempDir::new("masq-struct");
    let file = dir.write("layout.nft", &script);
    theirs.exec(&["nft", "-f", file.to_str().unwrap()]);
    assert_eq!(theirs.exec(&["nft", "list", "table", "inet", "rcni"]), listing);
    // And the written structure is recognised: a second pod does not rewrite it (same rule handles).
    let handles = ours.exec(&["nft", "-a", "list", "chain", "inet", "rcni", &n.chain]);
    ours.run(|| masq::setup(Backend::Nftables, "brnet", &exempt, &pod("c2", "eth0", &["10.244.1.3/16"])).unwrap());
    assert_eq!(ours.exec(&["nft", "-a", "list", "chain", "inet", "rcni", &n.chain]), handles);
}

/// The cluster masquerade (the agent's --ip-masq) lists as the same nft text too, and a network that
/// loses its IPv6 prefix loses its IPv6 set and rule.
#[test]
fn cluster_structure_lists_as_the_same_nft_text() {
    let ours = Netns::new("cl-ours");
    let theirs = Netns::new("cl-text");
    let owner = "rcni-overlay /coreos.com/network";
    let nets = [net("10.244.0.0/16"), net("fd00:244::/56")];
    assert!(ours.run(|| masq::cluster::ensure(owner, &nets).unwrap()));
    assert!(!ours.run(|| masq::cluster::ensure(owner, &nets).unwrap()), "in place: nothing to write");
    let listing = ours.exec(&["nft", "list", "table", "inet", "rcni"]);
    let c = listed_comments(&listing);
    assert_eq!(c.len(), 2, "{listing}");
    let n = masq::cluster::Names::new(owner);
    let script = format!(
        "add table inet rcni {{ comment \"rcni: masquerade of pod addresses\"; }}\n\
         add chain inet rcni {ch} {{ type nat hook postrouting priority srcnat; policy accept; comment \"rcni masquerade of cluster network {owner}\"; }}\n\
         add set inet rcni {n4} {{ type ipv4_addr; flags interval; comment \"cluster network {owner}\"; }}\n\
         add element inet rcni {n4} {{ 10.244.0.0/16 }}\n\
         add rule inet rcni {ch} ip saddr @{n4} ip daddr != @{n4} ip daddr != 224.0.0.0/4 masquerade comment \"{c0}\"\n\
         add set inet rcni {n6} {{ type ipv6_addr; flags interval; comment \"cluster network {owner}\"; }}\n\
         add element inet rcni {n6} {{ fd00:244::/56 }}\n\
         add rule inet rcni {ch} ip6 saddr @{n6} ip6 daddr != @{n6} ip6 daddr != ff00::/8 masquerade comment \"{c1}\"\n",
        ch = n.chain,
        n4 = n.net4,
        n6 = n.net6,
        c0 = c[0],
        c1 = c[1],
    );
    let dir = support::TempDir::new("masq-cl");
    let file = dir.write("layout.nft", &script);
    theirs.exec(&["nft", "-f", file.to_str().unwrap()]);
    assert_eq!(theirs.exec(&["nft", "list", "table", "inet", "rcni"]), listing);
    assert!(ours.run(|| masq::cluster::ensure(owner, &nets[..1]).unwrap()));
    let v4only = ours.exec(&["nft", "list", "table", "inet", "rcni"]);
    assert!(!v4only.contains(&n.net6) && !v4only.contains("ip6 saddr"), "{v4only}");
    assert!(ours.run(|| masq::cluster::remove(owner).unwrap()));
    let empty = ours.exec(&["nft", "list", "table", "inet", "rcni"]);
    assert!(!empty.contains(&n.chain) && !empty.contains(&n.net4), "{empty}");
    assert!(!ours.run(|| masq::cluster::remove(owner).unwrap()), "nothing left to remove");
}

/// Cost of the first pod ADD of a network, which writes the network's structure (chain, rules, sets),
/// against a later pod's ADD (run with `cargo test --test masq -- --ignored --nocapture bench_nft_first`).
#[test]
#[ignore]
fn bench_nft_first_pod_add() {
    let ns = Netns::new("bench1st");
    let exempt = [net("10.244.0.0/16"), net("fd00:244::/64")];
    let n = 40;
    ns.run(|| {
        let mut first = Vec::new();
        let mut second = Vec::new();
        for i in 0..n {
            let network = format!("bench-{i}");
            let a = pod(&format!("a{i}"), "eth0", &[&format!("10.244.{i}.2/16"), &format!("fd00:244::{i}:2/64")]);
            let b = pod(&format!("b{i}"), "eth0", &[&format!("10.244.{i}.3/16"), &format!("fd00:244::{i}:3/64")]);
            let t = Instant::now();
            masq::setup(Backend::Nftables, &network, &exempt, &a).unwrap();
            first.push(t.elapsed());
            let t = Instant::now();
            masq::setup(Backend::Nftables, &network, &exempt, &b).unwrap();
            second.push(t.elapsed());
        }
        first.sort();
        second.sort();
        println!(
            "nft backend, {n} networks: first pod ADD (structure write) median {:?} (min {:?}, max {:?}); \
             second pod ADD median {:?}",
            first[n / 2],
            first[0],
            first[n - 1],
            second[n / 2]
        );
    });
}

fn h16(s: &str) -> String {
    use sha2::{Digest, Sha512};
    Sha512::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()[..16].to_string()
}

/// Rules as the reference plugins' nftables backend (v1.6+) makes them are removed by our DEL and GC.
#[test]
fn reference_nft_rules_are_cleaned() {
    let ns = Netns::new("refnft");
    let comment = |net: &str, ifname: &str, id: &str| {
        format!("{}-{}, net: {net}, if: {ifname}, id: {id}", h16(net), h16(&format!("{ifname}:{id}")))
    };
    let mut script = String::from(
        "add table inet cni_plugins_masquerade\n\
         add chain inet cni_plugins_masquerade masq_checks\n\
         add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat; }\n\
         add rule inet cni_plugins_masquerade postrouting goto masq_checks\n",
    );
    for (ip, ifname, id, netw) in [
        ("10.88.0.5", "eth0", "ctr1", "brnet"),
        ("10.88.0.6", "eth0", "ctr2", "brnet"),
        ("10.88.0.7", "eth0", "ctr3", "brnet"),
        ("10.99.0.7", "eth0", "ctr3", "othernet"),
    ] {
        script.push_str(&format!(
            "add rule inet cni_plugins_masquerade masq_checks ip saddr == {ip} ip daddr != 10.88.0.0/16 \
             masquerade comment \"{}\"\n",
            comment(netw, ifname, id)
        ));
    }
    std::fs::write(format!("/tmp/rcni-masq-refnft-{}.nft", std::process::id()), &script).unwrap();
    let path = format!("/tmp/rcni-masq-refnft-{}.nft", std::process::id());
    ns.exec(&["nft", "-f", &path]);
    std::fs::remove_file(&path).unwrap();
    let rules = || {
        ns.exec(&["nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"])
            .lines()
            .filter(|l| l.contains("masquerade comment"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(rules().len(), 4);
    ns.run(|| masq::teardown("brnet", &pod("ctr1", "eth0", &[])).unwrap());
    let left = rules();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(!left.iter().any(|l| l.contains("id: ctr1")));
    ns.run(|| {
        masq::gc("brnet", &[Owner::new("ctr2", "eth0")]).unwrap();
    });
    let left = rules();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|l| l.contains("id: ctr2")));
    assert!(left.iter().any(|l| l.contains("net: othernet")));
}

/// Concurrent ADDs/DELs of one network (each its own socket, like separate plugin processes): the
/// generation-checked read-modify-write retries, nothing is lost, the structure is written once.
#[test]
fn nft_concurrent_adds_and_dels() {
    let ns = Netns::new("conc");
    let exempt = [net("10.244.0.0/16")];
    let threads = 8;
    let per = 25;
    std::thread::scope(|s| {
        for t in 0..threads {
            let ns = &ns;
            let exempt = &exempt;
            s.spawn(move || {
                ns.run(|| {
                    for i in 0..per {
                        let p = pod(&format!("t{t}c{i}"), "eth0", &[&format!("10.244.{t}.{}/16", i + 2)]);
                        masq::setup(Backend::Nftables, "conc", exempt, &p).unwrap();
                        if i % 5 == 0 {
                            masq::teardown("conc", &p).unwrap();
                        }
                    }
                })
            });
        }
    });
    ns.run(|| assert_eq!(masq::list("conc").unwrap().len(), threads * (per - per / 5)));
    assert_eq!(ns.nft_rules("conc").len(), 1);
}

/// A directory of `iptables*-save`/`-restore` wrappers that log each run and call the legacy tools: a
/// node whose iptables is iptables-legacy, as seen by a plugin run with this directory first in PATH.
struct LegacyTools {
    dir: support::TempDir,
}

impl LegacyTools {
    fn new() -> LegacyTools {
        let dir = support::TempDir::new("masq-legacy-tools");
        let log = dir.join("runs.log");
        for fam in ["iptables", "ip6tables"] {
            for tool in ["save", "restore"] {
                let script = format!(
                    "#!/bin/sh\necho \"$0 $*\" >> {}\nexec /usr/sbin/{fam}-legacy-{tool} \"$@\"\n",
                    log.display()
                );
                let p = dir.write(format!("{fam}-{tool}"), script);
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        LegacyTools { dir }
    }

    fn runs(&self) -> String {
        std::fs::read_to_string(self.dir.join("runs.log")).unwrap_or_default()
    }

    /// A bridge DEL with ipMasq (default nftables backend) of a pod that has no netns any more.
    fn bridge_del(&self, ns: &Netns, data: &support::TempDir, container_id: &str) {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "legnet", "type": "bridge", "bridge": "brleg", "ipMasq": true,
            "ipam": {"type": "host-local", "subnet": "10.67.0.0/24", "dataDir": data.path()}
        });
        let host_local = support::rcni_bin("host-local");
        let mut env = support::cni_env("DEL", container_id, "", "eth0", &[host_local.parent().unwrap().to_path_buf()]);
        env.push(("PATH".into(), format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.dir.path().display())));
        ns.ns.run_plugin(&support::rcni_bin("bridge"), &env, &serde_json::to_vec(&conf).unwrap()).ok();
    }
}

/// Audit finding 24: with a legacy `nat` table present (kube-proxy in iptables-legacy mode), every DEL
/// ran `iptables-save` to look for a reference chain; now the legacy table is probed in-process.
#[test]
fn iptables_legacy_teardown_runs_no_tool_unless_the_chain_exists() {
    let ns = Netns::new("legacy");
    let tools = LegacyTools::new();
    let data = support::TempDir::new("masq-legacy-data");
    // Someone else's legacy nat rules, as kube-proxy would have them.
    ns.exec(&["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.2.3", "-j", "ACCEPT"]);
    ns.exec(&["ip6tables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "fd01::3", "-j", "ACCEPT"]);
    tools.bridge_del(&ns, &data, "ctr-none");
    assert_eq!(tools.runs(), "", "no iptables tool may run when the legacy table has no chain of the pod");

    // A reference chain in the legacy table (a reference ADD on a legacy node) is found and removed.
    let chain = masq::reference_chain_name("legnet", "ctr-leg");
    let comment = masq::reference_comment("legnet", "ctr-leg");
    ns.exec(&["iptables-legacy", "-t", "nat", "-N", &chain]);
    ns.exec(&[
        "iptables-legacy",
        "-t",
        "nat",
        "-A",
        &chain,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "MASQUERADE",
    ]);
    ns.exec(&[
        "iptables-legacy",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.67.0.5/32",
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        &chain,
    ]);
    tools.bridge_del(&ns, &data, "ctr-leg");
    let runs = tools.runs();
    assert!(runs.contains("iptables-save -t nat") && runs.contains("iptables-restore"), "{runs}");
    assert!(!runs.contains("ip6tables"), "the IPv6 table has no chain of the pod: {runs}");
    let saved = ns.exec(&["iptables-legacy-save", "-t", "nat"]);
    assert!(!saved.contains(&chain), "{saved}");
    assert!(saved.contains("-A POSTROUTING -s 10.1.2.3/32 -j ACCEPT"), "{saved}");
}
