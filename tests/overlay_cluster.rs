//! rcni-overlay against a real etcd: a switch netns (bridge) joins an etcd netns (198.18.0.254) and node
//! netns (198.18.0.N), each node running the agent; pods are added through the kube-flannel conflist
//! (conf/50-flannel.conflist: our flannel plugin, bridge, host-local and portmap) with our cnitool, or (the
//! DirectRouting test) with bridge + host-local from the node's subnet.env, as the flannel plugin would. Everything lives in the test's own
//! namespaces and every process it starts is killed by a guard (tests/support: underlay, etcd, agent).
//!
//! The agent binary is another workspace member: build the workspace first (`cargo build --workspace`,
//! as scripts/test does).

mod support;

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::agent::{AgentNode, PREFIX, VTEP, agent_bin};
use support::etcd::{Etcd, Proc, wait_for};
use support::underlay::{Switch, tcp_exchange as tcp};
use support::{NodeNs, TempDir};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn three_agents_on_etcd_program_the_overlay_and_survive_churn_and_an_outage() {
    let switch = Switch::new("ovc");
    let mut etcd = Etcd::start("ovc", &switch);
    let mut nodes: Vec<AgentNode> = Vec::new();

    // No config yet: the agent says which etcdctl command fixes it, and keeps retrying.
    nodes.push(AgentNode::new("ovc", &switch, 1, &etcd.url()));
    wait_for("the missing-config message", LONG, || {
        nodes[0].status()["last_error"].as_str().is_some_and(|e| e.contains("etcdctl put /coreos.com/network/config"))
    });
    assert!(nodes[0].agent.running());
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    for i in 2..=3 {
        nodes.push(AgentNode::new("ovc", &switch, i, &etcd.url()));
    }
    for n in &nodes {
        wait_for("subnet.env", LONG, || n.subnet_env().is_some());
        assert_eq!(n.env_var("FLANNEL_NETWORK"), "10.244.0.0/16");
        assert_eq!(n.env_var("FLANNEL_MTU"), "1450");
        assert_eq!(n.env_var("FLANNEL_IPMASQ"), "false");
    }
    let subnets: std::collections::BTreeSet<String> = nodes.iter().map(AgentNode::subnet).collect();
    assert_eq!(subnets.len(), 3, "distinct subnets: {subnets:?}");
    assert_eq!(etcd.keys(PREFIX).len(), 3);
    // flannel's lease format, with the MAC rcni derives from the address.
    let key = format!("{PREFIX}/subnets/{}", nodes[0].subnet().replace('/', "-"));
    let v: Value = serde_json::from_str(etcd.ctl(&["get", "--print-value-only", &key]).ok().stdout.trim()).unwrap();
    assert_eq!(
        v,
        json!({"PublicIP": "198.18.0.1", "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": "02:72:c6:12:00:01"}})
    );

    for n in &nodes {
        wait_for("two peer routes", LONG, || n.routes().lines().count() == 2);
    }
    let d = nodes[0].ns.ip_json(&["-d", "link", "show", VTEP]);
    assert_eq!(d[0]["linkinfo"]["info_data"]["port"], 8472);
    let ips: Vec<String> = nodes.iter_mut().map(|n| n.add_flannel_pod()).collect();
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                assert!(tcp(&nodes[a].pods[0], &nodes[b].pods[0], &ips[b]), "TCP node{} -> node{}", a + 1, b + 1);
            }
        }
    }

    // A flanneld node's lease written by hand: random VtepMAC, same port; programmed with that MAC.
    let fake = format!("{PREFIX}/subnets/10.244.200.0-24");
    let fake_value = r#"{"PublicIP":"198.18.0.50","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
    etcd.ctl(&["put", &fake, fake_value]).ok();
    wait_for("the flanneld peer's entries", LONG, || {
        let d = nodes[0].dump();
        d.contains("10.244.200.0/24 via 10.244.200.0 onlink")
            && d.contains("10.244.200.0 lladdr c6:d2:32:6f:8f:44")
            && d.contains("c6:d2:32:6f:8f:44 dst 198.18.0.50")
    });
    etcd.ctl(&["del", &fake]).ok();
    wait_for("the flanneld peer's removal", LONG, || !nodes[0].dump().contains("c6:d2:32:6f:8f:44"));

    // Node 3's agent dies and its lease is deleted: the others drop its routes; its own kernel state stays.
    let s3 = nodes[2].subnet();
    nodes[2].agent.kill();
    etcd.ctl(&["del", &format!("{PREFIX}/subnets/{}", s3.replace('/', "-"))]).ok();
    for n in &nodes[..2] {
        wait_for("node 3's route to go", LONG, || !n.routes().contains(&s3));
    }
    assert_eq!(nodes[2].routes().lines().count(), 2, "a dead agent's node keeps its entries");
    // Restarted, it takes the same subnet again (its local state) and the others re-add it.
    nodes[2].start_agent();
    wait_for("node 3's key back", LONG, || etcd.keys(PREFIX).iter().any(|k| k.ends_with(&s3.replace('/', "-"))));
    assert_eq!(nodes[2].subnet(), s3);
    wait_for("node 3's route back", LONG, || nodes[0].routes().contains(&s3));

    // A new node joins and is reached.
    nodes.push(AgentNode::new("ovc", &switch, 4, &etcd.url()));
    wait_for("node 4's subnet.env", LONG, || nodes[3].subnet_env().is_some());
    wait_for("node 4's peers", LONG, || nodes[3].routes().lines().count() == 3);
    let ip4 = nodes[3].add_flannel_pod();
    wait_for("node 4's route on node 1", LONG, || nodes[0].routes().contains(&nodes[3].subnet()));
    assert!(tcp(&nodes[0].pods[0], &nodes[3].pods[0], &ip4), "node1 -> new node4");

    // etcd goes away: nothing changes in the kernel, traffic flows, status says so; a new pod still starts.
    let before: Vec<String> = nodes.iter().map(AgentNode::dump).collect();
    etcd.proc.kill();
    wait_for("status to notice the outage", LONG, || nodes[0].status()["etcd_reachable"] == false);
    std::thread::sleep(Duration::from_secs(2));
    let during: Vec<String> = nodes.iter().map(AgentNode::dump).collect();
    assert_eq!(before, during, "no kernel change during an etcd outage");
    assert!(tcp(&nodes[1].pods[0], &nodes[3].pods[0], &ip4), "node2 -> node4 during the outage");
    let ip1b = nodes[0].add_flannel_pod();
    assert!(tcp(&nodes[1].pods[0], &nodes[0].pods[1], &ip1b), "a pod added during the outage is reached");
    // An agent restarted during the outage serves its node from disk and changes nothing.
    nodes[1].agent.kill();
    nodes[1].start_agent();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nodes[1].dump(), before[1], "restart during the outage: same entries");

    // etcd back (same data): the agents resync; a lease written now reaches every node.
    etcd.restart();
    wait_for("status to see etcd again", LONG, || nodes.iter().all(|n| n.status()["etcd_reachable"] == true));
    etcd.ctl(&["put", &fake, fake_value]).ok();
    for n in &nodes {
        wait_for("the new lease after the outage", LONG, || n.routes().contains("10.244.200.0/24"));
    }
    let after: Vec<String> = nodes.iter().map(AgentNode::dump).collect();
    for (b, a) in before.iter().zip(&after) {
        for line in b.lines().filter(|l| !l.is_empty()) {
            assert!(a.contains(line), "entry {line:?} survived the outage");
        }
    }

    // Node 1's own key deleted while its agent runs: re-created with the same subnet, no renumbering.
    let s1 = nodes[0].subnet().replace('/', "-");
    etcd.ctl(&["del", &format!("{PREFIX}/subnets/{s1}")]).ok();
    wait_for("node 1's key re-created", LONG, || etcd.keys(PREFIX).iter().any(|k| k.ends_with(&s1)));
    assert_eq!(nodes[0].subnet().replace('/', "-"), s1);
    for n in &mut nodes {
        n.agent.kill();
    }
}

