//! The portmap plugin with real traffic, in throwaway namespaces: a node with our bridge (pods A and B on
//! it) and an external client netns on a veth (198.18.0.0/24). Servers and clients are sockets this test
//! opens inside those namespaces; each server answers with the peer address it saw, so every case asserts
//! both reachability and who the pod thinks is talking (masqueraded or not).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{NetNs, NodeNs, Output, PodNs, TempDir, cni_env, rcni_bin};

fn portmap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portmap"))
}

fn plugin_path() -> Vec<PathBuf> {
    vec![rcni_bin("bridge").parent().unwrap().to_path_buf()]
}

const NODE_EXT: &str = "198.18.0.1";
const CLIENT: &str = "198.18.0.2";
const NODE_EXT6: &str = "fd18::1";
const CLIENT6: &str = "fd18::2";

/// A server socket inside a namespace, answering every TCP connection / UDP datagram with the peer's
/// address (and a name), until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn tcp(ns: &NetNs, addr: &str, name: &str) -> Server {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = ns.run_inside(|| TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { stop, thread: Some(thread) }
    }

    fn udp(ns: &NetNs, addr: &str, name: &str) -> Server {
        let addr: SocketAddr = addr.parse().unwrap();
        let sock = ns.run_inside(|| UdpSocket::bind(addr)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        Server { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `addr` over TCP; the server's answer, or the error.
fn tcp_ask(ns: &NetNs, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run_inside(|| {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).map_err(|e| e.to_string())?;
        Ok(s)
    })
}

/// Sends one datagram from inside `ns` (from `from`, e.g. a fixed source port) and waits for the answer.
fn udp_ask_from(ns: &NetNs, from: &str, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let from: SocketAddr = from.parse().unwrap();
    ns.run_inside(|| {
        let s = UdpSocket::bind(from).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(b"hi", addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// The node with a bridge network, pods on it and an external client.
struct Topo {
    node: NodeNs,
    client: PodNs,
    data: TempDir,
    network: String,
    subnet: &'static str,
    subnet6: Option<&'static str>,
    pods: Vec<(String, PodNs, Value)>,
}

impl Topo {
    fn new(tag: &str) -> Topo {
        Topo::with(tag, "pmnet", "10.89.0.0/24", None)
    }

    fn with(tag: &str, network: &str, subnet: &'static str, subnet6: Option<&'static str>) -> Topo {
        let node = NodeNs::new(tag);
        let client = PodNs::new(tag);
        node.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", client.name()]).ok();
        node.ip(&["addr", "add", &format!("{NODE_EXT}/24"), "dev", "ext0"]).ok();
        node.ip(&["link", "set", "ext0", "up"]).ok();
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]).ok();
        client.ip(&["link", "set", "eth0", "up"]).ok();
        client.ip(&["link", "set", "lo", "up"]).ok();
        if subnet6.is_some() {
            node.ip(&["addr", "add", &format!("{NODE_EXT6}/64"), "dev", "ext0", "nodad"]).ok();
            client.ip(&["addr", "add", &format!("{CLIENT6}/64"), "dev", "eth0", "nodad"]).ok();
            node.set_sysctl("net.ipv6.conf.all.forwarding", "1");
        }
        node.set_sysctl("net.ipv4.ip_forward", "1");
        Topo { node, client, data: TempDir::new(tag), network: network.to_string(), subnet, subnet6, pods: vec![] }
    }

    fn bridge_conf(&self, hairpin: bool) -> Value {
        let mut ranges = vec![json!([{"subnet": self.subnet}])];
        let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
        if let Some(s6) = self.subnet6 {
            ranges.push(json!([{"subnet": s6}]));
            routes.push(json!({"dst": "::/0"}));
        }
        json!({"cniVersion": "1.0.0", "name": self.network, "type": "bridge", "bridge": "cni0",
            "isGateway": true, "hairpinMode": hairpin,
            "ipam": {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": self.data.path()}})
    }

    /// Attaches a new pod with our bridge; returns its index.
    fn add_pod(&mut self, id: &str, hairpin: bool) -> usize {
        let pod = PodNs::new("pm-pod");
        pod.ip(&["link", "set", "lo", "up"]).ok();
        let env = cni_env("ADD", id, pod.path_str(), "eth0", &plugin_path());
        let out =
            self.node.run_plugin(&rcni_bin("bridge"), &env, &serde_json::to_vec(&self.bridge_conf(hairpin)).unwrap());
        let result = out.ok().json();
        self.pods.push((id.to_string(), pod, result));
        self.pods.len() - 1
    }

    fn pod(&self, i: usize) -> &PodNs {
        &self.pods[i].1
    }

    fn ip(&self, i: usize) -> String {
        ip_of(&self.pods[i].2, true)
    }

    fn ip6(&self, i: usize) -> String {
        ip_of(&self.pods[i].2, false)
    }

    fn gateway(&self) -> String {
        self.pods[0].2["ips"][0]["gateway"].as_str().unwrap().to_string()
    }

    fn portmap_conf(&self, i: usize, mappings: Value, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": self.network, "type": "portmap",
            "runtimeConfig": {"portMappings": mappings}, "prevResult": self.pods[i].2});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn portmap(&self, cmd: &str, i: usize, conf: &Value) -> Output {
        self.portmap_as(&portmap_bin(), cmd, &self.pods[i].0, self.pod(i).path_str(), conf)
    }

    fn portmap_as(&self, bin: &Path, cmd: &str, id: &str, netns: &str, conf: &Value) -> Output {
        let env = cni_env(cmd, id, netns, "eth0", &plugin_path());
        self.node.run_plugin(bin, &env, &serde_json::to_vec(conf).unwrap())
    }

    /// `nft list table inet rcni` map/set elements lines mentioning `needle`.
    fn elements_with(&self, needle: &str) -> usize {
        let out = self.node.cmd("nft").args(["-j", "list", "table", "inet", "rcni"]).run();
        if !out.success() {
            return 0;
        }
        let v = out.json();
        let mut n = 0;
        for item in v["nftables"].as_array().into_iter().flatten() {
            let set = item.get("map").or_else(|| item.get("set"));
            for e in set.and_then(|s| s.get("elem")).and_then(Value::as_array).into_iter().flatten() {
                if e.to_string().contains(needle) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Sets bridge-nf-call-iptables/ip6tables in the node; false when br_netfilter is not loaded (the keys
/// are absent, and bridged traffic never sees the IP hooks anyway).
fn set_br_netfilter(node: &NetNs, on: bool) -> bool {
    let v = if on { "1" } else { "0" };
    node.run_inside(|| {
        let mut present = false;
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
            let p = Path::new("/proc/sys/net/bridge").join(key);
            if p.exists() {
                std::fs::write(&p, v).unwrap();
                present = true;
            }
        }
        present
    })
}

fn ip_of(result: &Value, v4: bool) -> String {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap().to_string())
        .find(|a| a.contains('.') == v4)
        .unwrap_or_else(|| panic!("no address of that family in {result}"))
}

fn tcp_map(host: u16, container: u16) -> Value {
    json!([{"hostPort": host, "containerPort": container, "protocol": "tcp"}])
}

/// PM-1, PM-5 (br_netfilter off), PM-6, PM-4 (hairpin): an external client, another pod on the bridge,
/// the pod itself and the node via 127.0.0.1 all reach pod A through hostPort 8080. Only the external
/// client keeps its address; the rest are masqueraded to the bridge address so the replies come back
/// through the node. A destination that is not local (PM-8) is left alone.
#[test]
fn external_other_pod_hairpin_and_localhost_reach_the_pod() {
    let mut t = Topo::new("pm-paths");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _srv = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let _real = Server::tcp(&t.client, &format!("{CLIENT}:8080"), "C");
    let before = tcp_ask(&t.client, &format!("{NODE_EXT}:8080"));
    assert!(before.is_err(), "nothing listens on the node before ADD: {before:?}");

    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    let out = t.portmap("ADD", a, &conf).ok();
    assert_eq!(out.json(), t.pods[a].2, "the result is prevResult unchanged");
    let gw = t.gateway();

    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")), "external client");
    assert_eq!(tcp_ask(t.pod(b), &format!("{NODE_EXT}:8080")), Ok(format!("A {gw}")), "other pod, masqueraded");
    assert_eq!(tcp_ask(t.pod(b), &format!("{gw}:8080")), Ok(format!("A {gw}")), "other pod via the gateway");
    assert_eq!(tcp_ask(t.pod(a), &format!("{NODE_EXT}:8080")), Ok(format!("A {gw}")), "hairpin to itself");
    assert_eq!(tcp_ask(&t.node, "127.0.0.1:8080"), Ok(format!("A {gw}")), "the node via localhost");
    assert_eq!(t.node.sysctl("net.ipv4.conf.cni0.route_localnet"), "1");
    // PM-8: the node forwards B's connection to the client's own 8080 untouched (the client routes the
    // pod subnet back through the node for this).
    t.client.ip(&["route", "add", t.subnet, "via", NODE_EXT]).ok();
    assert_eq!(tcp_ask(t.pod(b), &format!("{CLIENT}:8080")), Ok(format!("C {}", t.ip(b))), "not local: no DNAT");

    t.portmap("CHECK", a, &conf).ok();
    t.portmap("DEL", a, &conf).ok();
    assert_eq!(t.elements_with("ctr-a"), 0, "DEL removed every element of the attachment");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err(), "the port is closed after DEL");
    t.portmap("DEL", a, &conf).ok();
}

/// The elements of map `map` in table inet rcni as `nft list map` prints them (between `elements = {`
/// and `}`), whitespace folded; empty when the map has none.
fn map_elements(node: &NetNs, map: &str) -> String {
    let out = node.cmd("nft").args(["list", "map", "inet", "rcni", map]).run().ok();
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.split_once("elements = { ") {
        Some((_, rest)) => rest.split_once(" }").map_or(rest, |(e, _)| e).to_string(),
        None => String::new(),
    }
}

fn identity_range(first: u16, last: u16) -> Value {
    json!((first..=last).map(|p| json!({"hostPort": p, "containerPort": p, "protocol": "tcp"})).collect::<Vec<_>>())
}

/// PM-19b: podman writes a published range as one mapping per port; 1000 of them become one interval
/// element (and a non-identity mapping next to them stays a single element), every port of the range is
/// forwarded (first, middle, last; not the ports around it), CHECK compares the exact range, an
/// overlapping range of another pod is refused under `hostPortConflict: "error"` and replaces the range
/// by default, a late DEL of the displaced pod leaves the newer range, and DEL removes everything.
#[test]
fn a_port_range_is_one_interval_element_and_forwards_every_port() {
    let mut t = Topo::new("pm-range");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _servers: Vec<Server> =
        [20000, 20437, 20999, 80].iter().map(|p| Server::tcp(t.pod(a), &format!("0.0.0.0:{p}"), "A")).collect();
    let _sb = Server::tcp(t.pod(b), "0.0.0.0:20550", "B");
    let mut maps = identity_range(20000, 20999);
    maps.as_array_mut().unwrap().push(json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}));
    let conf = t.portmap_conf(a, maps, json!({}));
    t.portmap("ADD", a, &conf).ok();
    let (ipa, ipb, gw) = (t.ip(a), t.ip(b), t.gateway());
    assert_eq!(
        map_elements(&t.node, "hostportrange4"),
        format!("tcp . 20000-20999 comment \"pmnet/ctr-a/eth0\" : {ipa}")
    );
    assert_eq!(map_elements(&t.node, "hostport4"), format!("tcp . 8080 comment \"pmnet/ctr-a/eth0\" : {ipa} . 80"));
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 3, "the range, the single mapping, the hairpin element");
    for p in [20000, 20437, 20999] {
        assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:{p}")), Ok(format!("A {CLIENT}")), "port {p}");
    }
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));
    assert_eq!(tcp_ask(&t.node, "127.0.0.1:20437"), Ok(format!("A {gw}")), "localhost, masqueraded");
    assert_eq!(tcp_ask(t.pod(b), &format!("{NODE_EXT}:20999")), Ok(format!("A {gw}")), "other pod, masqueraded");
    for p in [19999, 21000] {
        assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:{p}")).is_err(), "port {p} is outside the range");
    }
    t.portmap("CHECK", a, &conf).ok();

    // CHECK wants exactly 20000-20999: a narrower range with the same owner and target fails it.
    let nft = |args: &[&str]| t.node.cmd("nft").args(args).run().ok();
    let elem = |range: &str| format!("{{ tcp . {range} comment \"pmnet/ctr-a/eth0\" : {ipa} }}");
    nft(&["delete", "element", "inet", "rcni", "hostportrange4", &elem("20000-20999")]);
    nft(&["add", "element", "inet", "rcni", "hostportrange4", &elem("20000-20500")]);
    let out = t.portmap("CHECK", a, &conf);
    assert!(!out.success() && out.stdout.contains("20000-20500"), "{out}");
    t.portmap("ADD", a, &conf).ok();
    assert_eq!(
        map_elements(&t.node, "hostportrange4"),
        format!("tcp . 20000-20999 comment \"pmnet/ctr-a/eth0\" : {ipa}")
    );
    t.portmap("CHECK", a, &conf).ok();

    let conf_b = |extra: Value| t.portmap_conf(b, identity_range(20500, 20600), extra);
    let out = t.portmap("ADD", b, &conf_b(json!({"hostPortConflict": "error"})));
    assert!(!out.success() && out.stdout.contains("pmnet/ctr-a/eth0") && out.stdout.contains("20500-20600"), "{out}");
    assert_eq!(t.elements_with("pmnet/ctr-b/eth0"), 0, "the refused ADD changed nothing");
    let out = t.portmap("ADD", b, &conf_b(json!({}))).ok();
    assert!(out.stderr.contains("replaces the mapping of pmnet/ctr-a/eth0"), "{out}");
    assert_eq!(
        map_elements(&t.node, "hostportrange4"),
        format!("tcp . 20500-20600 comment \"pmnet/ctr-b/eth0\" : {ipb}")
    );
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:20550")), Ok(format!("B {CLIENT}")));
    t.portmap("DEL", a, &conf).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 0);
    assert_eq!(
        map_elements(&t.node, "hostportrange4"),
        format!("tcp . 20500-20600 comment \"pmnet/ctr-b/eth0\" : {ipb}")
    );
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:20550")), Ok(format!("B {CLIENT}")), "late DEL of A");
    t.portmap("DEL", b, &conf_b(json!({}))).ok();
    assert_eq!(map_elements(&t.node, "hostportrange4"), "");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:20550")).is_err());
}

/// PM-5 with br_netfilter on (where the module exists in this kernel): the other pod still gets through,
/// and the hairpin works once the bridge port has hairpin mode (the kernel re-bridges the DNATed frame
/// out of the port it came in by, which needs it).
#[test]
fn br_netfilter_on_other_pod_and_hairpin() {
    let mut t = Topo::new("pm-brnf");
    let a = t.add_pod("ctr-a", true);
    let b = t.add_pod("ctr-b", false);
    if !set_br_netfilter(&t.node, true) {
        // Not skipped silently: the test output says why; the br_netfilter-off cases ran in the other tests.
        eprintln!("SKIPPED br_netfilter case: module br_netfilter is not loaded (net.bridge.* absent in the netns)");
        return;
    }
    let _srv = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let conf = t.portmap_conf(a, tcp_map(8081, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    let gw = t.gateway();
    assert_eq!(tcp_ask(t.pod(b), &format!("{NODE_EXT}:8081")), Ok(format!("A {gw}")), "other pod");
    assert_eq!(tcp_ask(t.pod(a), &format!("{NODE_EXT}:8081")), Ok(format!("A {gw}")), "hairpin");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8081")), Ok(format!("A {CLIENT}")));
    t.portmap("DEL", a, &conf).ok();
}

/// PM-13: DEL with nothing but containerID and ifname (no runtimeConfig, no prevResult, no netns)
/// removes exactly that attachment's elements; another pod's mapping keeps serving.
#[test]
fn del_with_only_container_id_and_ifname() {
    let mut t = Topo::new("pm-delonly");
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let _sb = Server::tcp(t.pod(b), "0.0.0.0:80", "B");
    let ma =
        json!([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 9090, "containerPort": 80, "protocol": "udp"}]);
    t.portmap("ADD", a, &t.portmap_conf(a, ma, json!({}))).ok();
    t.portmap("ADD", b, &t.portmap_conf(b, tcp_map(8082, 80), json!({}))).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 3, "two mappings and the hairpin element");

    let bare = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"});
    t.portmap_as(&portmap_bin(), "DEL", "ctr-a", "", &bare).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 0);
    assert_eq!(t.elements_with("pmnet/ctr-b/eth0"), 2);
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err());
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8082")), Ok(format!("B {CLIENT}")));
}

