//! The vxlan plugin across three simulated nodes: node netns joined by an underlay switch (a bridge in its
//! own netns, addresses in 198.18.0.0/24), each with two pods wired by cnitool from conf/40-vxlan.conflist
//! and one shared peers file. Everything lives in the test's own namespaces.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::underlay::{Switch, tcp_exchange};
use support::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, rcni_bin};

const NET: &str = "rcni-overlay";
const DEV: &str = "rcni.1";

fn rcni_path() -> Vec<PathBuf> {
    vec![rcni_bin("vxlan").parent().unwrap().to_path_buf()]
}

fn peer(i: usize) -> Value {
    json!({"underlay": format!("198.18.0.{i}"), "subnets": [format!("10.244.{i}.0/24"), format!("fd00:244:0:{i}::/64")]})
}

struct Node {
    ns: NodeNs,
    tool: Cnitool,
    conf: NetConfDir,
    pods: Vec<PodNs>,
    _data: TempDir,
}

impl Node {
    fn run(&self, cmd: &str, pod: usize) -> support::Output {
        let cid = format!("pod{pod}");
        self.tool.run_with(&self.ns, &[cmd, NET, self.pods[pod].path_str()], &[("CNI_CONTAINERID", &cid)])
    }

    fn conflist_path(&self) -> PathBuf {
        self.conf.path().join(format!("10-{NET}.conflist"))
    }

    fn sync(&self) -> String {
        let out = self.ns.cmd(rcni_bin("vxlan")).arg("sync").arg(self.conflist_path()).run().ok();
        out.stdout.clone()
    }

    fn sync_fails(&self) -> String {
        let out = self.ns.cmd(rcni_bin("vxlan")).arg("sync").arg(self.conflist_path()).run();
        assert!(!out.success(), "sync should fail: {out:?}");
        out.stderr.clone()
    }

    fn pod_v4(&self, pod: usize) -> String {
        self.pods[pod].addrs("eth0").into_iter().find(|a| a.family == "inet").unwrap().local
    }

    fn pod_v6(&self, pod: usize) -> String {
        let a = self.pods[pod].addrs("eth0");
        a.into_iter().find(|a| a.family == "inet6" && a.scope == "global").unwrap().local
    }

    /// (tx packets, rx packets) of the VTEP.
    fn vtep_counters(&self) -> (u64, u64) {
        let v = self.ns.ip_json(&["-s", "link", "show", DEV]);
        let s = &v[0]["stats64"];
        (s["tx"]["packets"].as_u64().unwrap(), s["rx"]["packets"].as_u64().unwrap())
    }
}

struct Cluster {
    /// Removes the nodes' /run/rcni state directories (a later netns may reuse an inode).
    _state: Vec<StateDirGuard>,
    nodes: Vec<Node>,
    peers_file: PathBuf,
    _switch: Switch,
    _dir: TempDir,
}

