//! GC after a node lost its pods without DELs, through our cnitool (its result cache plays the runtime's
//! state under `/run`, which does not survive a reboot):
//!
//! - a reboot: every pod netns gone, the runtime's state emptied, the node's kernel state reset (the node
//!   netns deleted and created anew), the dataDir kept. The runtime starts new pods, then runs GC per network
//!   with the valid list (the new pods: partial; or empty);
//! - pods lost without reboot: their netns are gone and the runtime forgot them, but the node keeps their
//!   masquerade elements and spoof-check rules; GC with the live pods as valid list.
//!
//! Two networks share the bridge and the dataDir (one IPv4, one IPv6 gateway on the bridge), both with
//! masquerade and macspoofchk. After GC: every stale reservation, nft element and spoof-check rule is gone,
//! those of valid pods are intact (CHECK passes, traffic flows), and a fresh ADD works.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Cnitool, NetConfDir, NodeNs, PluginDir, PodNs, TempDir, rcni_bin};

const BRIDGE: &str = "rbbr0";
/// (network, subnet, gateway).
const NETWORKS: [(&str, &str, &str); 2] =
    [("rb-a", "10.80.0.0/24", "10.80.0.1"), ("rb-b", "fd00:80::/120", "fd00:80::1")];

struct Node {
    node: NodeNs,
    tool: Cnitool,
    _conf: NetConfDir,
    _plugins: PluginDir,
}

/// A pod of network `net` (index into NETWORKS).
struct Pod {
    ns: PodNs,
    cid: String,
    net: usize,
    ip: String,
}

fn conflist(net: usize, data: &TempDir) -> Value {
    let (name, subnet, _) = NETWORKS[net];
    json!({"cniVersion": "1.1.0", "name": name, "plugins": [{
        "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "macspoofchk": true,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data.path().to_string_lossy()}
    }]})
}

impl Node {
    fn boot(tag: &str, data: &TempDir) -> Node {
        let node = NodeNs::new(tag);
        let conf = NetConfDir::empty();
        for (net, (name, _, _)) in NETWORKS.iter().enumerate() {
            conf.write(&format!("10-{name}.conflist"), &conflist(net, data));
        }
        let plugins = PluginDir::new(&[("bridge", rcni_bin("bridge")), ("host-local", rcni_bin("host-local"))]);
        let tool = Cnitool::new(&conf, &[plugins.path().to_path_buf()]);
        Node { node, tool, _conf: conf, _plugins: plugins }
    }

    fn cnitool(&self, cmd: &str, pod: &Pod) -> support::Output {
        self.tool.run_with(&self.node, &[cmd, NETWORKS[pod.net].0, pod.ns.path_str()], &[("CNI_CONTAINERID", &pod.cid)])
    }

    fn add(&self, tag: &str, cid: &str, net: usize) -> Pod {
        let mut pod = Pod { ns: PodNs::new(tag), cid: cid.to_string(), net, ip: String::new() };
        let r = self.cnitool("add", &pod).ok().json();
        let a = r["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {r}"));
        pod.ip = a.split('/').next().unwrap().to_string();
        pod
    }

    /// GC of network `net` with `valid` as the valid-attachments list.
    fn gc(&self, net: usize, valid: &[&Pod]) {
        let list: Vec<Value> = valid.iter().map(|p| json!({"containerID": p.cid, "ifname": "eth0"})).collect();
        let list = Value::Array(list).to_string();
        self.tool.run_with(&self.node, &["gc", NETWORKS[net].0], &[("CNI_VALID_ATTACHMENTS", &list)]).ok();
    }

    /// The runtime's state (the result cache) lost, as `/run` is on a reboot.
    fn forget_runtime_state(&self) {
        std::fs::remove_dir_all(self.tool.cache.path()).unwrap();
        std::fs::create_dir_all(self.tool.cache.path()).unwrap();
    }

    /// Exactly `pods` hold state on this node and in the dataDir: reservations, masquerade elements,
    /// spoof-check chains and jumps, host veths; each passes CHECK and reaches its gateway.
    fn assert_only(&self, data: &TempDir, pods: &[&Pod], ctx: &str) {
        let reserved: BTreeSet<(String, String, String)> = support::reservations(data.path()).into_iter().collect();
        let expected: BTreeSet<(String, String, String)> =
            pods.iter().map(|p| (NETWORKS[p.net].0.to_string(), p.ip.clone(), format!("{} eth0", p.cid))).collect();
        assert_eq!(reserved, expected, "{ctx}: reservations");
        let nft = self.node.nft_summary();
        assert_eq!(nft.elements_of_sets_containing(" pods"), pods.len(), "{ctx}: masquerade elements {nft:?}");
        let ruleset = self.node.nft_ruleset();
        for p in pods {
            assert!(ruleset.contains(&p.ip), "{ctx}: masquerade element of {} ({}) gone:\n{ruleset}", p.cid, p.ip);
        }
        let mut chains: Vec<String> = nft.chains_containing("cni-br-iface-");
        chains.sort();
        let mut want: Vec<String> = pods
            .iter()
            .flat_map(|p| {
                let base = format!("bridge nat cni-br-iface-{}-eth0", p.cid);
                [base.clone(), format!("{base}-mac")]
            })
            .collect();
        want.sort();
        assert_eq!(chains, want, "{ctx}: spoof-check chains");
        let jumps = nft.rules.get("bridge nat PREROUTING").copied().unwrap_or(0);
        assert_eq!(jumps, pods.len(), "{ctx}: spoof-check jumps in PREROUTING:\n{ruleset}");
        assert_eq!(self.node.veth_names().len(), pods.len(), "{ctx}: host veths");
        for p in pods {
            self.cnitool("check", p).ok();
            let gw = NETWORKS[p.net].2;
            assert!(p.ns.wait_ping(gw, Duration::from_secs(5)), "{ctx}: {} reaches {gw}", p.cid);
        }
    }
}

