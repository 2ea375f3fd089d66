//! The bridge plugin (with our host-local) through our cnitool, in throwaway node and pod namespaces:
//! connectivity, CHECK, DEL, rollback, result shapes, masquerade state, and a differential run against
//! the reference bridge.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, ip_files, rcni_bin};

fn rcni_path() -> Vec<PathBuf> {
    vec![rcni_bin("bridge").parent().unwrap().to_path_buf()]
}

/// A conf/ example with its dataDir moved into `data`.
fn example(file: &str, data: &Path) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf").join(file)).unwrap();
    let text = text.replace("/var/lib/cni/networks", &data.to_string_lossy());
    serde_json::from_str(&text).unwrap()
}

/// (rules, elements) in our masquerade table inside the node.
fn masq_state(node: &NodeNs) -> (usize, usize) {
    let out = node.cmd("nft").args(["-j", "list", "table", "inet", "rcni"]).run();
    if !out.success() {
        return (0, 0);
    }
    let v = out.json();
    let mut rules = 0;
    let mut elems = 0;
    for item in v["nftables"].as_array().unwrap() {
        if item.get("rule").is_some() {
            rules += 1;
        }
        if let Some(set) = item.get("set") {
            if set["name"].as_str().unwrap_or("").starts_with("pods") {
                elems += set.get("elem").and_then(|e| e.as_array()).map_or(0, |a| a.len());
            }
        }
    }
    (rules, elems)
}

fn v4_of(pod: &PodNs, dev: &str) -> String {
    pod.addrs(dev).into_iter().find(|a| a.family == "inet").map(|a| a.local).expect("an IPv4 address")
}

fn v6_of(pod: &PodNs, dev: &str) -> String {
    pod.addrs(dev)
        .into_iter()
        .find(|a| a.family == "inet6" && a.scope == "global")
        .map(|a| a.local)
        .expect("a global IPv6 address")
}

struct Net {
    node: NodeNs,
    data: TempDir,
    tool: Cnitool,
    name: String,
    _conf: NetConfDir,
}

impl Net {
    fn from_example(file: &str, tag: &str) -> Net {
        let data = TempDir::new(tag);
        let conflist = example(file, data.path());
        Self::new(conflist, data, tag)
    }

    fn new(conflist: Value, data: TempDir, tag: &str) -> Net {
        let node = NodeNs::new(tag);
        let name = conflist["name"].as_str().unwrap().to_string();
        let conf = NetConfDir::new(&conflist);
        let tool = Cnitool::new(&conf, &rcni_path());
        Net { node, data, tool, name, _conf: conf }
    }

    fn run(&self, cmd: &str, pod: &PodNs, cid: &str) -> support::Output {
        self.tool.run_with(&self.node, &[cmd, &self.name, pod.path_str()], &[("CNI_CONTAINERID", cid)])
    }
}