impl Cluster {
    fn new(tag: &str, count: usize) -> Cluster {
        let dir = TempDir::new(tag);
        let peers_file = dir.join("peers.json");
        // The example peers file (three nodes) is the cluster's, cut to `count` nodes.
        let example: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/peers.example.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(example, (1..=3).map(peer).collect::<Vec<_>>(), "conf/peers.example.json describes nodes 1-3");
        let all: Vec<Value> = example.into_iter().take(count).collect();
        std::fs::write(&peers_file, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
        let switch = Switch::new(tag);
        let example =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/40-vxlan.conflist")).unwrap();
        let mut nodes = Vec::new();
        for i in 1..=count {
            let ns = NodeNs::new(&format!("{tag}-n{i}"));
            switch.plug(&ns, &format!("p{i}"), &format!("198.18.0.{i}/24"));
            let data = TempDir::new(&format!("{tag}-data{i}"));
            let text = example
                .replace("10.244.1.0/24", &format!("10.244.{i}.0/24"))
                .replace("fd00:244:0:1::/64", &format!("fd00:244:0:{i}::/64"))
                .replace("/etc/rcni/peers.json", &peers_file.to_string_lossy())
                .replace("/var/lib/cni/networks", &data.path().to_string_lossy());
            let conf = NetConfDir::new(&serde_json::from_str(&text).unwrap());
            let tool = Cnitool::new(&conf, &rcni_path());
            let pods = (0..2).map(|p| PodNs::new(&format!("{tag}-n{i}p{p}"))).collect();
            nodes.push(Node { ns, tool, conf, pods, _data: data });
        }
        let _state = nodes.iter().map(|n| StateDirGuard(state_dir(n))).collect();
        Cluster { _state, nodes, peers_file, _switch: switch, _dir: dir }
    }

    fn add_all(&self) {
        for n in &self.nodes {
            for p in 0..n.pods.len() {
                n.run("add", p).ok();
            }
        }
    }

    fn del_all(&self) {
        for n in &self.nodes {
            for p in 0..n.pods.len() {
                n.run("del", p).ok();
            }
        }
    }

    fn write_peers(&self, peers: &[Value]) {
        std::fs::write(&self.peers_file, serde_json::to_vec(peers).unwrap()).unwrap();
    }
}

#[test]
fn three_nodes_every_pod_reaches_every_pod() {
    let c = Cluster::new("vx3", 3);
    c.add_all();
    let n1 = &c.nodes[0];
    let link = n1.ns.link(DEV).expect("the VTEP exists");
    assert_eq!(link.mtu, 1450, "underlay 1500 - 50");
    let d = n1.ns.ip_json(&["-d", "link", "show", DEV]);
    let info = &d[0]["linkinfo"]["info_data"];
    assert_eq!(info["id"], 1);
    assert_eq!(info["port"], 4789);
    assert_eq!(info["local"], "198.18.0.1");
    assert_eq!(info["learning"], false);
    assert_eq!(d[0]["address"], "02:72:c6:12:00:01", "VTEP MAC derived from the underlay address");

    for (i, a) in c.nodes.iter().enumerate() {
        for pa in 0..2 {
            for (j, b) in c.nodes.iter().enumerate() {
                for pb in 0..2 {
                    if (i, pa) == (j, pb) {
                        continue;
                    }
                    let (v4, v6) = (b.pod_v4(pb), b.pod_v6(pb));
                    assert!(a.pods[pa].ping(&v4), "node{} pod{pa} -> node{} pod{pb} ({v4})", i + 1, j + 1);
                    assert!(
                        a.pods[pa].wait_ping(&v6, Duration::from_secs(5)),
                        "IPv6 node{} pod{pa} -> node{} pod{pb} ({v6})",
                        i + 1,
                        j + 1
                    );
                }
            }
        }
    }
    // A TCP exchange between every pair of pods; the cross-node path is the overlay: node 1's VTEP counters
    // move with its pods' exchanges.
    let (tx0, rx0) = n1.vtep_counters();
    for (i, a) in c.nodes.iter().enumerate() {
        for pa in 0..2 {
            for (j, b) in c.nodes.iter().enumerate() {
                for pb in 0..2 {
                    if (i, pa) != (j, pb) {
                        let ip = b.pod_v4(pb);
                        assert!(
                            tcp_exchange(&a.pods[pa], &b.pods[pb], &ip),
                            "TCP node{} pod{pa} -> node{} pod{pb}",
                            i + 1,
                            j + 1
                        );
                    }
                }
            }
        }
    }
    let (tx1, rx1) = n1.vtep_counters();
    assert!(tx1 > tx0 && rx1 > rx0, "VTEP counters moved: tx {tx0}->{tx1}, rx {rx0}->{rx1}");

    for n in &c.nodes {
        n.run("check", 0).ok();
    }
    c.del_all();
    for n in &c.nodes {
        assert!(n.ns.link(DEV).is_some(), "the VTEP stays after the pods are gone");
        assert!(n.ns.links().iter().all(|l| l.kind.as_deref() != Some("veth") || l.ifname == "eth0"));
    }
}

#[test]
fn full_mtu_crosses_and_one_byte_more_is_refused() {
    let c = Cluster::new("vxmtu", 2);
    c.add_all();
    let (a, b) = (&c.nodes[0].pods[0], c.nodes[1].pod_v4(0));
    assert_eq!(a.link("eth0").unwrap().mtu, 1450);
    let ok = a.cmd("ping").args(["-c", "1", "-W", "2", "-M", "do", "-s", "1422", &b]).run();
    assert!(ok.success(), "1450-byte packet with DF crosses: {ok:?}");
    let too_big = a.cmd("ping").args(["-c", "1", "-W", "2", "-M", "do", "-s", "1423", &b]).run();
    assert!(!too_big.success());
    let text = format!("{}{}", too_big.stdout, too_big.stderr);
    assert!(text.contains("message too long") || text.contains("mtu=1450"), "refused locally: {text}");
    c.del_all();
}

#[test]
fn sync_removes_and_restores_a_peer() {
    let c = Cluster::new("vxsync", 3);
    c.add_all();
    let (n1, n3) = (&c.nodes[0], &c.nodes[2]);
    let target = n3.pod_v4(0);
    assert!(n1.pods[0].ping(&target));

    c.write_peers(&[peer(1), peer(2)]);
    let changed = n1.sync();
    assert!(changed.contains("removed route 10.244.3.0/24"), "{changed}");
    assert!(changed.contains("removed fdb 02:72:c6:12:00:03 dst 198.18.0.3"), "{changed}");
    c.nodes[1].sync();
    let routes = n1.ns.ip(&["route", "show", "dev", DEV]).ok().stdout;
    assert!(!routes.contains("10.244.3.0"), "{routes}");
    let neigh = n1.ns.ip(&["neigh", "show", "dev", DEV]).ok().stdout;
    assert!(!neigh.contains("10.244.3.0"), "{neigh}");
    assert!(!n1.pods[0].ping(&target), "node3's pods are unreachable once it left the peer set");
    assert_eq!(n1.sync().trim(), "in sync", "a second sync changes nothing");

    c.write_peers(&[peer(1), peer(2), peer(3)]);
    assert!(n1.sync().contains("added route 10.244.3.0/24 via 10.244.3.0 onlink"));
    assert!(n1.pods[0].wait_ping(&target, Duration::from_secs(3)), "reachable again");
    c.del_all();
}

#[test]
fn vni_change_recreates_the_device_and_check_sees_missing_fdb() {
    let c = Cluster::new("vxvni", 2);
    c.add_all();
    let n1 = &c.nodes[0];
    n1.run("check", 0).ok();

    // A peer's FDB entry deleted by hand: CHECK says which one.
    n1.ns.cmd("bridge").args(["fdb", "del", "02:72:c6:12:00:02", "dev", DEV, "dst", "198.18.0.2"]).run().ok();
    let out = n1.run("check", 0).fails();
    assert!(out.stderr.contains("FDB entry 02:72:c6:12:00:02 dst 198.18.0.2 is missing on rcni.1"), "{out:?}");
    assert!(n1.sync().contains("added fdb 02:72:c6:12:00:02 dst 198.18.0.2"));
    n1.run("check", 0).ok();

    // A new VNI in the config: sync re-creates the device with it. With the default name (rcni.<vni>) that
    // is a new device, and the old one goes.
    let path = n1.conflist_path();
    let text = std::fs::read_to_string(&path).unwrap().replace("\"vni\": 1", "\"vni\": 7");
    std::fs::write(&path, text).unwrap();
    let changed = n1.sync();
    assert!(changed.contains("created rcni.7 (vni 7") && changed.contains("removed stale device rcni.1"), "{changed}");
    assert!(n1.ns.link(DEV).is_none());
    let d = n1.ns.ip_json(&["-d", "link", "show", "rcni.7"]);
    assert_eq!(d[0]["linkinfo"]["info_data"]["id"], 7);
    assert!(n1.ns.ip(&["route", "show", "dev", "rcni.7"]).ok().stdout.contains("10.244.2.0/24"), "peers restored");

    // With a fixed name, the same device is re-created in place.
    let text = std::fs::read_to_string(&path).unwrap().replace("\"vni\": 7", "\"vni\": 9, \"name\": \"vx0\"");
    std::fs::write(&path, text).unwrap();
    n1.sync();
    let text = std::fs::read_to_string(&path).unwrap().replace("\"vni\": 9", "\"vni\": 10");
    std::fs::write(&path, text).unwrap();
    let changed = n1.sync();
    assert!(changed.contains("re-created vx0: vni Some(9) (want 10)"), "{changed}");
    assert_eq!(n1.ns.ip_json(&["-d", "link", "show", "vx0"])[0]["linkinfo"]["info_data"]["id"], 10);
    c.del_all();
}

#[test]
fn status_reports_not_ready_without_underlay_or_with_a_bad_peers_file() {
    let c = Cluster::new("vxst", 1);
    let n = &c.nodes[0];
    n.tool.run(&n.ns, &["status", NET]).ok();
    std::fs::write(&c.peers_file, "not json").unwrap();
    let out = n.tool.run(&n.ns, &["status", NET]).fails();
    assert!(out.stderr.contains("peersFile"), "{out:?}");
    c.write_peers(&[peer(1)]);
    n.ns.ip(&["link", "del", "eth0"]).ok();
    let out = n.tool.run(&n.ns, &["status", NET]).fails();
    assert!(out.stderr.contains("underlay device \"eth0\""), "{out:?}");
}

/// The node's private overlay state directory: `/run/rcni/vxlan-<netns inode>`.
fn state_dir(n: &Node) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(n.ns.path()).unwrap().ino();
    PathBuf::from(format!("/run/rcni/vxlan-{ino}"))
}

