//! The bandwidth plugin in throwaway namespaces: tc state read with `tc -j` inside the node, the ifb gone
//! after DEL, the reference's leftovers, interop with the reference (/usr/lib/cni, 1.1.1) both ways, and
//! iperf3 through conf/70-bridge-bandwidth.conflist showing the rates are enforced.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, cni_env, rcni_bin, reference_plugin, unique_suffix};

fn rcni_path() -> Vec<PathBuf> {
    vec![rcni_bin("bandwidth").parent().unwrap().to_path_buf()]
}

/// A node and a pod joined by a veth (host end `host`, pod end eth0), 10.95.0.1 / 10.95.0.2.
struct Pair {
    node: NodeNs,
    pod: PodNs,
    host: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let node = NodeNs::new(tag);
        let pod = PodNs::new(tag);
        let host = format!("vh{}", unique_suffix());
        node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", pod.name()]).ok();
        node.ip(&["addr", "add", "10.95.0.1/24", "dev", &host]).ok();
        node.ip(&["link", "set", &host, "up"]).ok();
        pod.ip(&["addr", "add", "10.95.0.2/24", "dev", "eth0"]).ok();
        pod.ip(&["link", "set", "eth0", "up"]).ok();
        Pair { node, pod, host }
    }

    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "bw", "type": "bandwidth",
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": self.host}, {"name": "eth0", "sandbox": self.pod.path_str()}],
                "ips": [{"address": "10.95.0.2/24", "interface": 1}]}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn run(&self, bin: &Path, cmd: &str, conf: &Value) -> support::Output {
        let env = cni_env(cmd, "c1", self.pod.path_str(), "eth0", &rcni_path());
        self.node.run_plugin(bin, &env, &serde_json::to_vec(conf).unwrap())
    }

    fn tc(&self, args: &[&str]) -> Vec<Value> {
        let out = self.node.cmd("tc").arg("-j").args(args).run().ok();
        if out.stdout.trim().is_empty() { vec![] } else { out.json().as_array().unwrap().clone() }
    }

    /// Kinds of the host veth's qdiscs, ignoring the default `noqueue`.
    fn host_qdiscs(&self) -> Vec<String> {
        self.tc(&["qdisc", "show", "dev", &self.host])
            .iter()
            .map(|q| q["kind"].as_str().unwrap().to_string())
            .filter(|k| k != "noqueue")
            .collect()
    }

    /// mirred actions on the host veth's ingress filters (and where they point).
    fn mirred_targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.host_qdiscs().contains(&"ingress".to_string()) {
            return out;
        }
        for f in self.tc(&["filter", "show", "dev", &self.host, "ingress"]) {
            for a in f.pointer("/options/actions").and_then(Value::as_array).into_iter().flatten() {
                if a["kind"] == "mirred" {
                    out.push(a["to_dev"].as_str().unwrap_or("?").to_string());
                }
            }
        }
        out
    }

    fn ifbs(&self) -> Vec<String> {
        self.node.links().into_iter().filter(|l| l.kind.as_deref() == Some("ifb")).map(|l| l.ifname).collect()
    }
}

fn shaping() -> Value {
    json!({"ingressRate": 8_000_000, "ingressBurst": 800_000, "egressRate": 4_000_000, "egressBurst": 400_000})
}