#[test]
fn two_pods_ipv4_talk_check_and_clean_up() {
    let net = Net::from_example("10-bridge.conflist", "br-two");
    let (a, b) = (PodNs::new("br-two-a"), PodNs::new("br-two-b"));
    let ra = net.run("add", &a, "pod-a").ok().json();
    net.run("add", &b, "pod-b").ok();
    assert_eq!(ra["interfaces"][0]["name"], "cni0");
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(ra["interfaces"][2]["sandbox"], a.path_str());
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(ra["ips"][0]["gateway"], "10.88.0.1");
    let (ip_a, ip_b) = (v4_of(&a, "eth0"), v4_of(&b, "eth0"));
    assert_ne!(ip_a, ip_b);
    assert!(net.node.addr_cidrs("cni0").contains(&"10.88.0.1/16".to_string()), "gateway on the bridge");
    assert_eq!(a.default_gateway("-4").as_deref(), Some("10.88.0.1"));
    assert_eq!(a.sysctl("net.ipv4.conf.eth0.arp_notify"), "1", "gratuitous ARP on up, as the reference sets");
    // The host end is a bridge port: no IPv6 address of its own (no per-port DAD, router solicitation, MLD
    // on the node), while the pod's end keeps its IPv6 link-local address. The MAC in the result is the
    // kernel's (read from the creation's echo).
    let host_end = net.node.link(ra["interfaces"][1]["name"].as_str().unwrap()).expect("host end");
    assert_eq!(ra["interfaces"][1]["mac"], host_end.address.as_str());
    assert_eq!(host_end.master.as_deref(), Some("cni0"));
    assert_eq!(host_end.raw["inet6_addr_gen_mode"].as_str(), Some("none"), "{:?}", host_end.raw);
    assert!(net.node.addrs(&host_end.ifname).iter().all(|x| x.family != "inet6"), "no IPv6 address on the port");
    assert!(
        a.addrs("eth0").iter().any(|x| x.family == "inet6" && x.scope == "link"),
        "the pod keeps its IPv6 link-local address"
    );
    // DAD off on the pod's interface (no "enabledad"), IPv4-only as well, as the reference sets it: the
    // link-local address is valid at once, not tentative while its probe is flooded to every port.
    assert_eq!(a.sysctl("net.ipv6.conf.eth0.accept_dad"), "0");
    let tentative = a.ip(&["-6", "addr", "show", "dev", "eth0", "tentative"]).ok().stdout;
    assert!(tentative.trim().is_empty(), "no tentative address right after ADD: {tentative}");
    assert!(a.ping(&ip_b), "pod a reaches pod b");
    assert!(b.ping(&ip_a), "pod b reaches pod a");
    assert!(a.ping("10.88.0.1"), "pod a reaches the gateway");
    assert_eq!(net.node.link("cni0").unwrap().mtu, 1500);
    assert_eq!(masq_state(&net.node), (1, 2), "one rule (IPv4-only network), one element per pod");

    net.run("check", &a, "pod-a").ok();
    net.run("check", &b, "pod-b").ok();
    for (pod, cid) in [(&a, "pod-a"), (&b, "pod-b")] {
        net.run("del", pod, cid).ok();
        net.run("del", pod, cid).ok();
        assert!(pod.link("eth0").is_none());
    }
    assert!(net.node.links().iter().all(|l| l.kind.as_deref() != Some("veth")), "no veth left");
    assert!(ip_files(net.data.path()).is_empty(), "no IP file left");
    assert_eq!(masq_state(&net.node).1, 0, "no masquerade element left");
    assert!(net.node.link("cni0").is_some(), "the bridge stays");
}

/// The pod's gratuitous ARP leaves once the bridge forwards from the pod's port (not inside the up request,
/// where it is lost now and then) and reaches the neighbours: pod a holds a stale, wrong entry for the
/// address pod b is about to get; after b's ADD, a's entry carries b's MAC within 1 s.
#[test]
fn a_new_pod_announces_its_address_to_a_neighbour_with_a_stale_entry() {
    let net = Net::from_example("10-bridge.conflist", "br-garp");
    let (a, b) = (PodNs::new("br-garp-a"), PodNs::new("br-garp-b"));
    net.run("add", &a, "pod-a").ok();
    // host-local hands out the address after a's next.
    let ip_a: std::net::Ipv4Addr = v4_of(&a, "eth0").parse().unwrap();
    let next = std::net::Ipv4Addr::from(u32::from(ip_a) + 1).to_string();
    let neigh = || a.ip_json(&["neigh", "show", &next, "dev", "eth0"]);
    a.ip(&["neigh", "replace", &next, "lladdr", "02:00:00:00:de:ad", "nud", "stale", "dev", "eth0"]).ok();
    assert_eq!(neigh()[0]["lladdr"], "02:00:00:00:de:ad");
    let rb = net.run("add", &b, "pod-b").ok().json();
    let answered = std::time::Instant::now();
    assert_eq!(v4_of(&b, "eth0"), next);
    let mac_b = rb["interfaces"][2]["mac"].as_str().unwrap().to_string();
    loop {
        let seen = neigh()[0]["lladdr"].as_str().unwrap_or_default().to_string();
        if seen == mac_b {
            break;
        }
        assert!(answered.elapsed() < std::time::Duration::from_secs(1), "a still has {seen} for {next}, not {mac_b}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn dual_stack_pods_talk_over_both_families() {
    let net = Net::from_example("20-bridge-dualstack.conflist", "br-ds");
    let (a, b) = (PodNs::new("br-ds-a"), PodNs::new("br-ds-b"));
    let r = net.run("add", &a, "ds-a").ok().json();
    net.run("add", &b, "ds-b").ok();
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    assert_eq!(r["ips"][1]["gateway"], "fd00:89::1");
    let routes = r["routes"].as_array().unwrap();
    assert!(routes.contains(&json!({"dst": "0.0.0.0/0", "gw": "10.89.0.1"})), "{routes:?}");
    assert!(routes.contains(&json!({"dst": "::/0", "gw": "fd00:89::1"})), "{routes:?}");
    assert!(a.ping(&v4_of(&b, "eth0")));
    assert!(a.wait_ping(&v6_of(&b, "eth0"), std::time::Duration::from_secs(5)), "IPv6 between pods");
    assert!(b.wait_ping("fd00:89::1", std::time::Duration::from_secs(5)), "IPv6 gateway");
    assert_eq!(a.default_gateway("-6").as_deref(), Some("fd00:89::1"));
    net.run("check", &a, "ds-a").ok();
    net.run("del", &a, "ds-a").ok();
    net.run("del", &b, "ds-b").ok();
    assert!(ip_files(net.data.path()).is_empty());
    assert_eq!(masq_state(&net.node).1, 0);
}

#[test]
fn chained_loopback_example() {
    let net = Net::from_example("30-bridge-loopback.conflist", "br-lo");
    let pod = PodNs::new("br-lo-p");
    let r = net.run("add", &pod, "lo-1").ok().json();
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][2]["name"], "eth0", "loopback passes the bridge result through");
    assert!(pod.link("lo").unwrap().is_up());
    assert!(pod.ping("10.90.0.1"));
    net.run("check", &pod, "lo-1").ok();
    net.run("del", &pod, "lo-1").ok();
    assert!(!pod.link("lo").unwrap().is_up());
    assert!(ip_files(net.data.path()).is_empty());
}

