//! Integration tests of `rcni::net::spoofchk` in throwaway network namespaces (needs root).
//!
//! Every test creates its own "node" netns (and pod namespaces) through `tests/support`; the library
//! runs on a thread that `setns`'d into the node, shell commands run under `ip netns exec`. The host's
//! netns is never touched and the namespaces are deleted on drop (also on panic). The reference bridge
//! plugin (`/usr/lib/cni/bridge`, Debian 1.1.1) is run with `macspoofchk: true` to compare layouts and
//! to check that each implementation's DEL removes the other's rules.

mod support;

use std::time::Duration;

use rcni::net::Mac;
use rcni::net::spoofchk::{self, Names};
use serde_json::{Value, json};
use support::{NetNs, NodeNs, PodNs, TempDir, cni_env, reference_plugin};

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    ns.run_inside(f)
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

/// `nft -j list table bridge nat` without metainfo and handles (`Null` when the table does not exist).
fn table_json(node: &NetNs) -> Value {
    let out = node.cmd("nft").args(["-j", "list", "table", "bridge", "nat"]).run();
    if !out.success() {
        assert!(out.stderr.contains("No such file or directory"), "{out}");
        return Value::Null;
    }
    let mut v = out.json();
    let items = v["nftables"].as_array_mut().unwrap();
    items.retain(|i| i.get("metainfo").is_none());
    for i in items.iter_mut() {
        for kind in ["table", "chain", "rule"] {
            if let Some(o) = i.get_mut(kind).and_then(Value::as_object_mut) {
                o.remove("handle");
            }
        }
    }
    v
}

/// `nft list table bridge nat` (text), empty when the table does not exist.
fn table_text(node: &NetNs) -> String {
    let out = node.cmd("nft").args(["list", "table", "bridge", "nat"]).run();
    if out.success() { out.stdout } else { String::new() }
}

/// Names of the chains in `bridge nat`.
fn chains(node: &NetNs) -> Vec<String> {
    let v = table_json(node);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("chain"))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The rules of `PREROUTING`, as text lines.
fn prerouting(node: &NetNs) -> Vec<String> {
    let out = node.cmd("nft").args(["list", "chain", "bridge", "nat", "PREROUTING"]).run();
    if !out.success() {
        return Vec::new();
    }
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" jump ") || l.contains("drop"))
        .map(str::to_string)
        .collect()
}

/// The reference bridge with `macspoofchk: true`, run in `node` for a pod.
struct Reference {
    ipam: TempDir,
    conf: Value,
}

impl Reference {
    fn new(bridge: &str) -> Reference {
        let ipam = TempDir::new("spoof-ipam");
        let conf = json!({
            "cniVersion": "1.0.0", "name": "spnet", "type": "bridge", "bridge": bridge, "macspoofchk": true,
            "ipam": {"type": "host-local", "dataDir": ipam.path(), "ranges": [[{"subnet": "10.99.0.0/24"}]]}
        });
        Reference { ipam, conf }
    }

    fn run(&self, node: &NodeNs, cmd: &str, pod: &PodNs, cid: &str, ifname: &str) -> support::Output {
        let bin = reference_plugin("bridge");
        let env = cni_env(cmd, cid, pod.path_str(), ifname, &[bin.parent().unwrap().to_path_buf()]);
        node.run_plugin(&bin, &env, &serde_json::to_vec(&self.conf).unwrap())
    }

    /// ADD; returns (host veth, container MAC) from the result.
    fn add(&self, node: &NodeNs, pod: &PodNs, cid: &str, ifname: &str) -> (String, Mac) {
        let out = self.run(node, "ADD", pod, cid, ifname).ok();
        let r = out.json();
        let ifs = r["interfaces"].as_array().unwrap();
        let veth = ifs[1]["name"].as_str().unwrap().to_string();
        let m = ifs[2]["mac"].as_str().unwrap().parse().unwrap();
        let _ = &self.ipam;
        (veth, m)
    }
}

