//! The firewall plugin in throwaway namespaces. Differential against the reference firewall
//! (/usr/lib/cni, 1.1.1) on the same input: the same iptables rules after ADD, and each implementation's
//! DEL removes the other's ADD. DEL without prevResult, a late DEL of an old owner, CHECK reading the
//! rules, GC. Real traffic: an external client netns reaching a pod through a host port on a node whose
//! FORWARD policy is DROP, and podman's list (conf/90-podman.conflist).

mod support;

use serde_json::{Value, json};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Cnitool, NetConfDir, NodeNs, PluginDir, PodNs, TempDir, cni_env, rcni_bin, reference_plugin};

/// A node whose firewall ledger (/run/rcni/firewall-<netns inode>) goes with it, and a pod netns for
/// CNI_NETNS (the plugins open it before anything else, though firewall itself works in the node).
struct Node(NodeNs, PodNs);

impl Node {
    fn new(tag: &str) -> Node {
        Node(NodeNs::new(tag), PodNs::new(tag))
    }

    fn ledger_dir(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(self.path()).unwrap().ino();
        Path::new("/run/rcni").join(format!("firewall-{ino}"))
    }

    /// iptables-save and ip6tables-save of table filter, without the timestamp comments.
    fn filter(&self) -> String {
        let mut out = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let o = self.cmd(tool).args(["-t", "filter"]).run().ok();
            for l in o.stdout.lines().filter(|l| !l.starts_with('#')) {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The rules (`-A ...`) of table filter that mention `what`.
    fn rules_with(&self, what: &str) -> Vec<String> {
        self.filter().lines().filter(|l| l.starts_with("-A") && l.contains(what)).map(str::to_string).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.ledger_dir());
    }
}

impl Deref for Node {
    type Target = NodeNs;
    fn deref(&self) -> &NodeNs {
        &self.0
    }
}

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firewall"))
}

fn reference() -> PathBuf {
    reference_plugin("firewall")
}