/// The node's portmap ledger record of `id`/eth0 on `network` (/run/rcni/portmap-<netns inode>/...).
fn ledger_record(node: &NetNs, network: &str, id: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(node.path()).unwrap().ino();
    PathBuf::from(format!("/run/rcni/portmap-{ino}/{network}/{id}-eth0"))
}

/// Item 1 of the ledger: a re-ADD of the same attachment with a changed hostPort takes back the old
/// element (before the ledger it stayed and kept forwarding the old port); the record is 0600.
#[test]
fn re_add_with_a_changed_host_port_leaves_no_old_element() {
    let mut t = Topo::new("pm-readd");
    let a = t.add_pod("ctr-a", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    t.portmap("ADD", a, &t.portmap_conf(a, tcp_map(8080, 80), json!({}))).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));
    let rec = ledger_record(&t.node, "pmnet", "ctr-a");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777, 0o600, "{}", rec.display());

    let conf = t.portmap_conf(a, tcp_map(8085, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8085")), Ok(format!("A {CLIENT}")));
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err(), "the old host port is closed");
    assert_eq!(t.elements_with("8080"), 0, "no element of the old host port");
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 2, "the new mapping and the hairpin element");
    t.portmap("CHECK", a, &conf).ok();
    t.portmap("DEL", a, &conf).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 0);
    assert!(!rec.exists(), "DEL removes the record");
}