/// RAII: removes a node's state directory (the netns inode may be reused by a later test).
struct StateDirGuard(PathBuf);

impl Drop for StateDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Audit 2: the state directory is 0700, records are 0600 regular files written by rename, a symlink
/// planted as a record is refused (its target untouched), and a record not owned by root is refused.
#[test]
fn node_state_is_private_and_planted_records_are_not_followed() {
    let c = Cluster::new("vxpriv", 2);
    let n1 = &c.nodes[0];
    let dir = state_dir(n1);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let victim = c._dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let record = dir.join(format!("network.{NET}.device"));
    std::os::unix::fs::symlink(&victim, &record).unwrap();

    // A record that is a symlink is refused (root never writes or reads through it), with the path named.
    let err = n1.sync_fails();
    assert!(err.contains(&format!("{} (a symlink: refused)", record.display())), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the planted link's target is untouched");
    std::fs::remove_file(&record).unwrap();
    n1.run("add", 0).ok();
    assert!(std::fs::symlink_metadata(&record).unwrap().file_type().is_file());
    assert_eq!(std::fs::read_to_string(&record).unwrap(), DEV);
    assert_eq!(mode(&dir), 0o700);
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }

    // A record someone else owns is refused, with the path in the message.
    let owner = dir.join(format!("device.{DEV}.owner"));
    std::os::unix::fs::chown(&owner, Some(65534), Some(65534)).unwrap();
    let out = n1.run("add", 1).fails();
    assert!(format!("{}{}", out.stdout, out.stderr).contains("owned by uid 65534"), "{out:?}");
    std::os::unix::fs::chown(&owner, Some(0), Some(0)).unwrap();
    n1.run("add", 1).ok();
    // A group-writable state directory is refused too.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    assert!(n1.sync_fails().contains("writable by group or others"));
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    c.del_all();
}