/// A firewall config with a bridge-style prevResult for `ips` (v4 and/or v6), in cniVersion 1.0.0.
fn conf(extra: Value, ips: &[&str]) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "fwnet",
        "type": "firewall",
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni-podman0", "mac": "02:00:00:00:00:01"},
                {"name": "veth1234", "mac": "02:00:00:00:00:02"},
                {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": ips.iter().map(|a| json!({"address": a, "interface": 2})).collect::<Vec<_>>(),
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn without_prev(mut c: Value) -> Value {
    c.as_object_mut().unwrap().remove("prevResult");
    c
}

fn run(node: &Node, bin: &Path, cmd: &str, cid: &str, c: &Value) -> support::Output {
    node.run_plugin(
        bin,
        &cni_env(cmd, cid, node.1.path_str(), "eth0", &[PathBuf::from("/usr/lib/cni")]),
        c.to_string().as_bytes(),
    )
}

const V4: &str = "10.88.0.2/16";
const V6: &str = "fd00:88::2/64";

#[test]
fn rules_equal_the_references_and_each_del_removes_the_others_add() {
    for extra in [json!({}), json!({"ingressPolicy": "same-bridge", "iptablesAdminChainName": "MY-ADMIN"})] {
        let c = conf(extra.clone(), &[V4, V6]);
        let theirs = Node::new("fw-diff-ref");
        let mine = Node::new("fw-diff-ours");
        let before = mine.filter();
        let out_ref = run(&theirs, &reference(), "ADD", "ctrA", &c).ok().json();
        let out_ours = run(&mine, &ours(), "ADD", "ctrA", &c).ok().json();
        assert_eq!(out_ours["ips"], out_ref["ips"], "prevResult passes through");
        assert_eq!(out_ours["interfaces"], out_ref["interfaces"]);
        let (r, o) = (theirs.filter(), mine.filter());
        assert_eq!(o, r, "{extra}: ip(6)tables-save after ADD is the reference's, line for line");
        assert!(o.contains("-A CNI-FORWARD -s 10.88.0.2/32 -j ACCEPT"), "{o}");
        assert!(o.contains("-A CNI-FORWARD -s fd00:88::2/128 -j ACCEPT"), "{o}");
        assert_ne!(o, before);

        // Each CHECKs the other's ADD, then each DEL removes the other's ADD.
        run(&theirs, &ours(), "CHECK", "ctrA", &c).ok();
        run(&mine, &reference(), "CHECK", "ctrA", &c).ok();
        run(&theirs, &ours(), "DEL", "ctrA", &c).ok();
        run(&mine, &reference(), "DEL", "ctrA", &c).ok();
        for n in [&theirs, &mine] {
            assert!(n.rules_with("10.88.0.2").is_empty() && n.rules_with("fd00:88::2").is_empty(), "{}", n.filter());
        }
        assert_eq!(theirs.filter(), mine.filter(), "both leave the same shared structure");
        // DEL again (the runtime may repeat it): nothing to do, success.
        run(&mine, &ours(), "DEL", "ctrA", &c).ok();
    }
}

#[test]
fn del_without_prev_result_removes_exactly_this_attachment() {
    let node = Node::new("fw-noprev");
    let a = conf(json!({}), &["10.88.0.2/16", V6]);
    let b = conf(json!({}), &["10.88.0.3/16"]);
    run(&node, &ours(), "ADD", "ctrA", &a).ok();
    run(&node, &ours(), "ADD", "ctrB", &b).ok();
    let b_rules = node.rules_with("10.88.0.3");
    assert_eq!(b_rules.len(), 2);

    run(&node, &ours(), "DEL", "ctrA", &without_prev(a.clone())).ok();
    assert!(node.rules_with("10.88.0.2").is_empty(), "A's v4 rules gone: {}", node.filter());
    assert!(node.rules_with("fd00:88::2").is_empty(), "A's v6 rules gone: {}", node.filter());
    assert_eq!(node.rules_with("10.88.0.3"), b_rules, "B untouched");
    run(&node, &ours(), "CHECK", "ctrB", &b).ok();
    // Nothing but the container ID and ifname: no prevResult and no CNI_NETNS (the pod is gone).
    let bare: Vec<(String, String)> = cni_env("DEL", "ctrB", "", "eth0", &[PathBuf::from("/usr/lib/cni")])
        .into_iter()
        .filter(|(k, _)| k != "CNI_NETNS")
        .collect();
    node.run_plugin(&ours(), &bare, without_prev(b.clone()).to_string().as_bytes()).ok();
    assert!(node.rules_with("10.88.0.3").is_empty(), "B's rules gone: {}", node.filter());

    // The reference's DEL without prevResult succeeds and leaves the rules (reference behaviour [V]).
    run(&node, &reference(), "ADD", "ctrC", &conf(json!({}), &["10.88.0.4/16"])).ok();
    run(&node, &reference(), "DEL", "ctrC", &without_prev(conf(json!({}), &["10.88.0.4/16"]))).ok();
    assert_eq!(node.rules_with("10.88.0.4").len(), 2, "the reference left its rules");
}

#[test]
fn a_late_del_of_an_old_owner_keeps_the_new_owners_rules() {
    let node = Node::new("fw-late");
    let c = conf(json!({}), &["10.88.0.9/16"]);
    run(&node, &ours(), "ADD", "old", &c).ok();
    // The address was freed and given to a new pod before the old pod's DEL arrived.
    run(&node, &ours(), "ADD", "new", &c).ok();
    run(&node, &ours(), "DEL", "old", &c).ok();
    assert_eq!(node.rules_with("10.88.0.9").len(), 2, "the new pod keeps its rules: {}", node.filter());
    run(&node, &ours(), "CHECK", "new", &c).ok();
    let out = run(&node, &ours(), "CHECK", "old", &c).fails();
    assert!(out.stdout.contains("belong to attachment new/eth0"), "{out}");
    run(&node, &ours(), "DEL", "new", &without_prev(c)).ok();
    assert!(node.rules_with("10.88.0.9").is_empty());
}

#[test]
fn check_reads_the_rules_back() {
    let node = Node::new("fw-check");
    let c = conf(json!({"ingressPolicy": "same-bridge"}), &[V4]);
    run(&node, &ours(), "ADD", "ctrA", &c).ok();
    run(&node, &ours(), "CHECK", "ctrA", &c).ok();
    node.cmd("iptables").args(["-D", "CNI-FORWARD", "-s", "10.88.0.2/32", "-j", "ACCEPT"]).run().ok();
    let out = run(&node, &ours(), "CHECK", "ctrA", &c).fails();
    assert!(out.stdout.contains("-A CNI-FORWARD -s 10.88.0.2/32 -j ACCEPT"), "CHECK names the missing rule: {out}");
    // The reference's CHECK sees the same.
    run(&node, &reference(), "CHECK", "ctrA", &c).fails();
    run(&node, &ours(), "ADD", "ctrA", &c).ok();
    run(&node, &ours(), "CHECK", "ctrA", &c).ok();
    node.cmd("iptables").args(["-F", "CNI-ISOLATION-STAGE-2"]).run().ok();
    let out = run(&node, &ours(), "CHECK", "ctrA", &c).fails();
    assert!(out.stdout.contains("CNI-ISOLATION-STAGE-2"), "{out}");
    run(&node, &ours(), "DEL", "ctrA", &c).ok();
}

#[test]
fn gc_removes_the_attachments_the_runtime_no_longer_lists() {
    let node = Node::new("fw-gc");
    let a = conf(json!({}), &["10.88.0.2/16"]);
    let b = conf(json!({}), &["10.88.0.3/16"]);
    run(&node, &ours(), "ADD", "ctrA", &a).ok();
    run(&node, &ours(), "ADD", "ctrB", &b).ok();
    let mut gc = without_prev(a.clone());
    gc["cniVersion"] = json!("1.1.0");
    // Without a list GC removes nothing.
    run(&node, &ours(), "GC", "", &gc).ok();
    assert_eq!(node.rules_with("10.88.0.2").len(), 2);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctrB", "ifname": "eth0"}]);
    run(&node, &ours(), "GC", "", &gc).ok();
    assert!(node.rules_with("10.88.0.2").is_empty(), "{}", node.filter());
    assert_eq!(node.rules_with("10.88.0.3").len(), 2);
    run(&node, &ours(), "CHECK", "ctrB", &b).ok();
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    let node = Node::new("fw-bad");
    let before = node.filter();
    let cases = [
        (without_prev(conf(json!({}), &[V4])), 7, "prevResult"),
        (conf(json!({"backend": "firewalld"}), &[V4]), 2, "firewalld"),
        (conf(json!({"backend": "nft"}), &[V4]), 7, "backend"),
        (conf(json!({"ingressPolicy": "isolate"}), &[V4]), 7, "ingressPolicy"),
        (conf(json!({"iptablesAdminChainName": "bad name"}), &[V4]), 7, "iptablesAdminChainName"),
        (conf(json!({"iptablesAdminChainName": "X".repeat(29)}), &[V4]), 7, "iptablesAdminChainName"),
        (conf(json!({"acceptDnat": 1}), &[V4]), 7, "acceptDnat"),
    ];
    for (c, code, field) in cases {
        let out = run(&node, &ours(), "ADD", "ctrA", &c).fails();
        let v = out.json();
        assert_eq!(v["code"], code, "{c}: {out}");
        let text = format!("{} {}", v["msg"].as_str().unwrap(), v["details"].as_str().unwrap_or(""));
        assert!(text.contains(field), "the message names {field}: {text}");
        assert_eq!(node.filter(), before, "nothing changed for {c}");
    }
    let mut same_bridge = conf(json!({"ingressPolicy": "same-bridge"}), &[V4]);
    same_bridge["prevResult"]["interfaces"] = json!([]);
    same_bridge["prevResult"]["ips"] = json!([{"address": V4}]);
    let out = run(&node, &ours(), "ADD", "ctrA", &same_bridge).fails();
    assert!(out.json()["msg"].as_str().unwrap().contains("same-bridge"), "{out}");
    assert_eq!(node.filter(), before);
}

// ------------------------------------------------------------------------------------------------
// Real traffic

/// An external client netns on a veth to the node: node 198.18.0.1/24, client 198.18.0.2/24.
fn client_of(node: &Node, tag: &str) -> PodNs {
    let client = PodNs::new(tag);
    client.ip(&["link", "set", "lo", "up"]).ok();
    node.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", client.name()]).ok();
    node.ip(&["addr", "add", "198.18.0.1/24", "dev", "ext0"]).ok();
    node.ip(&["link", "set", "ext0", "up"]).ok();
    client.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"]).ok();
    client.ip(&["link", "set", "eth0", "up"]).ok();
    client.ip(&["route", "add", "default", "via", "198.18.0.1"]).ok();
    client
}

/// A TCP server on port 80 in the pod answering "pong" to every connection (killed with the netns).
fn serve(pod: &PodNs) {
    pod.ip(&["link", "set", "lo", "up"]).ok();
    pod.sh("setsid sh -c 'while :; do echo pong | nc -l -p 80 -N; done' </dev/null >/dev/null 2>&1 &").ok();
    for _ in 0..50 {
        if pod.sh("ss -ltn | grep -q ':80 '").success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the pod's server does not listen");
}

/// Whether the client gets "pong" from 198.18.0.1:8080 within 2 s.
fn reaches(client: &PodNs) -> bool {
    client.sh("echo ping | nc -N -w 2 198.18.0.1 8080").stdout.contains("pong")
}

/// Our bridge, host-local and tuning, with `firewall` and `portmap` as given.
fn plugin_dir(firewall: PathBuf, portmap: PathBuf) -> PluginDir {
    PluginDir::new(&[
        ("bridge", rcni_bin("bridge")),
        ("host-local", rcni_bin("host-local")),
        ("tuning", rcni_bin("tuning")),
        ("firewall", firewall),
        ("portmap", portmap),
    ])
}

/// conf/90-podman.conflist with host-local's dataDir in `data` and `firewall` fields added.
fn podman_list(data: &Path, firewall: Value) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/90-podman.conflist")).unwrap();
    let mut v: Value = serde_json::from_str(&text.replace("/var/lib/cni/networks", &data.to_string_lossy())).unwrap();
    for p in v["plugins"].as_array_mut().unwrap() {
        if p["type"] == "firewall" {
            for (k, val) in firewall.as_object().unwrap() {
                p[k] = val.clone();
            }
        }
    }
    v
}

fn our_portmap() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portmap"))
}