#[test]
fn layout_equals_reference() {
    let ref_node = NodeNs::new("spoof-lay-ref");
    let pod = PodNs::new("spoof-lay-pod");
    let reference = Reference::new("cnisp0");
    let (veth, m) = reference.add(&ref_node, &pod, "ctr-layout1", "eth0");
    let expected_json = table_json(&ref_node);
    let expected_text = table_text(&ref_node);
    assert!(expected_text.contains("macspoofchk-ctr-layout1-eth0"), "{expected_text}");

    let ours = NodeNs::new("spoof-lay-ours");
    in_ns(&ours, || spoofchk::setup("spnet", "ctr-layout1", "eth0", &veth, m).unwrap());
    assert_eq!(table_json(&ours), expected_json);
    assert_eq!(table_text(&ours), expected_text);
    eprintln!("reference layout:\n{expected_text}");

    // CHECK accepts what the reference made; our ADD over the reference's rules changes nothing.
    in_ns(&ref_node, || {
        spoofchk::check("ctr-layout1", "eth0", &veth, m).unwrap();
        spoofchk::setup("spnet", "ctr-layout1", "eth0", &veth, m).unwrap();
        let l = spoofchk::list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ref_id, "ctr-layout1-eth0");
        assert_eq!(l[0].host_veth.as_deref(), Some(veth.as_str()));
        assert_eq!(l[0].mac, Some(m));
    });
    assert_eq!(table_json(&ref_node), expected_json);
    reference.run(&ref_node, "DEL", &pod, "ctr-layout1", "eth0").ok();
}

#[test]
fn setup_is_idempotent_and_updates_in_place() {
    let node = NodeNs::new("spoof-idem");
    let (m1, m2) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"));
    in_ns(&node, || {
        spoofchk::setup("spnet", "9c0ffee", "eth0", "veth1", m1).unwrap();
        spoofchk::setup("spnet", "9c0ffee", "eth0", "veth1", m1).unwrap();
    });
    let once = table_json(&node);
    in_ns(&node, || spoofchk::setup("spnet", "9c0ffee", "eth0", "veth1", m1).unwrap());
    assert_eq!(table_json(&node), once);
    assert_eq!(prerouting(&node).len(), 1, "{:?}", prerouting(&node));

    // Another veth and MAC for the same attachment (a repeated ADD after a change): still one rule set.
    in_ns(&node, || {
        spoofchk::setup("spnet", "9c0ffee", "eth0", "veth2", m2).unwrap();
        spoofchk::check("9c0ffee", "eth0", "veth2", m2).unwrap();
        assert!(spoofchk::check("9c0ffee", "eth0", "veth1", m2).is_err());
        assert!(spoofchk::check("9c0ffee", "eth0", "veth2", m1).is_err());
    });
    let rules = prerouting(&node);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].starts_with("iifname \"veth2\" jump cni-br-iface-9c0ffee-eth0"), "{rules:?}");

    // A second attachment of the same container coexists; tearing one down leaves the other.
    in_ns(&node, || {
        spoofchk::setup("spnet", "9c0ffee", "net1", "veth3", m1).unwrap();
        spoofchk::teardown("9c0ffee", "eth0").unwrap();
        spoofchk::check("9c0ffee", "net1", "veth3", m1).unwrap();
        assert!(spoofchk::check("9c0ffee", "eth0", "veth2", m2).is_err());
    });
    assert_eq!(chains(&node), vec!["PREROUTING", "cni-br-iface-9c0ffee-net1", "cni-br-iface-9c0ffee-net1-mac"]);
    assert_eq!(prerouting(&node).len(), 1);
}

#[test]
fn names_that_nft_text_syntax_rejects() {
    // JSON input takes any name: IDs starting with a digit, dots, '@' in an interface name.
    let node = NodeNs::new("spoof-names");
    let m = mac("02:00:00:00:00:01");
    in_ns(&node, || {
        spoofchk::setup("spnet", "0123.abc_def", "eth@1", "veth1", m).unwrap();
        spoofchk::check("0123.abc_def", "eth@1", "veth1", m).unwrap();
    });
    assert!(chains(&node).contains(&"cni-br-iface-0123.abc_def-eth@1-mac".to_string()));
    in_ns(&node, || spoofchk::teardown("0123.abc_def", "eth@1").unwrap());
    assert_eq!(chains(&node), vec!["PREROUTING"]);
}