/// Audit 7: a second network on the node without its own VNI would share `rcni.1` and reconcile it to
/// *its* peers, removing the first network's. It is refused instead, and the first network's entries stay;
/// with its own VNI it gets its own device and both keep working.
#[test]
fn two_networks_never_share_a_vtep() {
    let c = Cluster::new("vxtwo", 2);
    c.add_all();
    let n1 = &c.nodes[0];
    let routes_before = n1.ns.ip(&["route", "show", "dev", DEV]).ok().stdout;
    assert!(routes_before.contains("10.244.2.0/24"), "{routes_before}");

    let other_peers = c._dir.write("other-peers.json", r#"[{"underlay":"198.18.0.2","subnets":"10.245.2.0/24"}]"#);
    let other = |vxlan: Value| {
        json!({"cniVersion": "1.1.0", "name": "other", "plugins": [{
            "type": "vxlan", "network": "10.245.0.0/16", "subnet": "10.245.1.0/24", "bridge": "cni1",
            "vxlan": vxlan, "peersFile": other_peers, "dataDir": n1._data.join("other")
        }]})
    };
    n1.conf.write("20-other.conflist", &other(json!({"underlay": "eth0"})));
    let pod = PodNs::new("vxtwo-o");
    let out = n1.tool.run_with(&n1.ns, &["add", "other", pod.path_str()], &[("CNI_CONTAINERID", "o1")]).fails();
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("vxlan device rcni.1 belongs to network \"rcni-overlay\""),
        "{out:?}"
    );
    assert_eq!(n1.ns.ip(&["route", "show", "dev", DEV]).ok().stdout, routes_before, "network 1's routes stay");
    assert!(n1.pods[0].ping(&c.nodes[1].pod_v4(0)));

    n1.conf.write("20-other.conflist", &other(json!({"underlay": "eth0", "vni": 2})));
    n1.tool.run_with(&n1.ns, &["add", "other", pod.path_str()], &[("CNI_CONTAINERID", "o1")]).ok();
    assert!(n1.ns.ip(&["route", "show", "dev", "rcni.2"]).ok().stdout.contains("10.245.2.0/24"));
    assert_eq!(n1.sync().trim(), "in sync", "network 1 leaves network 2's device alone");
    assert_eq!(n1.ns.ip(&["route", "show", "dev", DEV]).ok().stdout, routes_before);

    // Network 1 moves to the VNI network 2 has: refused, and network 2's device and routes stay.
    let other_routes = n1.ns.ip(&["route", "show", "dev", "rcni.2"]).ok().stdout;
    let path = n1.conflist_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("\"vni\": 1", "\"vni\": 2")).unwrap();
    let refused = n1.sync_fails();
    assert!(refused.contains("rcni.2 belongs to network \"other\""), "{refused}");
    assert_eq!(n1.ns.ip(&["route", "show", "dev", "rcni.2"]).ok().stdout, other_routes);
    // And to a free VNI: its own old device goes, network 2's does not.
    std::fs::write(&path, original.replace("\"vni\": 1", "\"vni\": 3")).unwrap();
    let changed = n1.sync();
    assert!(changed.contains("created rcni.3") && changed.contains("removed stale device rcni.1"), "{changed}");
    assert_eq!(n1.ns.ip(&["route", "show", "dev", "rcni.2"]).ok().stdout, other_routes, "network 2 untouched");
    std::fs::write(&path, original).unwrap();
    n1.sync();
    n1.tool.run_with(&n1.ns, &["del", "other", pod.path_str()], &[("CNI_CONTAINERID", "o1")]).ok();
    c.del_all();
}