#[test]
fn twenty_agents_at_once_get_twenty_distinct_subnets() {
    let switch = Switch::new("ov20");
    let etcd = Etcd::start("ov20", &switch);
    // A small network (a /20 of /24s: 15 candidates after SubnetMin... widened to 31 with SubnetMin 0),
    // so that concurrent joiners really collide and must retry.
    etcd.ctl(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.244.0.0/19","SubnetMin":"10.244.0.0","Backend":{"Type":"vxlan"}}"#,
    ])
    .ok();
    let client = NodeNs::new("ov20-c");
    switch.plug(&client, "pc", "198.18.0.1/24");
    let dir = TempDir::new("ov20");
    let mut agents = Vec::new();
    for i in 0..20 {
        let d = dir.join(format!("a{i}"));
        let args: Vec<String> = [
            "--etcd-endpoints",
            &etcd.url(),
            "--public-ip",
            &format!("198.18.1.{}", i + 1),
            "--lease-only",
            "--subnet-file",
            &d.join("subnet.env").to_string_lossy(),
            "--state-dir",
            &d.join("state").to_string_lossy(),
            "--lease-ttl",
            "30s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        std::fs::create_dir_all(&d).unwrap();
        agents.push(Proc::spawn(client.name(), &agent_bin(), &args, &d.join("log")));
    }
    let envs = || -> Vec<String> {
        (0..20).filter_map(|i| std::fs::read_to_string(dir.join(format!("a{i}/subnet.env"))).ok()).collect()
    };
    wait_for("twenty subnet.env files", Duration::from_secs(60), || envs().len() == 20);
    let subnets: std::collections::BTreeSet<String> =
        envs().iter().map(|t| t.lines().find(|l| l.starts_with("FLANNEL_SUBNET=")).unwrap().to_string()).collect();
    assert_eq!(subnets.len(), 20, "{subnets:?}");
    let keys = etcd.keys(PREFIX);
    assert_eq!(keys.len(), 20, "{keys:?}");
    for a in &mut agents {
        assert!(a.running(), "no agent gave up");
    }
    drop(agents);
}