/// Adds a pod through podman's list with a host port 8080 → 80, on a node whose FORWARD policy is DROP;
/// returns whether the client reached it, and the filter table before ADD and after DEL. (No CHECK over
/// the list: the reference portmap's fails on an IPv4-only pod, see [`podman_list_case`].)
fn host_port_behind_drop(
    tag: &str,
    firewall_bin: PathBuf,
    portmap: PathBuf,
    firewall: Value,
) -> (bool, String, String) {
    let node = Node::new(tag);
    let client = client_of(&node, &format!("{tag}-c"));
    let pod = PodNs::new(tag);
    node.set_sysctl("net.ipv4.ip_forward", "1");
    node.cmd("iptables").args(["-P", "FORWARD", "DROP"]).run().ok();
    let data = TempDir::new(&format!("{tag}-ipam"));
    let list = podman_list(data.path(), firewall);
    let conf = NetConfDir::new(&list);
    let dir = plugin_dir(firewall_bin, portmap);
    let mut tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
    tool.set(
        "CAP_ARGS",
        &json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}).to_string(),
    );
    let before = node.filter();
    tool.run(&node, &["add", "podman", pod.path_str()]).ok();
    serve(&pod);
    let reached = reaches(&client);
    tool.run(&node, &["del", "podman", pod.path_str()]).ok();
    let after = node.filter();
    // A second pod's life leaves the table exactly as the first one's did: nothing accumulates.
    tool.run(&node, &["add", "podman", pod.path_str()]).ok();
    tool.run(&node, &["del", "podman", pod.path_str()]).ok();
    assert_eq!(node.filter(), after, "ADD + DEL again restores the same table");
    assert!(!before.contains("10.88."));
    (reached, before, after)
}

#[test]
fn a_host_port_behind_a_forward_drop_policy_needs_accept_dnat() {
    let (reached, _, after) = host_port_behind_drop("fw-dnat-off", ours(), our_portmap(), json!({}));
    assert!(!reached, "reference-identical rules: the new connection falls to the DROP policy");
    assert!(!after.contains("10.88."), "DEL removed every pod rule: {after}");

    let (reached, _, _) = host_port_behind_drop("fw-dnat-ref", reference(), reference_plugin("portmap"), json!({}));
    assert!(!reached, "the reference firewall (with the reference portmap) has the same limitation");

    let on = json!({"backend": "iptables", "acceptDnat": true});
    let (reached, _, after) = host_port_behind_drop("fw-dnat-on", ours(), our_portmap(), on.clone());
    assert!(reached, "acceptDnat lets the host port's connection through");
    assert!(!after.contains("10.88.") && !after.contains("DNAT"), "DEL removed the pod's rules: {after}");
    // The DNAT rule matches the conntrack state, whoever rewrote the destination: the reference portmap too.
    let (reached, _, _) = host_port_behind_drop("fw-dnat-onref", ours(), reference_plugin("portmap"), on);
    assert!(reached, "acceptDnat with the reference portmap");
}

/// podman's list, every plugin rcni's: a pod reached through its host port from an external client,
/// CHECK passes, DEL leaves no rule of the pod.
/// `check`: run CHECK over the list (the reference portmap 1.1.1 fails CHECK on an IPv4-only pod: it
/// looks for ip6tables chains, reference issue #819).
fn podman_list_case(portmap: PathBuf, check: bool) {
    let node = Node::new("fw-podman");
    let client = client_of(&node, "fw-podman-c");
    let pod = PodNs::new("fw-podman");
    node.set_sysctl("net.ipv4.ip_forward", "1");
    let data = TempDir::new("fw-podman-ipam");
    let conf = NetConfDir::new(&podman_list(data.path(), json!({})));
    let dir = plugin_dir(ours(), portmap);
    let mut tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
    tool.set(
        "CAP_ARGS",
        &json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}).to_string(),
    );
    tool.set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:02");
    let result = tool.run(&node, &["add", "podman", pod.path_str()]).ok().json();
    let ip = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(ip.starts_with("10.88."), "{result}");
    assert_eq!(pod.link("eth0").unwrap().address, "02:aa:bb:cc:dd:02", "tuning set the MAC podman passes");
    assert_eq!(node.rules_with(&format!("{ip}/32")).len(), 2, "firewall accepts the pod: {}", node.filter());
    serve(&pod);
    assert!(reaches(&client), "the external client reaches the pod through its host port");
    if check {
        tool.run(&node, &["check", "podman", pod.path_str()]).ok();
    }
    tool.run(&node, &["del", "podman", pod.path_str()]).ok();
    assert!(node.rules_with(&ip).is_empty(), "no rule of the pod left: {}", node.filter());
    let nft = node.nft_ruleset();
    assert!(
        !nft.contains(&format!("{ip} ")) && !nft.contains(&format!("{ip},")),
        "no nft element of the pod left: {nft}"
    );
    assert!(!reaches(&client));
}