fn simple_conf(version: &str, data: &Path, extra: Value) -> Value {
    let mut plugin = json!({
        "type": "bridge", "bridge": "br0", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.66.0.0/24", "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": data.to_string_lossy()}
    });
    for (k, v) in extra.as_object().unwrap() {
        plugin[k] = v.clone();
    }
    json!({"cniVersion": version, "name": "shapes", "plugins": [plugin]})
}

#[test]
fn result_shapes_per_version() {
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let data = TempDir::new("br-shape");
        let net = Net::new(simple_conf(version, data.path(), json!({})), data, "br-shape");
        let pod = PodNs::new("br-shape-p");
        let r = net.run("add", &pod, "shape").ok().json();
        assert_eq!(r["cniVersion"], version);
        let ifs = r["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 3);
        assert_eq!(ifs[0]["name"], "br0");
        assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
        assert!(ifs[1].get("sandbox").is_none());
        for i in ifs {
            assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{i}");
        }
        let ip = &r["ips"][0];
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip["gateway"], "10.66.0.1");
        assert!(ip["address"].as_str().unwrap().starts_with("10.66.0."));
        assert_eq!(ip.get("version").is_some(), version.starts_with("0."), "{version}: {ip}");
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert_eq!(r.get("dns").is_some(), version.starts_with("0."), "0.x always prints dns: {r}");
        if version != "0.3.1" {
            net.run("check", &pod, "shape").ok();
        }
        net.run("del", &pod, "shape").ok();
    }
}

fn err_msg(out: &support::Output) -> String {
    out.stderr.clone()
}