/// DEL removes what the ledger lists and reads nothing else: an element carrying the owner's tag that
/// its ADD never wrote (put there by hand) survives a DEL with the record, and goes with the dump by
/// owner once the record is missing (the fallback). Another owner's element is untouched either way.
#[test]
fn del_removes_what_the_ledger_lists_and_falls_back_to_the_owner_dump() {
    let mut t = Topo::new("pm-ledger");
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let ca = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &ca).ok();
    t.portmap("ADD", b, &t.portmap_conf(b, tcp_map(8082, 80), json!({}))).ok();
    let stray = |port: u16| format!("{{ tcp . {port} comment \"pmnet/ctr-a/eth0\" : {} . 80 }}", t.ip(a));
    t.node.cmd("nft").args(["add", "element", "inet", "rcni", "hostport4", &stray(7001)]).run().ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 3);

    t.portmap("DEL", a, &ca).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 1, "only the unrecorded element is left");
    assert_eq!(t.elements_with("7001"), 1);
    assert_eq!(t.elements_with("pmnet/ctr-b/eth0"), 2);

    t.portmap("ADD", a, &ca).ok();
    std::fs::remove_file(ledger_record(&t.node, "pmnet", "ctr-a")).unwrap();
    t.portmap("DEL", a, &ca).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 0, "without a record DEL finds every element by owner");
    assert_eq!(t.elements_with("pmnet/ctr-b/eth0"), 2);
}

/// STATUS (spec code 50 when not ready): ready on a fresh node (the first ADD writes the structure)
/// and after ADD; not ready, with a message naming the cause, when the node's structure uses another
/// markMasqBit than the config, and when a map of our name but another type blocks the rewrite. A
/// structure an ADD can repair (a flushed chain) is ready.
#[test]
fn status_reports_a_structure_an_add_could_not_use() {
    let mut t = Topo::new("pm-status");
    let a = t.add_pod("ctr-a", false);
    let status = |t: &Topo, extra: Value| {
        let mut conf = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let env = cni_env("STATUS", "", "", "", &plugin_path());
        t.node.run_plugin(&portmap_bin(), &env, &serde_json::to_vec(&conf).unwrap())
    };
    status(&t, json!({})).ok();
    assert!(!t.node.nft_ruleset().contains("portmap"), "STATUS writes nothing");
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    status(&t, json!({})).ok();

    let out = status(&t, json!({"markMasqBit": 14})).fails();
    assert_eq!(out.json()["code"], 50, "{out}");
    assert!(out.stdout.contains("markMasqBit 14") && out.stdout.contains("bit 13"), "{out}");

    t.node.cmd("nft").args(["flush", "chain", "inet", "rcni", "portmap-guard"]).run().ok();
    status(&t, json!({})).ok();

    t.portmap("DEL", a, &conf).ok();
    t.node.cmd("nft").args(["flush", "chain", "inet", "rcni", "portmap-dnat"]).run().ok();
    t.node.cmd("nft").args(["delete", "map", "inet", "rcni", "hostport4"]).run().ok();
    t.node.cmd("nft").args(["add", "map", "inet", "rcni", "hostport4", "{ type ipv4_addr : ipv4_addr; }"]).run().ok();
    let out = status(&t, json!({})).fails();
    assert_eq!(out.json()["code"], 50, "{out}");
    assert!(out.stdout.contains("cannot be rewritten") && out.stdout.contains("hostport4"), "{out}");
    let out = t.portmap("ADD", a, &conf).fails();
    assert!(out.stdout.contains("hostport4"), "ADD fails as STATUS said: {out}");
}

/// iptables-save and ip6tables-save of the node without what does not say what is there: comments,
/// counters, and tables holding no rule with every chain built in and ACCEPT (an empty nat table is
/// what iptables leaves after its last rule is deleted, and equals no table).
fn iptables_state(node: &NetNs) -> String {
    let mut out = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let o = node.cmd(tool).run().ok();
        let mut block: Vec<String> = Vec::new();
        for l in o.stdout.lines().filter(|l| !l.starts_with('#')) {
            let l = match l.split_once(" [") {
                Some((head, _)) if l.starts_with(':') => head.to_string(),
                _ => l.to_string(),
            };
            block.push(l.clone());
            if l == "COMMIT" {
                let empty = block
                    .iter()
                    .all(|b| b.starts_with('*') || b == "COMMIT" || (b.starts_with(':') && b.ends_with(" ACCEPT")));
                if !empty {
                    out.push_str(&format!("{tool}\n{}\n", block.join("\n")));
                }
                block.clear();
            }
        }
    }
    out
}

/// Migration (PM-17), differential: pods added by the reference portmap (/usr/lib/cni/portmap, iptables)
/// are deleted by ours with nothing but containerID and ifname. The first DEL removes that container's
/// CNI-DN chain and entry rule and leaves the other container served; the last leaves iptables as before
/// the reference's first ADD (the shared CNI-HOSTPORT-* chains and jumps too). An ADD of ours for a
/// container the reference had added replaces its rules.
#[test]
fn reference_iptables_leftovers_are_removed_by_our_del_and_add() {
    let mut t = Topo::new("pm-migrate");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let _sb = Server::tcp(t.pod(b), "0.0.0.0:80", "B");
    let before = iptables_state(&t.node);
    let reference = support::reference_plugin("portmap");
    let ca = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    let cb = t.portmap_conf(b, tcp_map(8082, 80), json!({}));
    t.portmap_as(&reference, "ADD", "ctr-a", t.pod(a).path_str(), &ca).ok();
    t.portmap_as(&reference, "ADD", "ctr-b", t.pod(b).path_str(), &cb).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")), "the reference serves");
    let with_both = iptables_state(&t.node);
    let dn_a = "CNI-DN-".to_string() + &sha512_21("pmnetctr-a");
    assert!(with_both.contains(&dn_a), "the reference's chain for ctr-a: {with_both}");

    let bare = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"});
    let out = t.portmap_as(&portmap_bin(), "DEL", "ctr-a", "", &bare).ok();
    assert!(out.stderr.contains(&dn_a), "DEL says what it removed: {out}");
    let after_a = iptables_state(&t.node);
    assert!(!after_a.contains(&dn_a) && !after_a.contains("id: \\\"ctr-a\\\""), "{after_a}");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err(), "ctr-a's host port is closed");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8082")), Ok(format!("B {CLIENT}")), "ctr-b still served");

    t.portmap_as(&portmap_bin(), "DEL", "ctr-b", "", &bare).ok();
    assert_eq!(iptables_state(&t.node), before, "iptables as before the reference's first ADD");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8082")).is_err());

    t.portmap_as(&reference, "ADD", "ctr-a", t.pod(a).path_str(), &ca).ok();
    assert_ne!(iptables_state(&t.node), before);
    t.portmap("ADD", a, &ca).ok();
    assert_eq!(iptables_state(&t.node), before, "our ADD took the reference's rules for ctr-a over");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")), "served by ours");
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 2);
    t.portmap("DEL", a, &ca).ok();
}