#[test]
fn direct_routing_reaches_same_segment_peers_without_encapsulation() {
    let switch = Switch::new("ovd");
    let etcd = Etcd::start("ovd", &switch);
    etcd.ctl(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
    ])
    .ok();
    let mut nodes: Vec<AgentNode> = (1..=2).map(|i| AgentNode::new("ovd", &switch, i, &etcd.url())).collect();
    for n in &nodes {
        wait_for("subnet.env", LONG, || n.subnet_env().is_some());
    }
    let s2 = nodes[1].subnet();
    wait_for("the direct route", LONG, || {
        nodes[0].ns.ip(&["route", "show", "dev", "eth0"]).ok().stdout.contains(&format!("{s2} via 198.18.0.2"))
    });
    assert!(nodes[0].routes().is_empty(), "nothing rides the VTEP: {}", nodes[0].routes());
    let ip2 = {
        nodes[0].add_pod();
        nodes[1].add_pod()
    };
    let (tx0, _) = nodes[0].vtep_tx();
    assert!(tcp(&nodes[0].pods[0], &nodes[1].pods[0], &ip2), "pod -> pod via the underlay");
    assert_eq!(nodes[0].vtep_tx().0, tx0, "no packet went through the VTEP");
    for n in &mut nodes {
        n.agent.kill();
    }
}

/// The kube-flannel conflist on nodes running rcni-overlay: pods added with cnitool through our flannel
/// plugin get addresses from each agent's subnet.env and talk across nodes over TCP; an agent restarted
/// (SIGTERM, start again) while a ping stream runs between two pods loses no packet and leaves the
/// kernel's VTEP entries (and the VTEP itself) as they were.
#[test]
fn kube_flannel_conflist_pods_talk_and_an_agent_restart_loses_no_packet() {
    let switch = Switch::new("ovf");
    let etcd = Etcd::start("ovf", &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    let mut nodes: Vec<AgentNode> = (1..=2).map(|i| AgentNode::new("ovf", &switch, i, &etcd.url())).collect();
    for n in &nodes {
        wait_for("subnet.env", LONG, || n.subnet_env().is_some());
        wait_for("the peer's route", LONG, || n.routes().lines().count() == 1);
    }
    let ips: Vec<String> = nodes.iter_mut().map(|n| n.add_flannel_pod()).collect();
    for (n, ip) in nodes.iter().zip(&ips) {
        let prefix = n.env_var("FLANNEL_SUBNET").rsplit_once('.').unwrap().0.to_string();
        assert!(ip.starts_with(&format!("{prefix}.")), "pod {ip} is in the node's subnet {}", n.subnet());
        let gw = n.pods[0].default_gateway("inet");
        assert_eq!(gw.as_deref(), n.env_var("FLANNEL_SUBNET").split('/').next(), "default route via the bridge");
    }
    assert!(tcp(&nodes[0].pods[0], &nodes[1].pods[0], &ips[1]), "TCP node1 -> node2");
    assert!(tcp(&nodes[1].pods[0], &nodes[0].pods[0], &ips[0]), "TCP node2 -> node1");

    let before: Vec<(String, u64)> = nodes.iter().map(|n| (n.dump(), n.vtep_ifindex())).collect();
    let count = 300;
    let ping = Command::new("ip")
        .args(["netns", "exec", nodes[0].pods[0].name(), "ping", "-n", "-q", "-i", "0.05", "-W", "2", "-c"])
        .arg(count.to_string())
        .arg(&ips[1])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ping = Proc(Some(ping));
    std::thread::sleep(Duration::from_millis(500));
    let exit = nodes[1].agent.terminate();
    assert!(exit.success(), "the agent stops cleanly on SIGTERM: {exit}");
    nodes[1].start_agent();
    let pid = nodes[1].agent.pid();
    wait_for("the restarted agent to serve its peers", LONG, || {
        let s = nodes[1].status();
        s["pid"] == pid && s["etcd_reachable"] == true && s["peers"] == 1
    });
    assert!(ping.running(), "the restart finished while the ping stream was still running");
    let out = ping.0.take().unwrap().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains(&format!("{count} packets transmitted, {count} received, 0% packet loss")),
        "no packet lost across the agent restart: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<(String, u64)> = nodes.iter().map(|n| (n.dump(), n.vtep_ifindex())).collect();
    assert_eq!(before, after, "the VTEP and its entries are unchanged by the restart");
    assert!(tcp(&nodes[0].pods[0], &nodes[1].pods[0], &ips[1]), "TCP node1 -> node2 after the restart");
    for n in &mut nodes {
        n.agent.kill();
    }
}