#[test]
fn check_fails_when_address_route_or_masquerade_is_gone() {
    let data = TempDir::new("br-chk");
    let net = Net::new(simple_conf("1.1.0", data.path(), json!({})), data, "br-chk");
    let pod = PodNs::new("br-chk-p");
    let r = net.run("add", &pod, "chk").ok().json();
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();

    pod.ip(&["route", "del", "default"]).ok();
    let out = net.run("check", &pod, "chk").fails();
    assert!(err_msg(&out).contains("route 0.0.0.0/0 via 10.66.0.1 is missing"), "{out:?}");
    pod.ip(&["route", "add", "default", "via", "10.66.0.1"]).ok();
    net.run("check", &pod, "chk").ok();

    let elems = net.node.cmd("nft").args(["-j", "list", "table", "inet", "rcni"]).run().ok().json();
    let set = elems["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i.get("set").filter(|s| s["name"].as_str().unwrap().starts_with("pods4")))
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let ip = addr.split('/').next().unwrap();
    net.node.cmd("nft").args(["delete", "element", "inet", "rcni", &set, &format!("{{ {ip} }}")]).run().ok();
    let out = net.run("check", &pod, "chk").fails();
    assert!(err_msg(&out).contains("masquerade"), "{out:?}");

    pod.ip(&["addr", "del", &addr, "dev", "eth0"]).ok();
    let out = net.run("check", &pod, "chk").fails();
    assert!(err_msg(&out).contains(&format!("address {addr} is missing")), "{out:?}");
    net.run("del", &pod, "chk").ok();
}

/// Nothing of the pod is left: no veth in node or pod, no IP file, no masquerade element.
fn assert_clean(net: &Net, pod: &PodNs) {
    assert!(pod.link("eth0").is_none(), "pod still has eth0");
    assert!(net.node.links().iter().all(|l| l.kind.as_deref() != Some("veth")), "veth left in the node");
    assert!(ip_files(net.data.path()).is_empty(), "IP files left: {:?}", ip_files(net.data.path()));
    assert_eq!(masq_state(&net.node).1, 0, "masquerade elements left");
}

#[test]
fn failed_add_rolls_back_ipam_exhausted() {
    let data = TempDir::new("br-rb1");
    let mut conf = simple_conf("1.1.0", data.path(), json!({}));
    conf["plugins"][0]["ipam"]["subnet"] = json!("10.67.0.0/30"); // one usable address (.2; .1 is the gateway)
    let net = Net::new(conf, data, "br-rb1");
    let (a, b) = (PodNs::new("br-rb1-a"), PodNs::new("br-rb1-b"));
    net.run("add", &a, "first").ok();
    let out = net.run("add", &b, "second").fails();
    assert!(err_msg(&out).contains("no IP addresses available"), "{out:?}");
    assert!(b.link("eth0").is_none(), "the failed pod has no eth0");
    assert_eq!(net.node.links().iter().filter(|l| l.kind.as_deref() == Some("veth")).count(), 1);
    assert_eq!(ip_files(net.data.path()).len(), 1);
    assert_eq!(masq_state(&net.node).1, 1);
    net.run("del", &a, "first").ok();
    net.run("del", &b, "second").ok();
    assert_clean(&net, &b);
}

#[test]
fn failed_add_rolls_back_gateway_mismatch() {
    let data = TempDir::new("br-rb2");
    let net = Net::new(simple_conf("1.1.0", data.path(), json!({})), data, "br-rb2");
    net.node.ip(&["link", "add", "br0", "type", "bridge"]).ok();
    net.node.ip(&["addr", "add", "10.99.3.1/24", "dev", "br0"]).ok();
    let pod = PodNs::new("br-rb2-p");
    let out = net.run("add", &pod, "gw").fails();
    let msg = err_msg(&out);
    assert!(msg.contains("already has an IP address different from 10.66.0.1/24"), "{msg}");
    assert!(
        msg.contains("10.99.3.1/24") && msg.contains("forceAddress"),
        "the error names both and the way out: {msg}"
    );
    assert_clean(&net, &pod);
    // forceAddress replaces the old address instead.
    let conf = NetConfDir::new(&simple_conf("1.1.0", net.data.path(), json!({"forceAddress": true})));
    let forced = Cnitool::new(&conf, &rcni_path());
    forced.run_with(&net.node, &["add", "shapes", pod.path_str()], &[("CNI_CONTAINERID", "gw")]).ok();
    let addrs = net.node.addr_cidrs("br0");
    assert!(addrs.contains(&"10.66.0.1/24".to_string()) && !addrs.contains(&"10.99.3.1/24".to_string()), "{addrs:?}");
    forced.run_with(&net.node, &["del", "shapes", pod.path_str()], &[("CNI_CONTAINERID", "gw")]).ok();
}

#[test]
fn failed_add_rolls_back_ifname_present() {
    let data = TempDir::new("br-rb3");
    let net = Net::new(simple_conf("1.1.0", data.path(), json!({})), data, "br-rb3");
    let pod = PodNs::new("br-rb3-p");
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"]).ok();
    let out = net.run("add", &pod, "dup").fails();
    assert!(err_msg(&out).contains("already exists"), "{out:?}");
    assert!(net.node.links().iter().all(|l| l.kind.as_deref() != Some("veth")), "no veth in the node");
    assert!(ip_files(net.data.path()).is_empty());
    assert_eq!(masq_state(&net.node).1, 0);
    assert!(pod.link("eth0").is_some(), "the pod's own eth0 is untouched");
}

#[test]
fn hundred_pods_one_rule_hundred_elements() {
    let data = TempDir::new("br-100");
    let mut conf = simple_conf("1.1.0", data.path(), json!({}));
    conf["plugins"][0]["ipam"]["subnet"] = json!("10.68.0.0/16");
    let net = Net::new(conf, data, "br-100");
    let pods: Vec<PodNs> = (0..100).map(|_| PodNs::new("br-100-p")).collect();
    for (i, p) in pods.iter().enumerate() {
        net.run("add", p, &format!("pod{i}")).ok();
    }
    assert_eq!(masq_state(&net.node), (1, 100), "one IPv4 rule, 100 elements");
    for (i, p) in pods.iter().enumerate() {
        net.run("del", p, &format!("pod{i}")).ok();
    }
    assert_eq!(masq_state(&net.node), (1, 0));
    assert!(ip_files(net.data.path()).is_empty());
}

/// The result with what legitimately differs between two runs blanked: MACs and the host veth's name.
/// An empty "dns" is dropped too: Debian's reference (libcni 1.0.1) prints `"dns": {}` in 1.x results,
/// current libcni omits it (as we do).
fn normalized(mut r: Value) -> Value {
    for i in r["interfaces"].as_array_mut().unwrap() {
        i["mac"] = json!("<mac>");
        if i.get("sandbox").is_none() && i["name"].as_str().unwrap().starts_with("veth") {
            i["name"] = json!("<host-veth>");
        }
    }
    if r.get("dns") == Some(&json!({})) {
        r.as_object_mut().unwrap().remove("dns");
    }
    r
}

/// The pod interface's sysctls that the bridge plugin sets. Not `keep_addr_on_down`: rcni sets it for
/// IPv6 pods as the reference does since v1.7.0, Debian's v1.1.1 does not.
fn pod_sysctls(pod: &PodNs) -> Vec<String> {
    [
        "ipv6.conf.eth0.accept_dad",
        "ipv6.conf.eth0.enhanced_dad",
        "ipv6.conf.eth0.disable_ipv6",
        "ipv6.conf.lo.disable_ipv6",
        "ipv4.conf.eth0.arp_notify",
    ]
    .iter()
    .map(|k| format!("{k}={}", pod.sysctl(&format!("net.{k}"))))
    .collect()
}

/// (addresses, routes) of the pod's eth0, without link-local addresses.
fn pod_state(pod: &PodNs) -> (Vec<String>, Vec<String>) {
    let mut addrs: Vec<String> =
        pod.addrs("eth0").into_iter().filter(|a| a.scope == "global").map(|a| a.cidr()).collect();
    addrs.sort();
    let mut routes: Vec<String> = pod
        .routes()
        .into_iter()
        .filter(|r| !r.dst.starts_with("fe80"))
        .map(|r| format!("{} via {:?} dev {:?}", r.dst, r.gateway, r.dev))
        .collect();
    routes.sort();
    (addrs, routes)
}

#[test]
fn differential_against_reference_bridge() {
    let reference = support::reference_plugin("bridge").parent().unwrap().to_path_buf();
    let dual = json!([[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd00:70::/64"}]]);
    let v4 = json!([[{"subnet": "10.70.0.0/24"}]]);
    let cases = [
        (json!({"isGateway": true}), &dual),
        (json!({"isDefaultGateway": true, "hairpinMode": true, "mtu": 1400}), &dual),
        (json!({"isGateway": true}), &v4),
        (json!({"isGateway": true, "enabledad": true}), &v4),
    ];
    for (extra, ranges) in cases {
        let mut results = Vec::new();
        let mut states = Vec::new();
        let mut sysctls = Vec::new();
        for cni_path in [vec![reference.clone()], rcni_path()] {
            let data = TempDir::new("br-diff");
            let mut conf = simple_conf("1.0.0", data.path(), extra.clone());
            conf["plugins"][0]["ipMasq"] = json!(false);
            conf["plugins"][0]["ipam"]["ranges"] = ranges.clone();
            conf["plugins"][0]["ipam"].as_object_mut().unwrap().remove("subnet");
            if extra.get("isDefaultGateway").is_some() {
                // The reference fails when IPAM also gives a gateway-less default route (see the next test).
                conf["plugins"][0]["ipam"].as_object_mut().unwrap().remove("routes");
            }
            let node = NodeNs::new("br-diff");
            let nc = NetConfDir::new(&conf);
            let tool = Cnitool::new(&nc, &cni_path);
            let pod = PodNs::new("br-diff-p");
            let env = [("CNI_CONTAINERID", "diff")];
            let mut r = tool.run_with(&node, &["add", "shapes", pod.path_str()], &env).ok().json();
            assert_eq!(r["interfaces"][2]["sandbox"], pod.path_str());
            r["interfaces"][2]["sandbox"] = json!("<pod netns>");
            results.push(normalized(r));
            states.push(pod_state(&pod));
            sysctls.push(pod_sysctls(&pod));
            let br = node.link("br0").unwrap();
            states.push((
                node.addr_cidrs("br0").into_iter().filter(|a| !a.starts_with("fe80")).collect(),
                vec![br.mtu.to_string()],
            ));
            tool.run_with(&node, &["del", "shapes", pod.path_str()], &env).ok();
            drop(data);
        }
        assert_eq!(results[0], results[1], "result differs from the reference for {extra}");
        assert_eq!(states[0], states[2], "pod addresses/routes differ from the reference for {extra}");
        assert_eq!(states[1], states[3], "bridge state differs from the reference for {extra}");
        assert_eq!(sysctls[0], sysctls[1], "pod sysctls differ from the reference for {extra} {ranges}");
    }
}

/// The reference programs the default route twice when IPAM gives one without a gateway and
/// isDefaultGateway adds another, and fails with "file exists" (leaving the veth behind). We program it once.
#[test]
fn default_gateway_plus_ipam_default_route_works_unlike_reference() {
    let data = TempDir::new("br-dgw");
    let conf = simple_conf("1.0.0", data.path(), json!({"isDefaultGateway": true, "ipMasq": false}));
    let net = Net::new(conf, data, "br-dgw");
    let pod = PodNs::new("br-dgw-p");
    let r = net.run("add", &pod, "dgw").ok().json();
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "0.0.0.0/0", "gw": "10.66.0.1"}]));
    assert_eq!(pod.default_gateway("-4").as_deref(), Some("10.66.0.1"));
    net.run("check", &pod, "dgw").ok();
    net.run("del", &pod, "dgw").ok();
}