/// Migration from the reference's nftables backend (v1.6+; the layout of its unit tests, loaded with
/// `nft -f` since /usr/lib/cni/portmap 1.1.1 predates it): our DEL removes the rules whose comment is the
/// container ID from `ip cni_hostport`, and leaves another container's.
#[test]
fn reference_nft_rules_of_the_container_are_removed_by_our_del() {
    let t = Topo::new("pm-migrate-nft");
    let script = "table ip cni_hostport {
        chain hostports { tcp dport 8080 dnat to 10.89.0.2:80 comment \"ctr-a\"
                          tcp dport 8082 dnat to 10.89.0.3:80 comment \"ctr-b\"; };
        chain hostip_hostports { };
        chain masquerading { type nat hook postrouting priority srcnat; policy accept;
                             ip saddr 10.89.0.2 ip daddr 10.89.0.2 masquerade comment \"ctr-a\"
                             ip saddr 10.89.0.3 ip daddr 10.89.0.3 masquerade comment \"ctr-b\"; }; }";
    t.node.cmd("nft").args(["-f", "-"]).stdin(script).run().ok();
    let bare = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"});
    let out = t.portmap_as(&portmap_bin(), "DEL", "ctr-a", "", &bare).ok();
    assert!(out.stderr.contains("2 rules of table ip cni_hostport"), "{out}");
    let left = t.node.cmd("nft").args(["list", "table", "ip", "cni_hostport"]).run().ok().stdout;
    assert!(!left.contains("\"ctr-a\"") && left.matches("\"ctr-b\"").count() == 2, "{left}");
}

fn sha512_21(s: &str) -> String {
    let out = std::process::Command::new("sha512sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..21].to_string()
}

/// conditionsV4 (PM-23), with real traffic: `! -s <client>` keeps that client from being DNATed (nothing
/// answers it on the host port) while another pod on the bridge and the node via localhost still reach
/// pod A; CHECK passes; DEL removes the element from the condition set's map. A token outside the
/// supported subset is refused with code 7 naming the field and the token, before anything is written.
#[test]
fn conditions_exclude_one_client_and_keep_the_others() {
    let mut t = Topo::new("pm-cond");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let bad = t.portmap_conf(a, tcp_map(8080, 80), json!({"conditionsV4": ["-s", "198.18.0.0/24", "-m", "set"]}));
    let out = t.portmap("ADD", a, &bad).fails();
    assert_eq!(out.json()["code"], 7, "{out}");
    assert!(out.stdout.contains("conditionsV4") && out.stdout.contains("\\\"-m\\\""), "{out}");
    assert_eq!(t.elements_with("ctr-a"), 0, "refused before anything is written");

    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({"conditionsV4": ["!", "-s", CLIENT]}));
    t.portmap("ADD", a, &conf).ok();
    let gw = t.gateway();
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err(), "the excluded client is not forwarded");
    assert_eq!(tcp_ask(t.pod(b), &format!("{NODE_EXT}:8080")), Ok(format!("A {gw}")), "another pod is");
    assert_eq!(tcp_ask(&t.node, "127.0.0.1:8080"), Ok(format!("A {gw}")), "and the node via localhost");
    t.portmap("CHECK", a, &conf).ok();
    let ruleset = t.node.nft_ruleset();
    assert!(ruleset.contains(&format!("ip saddr != {CLIENT}")), "{ruleset}");
    t.portmap("DEL", a, &conf).ok();
    assert_eq!(t.elements_with("ctr-a"), 0);
    assert!(tcp_ask(t.pod(b), &format!("{NODE_EXT}:8080")).is_err());

    // Without conditions the same client is forwarded again (the maps are the shared ones).
    t.portmap("ADD", a, &t.portmap_conf(a, tcp_map(8080, 80), json!({}))).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));
}

/// PM-14 and PM-18: a newer mapping of the same host port replaces the older one with a warning that
/// names the displaced owner; the late DEL of the displaced owner leaves the newer mapping serving. With
/// `hostPortConflict: "error"` the ADD fails naming the current owner and changes nothing.
#[test]
fn newer_mapping_wins_and_a_late_del_of_the_old_owner_removes_nothing() {
    let mut t = Topo::new("pm-conflict");
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let _sb = Server::tcp(t.pod(b), "0.0.0.0:80", "B");
    let ca = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    let cb = t.portmap_conf(b, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &ca).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));

    let strict = t.portmap_conf(b, tcp_map(8080, 80), json!({"hostPortConflict": "error"}));
    let out = t.portmap("ADD", b, &strict).fails();
    assert!(out.stdout.contains("pmnet/ctr-a/eth0") && out.stdout.contains("hostPortConflict"), "{out}");
    assert_eq!(t.elements_with("ctr-b"), 0, "a refused ADD writes nothing");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));

    let out = t.portmap("ADD", b, &cb).ok();
    assert!(out.stderr.contains("replaces the mapping of pmnet/ctr-a/eth0"), "warning on stderr: {out}");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("B {CLIENT}")));
    t.portmap("CHECK", b, &cb).ok();
    let out = t.portmap("CHECK", a, &ca).fails();
    assert!(out.stdout.contains("belongs to"), "the displaced owner's CHECK says who has the port: {out}");

    t.portmap("DEL", a, &ca).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("B {CLIENT}")), "late DEL removed nothing");
    t.portmap("CHECK", b, &cb).ok();
}

/// PM-15: the same container ID on two portmap networks is two owners: DEL on one leaves the other's
/// mappings working.
#[test]
fn same_container_id_on_two_networks() {
    let mut t = Topo::new("pm-twonets");
    let a = t.add_pod("ctr-a", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let mut on_a = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    on_a["name"] = json!("net-a");
    let mut on_b = t.portmap_conf(a, tcp_map(8090, 80), json!({}));
    on_b["name"] = json!("net-b");
    t.portmap("ADD", a, &on_a).ok();
    t.portmap("ADD", a, &on_b).ok();
    t.portmap("DEL", a, &json!({"cniVersion": "1.0.0", "name": "net-a", "type": "portmap"})).ok();
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err());
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8090")), Ok(format!("A {CLIENT}")));
    t.portmap("CHECK", a, &on_b).ok();
}

/// PM-16: CHECK passes after ADD and fails, naming what is wrong, when an element is deleted or
/// retargeted by hand, the structure is changed, or route_localnet is reset.
#[test]
fn check_compares_exact_elements_structure_and_route_localnet() {
    let mut t = Topo::new("pm-check");
    let a = t.add_pod("ctr-a", false);
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    t.portmap("CHECK", a, &conf).ok();
    let ip = t.ip(a);

    t.node.cmd("nft").args(["delete", "element", "inet", "rcni", "hostport4", "{ tcp . 8080 }"]).run().ok();
    let out = t.portmap("CHECK", a, &conf).fails();
    assert!(out.stdout.contains("tcp *:8080") && out.stdout.contains("missing"), "{out}");
    let retarget = format!("{{ tcp . 8080 comment \"pmnet/ctr-a/eth0\" : {ip} . 81 }}");
    t.node.cmd("nft").args(["add", "element", "inet", "rcni", "hostport4", &retarget]).run().ok();
    let out = t.portmap("CHECK", a, &conf).fails();
    assert!(out.stdout.contains(&format!("{ip}:81")), "CHECK shows what is there instead: {out}");
    t.portmap("ADD", a, &conf).ok();
    t.portmap("CHECK", a, &conf).ok();

    t.node.cmd("nft").args(["flush", "chain", "inet", "rcni", "portmap-guard"]).run().ok();
    let out = t.portmap("CHECK", a, &conf).fails();
    assert!(out.stdout.contains("missing or changed"), "{out}");
    t.portmap("ADD", a, &conf).ok();
    t.portmap("CHECK", a, &conf).ok();

    t.node.set_sysctl("net.ipv4.conf.cni0.route_localnet", "0");
    let out = t.portmap("CHECK", a, &conf).fails();
    assert!(out.stdout.contains("route_localnet is 0 on cni0"), "{out}");
}