#[test]
fn teardown_removes_reference_rules_and_reference_removes_ours() {
    let node = NodeNs::new("spoof-td");
    let pod = PodNs::new("spoof-td-pod");
    let reference = Reference::new("cnisp1");
    let (veth, m) = reference.add(&node, &pod, "ctr-ref", "eth0");
    in_ns(&node, || {
        spoofchk::check("ctr-ref", "eth0", &veth, m).unwrap();
        spoofchk::teardown("ctr-ref", "eth0").unwrap();
        spoofchk::teardown("ctr-ref", "eth0").unwrap();
        assert_eq!(spoofchk::list().unwrap(), vec![]);
    });
    assert_eq!(chains(&node), vec!["PREROUTING"], "{}", table_text(&node));
    assert!(!table_text(&node).contains("macspoofchk"), "{}", table_text(&node));
    // The reference DEL still succeeds when its rules are gone.
    reference.run(&node, "DEL", &pod, "ctr-ref", "eth0").ok();

    // The other way round: our ADD, the reference's DEL.
    let pod2 = PodNs::new("spoof-td-pod2");
    in_ns(&node, || spoofchk::setup("spnet", "ctr-ours", "eth0", "vethours0", mac("02:00:00:00:00:07")).unwrap());
    assert_eq!(prerouting(&node).len(), 1);
    reference.run(&node, "DEL", &pod2, "ctr-ours", "eth0").ok();
    assert_eq!(chains(&node), vec!["PREROUTING"], "{}", table_text(&node));
    assert!(prerouting(&node).is_empty(), "{}", table_text(&node));
}

#[test]
fn teardown_absent_and_partial_states() {
    let node = NodeNs::new("spoof-partial");
    let n = Names::new("c1", "eth0");
    // no table at all
    in_ns(&node, || spoofchk::teardown("c1", "eth0").unwrap());
    assert_eq!(table_json(&node), Value::Null, "teardown must not create anything");
    // table without PREROUTING, chains without jump (a half-made setup)
    node.cmd("nft")
        .arg("-f")
        .arg("-")
        .stdin(format!(
            "add table bridge nat\nadd chain bridge nat {}\nadd chain bridge nat {}\n\
             add rule bridge nat {} drop\n",
            n.iface_chain, n.mac_chain, n.mac_chain
        ))
        .run()
        .ok();
    in_ns(&node, || spoofchk::teardown("c1", "eth0").unwrap());
    assert!(chains(&node).is_empty(), "{}", table_text(&node));
    // a PREROUTING jump without comment (made by hand) is found by its target; foreign rules stay
    node.cmd("nft")
        .arg("-f")
        .arg("-")
        .stdin(format!(
            "add chain bridge nat PREROUTING {{ type filter hook prerouting priority -300; policy accept; }}\n\
             add chain bridge nat {}\nadd chain bridge nat {}\n\
             add rule bridge nat PREROUTING iifname \"vethx\" jump {}\n\
             add rule bridge nat PREROUTING iifname \"foreign0\" drop\n",
            n.iface_chain, n.mac_chain, n.iface_chain
        ))
        .run()
        .ok();
    in_ns(&node, || spoofchk::teardown("c1", "eth0").unwrap());
    assert_eq!(chains(&node), vec!["PREROUTING"]);
    assert_eq!(prerouting(&node), vec!["iifname \"foreign0\" drop"]);
    // only one of the chains left
    node.cmd("nft").args(["add", "chain", "bridge", "nat", &n.mac_chain]).run().ok();
    in_ns(&node, || spoofchk::teardown("c1", "eth0").unwrap());
    assert_eq!(chains(&node), vec!["PREROUTING"]);
}