#[test]
fn shapes_both_ways_repeats_cleanly_checks_and_del_removes_everything() {
    let p = Pair::new("bw-cycle");
    let c = p.conf(shaping());
    let result = p.run(&rcni_bin("bandwidth"), "ADD", &c).ok().json();
    let ifb = result["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert!(ifb.starts_with("bwp") && ifb.len() == 15, "{result}");
    assert!(result["interfaces"][2].get("sandbox").is_none());
    assert_eq!(p.ifbs(), vec![ifb.clone()]);
    assert_eq!(p.host_qdiscs(), ["tbf", "ingress"]);
    let tbf = &p.tc(&["qdisc", "show", "dev", &p.host])[0];
    assert_eq!(tbf["handle"], "1:");
    assert_eq!(tbf["options"]["rate"], 1_000_000, "8 Mbit/s = 1e6 B/s: {tbf}");
    let ifb_tbf = &p.tc(&["qdisc", "show", "dev", &ifb])[0];
    assert_eq!((ifb_tbf["kind"].as_str(), ifb_tbf["options"]["rate"].as_u64()), (Some("tbf"), Some(500_000)));
    assert_eq!(p.mirred_targets(), vec![ifb.clone()], "exactly one mirred action");
    p.run(&rcni_bin("bandwidth"), "CHECK", &c).ok();

    // A repeated ADD is idempotent: same objects, still one filter action.
    p.run(&rcni_bin("bandwidth"), "ADD", &c).ok();
    assert_eq!(p.host_qdiscs(), ["tbf", "ingress"]);
    assert_eq!(p.mirred_targets(), vec![ifb.clone()]);
    assert_eq!(p.ifbs(), vec![ifb.clone()]);

    let mut other = c.clone();
    other["egressRate"] = json!(2_000_000);
    let out = p.run(&rcni_bin("bandwidth"), "CHECK", &other).fails();
    assert!(out.stdout.contains("egress shaping"), "{out}");

    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();
    assert!(p.host_qdiscs().is_empty(), "no tbf or ingress qdisc left: {:?}", p.host_qdiscs());
    assert!(p.ifbs().is_empty(), "ifb gone");
    // Neighbour resolution may need a retry after shaping is gone: reachable within a few seconds.
    assert!(p.node.wait_ping("10.95.0.2", Duration::from_secs(5)), "the pod is reachable after DEL");
    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();
}

#[test]
fn reference_del_leaves_a_blackhole_that_ours_cleans() {
    let p = Pair::new("bw-refdel");
    let c = p.conf(shaping());
    p.run(&reference_plugin("bandwidth"), "ADD", &c).ok();
    // The reference installs two mirred actions per filter.
    assert_eq!(p.mirred_targets().len(), 2);
    // Interop: our CHECK accepts the reference's objects only when they match exactly: it has two actions.
    p.run(&rcni_bin("bandwidth"), "CHECK", &c).fails();
    p.run(&reference_plugin("bandwidth"), "DEL", &c).ok();
    assert!(p.ifbs().is_empty());
    assert_eq!(p.host_qdiscs(), ["tbf", "ingress"], "the reference leaves its qdiscs and filter behind");
    assert!(!p.node.ping("10.95.0.2"), "pod egress is blackholed by the dangling redirect");
    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();
    assert!(p.host_qdiscs().is_empty(), "{:?}", p.host_qdiscs());
    assert!(p.node.wait_ping("10.95.0.2", Duration::from_secs(5)), "the pod is reachable after our DEL");
}

#[test]
fn ours_added_passes_the_reference_check_and_is_removed_by_our_del_after_the_references() {
    let p = Pair::new("bw-interop");
    let c = p.conf(shaping());
    p.run(&rcni_bin("bandwidth"), "ADD", &c).ok();
    p.run(&reference_plugin("bandwidth"), "CHECK", &c).ok();
    // Same ifb name: the reference's DEL deletes our ifb.
    p.run(&reference_plugin("bandwidth"), "DEL", &c).ok();
    assert!(p.ifbs().is_empty());
    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();
    assert!(p.host_qdiscs().is_empty());
}

#[test]
fn a_burst_below_one_packet_is_refused_and_leaves_nothing() {
    let p = Pair::new("bw-burst");
    for (field, c) in [
        ("ingressBurst", json!({"ingressRate": 8_000_000, "ingressBurst": 8000})),
        (
            "egressBurst",
            json!({"ingressRate": 8_000_000, "ingressBurst": 800_000, "egressRate": 8_000_000, "egressBurst": 8000}),
        ),
    ] {
        let out = p.run(&rcni_bin("bandwidth"), "ADD", &p.conf(c)).fails();
        let v = out.json();
        assert_eq!(v["code"], 7, "{out}");
        assert!(v["msg"].as_str().unwrap().starts_with(field), "{out}");
        assert!(p.host_qdiscs().is_empty(), "{field}: nothing left: {:?}", p.host_qdiscs());
        assert!(p.ifbs().is_empty());
    }
    let out = p.run(&rcni_bin("bandwidth"), "ADD", &p.conf(json!({"egressRate": 1000}))).fails();
    assert_eq!(out.json()["code"], 7);
    // No bandwidth at all: prevResult passes through, nothing is made.
    let c = p.conf(json!({}));
    let out = p.run(&rcni_bin("bandwidth"), "ADD", &c).ok().json();
    assert_eq!(out["interfaces"], c["prevResult"]["interfaces"]);
    p.run(&rcni_bin("bandwidth"), "CHECK", &c).ok();
}

/// iperf3's received rate (bit/s) from `client` to `server_ip`; `reverse`: the server sends.
fn iperf(client: &support::NetNs, server_ip: &str, reverse: bool) -> f64 {
    // The server takes one test at a time and may still be finishing the previous one: retry.
    let mut last = Value::Null;
    for _ in 0..5 {
        let mut cmd = client.cmd("iperf3").args(["-c", server_ip, "-t", "3", "-J"]);
        if reverse {
            cmd = cmd.arg("-R");
        }
        last = cmd.run().json();
        if let Some(bps) = last.pointer("/end/sum_received/bits_per_second").and_then(Value::as_f64) {
            return bps;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("iperf3 gave no result: {}", last.get("error").unwrap_or(&last));
}

#[test]
fn example_list_with_runtime_config_enforces_the_rates() {
    let node = NodeNs::new("bw-iperf");
    let pod = PodNs::new("bw-iperf");
    let data = TempDir::new("bw-iperf-ipam");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/70-bridge-bandwidth.conflist"))
        .unwrap();
    let conflist: Value =
        serde_json::from_str(&text.replace("/var/lib/cni/networks", &data.path().to_string_lossy())).unwrap();
    let name = conflist["name"].as_str().unwrap().to_string();
    let conf = NetConfDir::new(&conflist);
    let mut path = rcni_path();
    path.push(rcni_bin("bridge").parent().unwrap().to_path_buf());
    let mut tool = Cnitool::new(&conf, &path);
    let (ingress, egress) = (8_000_000.0, 4_000_000.0);
    tool.set(
        "CAP_ARGS",
        &json!({"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 200_000, "egressRate": 4_000_000, "egressBurst": 200_000}})
            .to_string(),
    );
    let result = tool.run(&node, &["add", &name, pod.path_str()]).ok().json();
    assert!(result["interfaces"].as_array().unwrap().iter().any(|i| i["name"].as_str().unwrap().starts_with("bwp")));
    tool.run(&node, &["check", &name, pod.path_str()]).ok();
    let pod_ip = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    pod.ip(&["link", "set", "lo", "up"]).ok();
    pod.cmd("iperf3").args(["-s", "-D", "--logfile", "/dev/null"]).run().ok();
    let mut up = false;
    for _ in 0..50 {
        if pod.cmd("sh").args(["-c", "ss -ltn | grep -q ':5201'"]).run().success() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "iperf3 server listening");
    let to_pod = iperf(&node, &pod_ip, false);
    let from_pod = iperf(&node, &pod_ip, true);
    eprintln!(
        "iperf3: to the pod {to_pod:.0} bit/s (limit {ingress}), from the pod {from_pod:.0} bit/s (limit {egress})"
    );
    assert!(to_pod > 0.0 && to_pod < ingress * 1.25, "ingress limit enforced: {to_pod}");
    assert!(from_pod > 0.0 && from_pod < egress * 1.25, "egress limit enforced: {from_pod}");
    tool.run(&node, &["del", &name, pod.path_str()]).ok();
    assert!(node.links().iter().all(|l| l.kind.as_deref() != Some("ifb")), "ifb gone after DEL");
}

/// (kind, handle, rate, burst, latency) of each qdisc of `dev`, as tc prints them.
fn qdisc_params(p: &Pair, dev: &str) -> Vec<(String, String, Value, Value, Value)> {
    p.tc(&["qdisc", "show", "dev", dev])
        .iter()
        .filter(|q| q["kind"] != "noqueue")
        .map(|q| {
            let o = &q["options"];
            (
                q["kind"].as_str().unwrap().into(),
                q["handle"].as_str().unwrap().into(),
                o["rate"].clone(),
                o["burst"].clone(),
                o["lat"].clone(),
            )
        })
        .collect()
}

/// The same input to the reference and to ours, each in its own node (the ifb names are equal): the same
/// result JSON but for the ifb's random MAC, and the same qdisc parameters on the veth and on the ifb.
#[test]
fn differential_against_reference_bandwidth() {
    let (ours, theirs) = (Pair::new("bw-diff-a"), Pair::new("bw-diff-b"));
    let mut a = ours.conf(shaping());
    let mut b = theirs.conf(shaping());
    // The same pod path in both prevResults (the plugins take the netns from CNI_NETNS).
    for c in [&mut a, &mut b] {
        c["prevResult"]["interfaces"][1]["sandbox"] = json!("/pod");
    }
    let ra = ours.run(&rcni_bin("bandwidth"), "ADD", &a).ok().json();
    let rb = theirs.run(&reference_plugin("bandwidth"), "ADD", &b).ok().json();
    // The host veth names differ between the two pairs, and an ifb's MAC is random.
    let normalized = |mut r: Value| {
        r["interfaces"][0]["name"] = json!("host");
        r["interfaces"][2]["mac"] = json!("random");
        if r["dns"] == json!({}) {
            r.as_object_mut().unwrap().remove("dns");
        }
        r
    };
    assert_eq!(normalized(ra.clone()), normalized(rb.clone()), "same result JSON");
    let ifb = ra["interfaces"][2]["name"].as_str().unwrap();
    assert_eq!(ifb, rb["interfaces"][2]["name"], "same ifb name");
    assert_eq!(qdisc_params(&ours, &ours.host), qdisc_params(&theirs, &theirs.host), "same qdiscs on the veth");
    assert_eq!(qdisc_params(&ours, ifb), qdisc_params(&theirs, ifb), "same tbf on the ifb");
    // Each accepts the other's objects in CHECK where they are the same (the reference's second mirred
    // action is the one difference ours reports).
    ours.run(&reference_plugin("bandwidth"), "CHECK", &a).ok();
    ours.run(&rcni_bin("bandwidth"), "DEL", &a).ok();
    theirs.run(&rcni_bin("bandwidth"), "DEL", &b).ok();
    for p in [&ours, &theirs] {
        assert!(p.host_qdiscs().is_empty() && p.ifbs().is_empty(), "our DEL leaves nothing after either ADD");
    }
}

#[test]
fn runtime_config_applies_unless_a_top_level_field_is_given_and_high_rates_use_rate64() {
    let p = Pair::new("bw-rc");
    let rc = json!({"bandwidth": {"ingressRate": 16_000_000, "ingressBurst": 400_000}});
    let c = p.conf(json!({"runtimeConfig": rc}));
    p.run(&rcni_bin("bandwidth"), "ADD", &c).ok();
    assert_eq!(p.tc(&["qdisc", "show", "dev", &p.host])[0]["options"]["rate"], 2_000_000);
    assert!(p.ifbs().is_empty(), "no egress limit, no ifb");
    p.run(&rcni_bin("bandwidth"), "CHECK", &c).ok();
    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();

    // Top level wins: 40 Gbit/s needs the 64-bit rate attribute (5e9 B/s does not fit in 32 bits).
    let c = p.conf(json!({"ingressRate": 40_000_000_000u64, "ingressBurst": 40_000_000, "runtimeConfig": rc}));
    p.run(&rcni_bin("bandwidth"), "ADD", &c).ok();
    assert_eq!(p.tc(&["qdisc", "show", "dev", &p.host])[0]["options"]["rate"], 5_000_000_000u64);
    p.run(&rcni_bin("bandwidth"), "CHECK", &c).ok();
    p.run(&rcni_bin("bandwidth"), "DEL", &c).ok();
    assert!(p.host_qdiscs().is_empty());
}