/// Bad input: an error JSON naming the field, non-zero exit, and nothing written to the node.
#[test]
fn bad_mappings_are_refused_before_anything_is_written() {
    let mut t = Topo::new("pm-bad");
    let a = t.add_pod("ctr-a", false);
    let cases = [
        (json!([{"hostPort": 0, "containerPort": 80}]), "runtimeConfig.portMappings[0].hostPort"),
        (json!([{"hostPort": 65536, "containerPort": 80}]), "runtimeConfig.portMappings[0].hostPort"),
        (json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]), "portMappings[0].protocol"),
        (json!([{"hostPort": 80, "containerPort": 80, "hostIP": "198.18.0.300"}]), "portMappings[0].hostIP"),
        (
            json!([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81, "protocol": "TCP"}]),
            "portMappings[1]",
        ),
    ];
    for (m, needle) in cases {
        let out = t.portmap("ADD", a, &t.portmap_conf(a, m, json!({}))).fails();
        let v = out.json();
        assert_eq!(v["code"], 7, "{out}");
        assert!(v["msg"].as_str().unwrap().contains(needle), "{needle} not in {out}");
    }
    let nft = t.node.nft_ruleset();
    assert!(!nft.contains("portmap"), "nothing written: {nft}");
    let mut no_prev = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    no_prev.as_object_mut().unwrap().remove("prevResult");
    let out = t.portmap("ADD", a, &no_prev).fails();
    assert!(out.stdout.contains("prevResult"), "{out}");
}