#[test]
fn check_reports_what_is_wrong() {
    let node = NodeNs::new("spoof-check");
    let m = mac("02:00:00:00:00:01");
    let err = |r: Result<(), spoofchk::Error>| r.unwrap_err().to_string();
    let e = in_ns(&node, || err(spoofchk::check("c1", "eth0", "veth1", m)));
    assert!(e.contains("table bridge nat does not exist"), "{e}");

    in_ns(&node, || {
        spoofchk::setup("spnet", "c1", "eth0", "veth1", m).unwrap();
        spoofchk::check("c1", "eth0", "veth1", m).unwrap();
        let e = err(spoofchk::check("c1", "eth0", "veth9", m));
        assert!(e.contains(r#"rule `iifname "veth1" jump cni-br-iface-c1-eth0"#) && e.contains("veth9"), "{e}");
        let e = err(spoofchk::check("c1", "eth0", "veth1", mac("02:00:00:00:00:09")));
        assert!(
            e.contains("chain bridge nat cni-br-iface-c1-eth0-mac allows source MAC 02:00:00:00:00:01")
                && e.contains("02:00:00:00:00:09"),
            "{e}"
        );
        let e = err(spoofchk::check("c2", "eth0", "veth1", m));
        assert!(e.contains("chain bridge nat PREROUTING has no rule commented \"macspoofchk-c2-eth0\""), "{e}");
    });

    // the drop rule deleted by hand
    let listing = node.cmd("nft").args(["-a", "list", "chain", "bridge", "nat", "cni-br-iface-c1-eth0-mac"]).run().ok();
    let handle =
        listing.stdout.lines().find(|l| l.trim().starts_with("drop")).unwrap().rsplit("# handle ").next().unwrap();
    node.cmd("nft")
        .args(["delete", "rule", "bridge", "nat", "cni-br-iface-c1-eth0-mac", "handle", handle.trim()])
        .run()
        .ok();
    let e = in_ns(&node, || err(spoofchk::check("c1", "eth0", "veth1", m)));
    assert!(
        e.contains("cni-br-iface-c1-eth0-mac holds `ether saddr 02:00:00:00:00:01 return comment")
            && e.contains("then `drop`"),
        "{e}"
    );
    // counters added by an operator are fine; setup repairs
    in_ns(&node, || spoofchk::setup("spnet", "c1", "eth0", "veth1", m).unwrap());
    node.cmd("nft").args(["insert", "rule", "bridge", "nat", "cni-br-iface-c1-eth0", "counter"]).run().ok();
    let e = in_ns(&node, || err(spoofchk::check("c1", "eth0", "veth1", m)));
    assert!(e.contains("holds `counter`, `jump cni-br-iface-c1-eth0-mac"), "{e}");
    in_ns(&node, || spoofchk::setup("spnet", "c1", "eth0", "veth1", m).unwrap());
    // a missing chain (everything of the attachment deleted by hand, but the jump)
    in_ns(&node, || spoofchk::check("c1", "eth0", "veth1", m).unwrap());
    node.cmd("nft").args(["flush", "chain", "bridge", "nat", "PREROUTING"]).run().ok();
    node.cmd("nft").args(["flush", "chain", "bridge", "nat", "cni-br-iface-c1-eth0"]).run().ok();
    node.cmd("nft").args(["delete", "chain", "bridge", "nat", "cni-br-iface-c1-eth0-mac"]).run().ok();
    let e = in_ns(&node, || err(spoofchk::check("c1", "eth0", "veth1", m)));
    assert!(e.contains("has no rule commented"), "{e}");
    in_ns(&node, || {
        spoofchk::setup("spnet", "c1", "eth0", "veth1", m).unwrap();
        spoofchk::check("c1", "eth0", "veth1", m).unwrap();
    });
    // invalid input
    let e = in_ns(&node, || err(spoofchk::setup("spnet", "", "eth0", "veth1", m)));
    assert!(e.contains("container ID is empty"), "{e}");
}

#[test]
fn gc_removes_only_stale_attachments_with_our_names() {
    let node = NodeNs::new("spoof-gc");
    let pod = PodNs::new("spoof-gc-pod");
    let reference = Reference::new("cnisp2");
    let (ref_veth, ref_mac) = reference.add(&node, &pod, "ctr-refgc", "eth0");
    let m = mac("02:00:00:00:00:01");
    in_ns(&node, || {
        spoofchk::setup("spnet", "a", "eth0", "veth-a", m).unwrap();
        spoofchk::setup("spnet", "b", "eth0", "veth-b", m).unwrap();
        spoofchk::setup("spnet", "c", "eth0", "veth-c", m).unwrap();
        spoofchk::setup("spnet", "c", "net1", "veth-c1", m).unwrap();
    });
    // foreign objects in the shared table (e.g. ebtables -t nat) must survive
    node.cmd("nft")
        .arg("-f")
        .arg("-")
        .stdin(
            "add chain bridge nat mychain\nadd rule bridge nat mychain counter\n\
             add rule bridge nat PREROUTING iifname \"foreign0\" jump mychain\n",
        )
        .run()
        .ok();
    in_ns(&node, || {
        assert_eq!(spoofchk::list().unwrap().len(), 5);
        // nothing stale: nothing removed
        let all = [("a", "eth0"), ("b", "eth0"), ("c", "eth0"), ("c", "net1"), ("ctr-refgc", "eth0")];
        assert_eq!(spoofchk::gc("spnet", &keys(&all), |_| true).unwrap(), vec![]);
        // out of scope: only attachments tagged with the network (b) go, the reference's stays
        let valid = [("a", "eth0"), ("c", "eth0"), ("c", "net1"), ("ctr-refgc", "eth0")];
        let removed = spoofchk::gc("spnet", &keys(&valid), |_| false).unwrap();
        assert_eq!(removed.iter().map(|a| a.ref_id.as_str()).collect::<Vec<_>>(), vec!["b-eth0"]);
        let removed = spoofchk::gc("spnet", &keys(&[("a", "eth0"), ("c", "net1")]), |_| true).unwrap();
        assert_eq!(removed.iter().map(|a| a.ref_id.as_str()).collect::<Vec<_>>(), vec!["c-eth0", "ctr-refgc-eth0"]);
        spoofchk::check("a", "eth0", "veth-a", m).unwrap();
        spoofchk::check("c", "net1", "veth-c1", m).unwrap();
        assert!(spoofchk::check("ctr-refgc", "eth0", &ref_veth, ref_mac).is_err());
        assert_eq!(spoofchk::gc("spnet", &[], |_| true).unwrap().len(), 2);
        assert_eq!(spoofchk::list().unwrap(), vec![]);
    });
    assert_eq!(chains(&node), vec!["PREROUTING", "mychain"]);
    assert_eq!(prerouting(&node), vec!["iifname \"foreign0\" jump mychain"]);
    reference.run(&node, "DEL", &pod, "ctr-refgc", "eth0").ok();
}

/// Audit finding 3: two networks on one bridge, both with macspoofchk. GC of network A with A's valid
/// list used to remove every attachment of B on the bridge (the names carry no network). Now rcni's
/// rules carry their network as an owner tag: A's GC removes only A's stale ones, and of the untagged
/// (reference or older rcni) ones only those the caller's scope allows (here: host veth gone).
#[test]
fn gc_of_one_network_never_removes_another_networks_checks() {
    let node = NodeNs::new("spoof-owner");
    let m = mac("02:00:00:00:00:01");
    in_ns(&node, || {
        spoofchk::setup("neta", "a1", "eth0", "vetha1", m).unwrap();
        spoofchk::setup("netb", "b1", "eth0", "vethb1", m).unwrap();
        spoofchk::setup("netb", "b2", "eth0", "vethb2", m).unwrap();
    });
    // Untagged rules, as the reference (or rcni before owner tags) wrote them: one on a live port, one
    // whose veth is gone.
    for (id, veth) in [("o1", "vetho1"), ("o2", "vetho2")] {
        let n = Names::new(id, "eth0");
        node.cmd("nft")
            .arg("-f")
            .arg("-")
            .stdin(format!(
                "add chain bridge nat {ic}\nadd chain bridge nat {mc}\n\
                 add rule bridge nat PREROUTING iifname \"{veth}\" jump {ic} comment \"{c}\"\n\
                 add rule bridge nat {ic} jump {mc} comment \"{c}\"\n\
                 add rule bridge nat {mc} ether saddr {m} return comment \"{c}\"\n\
                 add rule bridge nat {mc} drop comment \"{c}\"\n",
                ic = n.iface_chain,
                mc = n.mac_chain,
                c = n.comment
            ))
            .run()
            .ok();
    }
    let live = ["vetha1", "vethb1", "vethb2", "vetho1"];
    let veth_gone = |a: &spoofchk::Attachment| a.host_veth.as_deref().is_none_or(|v| !live.contains(&v));
    in_ns(&node, || {
        let tags: Vec<(String, Option<String>)> =
            spoofchk::list().unwrap().into_iter().map(|a| (a.ref_id, a.network)).collect();
        assert_eq!(
            tags,
            vec![
                ("a1-eth0".to_string(), Some("neta".to_string())),
                ("b1-eth0".to_string(), Some("netb".to_string())),
                ("b2-eth0".to_string(), Some("netb".to_string())),
                ("o1-eth0".to_string(), None),
                ("o2-eth0".to_string(), None),
            ]
        );
        // A's runtime knows none of A's pods any more (e.g. after a state wipe).
        let removed = spoofchk::gc("neta", &[], veth_gone).unwrap();
        assert_eq!(removed.iter().map(|a| a.ref_id.as_str()).collect::<Vec<_>>(), vec!["a1-eth0", "o2-eth0"]);
        spoofchk::check("b1", "eth0", "vethb1", m).unwrap();
        spoofchk::check("b2", "eth0", "vethb2", m).unwrap();
        spoofchk::check("o1", "eth0", "vetho1", m).unwrap();
        // B's GC with b1 valid removes b2 only; even a scope that takes everything cannot reach A's.
        spoofchk::setup("neta", "a1", "eth0", "vetha1", m).unwrap();
        let removed = spoofchk::gc("netb", &keys(&[("b1", "eth0"), ("o1", "eth0")]), |_| true).unwrap();
        assert_eq!(removed.iter().map(|a| a.ref_id.as_str()).collect::<Vec<_>>(), vec!["b2-eth0"]);
        spoofchk::check("a1", "eth0", "vetha1", m).unwrap();
        // An ADD over an untagged rule tags it, and still leaves one rule.
        spoofchk::setup("netb", "o1", "eth0", "vetho1", m).unwrap();
        let o1 = spoofchk::list().unwrap().into_iter().find(|a| a.ref_id == "o1-eth0").unwrap();
        assert_eq!(o1.network.as_deref(), Some("netb"));
    });
    assert_eq!(prerouting(&node).len(), 3, "{:?}", prerouting(&node));
    assert!(!table_text(&node).contains("netb"), "the owner tag is not shown by nft: {}", table_text(&node));
}

/// A pod on the node's bridge: a netns with `eth0` (veth, peer `host` on `br0`) and `10.77.0.<n>/24`.
struct Pod {
    ns: PodNs,
    host: String,
    ip: String,
}

impl Pod {
    fn new(node: &NodeNs, n: u8) -> Pod {
        let ns = PodNs::new("spoof-traffic-pod");
        let host = format!("vsp{n}");
        node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns.path_str()]).ok();
        node.ip(&["link", "set", &host, "master", "br0", "up"]).ok();
        let ip = format!("10.77.0.{n}");
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]).ok();
        ns.ip(&["link", "set", "eth0", "up"]).ok();
        ns.ip(&["link", "set", "lo", "up"]).ok();
        Pod { ns, host, ip }
    }

    fn mac(&self) -> Mac {
        self.ns.link("eth0").unwrap().address.parse().unwrap()
    }

    fn set_mac(&self, m: Mac) {
        self.ns.ip(&["link", "set", "eth0", "address", &m.to_string()]).ok();
    }

    fn forget_neighbours(&self) {
        self.ns.ip(&["neigh", "flush", "all"]).ok();
    }

    /// Two pings, each waiting one second.
    fn reaches(&self, other: &Pod) -> bool {
        self.ns.cmd("ping").args(["-c2", "-W1", &other.ip]).run().success()
    }
}