#[test]
fn podman_list_with_the_reference_portmap() {
    podman_list_case(reference_plugin("portmap"), false);
}

#[test]
fn podman_list_on_rcni_alone() {
    podman_list_case(our_portmap(), true);
}

/// A bridge + firewall list for network `name` on bridge `br` with subnet 10.88.<n>.0/24.
fn isolated_list(name: &str, br: &str, n: u8, data: &Path, policy: &str) -> Value {
    isolation_list(name, br, n, data, policy, false)
}

/// [`isolated_list`] with the bridge plugin's `portIsolation` as given.
fn isolation_list(name: &str, br: &str, n: u8, data: &Path, policy: &str, port_isolation: bool) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": true, "portIsolation": port_isolation,
             "ipam": {"type": "host-local", "subnet": format!("10.88.{n}.0/24"), "dataDir": data,
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall", "backend": "iptables", "ingressPolicy": policy}
        ]
    })
}

/// `same-bridge`: pods of two isolated bridges cannot reach each other; each still reaches its own gateway
/// and an external client. With `open`, they can. Same with the reference firewall.
#[test]
fn same_bridge_isolates_the_networks_from_each_other() {
    for (bin, policy, isolated) in
        [(ours(), "same-bridge", true), (reference(), "same-bridge", true), (ours(), "open", false)]
    {
        let node = Node::new("fw-iso");
        let client = client_of(&node, "fw-iso-c");
        node.set_sysctl("net.ipv4.ip_forward", "1");
        let data = TempDir::new("fw-iso-ipam");
        let conf = NetConfDir::new(&isolated_list("neta", "fwbra", 1, data.path(), policy));
        conf.write("20-netb.conflist", &isolated_list("netb", "fwbrb", 2, data.path(), policy));
        let dir = plugin_dir(bin.clone(), our_portmap());
        let tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
        let (pa, pb) = (PodNs::new("fw-iso-a"), PodNs::new("fw-iso-b"));
        let ra = tool.run(&node, &["add", "neta", pa.path_str()]).ok().json();
        tool.run(&node, &["add", "netb", pb.path_str()]).ok();
        let ip_a = ra["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
        assert!(pb.wait_ping("10.88.2.1", Duration::from_secs(5)), "b reaches its gateway");
        assert!(pa.wait_ping("198.18.0.2", Duration::from_secs(5)), "a reaches the external client");
        assert!(client.ping(&ip_a), "the external client reaches a");
        if isolated {
            assert!(!pb.ping(&ip_a), "{policy} with {}: b cannot reach a", bin.display());
            assert!(node.rules_with("CNI-ISOLATION-STAGE-2 -o fwbra -m comment").len() == 1, "{}", node.filter());
        } else {
            assert!(pb.wait_ping(&ip_a, Duration::from_secs(5)), "{policy}: b reaches a");
        }
        tool.run(&node, &["del", "netb", pb.path_str()]).ok();
        tool.run(&node, &["del", "neta", pa.path_str()]).ok();
    }
}

/// Concurrent ADDs and DELs on one node: the node lock keeps iptables-save → iptables-restore of one
/// invocation from interleaving with another's (a chain declared twice in --noflush mode would be flushed).
#[test]
fn concurrent_adds_and_dels_keep_every_rule_exactly_once() {
    let node = Node::new("fw-par");
    let n = 16;
    let confs: Vec<Value> = (0..n).map(|i| conf(json!({}), &[&format!("10.88.3.{}/16", i + 10)])).collect();
    for out in support::parallel_map(n, 4, |i| run(&node, &ours(), "ADD", &format!("par{i}"), &confs[i])) {
        out.ok();
    }
    let table = node.filter();
    for i in 0..n {
        let ip = format!("10.88.3.{}/32", i + 10);
        assert_eq!(table.lines().filter(|l| l.contains(&format!(" {ip} "))).count(), 2, "{ip}: {table}");
    }
    assert_eq!(node.rules_with("-j CNI-FORWARD").len(), 1, "one jump (IPv4 only): {table}");
    for out in
        support::parallel_map(n, 4, |i| run(&node, &ours(), "DEL", &format!("par{i}"), &without_prev(confs[i].clone())))
    {
        out.ok();
    }
    assert!(node.rules_with("10.88.3.").is_empty(), "{}", node.filter());
}

/// The reference 1.7 `isolated` layout, from its ingresspolicy.go (no 1.7 binary on this machine: the
/// installed reference is 1.1.1, which refuses the policy): per family, the stage-1 jump inserted at the
/// top of FORWARD (above CNI-FORWARD's), per bridge `-i br -o br -j DROP` above `-i br ! -o br -j STAGE-2`
/// (each inserted at the top of stage 1), the stage-2 drop at the top of stage 2, and the RETURNs last.
fn isolated_layout(bridges: &[&str]) -> Vec<String> {
    let shared = "-m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\"";
    let own = "-m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\"";
    let mut v = vec![
        format!("-A FORWARD {shared} -j CNI-ISOLATION-STAGE-1"),
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD".to_string(),
    ];
    for br in bridges.iter().rev() {
        v.push(format!("-A CNI-ISOLATION-STAGE-1 -i {br} -o {br} {own} -j DROP"));
        v.push(format!("-A CNI-ISOLATION-STAGE-1 -i {br} ! -o {br} {own} -j CNI-ISOLATION-STAGE-2"));
    }
    v.push(format!("-A CNI-ISOLATION-STAGE-1 {shared} -j RETURN"));
    for br in bridges.iter().rev() {
        v.push(format!("-A CNI-ISOLATION-STAGE-2 -o {br} {shared} -j DROP"));
    }
    v.push(format!("-A CNI-ISOLATION-STAGE-2 {shared} -j RETURN"));
    v
}

/// The `-A` lines of chains FORWARD and CNI-ISOLATION-* of one tool's table filter.
fn isolation_lines(node: &Node, tool: &str) -> Vec<String> {
    let out = node.cmd(tool).args(["-t", "filter"]).run().ok().stdout;
    out.lines()
        .filter(|l| l.starts_with("-A FORWARD ") || l.starts_with("-A CNI-ISOLATION-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn isolated_rules_are_the_reference_1_7_layout() {
    let node = Node::new("fw-isorules");
    let a = conf(json!({"ingressPolicy": "isolated"}), &[V4, V6]);
    let mut b = conf(json!({"ingressPolicy": "isolated"}), &["10.89.0.2/16", "fd00:89::2/64"]);
    b["prevResult"]["interfaces"][0]["name"] = json!("fwbr2");
    run(&node, &ours(), "ADD", "ctrA", &a).ok();
    run(&node, &ours(), "ADD", "ctrB", &b).ok();
    // A repeated ADD changes nothing (every rule is "insert/append unless present").
    run(&node, &ours(), "ADD", "ctrA", &a).ok();
    let want = isolated_layout(&["cni-podman0", "fwbr2"]);
    for tool in ["iptables-save", "ip6tables-save"] {
        assert_eq!(isolation_lines(&node, tool), want, "{tool}:\n{}", node.filter());
    }
    run(&node, &ours(), "CHECK", "ctrA", &a).ok();
    // CHECK reads the isolated drop back.
    node.cmd("iptables")
        .args(["-D", "CNI-ISOLATION-STAGE-1", "-i", "cni-podman0", "-o", "cni-podman0", "-m", "comment"])
        .args(["--comment", "CNI firewall plugin rules (ingressPolicy: isolated)", "-j", "DROP"])
        .run()
        .ok();
    let out = run(&node, &ours(), "CHECK", "ctrA", &a).fails();
    assert!(out.stdout.contains("-i cni-podman0 -o cni-podman0"), "CHECK names the missing drop: {out}");
    run(&node, &ours(), "CHECK", "ctrB", &b).ok();
    // DEL keeps the per-bridge structure, as the reference does (other pods of the bridge rely on it).
    run(&node, &ours(), "DEL", "ctrA", &a).ok();
    run(&node, &ours(), "DEL", "ctrB", &without_prev(b)).ok();
    assert!(node.rules_with("10.88.0.2").is_empty() && node.rules_with("10.89.0.2").is_empty());
    assert!(node.rules_with("fd00:89::2").is_empty(), "{}", node.filter());
    assert_eq!(isolation_lines(&node, "ip6tables-save"), want);
    // The installed reference (1.1.1) predates the policy and refuses it.
    let out = run(&node, &reference(), "ADD", "ctrR", &conf(json!({"ingressPolicy": "isolated"}), &[V4])).fails();
    assert!(out.stdout.contains("isolated"), "{out}");
}

/// Three pods: a1 and a2 on bridge fwbra (network neta), b on fwbrb (netb). Who reaches whom, by policy:
/// `isolated` keeps a1 and a2 apart as well as a and b; `same-bridge` only a and b; `open` nobody. Every
/// pod still reaches its gateway and the external client, and the client reaches the pods.
#[test]
fn isolated_keeps_pods_apart_on_the_same_bridge_and_across_bridges() {
    for (policy, same_bridge_talks, cross_bridge_talks) in
        [("isolated", false, false), ("same-bridge", true, false), ("open", true, true)]
    {
        let node = Node::new("fw-isotr");
        let client = client_of(&node, "fw-isotr-c");
        node.set_sysctl("net.ipv4.ip_forward", "1");
        assert_eq!(node.sysctl("net.bridge.bridge-nf-call-iptables"), "1", "br_netfilter filters bridged traffic");
        let data = TempDir::new("fw-isotr-ipam");
        let conf = NetConfDir::new(&isolated_list("neta", "fwbra", 1, data.path(), policy));
        conf.write("20-netb.conflist", &isolated_list("netb", "fwbrb", 2, data.path(), policy));
        let dir = plugin_dir(ours(), our_portmap());
        let tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
        let (a1, a2, b) = (PodNs::new("fw-isotr-a1"), PodNs::new("fw-isotr-a2"), PodNs::new("fw-isotr-b"));
        let ip = |r: Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
        let ip_a1 = ip(tool.run(&node, &["add", "neta", a1.path_str()]).ok().json());
        let ip_a2 = ip(tool.run(&node, &["add", "neta", a2.path_str()]).ok().json());
        let ip_b = ip(tool.run(&node, &["add", "netb", b.path_str()]).ok().json());
        for p in [&a1, &a2] {
            assert!(p.wait_ping("10.88.1.1", Duration::from_secs(5)), "{policy}: a pod reaches its gateway");
            assert!(p.wait_ping("198.18.0.2", Duration::from_secs(5)), "{policy}: a pod reaches the client");
        }
        assert!(b.wait_ping("10.88.2.1", Duration::from_secs(5)), "{policy}: b reaches its gateway");
        assert!(client.ping(&ip_a1) && client.ping(&ip_a2), "{policy}: the client reaches the pods");
        if same_bridge_talks {
            assert!(a1.wait_ping(&ip_a2, Duration::from_secs(5)), "{policy}: a1 reaches a2");
        } else {
            assert!(!a1.ping(&ip_a2) && !a2.ping(&ip_a1), "{policy}: a1 and a2 cannot reach each other");
            // Also not over a TCP connection (not only ICMP).
            serve(&a2);
            let tcp = a1.sh(&format!("echo ping | nc -N -w 2 {ip_a2} 80")).stdout;
            assert!(!tcp.contains("pong"), "{policy}: a1 cannot connect to a2");
        }
        if cross_bridge_talks {
            assert!(b.wait_ping(&ip_a1, Duration::from_secs(5)), "{policy}: b reaches a1");
        } else {
            assert!(!b.ping(&ip_a1) && !a1.ping(&ip_b), "{policy}: a and b cannot reach each other");
        }
        for (net, p) in [("netb", &b), ("neta", &a2), ("neta", &a1)] {
            tool.run(&node, &["del", net, p.path_str()]).ok();
        }
    }
}

/// With br_netfilter's bridge-nf-call-iptables off, bridged frames never reach FORWARD: the `isolated`
/// drop is there and a1 still reaches a2. ADD then refuses `isolated` unless the bridge isolates its
/// ports (`portIsolation`), which keeps the pods apart at layer 2; CHECK notices when the sysctl is turned
/// off after ADD.
#[test]
fn isolated_without_br_netfilter_needs_port_isolation() {
    let node = Node::new("fw-isobrnf");
    node.set_sysctl("net.ipv4.ip_forward", "1");
    let data = TempDir::new("fw-isobrnf-ipam");
    let lists = NetConfDir::new(&isolation_list("neta", "fwbra", 1, data.path(), "isolated", false));
    lists.write("20-netp.conflist", &isolation_list("netp", "fwbrp", 3, data.path(), "isolated", true));
    let dir = plugin_dir(ours(), our_portmap());
    let tool = Cnitool::new(&lists, &[dir.path().to_path_buf()]);
    let (a1, a2) = (PodNs::new("fw-isobrnf-a1"), PodNs::new("fw-isobrnf-a2"));
    let ip = |r: Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();

    // br_netfilter on: the rules isolate. Turned off: they no longer see the traffic, and CHECK says so.
    let ip_a1 = ip(tool.run(&node, &["add", "neta", a1.path_str()]).ok().json());
    let ip_a2 = ip(tool.run(&node, &["add", "neta", a2.path_str()]).ok().json());
    assert!(a1.wait_ping("10.88.1.1", Duration::from_secs(5)));
    assert!(!a1.ping(&ip_a2), "br_netfilter on: isolated");
    node.set_sysctl("net.bridge.bridge-nf-call-iptables", "0");
    assert!(a1.wait_ping(&ip_a2, Duration::from_secs(5)), "br_netfilter off: the drop rule is bypassed");
    let out = tool.run(&node, &["check", "neta", a1.path_str()]).fails();
    assert!(out.stderr.contains("portIsolation") || out.stdout.contains("portIsolation"), "{out}");
    tool.run(&node, &["del", "neta", a2.path_str()]).ok();
    tool.run(&node, &["del", "neta", a1.path_str()]).ok();

    // A new ADD is refused (code 7, naming the fix) and leaves no rule or record of the pod.
    let out = tool.run(&node, &["add", "neta", a1.path_str()]).fails();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("portIsolation") && text.contains("bridge-nf-call-iptables"), "{out}");
    assert!(node.rules_with(&format!("{ip_a1}/32")).is_empty(), "{}", node.filter());
    tool.run(&node, &["del", "neta", a1.path_str()]).ok();
    let out = run(&node, &ours(), "ADD", "ctrX", &conf(json!({"ingressPolicy": "isolated"}), &[V4])).fails();
    assert_eq!(out.json()["code"], 7, "{out}");
    assert!(node.rules_with("10.88.0.2").is_empty());

    // portIsolation on the bridge: accepted, and the pods are kept apart without br_netfilter.
    let ip_p1 = ip(tool.run(&node, &["add", "netp", a1.path_str()]).ok().json());
    let ip_p2 = ip(tool.run(&node, &["add", "netp", a2.path_str()]).ok().json());
    assert!(a1.wait_ping("10.88.3.1", Duration::from_secs(5)), "the gateway answers");
    assert!(a2.wait_ping("10.88.3.1", Duration::from_secs(5)));
    assert!(!a1.ping(&ip_p2) && !a2.ping(&ip_p1), "isolated ports: no traffic between the pods");
    tool.run(&node, &["check", "netp", a1.path_str()]).ok();
    tool.run(&node, &["del", "netp", a2.path_str()]).ok();
    tool.run(&node, &["del", "netp", a1.path_str()]).ok();
}

/// ip6tables-save (or iptables-save) of table filter without comments and with the counters zeroed.
fn saved(node: &Node, tool: &str) -> Vec<String> {
    let out = node.cmd(tool).args(["-t", "filter"]).run().ok().stdout;
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => format!("{} [0:0]", &l[..at]),
            _ => l.to_string(),
        })
        .collect()
}