/// A hostIP restricts the mapping to that address (PM-9); a hostIP of the other family is skipped.
#[test]
fn host_ip_restricts_the_mapping() {
    let mut t = Topo::new("pm-hostip");
    let a = t.add_pod("ctr-a", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    t.node.ip(&["addr", "add", "198.18.0.3/24", "dev", "ext0"]).ok();
    let m = json!([{"hostPort": 8080, "containerPort": 80, "hostIP": NODE_EXT},
                   {"hostPort": 8083, "containerPort": 80, "hostIP": "fd00::1"}]);
    let conf = t.portmap_conf(a, m, json!({}));
    t.portmap("ADD", a, &conf).ok();
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")));
    assert!(tcp_ask(&t.client, "198.18.0.3:8080").is_err(), "another node address is not mapped");
    assert!(tcp_ask(&t.node, "127.0.0.1:8080").is_err(), "nor is localhost");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8083")).is_err(), "the IPv6 hostIP entry is skipped for IPv4");
    assert_eq!(t.elements_with("8083"), 0);
    t.portmap("CHECK", a, &conf).ok();
}

/// UDP through a host port, external client and the node via localhost (PM-2).
#[test]
fn udp_mapping_serves_external_and_localhost() {
    let mut t = Topo::new("pm-udp");
    let a = t.add_pod("ctr-a", false);
    let _sa = Server::udp(t.pod(a), "0.0.0.0:5353", "A");
    let conf = t.portmap_conf(a, json!([{"hostPort": 5300, "containerPort": 5353, "protocol": "udp"}]), json!({}));
    t.portmap("ADD", a, &conf).ok();
    let wait = Duration::from_secs(2);
    let got = udp_ask_from(&t.client, "0.0.0.0:0", &format!("{NODE_EXT}:5300"), wait);
    assert_eq!(got, Ok(format!("A {CLIENT}")));
    let got = udp_ask_from(&t.node, "127.0.0.1:0", "127.0.0.1:5300", wait);
    assert_eq!(got, Ok(format!("A {}", t.gateway())));
    t.portmap("DEL", a, &conf).ok();
}

/// IPv6 (PM-20): DNAT from the external client, the other pod and the pod itself over ip6 on a
/// dual-stack bridge.
#[test]
fn ipv6_external_other_pod_and_hairpin() {
    let mut t = Topo::with("pm-v6", "pm6net", "10.89.1.0/24", Some("fd89:1::/64"));
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::tcp(t.pod(a), "[::]:80", "A");
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    let gw6 = t.pods[a].2["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|ip| ip["gateway"].as_str().filter(|g| g.contains(':')))
        .unwrap()
        .to_string();
    // The v6 server socket also serves IPv4 (v4-mapped peers).
    assert_eq!(tcp_ask(&t.client, &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {CLIENT6}")));
    assert_eq!(tcp_ask(t.pod(b), &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {gw6}")));
    assert_eq!(tcp_ask(t.pod(a), &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {gw6}")));
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A ::ffff:{CLIENT}")));
    assert!(t.elements_with(&t.ip6(a)) >= 2);
    t.portmap("CHECK", a, &conf).ok();
    t.portmap("DEL", a, &conf).ok();
    assert_eq!(t.elements_with("ctr-a"), 0);
}

/// IPv6 with br_netfilter on (PM-20 × PM-5): the other pod on the bridge and the pod itself (hairpinMode
/// on its port) reach pod A through the host port over ip6, masqueraded to the bridge's address.
#[test]
fn ipv6_other_pod_and_hairpin_with_br_netfilter_on() {
    let mut t = Topo::with("pm-v6brnf", "pm6net", "10.89.1.0/24", Some("fd89:1::/64"));
    let a = t.add_pod("ctr-a", true);
    let b = t.add_pod("ctr-b", false);
    if !set_br_netfilter(&t.node, true) {
        eprintln!("SKIPPED br_netfilter case: module br_netfilter is not loaded (net.bridge.* absent in the netns)");
        return;
    }
    let _sa = Server::tcp(t.pod(a), "[::]:80", "A");
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    let gw6 = t.pods[a].2["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|ip| ip["gateway"].as_str().filter(|g| g.contains(':')))
        .unwrap()
        .to_string();
    assert_eq!(tcp_ask(&t.client, &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {CLIENT6}")));
    assert_eq!(tcp_ask(t.pod(b), &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {gw6}")), "other pod");
    assert_eq!(tcp_ask(t.pod(a), &format!("[{NODE_EXT6}]:8080")), Ok(format!("A {gw6}")), "hairpin");
    t.portmap("DEL", a, &conf).ok();
}

/// Whether a datagram sent from inside `from` to `to` arrives at a socket bound to `to` in `at`.
fn udp_delivered(from: &NetNs, at: &NetNs, to: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let rx = at.run_inside(|| UdpSocket::bind(to)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    from.run_inside(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = s.send_to(b"probe", to);
    });
    let mut buf = [0u8; 64];
    rx.recv_from(&mut buf).is_ok()
}

/// PM-7: route_localnet=1 (set for localhost host ports) would let a pod reach the node's 127.0.0.1-only
/// services; the guard chain stops that while localhost host ports keep working. Without the guard the
/// same datagram arrives, so the test sees the difference the guard makes.
#[test]
fn localnet_guard_keeps_pods_off_the_nodes_loopback_services() {
    let mut t = Topo::new("pm-guard");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let _sa = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({}));
    t.portmap("ADD", a, &conf).ok();
    assert_eq!(t.node.sysctl("net.ipv4.conf.cni0.route_localnet"), "1");
    // A pod with CAP_NET_ADMIN routes 127.0.0.1 out of eth0 to its gateway.
    let pod = t.pod(a);
    pod.ip(&["addr", "del", "127.0.0.1/8", "dev", "lo"]).ok();
    pod.set_sysctl("net.ipv4.conf.eth0.route_localnet", "1");
    pod.ip(&["route", "add", "127.0.0.1/32", "via", &t.gateway(), "dev", "eth0"]).ok();

    assert!(!udp_delivered(pod, &t.node, "127.0.0.1:7778"), "the guard drops the pod's datagram to 127.0.0.1");
    assert_eq!(tcp_ask(&t.node, "127.0.0.1:8080"), Ok(format!("A {}", t.gateway())), "localhost host port works");

    t.node.cmd("nft").args(["flush", "chain", "inet", "rcni", "portmap-guard"]).run().ok();
    assert!(udp_delivered(pod, &t.node, "127.0.0.1:7778"), "without the guard it arrives (the hole it closes)");
    t.portmap("ADD", a, &conf).ok();
    assert!(!udp_delivered(pod, &t.node, "127.0.0.1:7778"), "ADD put the guard back");
}

/// conf/80-k8s-guide.conflist with host-local's and tuning's dataDirs in `data`.
fn guide_list(data: &Path) -> Value {
    let text = std::fs::read_to_string(support::repo_dir().join("conf/80-k8s-guide.conflist")).unwrap();
    let mut v: Value = serde_json::from_str(&text.replace("/var/lib/cni/networks", &data.to_string_lossy())).unwrap();
    for p in v["plugins"].as_array_mut().unwrap() {
        if p["type"] == "tuning" {
            p["dataDir"] = json!(data.join("tuning"));
        }
    }
    v
}

/// The Kubernetes guide's list (bridge + tuning {mac capability, somaxconn} + portmap {portMappings
/// capability}) through our cnitool with CAP_ARGS: somaxconn set in the pod only, the MAC as asked, the
/// hostPort reachable from an external client, another pod and the pod itself; CHECK passes; DEL leaves the
/// ruleset as it was before the pod's ADD.
#[test]
fn kubernetes_guide_list_through_cnitool() {
    let t = Topo::new("pm-guide");
    let data = TempDir::new("pm-guide-data");
    let list = guide_list(data.path());
    let name = list["name"].as_str().unwrap().to_string();
    let conf = support::NetConfDir::new(&list);
    let mut tool = support::Cnitool::new(&conf, &plugin_path());
    let other = PodNs::new("pm-guide-b");
    let pod = PodNs::new("pm-guide-a");
    for p in [&other, &pod] {
        p.ip(&["link", "set", "lo", "up"]).ok();
    }
    // The other pod maps a port of its own first, so the node's portmap rules exist before A's ADD.
    tool.set(
        "CAP_ARGS",
        &json!({"portMappings": [{"hostPort": 9999, "containerPort": 80, "protocol": "tcp"}]}).to_string(),
    );
    tool.run(&t.node, &["add", &name, other.path_str()]).ok();
    let ruleset_before = t.node.nft_ruleset();
    let node_somaxconn = t.node.sysctl("net.core.somaxconn");

    let mac = "02:aa:bb:cc:dd:42";
    let caps = json!({"mac": mac, "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    tool.set("CAP_ARGS", &caps.to_string());
    let result = tool.run(&t.node, &["add", &name, pod.path_str()]).ok().json();
    assert_eq!(pod.sysctl("net.core.somaxconn"), "500");
    assert_eq!(t.node.sysctl("net.core.somaxconn"), node_somaxconn, "the node's value is untouched");
    assert_eq!(pod.link("eth0").unwrap().address, mac);
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    let _srv = Server::tcp(&pod, "0.0.0.0:80", "A");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")), Ok(format!("A {CLIENT}")), "external client");
    assert_eq!(tcp_ask(&other, &format!("{NODE_EXT}:8080")), Ok(format!("A {gw}")), "another pod");
    assert_eq!(tcp_ask(&pod, &format!("{NODE_EXT}:8080")), Ok(format!("A {gw}")), "the pod itself");
    tool.run(&t.node, &["check", &name, pod.path_str()]).ok();

    tool.run(&t.node, &["del", &name, pod.path_str()]).ok();
    assert_eq!(t.node.nft_ruleset(), ruleset_before, "DEL leaves the ruleset as before the ADD");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err());
    tool.set("CAP_ARGS", "{}");
    tool.run(&t.node, &["del", &name, other.path_str()]).ok();
}

/// What each path answers through hostPort 8080 → pod A:80 with `bin` as the portmap plugin
/// (br_netfilter off), and whether DEL closed the port again.
/// (path, what the server answered or the error), in a fixed order.
type Reachability = Vec<(&'static str, Result<String, String>)>;

fn reachability_with(bin: &Path, tag: &str) -> (Reachability, Output) {
    reachability_with_conf(bin, tag, json!({}))
}

fn reachability_with_conf(bin: &Path, tag: &str, extra: Value) -> (Reachability, Output) {
    let mut t = Topo::new(tag);
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _srv = Server::tcp(t.pod(a), "0.0.0.0:80", "A");
    let conf = t.portmap_conf(a, tcp_map(8080, 80), extra);
    let mut result = t.portmap_as(bin, "ADD", "ctr-a", t.pod(a).path_str(), &conf).ok().json();
    // The reference prints an empty "dns" object where prevResult had none.
    if result["dns"] == json!({}) {
        result.as_object_mut().unwrap().remove("dns");
    }
    assert_eq!(result, t.pods[a].2, "{} passes prevResult through", bin.display());
    let gw = t.gateway();
    let shown = |r: Result<String, String>| r.map(|s| s.replace(&gw, "<gateway>"));
    let v = vec![
        ("external client", shown(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")))),
        ("other pod", shown(tcp_ask(t.pod(b), &format!("{NODE_EXT}:8080")))),
        ("hairpin", shown(tcp_ask(t.pod(a), &format!("{NODE_EXT}:8080")))),
        ("localhost", shown(tcp_ask(&t.node, "127.0.0.1:8080"))),
        ("route_localnet", Ok(t.node.sysctl("net.ipv4.conf.cni0.route_localnet"))),
    ];
    let check = t.portmap_as(bin, "CHECK", "ctr-a", t.pod(a).path_str(), &conf);
    t.portmap_as(bin, "DEL", "ctr-a", t.pod(a).path_str(), &conf).ok();
    let closed = tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err();
    let mut v = v;
    v.push(("closed after DEL", Ok(closed.to_string())));
    (v, check)
}

/// The mappings of the iptables-backend differential: every protocol, a host IP, conditions.
fn iptables_case(t: &Topo, i: usize, extra: Value) -> Value {
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": NODE_EXT},
        {"hostPort": 9090, "containerPort": 90, "protocol": "sctp"},
    ]);
    let mut e = json!({"conditionsV4": ["!", "-s", "198.18.7.0/24"], "conditionsV6": ["!", "-s", "fd18:7::/64"]});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    t.portmap_conf(i, maps, e)
}

/// `backend: "iptables"` (PM-17), differential: on two identical dual-stack nodes, our ADD writes the
/// rules the reference writes (iptables-save of both families equal: chains, entry rules with the
/// conditions, hairpin and localhost marks, DNAT, the shared chains), for our mark bit and for an external
/// mark chain. Each implementation's DEL removes the other's ADD (ours also the shared chains with the last
/// container, the reference never). CHECK passes on ours and fails once a
/// rule is gone; a repeated ADD with another port leaves no rule of the old one (the reference appends);
/// an ADD after one with the nftables backend removes the attachment's elements.
#[test]
fn iptables_backend_writes_the_references_rules() {
    let reference = support::reference_plugin("portmap");
    for (tag, extra) in
        [("pm-ipt-bit", json!({"markMasqBit": 14})), ("pm-ipt-ext", json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}))]
    {
        let mut states = Vec::new();
        let mut topos = Vec::new();
        for (bin, suffix) in [(&portmap_bin(), "r"), (&reference, "g")] {
            let mut t = Topo::with(&format!("{tag}{suffix}"), "pmnet", "10.89.0.0/24", Some("fd89::/64"));
            let a = t.add_pod("ctr-a", false);
            for tool in ["iptables", "ip6tables"] {
                t.node.cmd(tool).args(["-t", "nat", "-N", "KUBE-MARK-MASQ"]).run().ok();
            }
            let before = iptables_state(&t.node);
            let mut conf = iptables_case(&t, a, extra.clone());
            if bin == &portmap_bin() {
                conf["backend"] = json!("iptables");
            }
            t.portmap_as(bin, "ADD", "ctr-a", t.pod(a).path_str(), &conf).ok();
            states.push(iptables_state(&t.node));
            topos.push((t, a, conf, before));
        }
        assert_eq!(states[0], states[1], "{tag}: our iptables rules are the reference's");
        assert!(states[0].contains("dnat name: \\\"pmnet\\\" id: \\\"ctr-a\\\""), "{}", states[0]);
        let (ours, theirs) = (&topos[0], &topos[1]);
        ours.0.portmap("CHECK", ours.1, &ours.2).ok();
        // Each DEL removes the other's ADD: the same rules, so the same removal.
        // (The reference's DEL leaves the shared CNI-HOSTPORT-* chains; ours removes them with the last.)
        ours.0.portmap_as(&reference, "DEL", "ctr-a", ours.0.pod(ours.1).path_str(), &ours.2).ok();
        let left = iptables_state(&ours.0.node);
        assert!(
            !left.contains("CNI-DN-") && !left.contains("ctr-a"),
            "{tag}: the reference's DEL removed ours: {left}"
        );
        theirs.0.portmap("DEL", theirs.1, &json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"})).ok();
        assert_eq!(iptables_state(&theirs.0.node), theirs.3, "{tag}: our DEL removed the reference's rules");
    }

    let mut t = Topo::new("pm-ipt-readd");
    let a = t.add_pod("ctr-a", false);
    // Added first with the nftables backend: switching the network to iptables takes its elements away.
    t.portmap("ADD", a, &t.portmap_conf(a, tcp_map(8080, 80), json!({}))).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 2);
    let conf = t.portmap_conf(a, tcp_map(8080, 80), json!({"backend": "iptables"}));
    t.portmap("ADD", a, &conf).ok();
    assert_eq!(t.elements_with("pmnet/ctr-a/eth0"), 0, "the nftables elements of the earlier ADD are gone");
    t.portmap("CHECK", a, &conf).ok();
    let moved = t.portmap_conf(a, tcp_map(8081, 80), json!({"backend": "iptables"}));
    t.portmap("ADD", a, &moved).ok();
    let state = iptables_state(&t.node);
    assert!(state.contains("--dport 8081") && !state.contains("8080"), "{state}");
    t.portmap("CHECK", a, &conf).fails();
    let dn = "CNI-DN-".to_string() + &sha512_21("pmnetctr-a");
    t.node.cmd("iptables").args(["-t", "nat", "-F", &dn]).run().ok();
    let out = t.portmap("CHECK", a, &moved).fails();
    assert!(out.stdout.contains(&dn), "CHECK names the chain: {out}");
    t.portmap("DEL", a, &moved).ok();
    assert!(!iptables_state(&t.node).contains("CNI-"), "{}", iptables_state(&t.node));
}

/// `backend: "iptables"` with real traffic: the same reachability as the reference (external client,
/// other pod, hairpin, localhost), and GC removes the rules of a container not in the valid list only.
#[test]
fn iptables_backend_serves_like_the_reference_and_gc_removes_stale_containers() {
    let (ours, check) = reachability_with_conf(&portmap_bin(), "pm-ipt-r", json!({"backend": "iptables"}));
    let (reference, _) = reachability_with(&support::reference_plugin("portmap"), "pm-ipt-g");
    assert_eq!(ours, reference);
    assert!(ours.iter().all(|(_, r)| r.is_ok()), "{ours:?}");
    check.ok();

    let mut t = Topo::new("pm-ipt-gc");
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sb = Server::tcp(t.pod(b), "0.0.0.0:80", "B");
    for (i, port) in [(a, 8080), (b, 8082)] {
        t.portmap("ADD", i, &t.portmap_conf(i, tcp_map(port, 80), json!({"backend": "iptables"}))).ok();
    }
    let gc = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap", "backend": "iptables",
        "cni.dev/valid-attachments": [{"containerID": "ctr-b", "ifname": "eth0"}]});
    let env = cni_env("GC", "", "", "", &plugin_path());
    t.node.run_plugin(&portmap_bin(), &env, &serde_json::to_vec(&gc).unwrap()).ok();
    let state = iptables_state(&t.node);
    assert!(!state.contains("ctr-a") && state.contains("ctr-b"), "{state}");
    assert_eq!(tcp_ask(&t.client, &format!("{NODE_EXT}:8082")), Ok(format!("B {CLIENT}")), "ctr-b still served");
    assert!(tcp_ask(&t.client, &format!("{NODE_EXT}:8080")).is_err());
    t.portmap("DEL", b, &t.portmap_conf(b, tcp_map(8082, 80), json!({"backend": "iptables"}))).ok();
}

/// Differential: rcni's portmap and the reference (/usr/lib/cni/portmap, iptables) on the same topology
/// give the same reachability, the same peers seen by the pod, and both close the port on DEL. One
/// difference, the reference's: its CHECK of an IPv4-only pod fails looking for ip6tables rules (1.1.1,
/// plugins#819), ours passes.
#[test]
fn same_reachability_as_the_reference() {
    let (ours, our_check) = reachability_with(&portmap_bin(), "pm-diff-r");
    let (reference, ref_check) = reachability_with(&support::reference_plugin("portmap"), "pm-diff-g");
    assert_eq!(ours, reference);
    assert!(ours.iter().all(|(_, r)| r.is_ok()), "{ours:?}");
    our_check.ok();
    let ref_check = ref_check.fails();
    assert!(ref_check.stdout.contains("could not check ipv6 dnat"), "{ref_check}");
}

/// PM-10 and PM-11: a UDP client that keeps sending from one source port (one conntrack entry) follows
/// the host port: after DEL of pod A's mapping and ADD of the same host port for pod B, B answers within
/// 1 s (without the conntrack flush the old entry keeps sending to A). After B's DEL, a server on the node
/// itself gets the datagrams within 1 s.
#[test]
fn udp_host_port_rehomed_to_a_new_pod_is_answered_by_it_within_a_second() {
    let mut t = Topo::new("pm-rehome");
    set_br_netfilter(&t.node, false);
    let a = t.add_pod("ctr-a", false);
    let b = t.add_pod("ctr-b", false);
    let _sa = Server::udp(t.pod(a), "0.0.0.0:5353", "A");
    let _sb = Server::udp(t.pod(b), "0.0.0.0:5353", "B");
    let map = json!([{"hostPort": 5300, "containerPort": 5353, "protocol": "udp"}]);
    let ca = t.portmap_conf(a, map.clone(), json!({}));
    let cb = t.portmap_conf(b, map, json!({}));
    t.portmap("ADD", a, &ca).ok();
    let to = format!("{NODE_EXT}:5300");
    let from = format!("{CLIENT}:40000");
    let ask = |wait_ms| udp_ask_from(&t.client, &from, &to, Duration::from_millis(wait_ms));
    assert_eq!(ask(1000), Ok(format!("A {CLIENT}")));

    // PM-12: an unrelated flow on the same port to a destination that is not local keeps its entry.
    let _remote = Server::udp(&t.client, &format!("{CLIENT}:5300"), "C");
    let out = udp_ask_from(&t.node, &format!("{NODE_EXT}:40001"), &format!("{CLIENT}:5300"), Duration::from_secs(1));
    assert_eq!(out, Ok(format!("C {NODE_EXT}")));
    let unrelated = || {
        let out = t.node.cmd("conntrack").args(["-L", "-p", "udp", "--dport", "5300", "-d", CLIENT]).run().ok();
        out.stdout.lines().filter(|l| l.contains("sport=40001")).count()
    };
    assert_eq!(unrelated(), 1);

    t.portmap("DEL", a, &ca).ok();
    t.portmap("ADD", b, &cb).ok();
    assert_eq!(unrelated(), 1, "the flush left the unrelated flow alone");
    let start = std::time::Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_secs(1) {
        let got = ask(300);
        let done = got.as_deref() == Ok(&format!("B {CLIENT}"));
        answers.push(got);
        if done {
            break;
        }
    }
    let tail = &answers[answers.len().saturating_sub(3)..];
    assert_eq!(
        answers.last().unwrap().as_deref(),
        Ok(format!("B {CLIENT}").as_str()),
        "{} answers, last {tail:?}",
        answers.len()
    );

    t.portmap("DEL", b, &cb).ok();
    let _node = Server::udp(&t.node, "0.0.0.0:5300", "N");
    let start = std::time::Instant::now();
    let mut got = ask(300);
    while got.as_deref() != Ok(&format!("N {CLIENT}")) && start.elapsed() < Duration::from_secs(1) {
        got = ask(300);
    }
    assert_eq!(got, Ok(format!("N {CLIENT}")), "after DEL the node's own server gets the flow");
}

/// The prevResult of a pod that exists only on paper (portmap needs its address, not its netns).
fn paper_pod(i: usize) -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/paper"}],
        "ips": [{"address": format!("10.89.{}.{}/16", i / 250, 2 + i % 250), "gateway": "10.89.0.1", "interface": 1}]})
}

/// One plugin run, timed from spawn to exit (no `ip netns exec` in between), killed at `limit`. CNI_NETNS
/// is some existing namespace (`netns`): portmap needs a valid one but never enters it.
fn timed(node: &NodeNs, netns: &str, bin: &Path, cmd: &str, id: &str, conf: &Value, limit: Duration) -> Sample {
    let env = cni_env(cmd, id, netns, "eth0", &plugin_path());
    let done = node.spawn(bin, &env, &serde_json::to_vec(conf).unwrap()).wait_at_most(limit);
    if done.output.stderr.contains("[harness: killed after") {
        return Sample::Timeout(limit);
    }
    if !done.output.success() {
        return Sample::Failed(format!("{}: {}", done.output.cmdline, done.output.stdout.trim()));
    }
    Sample::Took(done.elapsed)
}

/// A measured run: its time, or the deadline it was killed at, or a failure.
#[derive(Debug, Clone)]
enum Sample {
    Took(Duration),
    Timeout(Duration),
    Failed(String),
}

/// p50 of the runs that finished, with the count of those that did not ("12.3 ms (n=25)", "timeout
/// after 60 s (1 of 1)").
fn summary(v: &[Sample]) -> String {
    let ok: Vec<Duration> = v.iter().filter_map(|s| if let Sample::Took(d) = s { Some(*d) } else { None }).collect();
    let timeouts = v.iter().filter(|s| matches!(s, Sample::Timeout(_))).count();
    let failed: Vec<&String> =
        v.iter().filter_map(|s| if let Sample::Failed(m) = s { Some(m) } else { None }).collect();
    let mut out = if ok.is_empty() {
        "none finished".to_string()
    } else {
        format!("{:.2} ms (n={})", support::percentile(&ok, 50).as_secs_f64() * 1e3, ok.len())
    };
    if let Some(Sample::Timeout(limit)) = v.iter().find(|s| matches!(s, Sample::Timeout(_))) {
        out.push_str(&format!(", {timeouts} of {} killed at the {} s deadline", v.len(), limit.as_secs()));
    }
    if let Some(m) = failed.first() {
        out.push_str(&format!(", {} failed (first: {m})", failed.len()));
    }
    out
}

/// One implementation's node for the bench: a netns with a cni0 holding the pods' subnet (route_localnet
/// needs an interface) and a netns to name as CNI_NETNS.
struct BenchNode {
    label: &'static str,
    bin: PathBuf,
    node: NodeNs,
    netns: PodNs,
}

impl BenchNode {
    fn new(label: &'static str, bin: PathBuf) -> BenchNode {
        let node = NodeNs::new(&format!("pm-bench-{label}"));
        node.ip(&["link", "add", "cni0", "type", "bridge"]).ok();
        node.ip(&["addr", "add", "10.89.0.1/16", "dev", "cni0"]).ok();
        node.ip(&["link", "set", "cni0", "up"]).ok();
        node.set_sysctl("net.ipv4.ip_forward", "1");
        BenchNode { label, bin, node, netns: PodNs::new("pm-bench") }
    }

    fn run(&self, cmd: &str, id: &str, conf: &Value, limit: Duration) -> Sample {
        timed(&self.node, self.netns.path_str(), &self.bin, cmd, id, conf, limit)
    }
}

/// Release figures, rcni's portmap against the reference (/usr/lib/cni/portmap 1.1.1, iptables) on two
/// identical simulated nodes, alternating invocation by invocation (the order swapped every round) so
/// both see the same machine load:
/// 1. ADD and DEL of one pod (two mappings) on an empty node, `RCNI_PM_REPS` rounds;
/// 2. `RCNI_PM_PODS` pods added (two mappings each; the last 50 ADDs reported);
/// 3. ADD and DEL of one more pod with those pods on the node, `RCNI_PM_REPS` rounds;
/// 4. the pods deleted (the first 50 DELs reported);
/// 5. ADD and DEL of one pod with a 1000-port range on the empty node (rcni 5 rounds; the reference once,
///    and not again after a timeout).
///
/// Every invocation is killed at `RCNI_PM_LIMIT_S` seconds (default 60), which is reported, not hidden.
/// `RCNI_PM_BIN_DIR` is the directory of the portmap binary to measure (default: this build's):
/// `cargo build --release --bin portmap --bin bridge --bin host-local && RCNI_PM_BIN_DIR=target/release
/// cargo test --test portmap -- --ignored --nocapture bench_portmap`.
#[test]
#[ignore]
fn bench_portmap() {
    let env_num = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let pods = env_num("RCNI_PM_PODS", 1000);
    let reps = env_num("RCNI_PM_REPS", 25);
    let limit = Duration::from_secs(env_num("RCNI_PM_LIMIT_S", 60) as u64);
    let window = 50.min(pods);
    let ours = std::env::var_os("RCNI_PM_BIN_DIR").map_or_else(portmap_bin, |d| PathBuf::from(d).join("portmap"));
    let nodes =
        [BenchNode::new("rcni", ours.clone()), BenchNode::new("reference", support::reference_plugin("portmap"))];
    eprintln!("bench_portmap: rcni = {}, reference = {}", ours.display(), nodes[1].bin.display());
    let conf = |i: usize, maps: Value| {
        json!({"cniVersion": "1.0.0", "name": "pmbench", "type": "portmap",
            "runtimeConfig": {"portMappings": maps}, "prevResult": paper_pod(i)})
    };
    let two = |i: usize| {
        json!([{"hostPort": 10000 + 2 * i, "containerPort": 80, "protocol": "tcp"},
               {"hostPort": 10001 + 2 * i, "containerPort": 53, "protocol": "udp"}])
    };
    // results[phase][impl]
    let mut r: Vec<[Vec<Sample>; 2]> = (0..7).map(|_| [Vec::new(), Vec::new()]).collect();
    let order = |round: usize| if round % 2 == 0 { [0, 1] } else { [1, 0] };
    let extra = pods + 2;
    for round in 0..reps {
        for k in order(round) {
            r[0][k].push(nodes[k].run("ADD", "one", &conf(extra, two(extra)), limit));
            r[1][k].push(nodes[k].run("DEL", "one", &conf(extra, two(extra)), limit));
        }
    }
    for i in 0..pods {
        for k in order(i) {
            let s = nodes[k].run("ADD", &format!("pod-{i}"), &conf(i, two(i)), limit);
            if i + window >= pods {
                r[2][k].push(s);
            }
        }
        if (i + 1) % 100 == 0 {
            eprintln!("bench_portmap: {} pods added", i + 1);
        }
    }
    for round in 0..reps {
        for k in order(round) {
            r[3][k].push(nodes[k].run("ADD", "one", &conf(extra, two(extra)), limit));
            r[4][k].push(nodes[k].run("DEL", "one", &conf(extra, two(extra)), limit));
        }
    }
    for (n, i) in (0..pods).rev().enumerate() {
        for k in order(i) {
            let s = nodes[k].run("DEL", &format!("pod-{i}"), &conf(i, two(i)), limit);
            if n < window {
                r[5][k].push(s);
            }
        }
        if (n + 1) % 100 == 0 {
            eprintln!("bench_portmap: {} pods deleted", n + 1);
        }
    }
    let range: Vec<Value> =
        (0..1000).map(|k| json!({"hostPort": 20000 + k, "containerPort": 20000 + k, "protocol": "tcp"})).collect();
    let mut range_del: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..5 {
        for k in order(round) {
            if k == 1 && (round > 0) {
                continue;
            }
            let add = nodes[k].run("ADD", "range", &conf(extra, json!(range)), limit);
            let timed_out = matches!(add, Sample::Timeout(_));
            r[6][k].push(add);
            range_del[k].push(nodes[k].run("DEL", "range", &conf(extra, json!(range)), limit));
            if timed_out {
                eprintln!("bench_portmap: {} range ADD killed at {} s", nodes[k].label, limit.as_secs());
            }
        }
    }
    for (k, n) in nodes.iter().enumerate() {
        println!("portmap bench {} ({} pods x 2 mappings, {reps} rounds):", n.label, pods);
        println!("  empty node:        ADD p50 {}  DEL p50 {}", summary(&r[0][k]), summary(&r[1][k]));
        println!("  with {pods} pods:    ADD p50 {}  DEL p50 {}", summary(&r[3][k]), summary(&r[4][k]));
        println!(
            "  filling: ADD p50 pods {}-{pods} {}; teardown: DEL p50 pods {pods}-{} {}",
            pods - window + 1,
            summary(&r[2][k]),
            pods - window + 1,
            summary(&r[5][k])
        );
        println!("  1000-port range (empty node): ADD {}  DEL {}", summary(&r[6][k]), summary(&range_del[k]));
    }
}