/// A DEL that has neither the pod's netns (gone) nor a prevResult (direct call, as nerdctl/ctr do) still
/// removes everything: the host veth by its derived name, the masquerade entry by owner, the IP.
#[test]
fn del_without_netns_or_prev_result_cleans_everything() {
    let data = TempDir::new("br-bare");
    let conf = simple_conf("1.1.0", data.path(), json!({}));
    let net = Net::new(conf.clone(), data, "br-bare");
    {
        let pod = PodNs::new("br-bare-p");
        net.run("add", &pod, "bare").ok();
        assert_eq!(masq_state(&net.node).1, 1);
    } // the pod's netns is deleted here; its veth end goes with it, the host end too
    let mut plugin = conf["plugins"][0].clone();
    plugin["cniVersion"] = json!("1.1.0");
    plugin["name"] = json!("shapes");
    for netns in ["", "/run/netns/rcni-br-bare-gone"] {
        let env = support::cni_env("DEL", "bare", netns, "eth0", &rcni_path());
        net.node.run_plugin(&rcni_bin("bridge"), &env, plugin.to_string().as_bytes()).ok();
    }
    assert_eq!(masq_state(&net.node).1, 0, "masquerade entry removed by owner");
    assert!(ip_files(net.data.path()).is_empty(), "IP released");
    assert!(net.node.links().iter().all(|l| l.kind.as_deref() != Some("veth")));
}