/// A dual-stack pod on a node whose iptables and ip6tables FORWARD policies are DROP (v6 client
/// fd18::2 on the node's ext0): with no firewall in the list the pod's traffic is dropped in both
/// families; with ours or the reference's, the pod reaches the client over IPv6 (and IPv4) and the
/// replies come back, while a new connection from the client to the pod stays dropped (only replies
/// are accepted towards the pod). DEL leaves ip6tables-save as it was before, plus only the shared
/// structure the first ADD created; a second pod's ADD + DEL leaves it exactly as it was.
#[test]
fn ipv6_pod_behind_an_ip6tables_forward_drop_policy() {
    for bin in [None, Some(ours()), Some(reference())] {
        let tag = "fw-v6drop";
        let node = Node::new(tag);
        let client = client_of(&node, &format!("{tag}-c"));
        node.ip(&["addr", "add", "fd18::1/64", "dev", "ext0", "nodad"]).ok();
        client.ip(&["addr", "add", "fd18::2/64", "dev", "eth0", "nodad"]).ok();
        client.ip(&["-6", "route", "add", "default", "via", "fd18::1"]).ok();
        node.set_sysctl("net.ipv4.ip_forward", "1");
        node.set_sysctl("net.ipv6.conf.all.forwarding", "1");
        for tool in ["iptables", "ip6tables"] {
            node.cmd(tool).args(["-P", "FORWARD", "DROP"]).run().ok();
        }
        let data = TempDir::new(&format!("{tag}-ipam"));
        let mut plugins = vec![json!({"type": "bridge", "bridge": "fwbr6", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": data.path(),
                     "ranges": [[{"subnet": "10.88.6.0/24"}], [{"subnet": "fd00:88:6::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}})];
        if bin.is_some() {
            plugins.push(json!({"type": "firewall", "backend": "iptables"}));
        }
        let list = json!({"cniVersion": "1.0.0", "name": "net6", "plugins": plugins});
        let conf = NetConfDir::new(&list);
        let dir = plugin_dir(bin.clone().unwrap_or_else(ours), our_portmap());
        let tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
        let pristine = saved(&node, "ip6tables-save");
        let (pod, pod2) = (PodNs::new(tag), PodNs::new(&format!("{tag}-2")));
        let r = tool.run(&node, &["add", "net6", pod.path_str()]).ok().json();
        let ip6 = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap().to_string())
            .find(|a| a.contains(':'))
            .unwrap();
        assert!(pod.wait_ping("fd00:88:6::1", Duration::from_secs(5)), "the pod reaches its v6 gateway (DAD done)");
        let name = bin.as_ref().map(|b| b.display().to_string()).unwrap_or("no firewall".into());
        match &bin {
            None => {
                assert!(!pod.wait_ping("fd18::2", Duration::from_secs(2)), "{name}: the DROP policy drops v6");
                assert!(!pod.ping("198.18.0.2"), "{name}: and v4");
            }
            Some(_) => {
                assert!(pod.wait_ping("fd18::2", Duration::from_secs(5)), "{name}: the pod reaches the v6 client");
                assert!(pod.ping("198.18.0.2"), "{name}: and the v4 one");
                let rules = node.rules_with(&format!("{ip6}/128"));
                assert_eq!(rules.len(), 2, "{name}: {}", node.filter());
                assert!(!client.ping(&ip6), "{name}: a new connection towards the pod stays with the policy");
                let with_one = saved(&node, "ip6tables-save");
                tool.run(&node, &["add", "net6", pod2.path_str()]).ok();
                tool.run(&node, &["del", "net6", pod2.path_str()]).ok();
                assert_eq!(saved(&node, "ip6tables-save"), with_one, "{name}: a second pod's ADD + DEL");
            }
        }
        tool.run(&node, &["del", "net6", pod.path_str()]).ok();
        let after = saved(&node, "ip6tables-save");
        let added: Vec<&String> = after.iter().filter(|l| !pristine.contains(l)).collect();
        let removed: Vec<&String> = pristine.iter().filter(|l| !after.contains(l)).collect();
        assert!(removed.is_empty(), "{name}: DEL removed nothing that was there before: {removed:?}");
        let structure = if bin.is_some() {
            vec![
                ":CNI-ADMIN - [0:0]",
                ":CNI-FORWARD - [0:0]",
                "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
                "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN",
            ]
        } else {
            vec![]
        };
        assert_eq!(added, structure.iter().collect::<Vec<_>>(), "{name}: only the shared structure is left");
    }
}

/// [`isolation_list`] with `backend: "nftables"`.
fn nft_list(name: &str, br: &str, n: u8, data: &Path, policy: &str) -> Value {
    let mut v = isolation_list(name, br, n, data, policy, false);
    v["plugins"][1]["backend"] = json!("nftables");
    v
}

/// The nftables backend on a node with no DROP policy, real traffic: neta (fwbra, `isolated`) with a1
/// and a2, netb (fwbrb, `same-bridge`) with b1 and b2. a1 and a2 cannot reach each other, b1 and b2
/// can, neither network reaches the other; every pod reaches its gateway and the external client, and
/// the client reaches them. A drop the operator puts in the admin chain (CNI-ADMIN in table inet rcni)
/// applies. Nothing is written to iptables. DEL of a network's last pod removes exactly its rules.
#[test]
fn nftables_backend_isolates_natively_and_cleans_up() {
    let node = Node::new("fw-nft");
    let client = client_of(&node, "fw-nft-c");
    node.set_sysctl("net.ipv4.ip_forward", "1");
    let iptables_before = node.filter();
    let data = TempDir::new("fw-nft-ipam");
    let conf = NetConfDir::new(&nft_list("neta", "fwbra", 1, data.path(), "isolated"));
    conf.write("20-netb.conflist", &nft_list("netb", "fwbrb", 2, data.path(), "same-bridge"));
    let dir = plugin_dir(ours(), our_portmap());
    let tool = Cnitool::new(&conf, &[dir.path().to_path_buf()]);
    let pods: Vec<(&str, PodNs)> = ["neta", "neta", "netb", "netb"]
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, PodNs::new(&format!("fw-nft-{i}"))))
        .collect();
    let ip = |r: Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let mut ips: Vec<String> =
        pods.iter().map(|(net, p)| ip(tool.run(&node, &["add", net, p.path_str()]).ok().json())).collect();
    let [a1, a2, b1, b2] = [&pods[0].1, &pods[1].1, &pods[2].1, &pods[3].1];
    for (p, gw) in [(a1, "10.88.1.1"), (a2, "10.88.1.1"), (b1, "10.88.2.1"), (b2, "10.88.2.1")] {
        assert!(p.wait_ping(gw, Duration::from_secs(5)), "a pod reaches its gateway {gw}");
        assert!(p.wait_ping("198.18.0.2", Duration::from_secs(5)), "a pod reaches the client");
    }
    for i in &ips {
        assert!(client.ping(i), "the client reaches {i}");
    }
    assert!(!a1.ping(&ips[1]) && !a2.ping(&ips[0]), "isolated: a1 and a2 are kept apart");
    assert!(b1.wait_ping(&ips[3], Duration::from_secs(5)), "same-bridge: b1 reaches b2");
    assert!(!a1.ping(&ips[2]) && !b1.ping(&ips[0]), "neta and netb are kept apart");
    assert_eq!(node.filter(), iptables_before, "the nftables backend writes nothing to iptables");
    for (net, p) in &pods {
        tool.run(&node, &["check", net, p.path_str()]).ok();
    }

    // The admin chain: the operator's drop applies (client -> b1 only).
    let admin_rule = format!("ip saddr 198.18.0.2 ip daddr {} drop", ips[2]);
    node.sh(&format!("nft add rule inet rcni CNI-ADMIN {admin_rule}")).ok();
    assert!(!client.ping(&ips[2]) && client.ping(&ips[3]), "the admin chain's drop applies to b1 only");

    // CHECK notices a removed isolation rule.
    let ruleset = node.nft_ruleset();
    assert!(ruleset.contains("oifname \"fwbra\" drop"), "{ruleset}");
    node.cmd("nft").args(["flush", "chain", "inet", "rcni", "firewall-isolation-2"]).run().ok();
    let out = tool.run(&node, &["check", "neta", a1.path_str()]).fails();
    assert!(format!("{out}").contains("firewall-isolation-2"), "{out}");
    assert!(a1.wait_ping(&ips[3], Duration::from_secs(5)), "without the drops neta reaches netb");
    // A new ADD on each network puts back its missing rules (the others' attachments keep them in use).
    tool.run(&node, &["del", "neta", a1.path_str()]).ok();
    ips[0] = ip(tool.run(&node, &["add", "neta", a1.path_str()]).ok().json());
    tool.run(&node, &["del", "netb", b1.path_str()]).ok();
    ips[2] = ip(tool.run(&node, &["add", "netb", b1.path_str()]).ok().json());
    assert!(!a1.ping(&ips[3]) && !b1.ping(&ips[0]), "the ADDs restored the drops");
    assert!(b1.wait_ping(&ips[3], Duration::from_secs(5)), "same-bridge: b1 still reaches b2");
    for (net, p) in &pods {
        tool.run(&node, &["check", net, p.path_str()]).ok();
    }

    // DEL of neta's pods: neta's rules go, netb's stay and still isolate; then netb's go too.
    tool.run(&node, &["del", "neta", a2.path_str()]).ok();
    assert!(node.nft_ruleset().contains("iifname \"fwbra\""), "a1 still uses neta's rules");
    tool.run(&node, &["del", "neta", a1.path_str()]).ok();
    let ruleset = node.nft_ruleset();
    assert!(!ruleset.contains("fwbra") && ruleset.contains("oifname \"fwbrb\" drop"), "{ruleset}");
    tool.run(&node, &["del", "netb", b2.path_str()]).ok();
    tool.run(&node, &["del", "netb", b1.path_str()]).ok();
    let ruleset = node.nft_ruleset();
    assert!(!ruleset.contains("rcni firewall: network"), "no network rule left: {ruleset}");
    assert!(ruleset.contains(&admin_rule), "the operator's admin rule stays: {ruleset}");
    assert_eq!(node.filter(), iptables_before);
}

/// The nftables backend refuses (code 2, naming what drops and the iptables backend) a node where a
/// forward DROP policy would drop the pods' traffic whatever table inet rcni says, and changes nothing:
/// iptables' FORWARD policy, ip6tables' for a v6 pod, another table's forward base chain. CHECK of an
/// attachment made before the policy appeared fails the same way.
#[test]
fn nftables_backend_refuses_a_node_with_a_forward_drop_policy() {
    let setups = [
        ("iptables", "iptables -P FORWARD DROP", "iptables FORWARD policy DROP"),
        ("ip6tables", "ip6tables -P FORWARD DROP", "ip6tables FORWARD policy DROP"),
        (
            "foreign nft",
            "nft add table inet othertab && \
             nft add chain inet othertab forwarddrop '{ type filter hook forward priority 10; policy drop; }'",
            "inet othertab forwarddrop",
        ),
    ];
    for (what, cmd, needle) in setups {
        let node = Node::new("fw-nftdrop");
        let c = conf(json!({"backend": "nftables", "ingressPolicy": "same-bridge"}), &[V4, V6]);
        run(&node, &ours(), "ADD", "ctrA", &c).ok();
        node.sh(cmd).ok();
        let before = (node.nft_ruleset(), node.filter());
        let out = run(&node, &ours(), "ADD", "ctrB", &c).fails();
        let v = out.json();
        assert_eq!(v["code"], 2, "{what}: {out}");
        let text = format!("{} {}", v["msg"].as_str().unwrap(), v["details"].as_str().unwrap_or(""));
        for n in [needle, "backend \"nftables\"", "\"iptables\""] {
            assert!(text.contains(n), "{what}: the error names {n:?}: {text}");
        }
        assert_eq!((node.nft_ruleset(), node.filter()), before, "{what}: nothing changed");
        let out = run(&node, &ours(), "CHECK", "ctrA", &c).fails();
        assert!(out.stdout.contains(needle), "{what}: CHECK sees the policy too: {out}");
        // DEL needs no backend check: it still removes ctrA's rules.
        run(&node, &ours(), "DEL", "ctrA", &c).ok();
        assert!(!node.nft_ruleset().contains("rcni firewall: network"), "{what}: {}", node.nft_ruleset());
    }
}

/// DEL with nothing but containerID and ifname (no prevResult) under the nftables backend: the network's
/// rules stay while another of its attachments is recorded, and the DEL of the last one leaves the ruleset
/// exactly as it was before the network came (another network's rules and the structure untouched).
#[test]
fn nftables_backend_removes_exactly_its_rules_without_prev_result() {
    let node = Node::new("fw-nftdel");
    let policy = json!({"backend": "nftables", "ingressPolicy": "same-bridge"});
    let mut other = conf(policy.clone(), &["10.89.0.2/16"]);
    other["name"] = json!("othernet");
    other["prevResult"]["interfaces"][0]["name"] = json!("fwbrother");
    run(&node, &ours(), "ADD", "ctrO", &other).ok();
    let before = node.nft_ruleset();
    assert!(before.contains("oifname \"fwbrother\" drop"), "{before}");
    let c = conf(policy.clone(), &[V4]);
    run(&node, &ours(), "ADD", "ctrA", &c).ok();
    run(&node, &ours(), "ADD", "ctrB", &conf(policy, &["10.88.0.3/16"])).ok();
    let added = node.nft_ruleset();
    for rule in ["iifname \"cni-podman0\" oifname \"cni-podman0\" return", "oifname \"cni-podman0\" drop"] {
        assert_eq!(added.matches(rule).count(), 1, "{rule} once for the network: {added}");
    }
    let bare = without_prev(c);
    run(&node, &ours(), "DEL", "ctrA", &bare).ok();
    assert_eq!(node.nft_ruleset(), added, "ctrB still uses the network's rules");
    run(&node, &ours(), "DEL", "ctrB", &bare).ok();
    assert_eq!(node.nft_ruleset(), before, "the last DEL removed exactly the network's rules");
    run(&node, &ours(), "DEL", "ctrB", &bare).ok();
    assert_eq!(node.nft_ruleset(), before, "a repeated DEL changes nothing");
    run(&node, &ours(), "CHECK", "ctrO", &other).ok();
}