#[test]
fn traffic_with_a_spoofed_mac_is_dropped() {
    let node = NodeNs::new("spoof-traffic");
    node.ip(&["link", "add", "br0", "type", "bridge"]).ok();
    node.ip(&["link", "set", "br0", "up"]).ok();
    let a = Pod::new(&node, 2); // protected; its MAC will change
    let b = Pod::new(&node, 3); // protected; the peer everyone pings
    let c = Pod::new(&node, 4); // no rule; its MAC will change too
    let (mac_a, mac_b) = (a.mac(), b.mac());
    in_ns(&node, || {
        spoofchk::setup("spnet", "pod-a", "eth0", &a.host, mac_a).unwrap();
        spoofchk::setup("spnet", "pod-b", "eth0", &b.host, mac_b).unwrap();
    });
    let wait = Duration::from_secs(5);
    assert!(a.ns.wait_ping(&b.ip, wait), "a -> b with the right MAC");
    assert!(c.ns.wait_ping(&b.ip, wait), "c -> b");

    let forget_all = || [&a, &b, &c].iter().for_each(|p| p.forget_neighbours());
    a.set_mac(mac("02:00:00:00:aa:01"));
    c.set_mac(mac("02:00:00:00:cc:01"));
    forget_all();
    assert!(!a.reaches(&b), "a's frames with a foreign source MAC must be dropped");
    assert!(c.ns.wait_ping(&b.ip, wait), "c has no rule: its new MAC still works");
    // the bridge never learned the spoofed MAC (frames are dropped before learning)
    let fdb = node.cmd("bridge").args(["fdb", "show", "br", "br0"]).run().ok().stdout;
    assert!(!fdb.contains("02:00:00:00:aa:01"), "{fdb}");
    assert!(fdb.contains("02:00:00:00:cc:01"), "{fdb}");

    a.set_mac(mac_a);
    forget_all();
    assert!(a.ns.wait_ping(&b.ip, wait), "a's own MAC restored: traffic flows again");

    // without the rule the changed MAC passes: it was the rule that dropped the frames
    in_ns(&node, || spoofchk::teardown("pod-a", "eth0").unwrap());
    a.set_mac(mac("02:00:00:00:aa:02"));
    forget_all();
    assert!(a.ns.wait_ping(&b.ip, wait), "no rule, no drop");
}