/// macspoofchk: frames from a pod with a forged source MAC are dropped at its bridge port; the rules are
/// the reference's (table bridge nat), checked by CHECK and removed by DEL.
#[test]
fn macspoofchk_drops_forged_source_macs() {
    let data = TempDir::new("br-spoof");
    let conf = simple_conf("1.1.0", data.path(), json!({"macspoofchk": true, "ipMasq": false}));
    let net = Net::new(conf, data, "br-spoof");
    let (a, b) = (PodNs::new("br-spoof-a"), PodNs::new("br-spoof-b"));
    net.run("add", &a, "spoof-a").ok();
    net.run("add", &b, "spoof-b").ok();
    let chains = net.node.cmd("nft").args(["list", "table", "bridge", "nat"]).run().ok().stdout;
    assert!(chains.contains("chain cni-br-iface-spoof-a-eth0-mac"), "{chains}");
    let b_ip = v4_of(&b, "eth0");
    assert!(a.ping(&b_ip));
    let mac = a.link("eth0").unwrap().address;
    a.ip(&["link", "set", "eth0", "address", "02:00:00:00:be:ef"]).ok();
    a.ip(&["neigh", "flush", "dev", "eth0"]).ok();
    assert!(!a.ping(&b_ip), "a forged source MAC is dropped");
    a.ip(&["link", "set", "eth0", "address", &mac]).ok();
    assert!(a.wait_ping(&b_ip, std::time::Duration::from_secs(3)), "the real MAC passes again");
    net.run("check", &a, "spoof-a").ok();
    net.run("del", &a, "spoof-a").ok();
    net.run("del", &b, "spoof-b").ok();
    let left = net.node.cmd("nft").args(["list", "table", "bridge", "nat"]).run().ok().stdout;
    assert!(!left.contains("cni-br-iface-"), "{left}");
}

