//! rcni-overlay's leases against a real etcd: a killed agent's lease expires by its TTL and the other
//! nodes drop its routes; a subnet this node serves, held by another node, is a reported conflict (never
//! renumbered, the other key untouched); a watch cut off by compaction re-lists and converges.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::agent::{AgentNode, PREFIX};
use support::etcd::{Etcd, wait_for};
use support::underlay::Switch;

const LONG: Duration = Duration::from_secs(30);

fn cluster(tag: &str, n: usize, extra: &[&str]) -> (Switch, Etcd, Vec<AgentNode>) {
    let switch = Switch::new(tag);
    let etcd = Etcd::start(tag, &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    let nodes: Vec<AgentNode> = (1..=n).map(|i| AgentNode::with_flags(tag, &switch, i, &etcd.url(), extra)).collect();
    for node in &nodes {
        wait_for("the peers' routes", LONG, || node.routes().lines().count() == n - 1);
    }
    (switch, etcd, nodes)
}

fn value(etcd: &Etcd, key: &str) -> String {
    etcd.ctl(&["get", "--print-value-only", key]).ok().stdout.trim().to_string()
}

fn mod_revision(etcd: &Etcd, key: &str) -> i64 {
    let v = etcd.ctl(&["get", "-w", "json", key]).ok().json();
    v["kvs"][0]["mod_revision"].as_i64().unwrap_or(0)
}

#[test]
fn a_killed_agents_lease_expires_by_ttl_and_the_others_drop_its_routes() {
    // --lease-ttl 5s (the node default in tests/support): keepalives every 5/3 s, so the lease has 3-5 s
    // left when the agent dies.
    let (_switch, etcd, mut nodes) = cluster("ovt", 3, &[]);
    let s3 = nodes[2].subnet();
    let key3 = nodes[2].key();
    nodes[2].agent.signal("KILL");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(etcd.keys(PREFIX).contains(&key3), "the key lives on until the lease expires");
    assert!(nodes[0].routes().contains(&s3), "no removal before expiry");
    for n in &nodes[..2] {
        wait_for("node 3's route to go with its lease", Duration::from_secs(12), || !n.routes().contains(&s3));
    }
    let gone = killed.elapsed();
    assert!(!etcd.keys(PREFIX).contains(&key3), "etcd dropped the key with the lease");
    assert!(gone < Duration::from_secs(8), "TTL 5 s + detection, took {gone:?}");
    assert_eq!(nodes[2].routes().lines().count(), 2, "the dead agent's node keeps its entries");
    eprintln!("lease expiry to route removal on both peers: {gone:?} after SIGKILL");
    // Restarted, it takes the same subnet again (its record) and the others re-add it.
    nodes[2].agent.kill();
    nodes[2].start_agent();
    wait_for("node 3's key back", LONG, || etcd.keys(PREFIX).contains(&key3));
    assert_eq!(nodes[2].subnet(), s3);
    for n in &nodes[..2] {
        wait_for("node 3's route back", LONG, || n.routes().contains(&s3));
    }
}

#[test]
fn a_served_subnet_held_by_another_node_is_a_conflict_not_a_new_subnet() {
    let (_switch, etcd, mut nodes) = cluster("ovx", 2, &["--healthz-port", "9102"]);
    let (s2, key2) = (nodes[1].subnet(), nodes[1].key());
    let env_before = nodes[1].subnet_env().unwrap();
    // Node 2's agent dies; meanwhile its subnet is leased to another node (a clobbering flanneld, a
    // restored backup): a permanent key with another PublicIP.
    nodes[1].agent.kill();
    etcd.ctl(&["del", &key2]).ok();
    let other =
        r#"{"PublicIP":"198.18.0.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:77"}}"#;
    etcd.ctl(&["put", &key2, other]).ok();
    let rev = mod_revision(&etcd, &key2);
    nodes[1].start_agent();
    wait_for("the conflict in status", LONG, || {
        nodes[1].status()["conflict"].as_str().is_some_and(|c| c.contains("held in etcd by node 198.18.0.77"))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(nodes[1].log().contains(&format!("CONFLICT: subnet {s2}")), "said on stderr:\n{}", nodes[1].log());
    assert_eq!(etcd.keys(PREFIX).len(), 2, "no other subnet taken: {:?}", etcd.keys(PREFIX));
    assert_eq!((value(&etcd, &key2), mod_revision(&etcd, &key2)), (other.to_string(), rev), "the other key untouched");
    assert_eq!(nodes[1].subnet_env().unwrap(), env_before, "subnet.env keeps the served subnet");
    assert!(nodes[1].agent.running(), "the agent keeps serving and retrying");
    let health = nodes[1]
        .ns
        .cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("http://198.18.0.2:9102/healthz")
        .run();
    assert_eq!(health.stdout.trim(), "503", "unhealthy while in conflict");

    // The stale lease removed: node 2 holds its subnet again, with its own address.
    etcd.ctl(&["del", &key2]).ok();
    wait_for("node 2's own lease back", LONG, || value(&etcd, &key2).contains("198.18.0.2"));
    wait_for("the conflict cleared", LONG, || nodes[1].status()["conflict"] == Value::Null);
    wait_for("node 1 routes node 2 again", LONG, || nodes[0].dump().contains("dst 198.18.0.2"));
}

/// Writes `count` revisions of `size`-byte values under `prefix` through etcd's JSON gateway, from
/// inside the etcd netns (one HTTP connection, so it is quick).
fn flood(etcd: &Etcd, prefix: &str, count: usize, size: usize) {
    let script = format!(
        "import base64,http.client,json\n\
         c=http.client.HTTPConnection('198.18.0.254',2379)\n\
         v=base64.b64encode(b'x'*{size}).decode()\n\
         for i in range({count}):\n\
         \x20k=base64.b64encode(('{prefix}junk-%d'%(i%50)).encode()).decode()\n\
         \x20c.request('POST','/v3/kv/put',json.dumps({{'key':k,'value':v}}),{{'Content-Type':'application/json'}})\n\
         \x20r=c.getresponse(); r.read(); assert r.status==200, r.status\n"
    );
    etcd.ns.cmd("python3").args(["-c", &script]).timeout(Duration::from_secs(120)).run().ok();
}

#[test]
fn a_watch_cut_off_by_compaction_relists_and_converges() {
    // Node 1's lease outlives the pause below.
    let (_switch, etcd, nodes) = cluster("ovk", 2, &["--lease-ttl", "120s"]);
    let a = format!("{PREFIX}/subnets/10.244.201.0-24");
    let b = format!("{PREFIX}/subnets/10.244.202.0-24");
    let lease = |ip: &str, mac: &str| {
        format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
    };
    // Node 1's agent stops reading its watch. Meanwhile: A comes and goes, B comes and changes its MAC,
    // and enough other writes pile up that etcd cannot deliver them and drops the watcher to catch up
    // later; the history it would catch up from is then compacted.
    nodes[0].agent.signal("STOP");
    etcd.ctl(&["put", &a, &lease("198.18.0.61", "c6:00:00:00:00:61")]).ok();
    etcd.ctl(&["put", &b, &lease("198.18.0.62", "c6:00:00:00:00:62")]).ok();
    flood(&etcd, &format!("{PREFIX}/subnets/"), 1500, 8192);
    etcd.ctl(&["del", &a]).ok();
    etcd.ctl(&["put", &b, &lease("198.18.0.63", "c6:00:00:00:00:63")]).ok();
    etcd.ctl(&["del", "--prefix", &format!("{PREFIX}/subnets/junk-")]).ok();
    etcd.ctl(&["compaction", &etcd.revision().to_string()]).ok();
    nodes[0].agent.signal("CONT");

    wait_for("node 1 to converge on B's new address and MAC", LONG, || {
        let d = nodes[0].dump();
        d.contains("10.244.202.0 lladdr c6:00:00:00:00:63") && d.contains("c6:00:00:00:00:63 dst 198.18.0.63")
    });
    let d = nodes[0].dump();
    assert!(!d.contains("10.244.201.0") && !d.contains(":61") && !d.contains(":62"), "nothing stale:\n{d}");
    assert!(d.contains(&nodes[1].subnet()), "node 2 still there:\n{d}");
    let log = nodes[0].log();
    let relist = log.lines().find(|l| l.contains("re-listing")).unwrap_or_else(|| panic!("no re-list:\n{log}"));
    assert!(!relist.contains("compacted at 0)"), "the watch was cut off by the compaction: {relist}");
}