/// Only the network directories' bookkeeping is left in the dataDir (no reservation, no temporary file).
fn assert_data_dir_empty(data: &TempDir) {
    let mut allowed = Vec::new();
    for (n, _, _) in NETWORKS {
        for f in ["", "/lock", "/last_reserved_ip.0"] {
            allowed.push(format!("{n}{f}"));
        }
        allowed.push(format!(".rcni-index.{n}"));
    }
    let stray: Vec<String> = support::files_under(data.path()).into_iter().filter(|f| !allowed.contains(f)).collect();
    assert!(stray.is_empty(), "stray files in the dataDir: {stray:?}");
}

#[test]
fn reboot_then_gc_with_the_new_pods_as_valid_list_reclaims_every_stale_ip_and_rule() {
    let data = TempDir::new("rb");
    let stale_ips: Vec<(usize, String)> = {
        let before = Node::boot("rb-node1", &data);
        let pods: Vec<Pod> = (0..6).map(|i| before.add("rb-old", &format!("old-{i}"), i % 2)).collect();
        before.assert_only(&data, &pods.iter().collect::<Vec<_>>(), "before the reboot");
        pods.iter().map(|p| (p.net, p.ip.clone())).collect()
        // The reboot: pods' netns, the runtime's state and the node's kernel state all go here.
    };
    assert_eq!(support::reservations(data.path()).len(), 6, "the dataDir survives the reboot");
    let node = Node::boot("rb-node2", &data);
    node.forget_runtime_state();
    // The runtime starts new pods before it gets to GC: they must not get a stale pod's address (still reserved).
    let new: Vec<Pod> = (0..2).map(|i| node.add("rb-new", &format!("new-{i}"), i)).collect();
    for p in &new {
        assert!(!stale_ips.contains(&(p.net, p.ip.clone())), "{} got stale address {}", p.cid, p.ip);
    }
    for net in 0..NETWORKS.len() {
        let valid: Vec<&Pod> = new.iter().filter(|p| p.net == net).collect();
        node.gc(net, &valid);
    }
    node.assert_only(&data, &new.iter().collect::<Vec<_>>(), "after GC with the new pods as valid list");
    let fresh = node.add("rb-fresh", "fresh-0", 0);
    let mut all: Vec<&Pod> = new.iter().collect();
    all.push(&fresh);
    node.assert_only(&data, &all, "after a fresh ADD");
    // GC with an empty list once every pod is gone: nothing at all is left.
    drop(all);
    drop(new);
    drop(fresh);
    for net in 0..NETWORKS.len() {
        node.gc(net, &[]);
    }
    node.assert_only(&data, &[], "after GC with an empty valid list");
    assert_data_dir_empty(&data);
}

#[test]
fn pods_gone_without_del_gc_with_the_live_pods_as_valid_list() {
    let data = TempDir::new("rbk");
    let node = Node::boot("rbk-node", &data);
    let live: Vec<Pod> = (0..2).map(|i| node.add("rbk-live", &format!("live-{i}"), i)).collect();
    {
        let stale: Vec<Pod> = (0..4).map(|i| node.add("rbk-stale", &format!("stale-{i}"), i % 2)).collect();
        let mut all: Vec<&Pod> = live.iter().collect();
        all.extend(stale.iter());
        node.assert_only(&data, &all, "before");
        // The runtime lost track of them (so GC, not a cached DEL, must find them).
        for p in &stale {
            std::fs::remove_file(node.tool.cache_file(NETWORKS[p.net].0, &p.cid, "eth0")).unwrap();
        }
    } // the stale pods' netns are deleted here, without DEL; the node keeps their rules and elements
    for net in 0..NETWORKS.len() {
        let valid: Vec<&Pod> = live.iter().filter(|p| p.net == net).collect();
        node.gc(net, &valid);
    }
    node.assert_only(&data, &live.iter().collect::<Vec<_>>(), "after GC with the live pods as valid list");
    let fresh = node.add("rbk-fresh", "fresh-1", 1);
    let mut all: Vec<&Pod> = live.iter().collect();
    all.push(&fresh);
    node.assert_only(&data, &all, "after a fresh ADD");
}