/// rcni's own host-local of this build runs in-process (no child process); any other host-local on
/// CNI_PATH — here the reference's — is exec'd as the spec says. Both produce working pods.
#[test]
fn host_local_runs_in_process_only_when_it_is_ours() {
    let reference = support::reference_plugin("host-local");
    for (foreign, tag) in [(false, "br-ipam-own"), (true, "br-ipam-ref")] {
        let data = TempDir::new(tag);
        let conf = simple_conf("1.0.0", data.path(), json!({}));
        let node = NodeNs::new(tag);
        let host_local = if foreign { reference.clone() } else { rcni_bin("host-local") };
        let dir = support::PluginDir::new(&[("bridge", rcni_bin("bridge")), ("host-local", host_local)]);
        let nc = NetConfDir::new(&conf);
        let tool = Cnitool::new(&nc, &[dir.path().to_path_buf()]);
        let log = data.join("trace.log");
        let log_s = log.to_string_lossy().into_owned();
        let env = [("CNI_CONTAINERID", "ipam"), ("RCNI_TRACE", "1"), ("RCNI_LOG_FILE", log_s.as_str())];
        let pod = PodNs::new(tag);
        let r = tool.run_with(&node, &["add", "shapes", pod.path_str()], &env).ok().json();
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.66.0."));
        assert_eq!(ip_files(data.path()).len(), 1);
        let trace = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(trace.contains("IPAM in-process"), !foreign, "{trace}");
        tool.run_with(&node, &["del", "shapes", pod.path_str()], &env).ok();
        assert!(ip_files(data.path()).is_empty());
    }
}