/// `cargo test --release --test spoofchk -- --ignored --nocapture bench`: cost per attachment.
#[test]
#[ignore]
fn bench_setup_teardown() {
    let node = NodeNs::new("spoof-bench");
    let m = mac("02:00:00:00:00:01");
    let ids: Vec<String> = (0..200).map(|i| format!("{i:064x}")).collect();
    let t = std::time::Instant::now();
    in_ns(&node, || ids.iter().for_each(|id| spoofchk::setup("spnet", id, "eth0", "veth1", m).unwrap()));
    let setup = t.elapsed() / ids.len() as u32;
    let t = std::time::Instant::now();
    in_ns(&node, || ids.iter().for_each(|id| spoofchk::check(id, "eth0", "veth1", m).unwrap()));
    let check = t.elapsed() / ids.len() as u32;
    let t = std::time::Instant::now();
    in_ns(&node, || ids.iter().for_each(|id| spoofchk::teardown(id, "eth0").unwrap()));
    let teardown = t.elapsed() / ids.len() as u32;
    let t = std::time::Instant::now();
    in_ns(&node, || spoofchk::teardown("absent", "eth0").unwrap());
    let absent = t.elapsed();
    eprintln!(
        "per attachment (0..200 present): setup {setup:?}, check {check:?}, teardown {teardown:?}; teardown of an absent one {absent:?}"
    );
}

/// GC's valid list from (containerID, ifname) pairs.
fn keys(pairs: &[(&str, &str)]) -> Vec<rcni::attachment::Attachment> {
    pairs.iter().map(|(c, i)| rcni::attachment::Attachment::new(c, i)).collect()
}