/// Audit 16: `vxlan sync` checks the file's shape and the network name, and never panics.
#[test]
fn sync_refuses_malformed_files_with_a_message() {
    let c = Cluster::new("vxbad", 1);
    let n = &c.nodes[0];
    for (content, needle) in [
        ("[1, 2]", "not a JSON object"),
        ("\"text\"", "not a JSON object"),
        (r#"{"name":"x","plugins":{"type":"vxlan"}}"#, "must be a list"),
        (r#"{"name":"x","plugins":["vxlan"]}"#, "no plugin of type vxlan"),
        (r#"{"name":"../../etc","plugins":[{"type":"vxlan","network":"10.244.0.0/16"}]}"#, "invalid network name"),
        (r#"{"plugins":[{"type":"vxlan","network":"10.244.0.0/16"}]}"#, "invalid network name"),
    ] {
        let f = c._dir.write("bad.conflist", content);
        let out = n.ns.cmd(rcni_bin("vxlan")).arg("sync").arg(&f).run();
        assert_eq!(out.status, 1, "{content}: {out:?}");
        assert!(out.stderr.contains(needle), "{content}: {out:?}");
    }
}

/// Audit 20: a peers file caught empty or half-written makes ADD keep the last good peer set instead of
/// removing every overlay route of the node; `vxlan sync` applies an empty set on purpose; a FIFO as the
/// peers file is refused, not waited on.
#[test]
fn add_keeps_the_last_good_peers_when_the_file_is_empty_or_broken() {
    let c = Cluster::new("vxlast", 2);
    let n1 = &c.nodes[0];
    n1.run("add", 0).ok();
    c.nodes[1].run("add", 0).ok();
    let target = c.nodes[1].pod_v4(0);
    assert!(n1.pods[0].ping(&target));

    c.write_peers(&[]);
    n1.run("add", 1).ok();
    assert!(n1.ns.ip(&["route", "show", "dev", DEV]).ok().stdout.contains("10.244.2.0/24"), "route kept");
    std::fs::write(&c.peers_file, "[{\"underlay\":").unwrap();
    n1.run("del", 1).ok();
    n1.run("add", 1).ok();
    assert!(n1.pods[1].ping(&target), "an invalid file does not fail ADD nor cut the node off");

    c.write_peers(&[]);
    let changed = n1.sync();
    assert!(changed.contains("removed route 10.244.2.0/24"), "sync applies it: {changed}");

    std::fs::remove_file(&c.peers_file).unwrap();
    nix::unistd::mkfifo(&c.peers_file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = n1.ns.cmd(rcni_bin("vxlan")).arg("sync").arg(n1.conflist_path()).timeout(Duration::from_secs(10)).run();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("not a regular file"), "{out:?}");
    std::fs::remove_file(&c.peers_file).unwrap();
    c.write_peers(&[peer(1), peer(2)]);
    c.del_all();
}