/// Runs the bridge binary directly, the way a runtime does: waits for its exit and its stdout, but not for
/// the background work it leaves (the harness's `run` would wait for that too).
fn bridge_raw(node: &NodeNs, cmd: &str, pod: &PodNs, cid: &str, conf: &Value) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let env = support::cni_env(cmd, cid, pod.path_str(), "eth0", &rcni_path());
    rcni::net::detached::adopt_helpers().expect("become a subreaper");
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name()])
        .arg(rcni_bin("bridge"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        // A subreaper (above) that reaps helpers (support's harness): background deletion stays on.
        .env(rcni::net::detached::REAPER_ENV, std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bridge");
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    child.wait_with_output().expect("bridge output")
}

fn plugin_conf(list: &Value) -> Value {
    let mut p = list["plugins"][0].clone();
    p["cniVersion"] = list["cniVersion"].clone();
    p["name"] = list["name"].clone();
    p
}

#[test]
fn del_frees_the_names_at_once_and_the_pair_goes_in_the_background() {
    let data = TempDir::new("br-bgdel");
    let conf = plugin_conf(&simple_conf("1.0.0", data.path(), json!({})));
    let node = NodeNs::new("br-bgdel");
    let pod = PodNs::new("br-bgdel-p");
    let veths = |node: &NodeNs| node.links().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    let add = bridge_raw(&node, "ADD", &pod, "bg-1", &conf);
    assert!(add.status.success(), "ADD: {}", String::from_utf8_lossy(&add.stdout));
    let del = bridge_raw(&node, "DEL", &pod, "bg-1", &conf);
    assert!(del.status.success(), "DEL: {}", String::from_utf8_lossy(&del.stdout));
    assert!(del.stdout.is_empty(), "DEL prints nothing on success");
    // The pod's name is free at once (the old end, if still there, is down under another name), and the
    // address is released: a new ADD of the same attachment right away gets the same name and works.
    assert!(pod.link("eth0").is_none());
    assert!(pod.links().iter().filter(|l| l.ifname.starts_with("rcnidel")).all(|l| !l.is_up()));
    let again = bridge_raw(&node, "ADD", &pod, "bg-1", &conf);
    assert!(again.status.success(), "ADD right after DEL: {}", String::from_utf8_lossy(&again.stdout));
    assert!(pod.ping("10.66.0.1"), "the new attachment works");
    // The detached child finishes the old pair: eventually one pair only, nothing retired left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while (veths(&node) != 1 || pod.links().iter().any(|l| l.ifname.starts_with("rcnidel")))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(veths(&node), 1, "the old pair is deleted in the background");
    assert!(!pod.links().iter().any(|l| l.ifname.starts_with("rcnidel")), "no retired end left");
    // The harness waits for background work: after its DEL nothing is left at all.
    let tool_del = node.run_plugin(
        &rcni_bin("bridge"),
        &support::cni_env("DEL", "bg-1", pod.path_str(), "eth0", &rcni_path()),
        conf.to_string().as_bytes(),
    );
    tool_del.ok();
    assert_eq!(veths(&node), 0, "no veth left");
    assert!(pod.links().iter().all(|l| l.ifname == "lo"), "only lo left in the pod");
    assert!(ip_files(data.path()).is_empty(), "no IP file left");
}

#[test]
fn del_in_line_when_background_deletion_is_off() {
    let data = TempDir::new("br-fgdel");
    let conf = plugin_conf(&simple_conf("1.0.0", data.path(), json!({"deleteLinkInBackground": false})));
    let node = NodeNs::new("br-fgdel");
    let pod = PodNs::new("br-fgdel-p");
    assert!(bridge_raw(&node, "ADD", &pod, "fg-1", &conf).status.success());
    let del = bridge_raw(&node, "DEL", &pod, "fg-1", &conf);
    assert!(del.status.success(), "DEL: {}", String::from_utf8_lossy(&del.stdout));
    // No waiting: the pair is gone when DEL returns.
    assert!(node.links().iter().all(|l| l.kind.as_deref() != Some("veth")), "no veth left");
    assert!(pod.links().iter().all(|l| l.ifname == "lo"), "only lo left in the pod");
}

#[test]
fn a_repeated_add_of_a_live_attachment_fails_and_leaves_it_working() {
    let data = TempDir::new("br-twice");
    let net = Net::new(simple_conf("1.1.0", data.path(), json!({})), data, "br-twice");
    let pod = PodNs::new("br-twice-p");
    net.run("add", &pod, "twice").ok();
    let host_veths = |net: &Net| {
        net.node
            .links()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth"))
            .map(|l| l.ifindex)
            .collect::<Vec<_>>()
    };
    let before = host_veths(&net);
    let out = net.run("add", &pod, "twice").fails();
    assert!(err_msg(&out).contains("already exists"), "{out:?}");
    assert_eq!(host_veths(&net), before, "the live attachment's host end is untouched");
    assert_eq!(ip_files(net.data.path()).len(), 1, "the live attachment keeps its address reservation");
    assert!(pod.ping("10.66.0.1"), "the live attachment still works");
}
