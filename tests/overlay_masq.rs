//! rcni-overlay --ip-masq: traffic from the cluster network leaving it is masqueraded to the node's
//! address by one nftables rule, pod-to-pod traffic across nodes keeps the pod address, and a restart
//! without the flag removes the rule. The "outside" is a netns on the underlay switch (198.18.0.100);
//! it routes 10.244.0.0/16 back via node 1, so an unmasqueraded connection succeeds too and shows the
//! pod's address: the test sees the difference in the source address, not in reachability.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::agent::{AgentNode, PREFIX};
use support::etcd::{Etcd, wait_for};
use support::underlay::Switch;
use support::{NetNs, NodeNs};

const LONG: Duration = Duration::from_secs(30);

/// The source address a TCP server in `server` (listening on `ip`:5001) sees for a connection from
/// `client`.
fn source_seen(server: &NetNs, client: &NetNs, ip: &str) -> String {
    let script = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('0.0.0.0',5001))\ns.listen(1)\ns.settimeout(15)\nc,a=s.accept()\nc.sendall(b'ok')\n\
                  print(a[0])\nc.close()\n";
    let srv = Command::new("ip")
        .args(["netns", "exec", server.name(), "timeout", "20", "python3", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cli = Command::new("ip")
        .args(["netns", "exec", client.name(), "timeout", "20", "sh", "-c"])
        .arg(format!(
            "for i in $(seq 100); do nc -w 3 {ip} 5001 </dev/null | grep -q ok && exit 0; sleep 0.1; done; exit 1"
        ))
        .output()
        .unwrap();
    let out = srv.wait_with_output().unwrap();
    assert!(cli.status.success(), "connection to {ip}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The masquerade rules in the node's ruleset, as `nft -j` objects.
fn masquerade_rules(node: &NodeNs) -> Vec<Value> {
    let v = node.cmd("nft").args(["-j", "list", "ruleset"]).run().ok().json();
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    items
        .into_iter()
        .filter_map(|i| i.get("rule").cloned())
        .filter(|r| r["expr"].as_array().is_some_and(|e| e.iter().any(|x| x.get("masquerade").is_some())))
        .collect()
}

#[test]
fn ip_masq_masquerades_leaving_traffic_with_one_rule_and_keeps_pod_to_pod_addresses() {
    let switch = Switch::new("ovm");
    let etcd = Etcd::start("ovm", &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    let outside = NodeNs::new("ovm-out");
    switch.plug(&outside, "po", "198.18.0.100/24");
    outside.ip(&["route", "add", "10.244.0.0/16", "via", "198.18.0.1"]).ok();
    let mut nodes: Vec<AgentNode> =
        (1..=2).map(|i| AgentNode::with_flags("ovm", &switch, i, &etcd.url(), &["--ip-masq"])).collect();
    for n in &nodes {
        wait_for("subnet.env", LONG, || n.subnet_env().is_some());
        wait_for("the peer's route", LONG, || n.routes().lines().count() == 1);
        assert_eq!(n.env_var("FLANNEL_IPMASQ"), "true");
    }
    let ips: Vec<String> = nodes.iter_mut().map(|n| n.add_pod()).collect();

    // One rule, matching the cluster network as source and (negated) destination, with one element.
    let rules = masquerade_rules(&nodes[0].ns);
    assert_eq!(rules.len(), 1, "one masquerade rule: {rules:?}");
    let sets = nodes[0].ns.cmd("nft").args(["list", "table", "inet", "rcni"]).run().ok().stdout;
    assert!(sets.contains("elements = { 10.244.0.0/16 }"), "the cluster network is the one element:\n{sets}");

    assert_eq!(source_seen(&outside, &nodes[0].pods[0], "198.18.0.100"), "198.18.0.1", "leaving: the node's address");
    assert_eq!(source_seen(&nodes[1].pods[0], &nodes[0].pods[0], &ips[1]), ips[0], "pod to pod: the pod's address");
    assert_eq!(source_seen(&nodes[0].pods[0], &nodes[1].pods[0], &ips[0]), ips[1], "pod to pod, other way");

    // Restarted without --ip-masq: the rule goes, subnet.env says so, and the outside sees the pod.
    nodes[0].agent.kill();
    nodes[0].extra.clear();
    nodes[0].start_agent();
    wait_for("FLANNEL_IPMASQ=false", LONG, || {
        nodes[0].subnet_env().is_some_and(|e| e.contains("FLANNEL_IPMASQ=false"))
    });
    wait_for("the rule to go", LONG, || masquerade_rules(&nodes[0].ns).is_empty());
    assert!(
        !nodes[0].ns.cmd("nft").args(["list", "table", "inet", "rcni"]).run().stdout.contains("10.244.0.0/16"),
        "the set went with the rule"
    );
    assert_eq!(source_seen(&outside, &nodes[0].pods[0], "198.18.0.100"), ips[0], "not masqueraded any more");
    // The other node still masquerades.
    assert_eq!(masquerade_rules(&nodes[1].ns).len(), 1);
}
