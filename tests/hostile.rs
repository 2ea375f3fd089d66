//! Hostile input, as a careless runtime or operator sends it, against every plugin and cnitool.
//! (cnitool's cases are at the end: it reports errors as text on stderr, like upstream cnitool.)
//!
//! Each case must answer with an error JSON on stdout carrying the right code and a message that names
//! what to fix, exit non-zero, never panic (the panic reporter's message), and leave the node exactly as
//! it was: links, addresses, routes, rules, the nft ruleset and the state files are snapshot once in a
//! throwaway node netns and compared after every case.

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::*;

/// One hostile invocation.
struct Case {
    name: String,
    bin: &'static str,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    code: u64,
    /// Must appear in `msg` or `details`: the field or variable to fix.
    needle: String,
}

/// Everything a failed command must not change.
fn snapshot(node: &NodeNs, dirs: &[PathBuf]) -> Vec<String> {
    // One command for the whole kernel side: the table runs hundreds of cases.
    let mut out = vec![
        node.sh("ip -d link show | sed -E 's/[a-z_]+_timer +[0-9.]+//g'; ip addr show; ip -4 route show table all; ip -6 route show table all; \
             ip -4 rule; ip -6 rule; ip neigh show; nft list ruleset")
            .stdout,
    ];
    for d in dirs {
        out.push(format!("{}: {}", d.display(), tree(d)));
    }
    out
}

/// Names, sizes and contents of every file under `dir` (sorted).
fn tree(dir: &std::path::Path) -> String {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                v.push(format!("{}/", p.display()));
                stack.push(p);
            } else if p.is_file() {
                v.push(format!("{} {:?}", p.display(), std::fs::read(&p).unwrap_or_default()));
            } else {
                v.push(format!("{} (not a regular file)", p.display()));
            }
        }
    }
    v.sort();
    v.join("\n")
}

fn env(command: &str, cid: &str, netns: &str, ifname: &str, path: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", path),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn set(mut e: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    e.retain(|(key, _)| key != k);
    if !v.is_empty() {
        e.push((k.into(), v.into()));
    }
    e
}

/// A config with `patch` merged into `base` at the top level (a `null` removes the key).
fn patched(base: &Value, patch: Value) -> Vec<u8> {
    let mut v = base.clone();
    for (k, val) in patch.as_object().unwrap() {
        if val.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = val.clone();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

struct World {
    node: NodeNs,
    pod: PodNs,
    data: TempDir,
    plugins: PluginDir,
    fifo: PathBuf,
    plain_file: PathBuf,
}

impl World {
    fn new() -> World {
        require_root();
        let node = NodeNs::new("hostile");
        // Something to lose: an underlay with an address and a default route, and a bridge with a gateway.
        node.sh("ip link add und0 type veth peer name und1 && ip link set und1 up && ip addr add 198.18.0.1/24 dev und0 && ip link set und0 up && \
             ip route add default via 198.18.0.254 dev und0 && \
             ip link add hbr0 type bridge && ip addr add 10.77.0.1/24 dev hbr0 && ip link set hbr0 up")
            .ok();
        let plugins = PluginDir::new(&[
            ("bridge", rcni_bin("bridge")),
            ("vxlan", rcni_bin("vxlan")),
            ("loopback", rcni_bin("loopback")),
            ("host-local", rcni_bin("host-local")),
            ("flannel", rcni_bin("flannel")),
        ]);
        let data = TempDir::new("hostile-data");
        std::fs::create_dir_all(data.join("ipam")).unwrap();
        data.write(
            "subnet.env",
            "FLANNEL_NETWORK=10.78.0.0/16\nFLANNEL_SUBNET=10.78.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        );
        data.write("peers.json", r#"[{"underlay":"198.18.0.2","subnets":["10.79.2.0/24"]}]"#);
        let fifo = data.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let plain_file = data.write("plain", "not a netns");
        let pod = PodNs::new("hostile-pod");
        World { node, pod, data, plugins, fifo, plain_file }
    }

    fn path(&self) -> String {
        self.plugins.path().display().to_string()
    }

    fn ipam(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "subnet": subnet, "dataDir": self.data.join("ipam")})
    }

    fn bridge(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "hnet", "type": "bridge", "bridge": "hbr0", "isGateway": true,
               "ipMasq": true, "ipam": self.ipam("10.77.0.0/24")})
    }

    fn vxlan(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "hvx", "type": "vxlan", "network": ["10.79.0.0/16"],
               "subnet": ["10.79.1.0/24"], "vxlan": {"vni": 4242, "underlay": "und0"}, "bridge": "hvxbr0",
               "peersFile": self.data.join("peers.json"), "dataDir": self.data.join("ipam")})
    }

    fn host_local(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "hhl", "type": "host-local", "ipam": self.ipam("10.76.0.0/24")})
    }

    fn loopback(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "hlo", "type": "loopback"})
    }

    fn flannel(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "hfl", "type": "flannel", "subnetFile": self.data.join("subnet.env"),
               "dataDir": self.data.join("flannel"), "ipam": {"dataDir": self.data.join("ipam")},
               "delegate": {"bridge": "hflbr0"}})
    }

    fn add_env(&self, cid: &str) -> Vec<(String, String)> {
        env("ADD", cid, self.pod.path_str(), "eth0", &self.path())
    }
}

fn case(
    name: impl Into<String>,
    bin: &'static str,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    code: u64,
    needle: &str,
) -> Case {
    Case { name: name.into(), bin, env, stdin, code, needle: needle.into() }
}

/// Cases every plugin must refuse the same way: the environment and the common config keys.
fn common_cases(w: &World, bin: &'static str, conf: &Value, out: &mut Vec<Case>) {
    let ok = serde_json::to_vec(conf).unwrap();
    let add = w.add_env("hostile1");
    let long = "a".repeat(16);
    type EnvCase<'a> = (&'a str, Vec<(String, String)>, u64, &'a str);
    let env_cases: Vec<EnvCase> = vec![
        ("unknown command", set(add.clone(), "CNI_COMMAND", "FROB"), 4, "CNI_COMMAND"),
        ("lower-case command", set(add.clone(), "CNI_COMMAND", "add"), 4, "CNI_COMMAND"),
        ("no container id", set(add.clone(), "CNI_CONTAINERID", ""), 4, "CNI_CONTAINERID"),
        ("no netns", set(add.clone(), "CNI_NETNS", ""), 4, "CNI_NETNS"),
        ("no ifname", set(add.clone(), "CNI_IFNAME", ""), 4, "CNI_IFNAME"),
        ("container id with slash", set(add.clone(), "CNI_CONTAINERID", "a/../b"), 4, "containerID"),
        ("container id dot-dot", set(add.clone(), "CNI_CONTAINERID", ".."), 4, "containerID"),
        ("container id leading dash", set(add.clone(), "CNI_CONTAINERID", "-rf"), 4, "containerID"),
        ("container id with space", set(add.clone(), "CNI_CONTAINERID", "a b"), 4, "containerID"),
        ("container id with newline", set(add.clone(), "CNI_CONTAINERID", "a\nb"), 4, "containerID"),
        ("container id with escape", set(add.clone(), "CNI_CONTAINERID", "a\u{1b}[2J"), 4, "containerID"),
        ("container id unicode", set(add.clone(), "CNI_CONTAINERID", "cöntainer"), 4, "containerID"),
        ("ifname too long", set(add.clone(), "CNI_IFNAME", &long), 4, "CNI_IFNAME"),
        ("ifname dot-dot", set(add.clone(), "CNI_IFNAME", ".."), 4, "CNI_IFNAME"),
        ("ifname slash", set(add.clone(), "CNI_IFNAME", "eth/0"), 4, "CNI_IFNAME"),
        ("ifname colon", set(add.clone(), "CNI_IFNAME", "eth:0"), 4, "CNI_IFNAME"),
        ("ifname space", set(add.clone(), "CNI_IFNAME", "eth 0"), 4, "CNI_IFNAME"),
        ("ifname tab", set(add.clone(), "CNI_IFNAME", "eth\t0"), 4, "CNI_IFNAME"),
        ("ifname control char", set(add.clone(), "CNI_IFNAME", "eth\u{7}0"), 4, "CNI_IFNAME"),
        ("ifname DEL char", set(add.clone(), "CNI_IFNAME", "eth\u{7f}"), 4, "CNI_IFNAME"),
        ("CNI_ARGS without =", set(add.clone(), "CNI_ARGS", "garbage"), 4, "CNI_ARGS"),
        ("CNI_ARGS empty key", set(add.clone(), "CNI_ARGS", "=x"), 4, "ARGS"),
        ("CNI_ARGS unknown key", set(add.clone(), "CNI_ARGS", "FOO=bar"), 4, "FOO=bar"),
        ("CNI_ARGS bad IgnoreUnknown", set(add.clone(), "CNI_ARGS", "IgnoreUnknown=maybe;FOO=1"), 4, "IgnoreUnknown"),
        ("own netns", set(add.clone(), "CNI_NETNS", "/proc/self/ns/net"), 8, "own network namespace"),
    ];
    for (what, e, code, needle) in env_cases {
        if matches!(bin, "loopback" | "bandwidth")
            && what.starts_with("CNI_ARGS")
            && what != "CNI_ARGS without ="
            && what != "CNI_ARGS empty key"
        {
            continue; // loopback and bandwidth read no CNI_ARGS keys, like the reference: any key is fine
        }
        out.push(case(format!("{bin}: {what}"), bin, e, ok.clone(), code, needle));
    }
    let conf_cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("empty stdin", Vec::new(), 6, "network config"),
        ("not JSON", b"{\"cniVersion\":".to_vec(), 6, "network config"),
        ("JSON array", b"[]".to_vec(), 6, "JSON object"),
        ("JSON string", b"\"x\"".to_vec(), 6, "JSON object"),
        ("no name", patched(conf, json!({"name": null})), 7, "network name"),
        ("name with slash", patched(conf, json!({"name": "a/b"})), 7, "network name"),
        ("name dot-dot", patched(conf, json!({"name": ".."})), 7, "network name"),
        ("name with NUL", patched(conf, json!({"name": "n\u{0}x"})), 7, "network name"),
        ("name a number", patched(conf, json!({"name": 5})), 7, "name"),
        ("unsupported version", patched(conf, json!({"cniVersion": "9.9.9"})), 1, "9.9.9"),
        ("version garbage", patched(conf, json!({"cniVersion": "one"})), 1, "one"),
        ("runtimeConfig a list", patched(conf, json!({"runtimeConfig": []})), 7, "runtimeConfig"),
        ("ipam a string", patched(conf, json!({"ipam": "host-local"})), 7, "ipam"),
        ("prevResult garbage", patched(conf, json!({"prevResult": {"ips": [{"address": "x"}]}})), 6, "prevResult"),
    ];
    for (what, stdin, code, needle) in conf_cases {
        out.push(case(format!("{bin}: {what}"), bin, add.clone(), stdin, code, needle));
    }
}

fn plugin_cases(w: &World) -> Vec<Case> {
    let mut out = Vec::new();
    for (bin, conf) in [
        ("bridge", w.bridge()),
        ("vxlan", w.vxlan()),
        ("host-local", w.host_local()),
        ("loopback", w.loopback()),
        ("flannel", w.flannel()),
    ] {
        common_cases(w, bin, &conf, &mut out);
    }
    let add = w.add_env("hostile2");
    let br = w.bridge();
    let vx = w.vxlan();
    let mut push =
        |what: &str, bin: &'static str, env: &Vec<(String, String)>, stdin: Vec<u8>, code: u64, needle: &str| {
            out.push(case(format!("{bin}: {what}"), bin, env.clone(), stdin, code, needle));
        };
    // bridge
    push("bridge name with NUL", "bridge", &add, patched(&br, json!({"bridge": "hbr0\u{0}x"})), 7, "bridge name");
    push("bridge name control char", "bridge", &add, patched(&br, json!({"bridge": "hbr\u{1}"})), 7, "bridge name");
    push(
        "bridge name too long",
        "bridge",
        &add,
        patched(&br, json!({"bridge": "a-very-long-bridge-name"})),
        7,
        "bridge name",
    );
    push("bridge name slash", "bridge", &add, patched(&br, json!({"bridge": "br/0"})), 7, "bridge name");
    push("bridge name a number", "bridge", &add, patched(&br, json!({"bridge": 5})), 7, "bridge");
    push("vlan out of range", "bridge", &add, patched(&br, json!({"vlan": 5000})), 7, "VLAN");
    push("negative vlan", "bridge", &add, patched(&br, json!({"vlan": -1})), 7, "VLAN");
    push(
        "hairpin and promisc",
        "bridge",
        &add,
        patched(&br, json!({"hairpinMode": true, "promiscMode": true})),
        7,
        "hairpin",
    );
    push("bad ipMasqBackend", "bridge", &add, patched(&br, json!({"ipMasqBackend": "pf"})), 7, "pf");
    push("mtu a string", "bridge", &add, patched(&br, json!({"mtu": "big"})), 7, "mtu");
    push(
        "CNI_ARGS MAC not a MAC",
        "bridge",
        &set(add.clone(), "CNI_ARGS", "MAC=zz:zz"),
        serde_json::to_vec(&br).unwrap(),
        4,
        "MAC",
    );
    push(
        "CNI_ARGS MAC too long",
        "bridge",
        &set(add.clone(), "CNI_ARGS", "MAC=02:00:00:00:00:01:02"),
        serde_json::to_vec(&br).unwrap(),
        4,
        "MAC",
    );
    push(
        "runtimeConfig mac garbage",
        "bridge",
        &add,
        patched(&br, json!({"runtimeConfig": {"mac": "nope"}})),
        7,
        "MAC",
    );
    push(
        "ipam subnet garbage",
        "bridge",
        &add,
        patched(&br, json!({"ipam": {"type": "host-local", "subnet": "10.77.0.0/99", "dataDir": w.data.join("ipam")}})),
        7,
        "subnet",
    );
    push(
        "ipam type with slash",
        "bridge",
        &add,
        patched(&br, json!({"ipam": {"type": "../../bin/sh"}})),
        7,
        "plugin type",
    );
    push(
        "ipam type missing binary",
        "bridge",
        &add,
        patched(&br, json!({"ipam": {"type": "no-such-ipam"}})),
        999,
        "no-such-ipam",
    );
    push(
        "ipam without CNI_PATH",
        "bridge",
        &set(add.clone(), "CNI_PATH", ""),
        serde_json::to_vec(&br).unwrap(),
        4,
        "CNI_PATH",
    );
    push(
        "netns does not exist",
        "bridge",
        &set(add.clone(), "CNI_NETNS", "/run/netns/rcni-hostile-none"),
        serde_json::to_vec(&br).unwrap(),
        4,
        "CNI_NETNS",
    );
    push(
        "netns is a FIFO",
        "bridge",
        &set(add.clone(), "CNI_NETNS", w.fifo.to_str().unwrap()),
        serde_json::to_vec(&br).unwrap(),
        4,
        "CNI_NETNS",
    );
    push(
        "netns is a plain file",
        "bridge",
        &set(add.clone(), "CNI_NETNS", w.plain_file.to_str().unwrap()),
        serde_json::to_vec(&br).unwrap(),
        4,
        "CNI_NETNS",
    );
    push(
        "netns is a uts namespace",
        "bridge",
        &set(add.clone(), "CNI_NETNS", "/proc/self/ns/uts"),
        serde_json::to_vec(&br).unwrap(),
        4,
        "CNI_NETNS",
    );
    push(
        "CHECK on 0.3.1",
        "bridge",
        &set(add.clone(), "CNI_COMMAND", "CHECK"),
        patched(&br, json!({"cniVersion": "0.3.1"})),
        1,
        "CHECK",
    );
    push("GC on 1.0.0", "bridge", &set(add.clone(), "CNI_COMMAND", "GC"), serde_json::to_vec(&br).unwrap(), 1, "GC");
    push(
        "GC attachments not a list",
        "bridge",
        &set(add.clone(), "CNI_COMMAND", "GC"),
        patched(&br, json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": 5})),
        6,
        "valid-attachments",
    );
    // vxlan
    push(
        "vxlan.name with NUL",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "und0", "name": "vx\u{0}y"}})),
        7,
        "vxlan.name",
    );
    push(
        "vxlan.underlay with NUL",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "und0\u{0}x"}})),
        7,
        "vxlan.underlay",
    );
    push(
        "vxlan.underlay too long",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "a-very-long-underlay"}})),
        7,
        "vxlan.underlay",
    );
    push(
        "vxlan.underlay slash",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "../eth0"}})),
        7,
        "vxlan.underlay",
    );
    push(
        "vxlan.name too long",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "und0", "name": "a-very-long-vxlan-name"}})),
        7,
        "vxlan.name",
    );
    push("vxlan bridge with NUL", "vxlan", &add, patched(&vx, json!({"bridge": "b\u{0}r"})), 7, "bridge name");
    push("vni 0", "vxlan", &add, patched(&vx, json!({"vxlan": {"vni": 0, "underlay": "und0"}})), 7, "vni");
    push("vni too big", "vxlan", &add, patched(&vx, json!({"vxlan": {"vni": 16777216, "underlay": "und0"}})), 7, "vni");
    push(
        "port 0",
        "vxlan",
        &add,
        patched(&vx, json!({"vxlan": {"vni": 4242, "underlay": "und0", "port": 0}})),
        7,
        "port",
    );
    push("subnet outside network", "vxlan", &add, patched(&vx, json!({"subnet": ["10.1.0.0/24"]})), 7, "subnet");
    push("network garbage", "vxlan", &add, patched(&vx, json!({"network": ["ten/8"]})), 7, "network");
    // The message says what `network` and `subnet` take (a CIDR or a list of CIDRs) and names the field.
    for (what, patch, needle) in [
        ("network not a CIDR", json!({"network": "ten/8"}), "network: \"ten/8\" is not a CIDR"),
        ("network a number", json!({"network": 8}), "network: invalid type: integer `8`, expected a CIDR"),
        ("network list of numbers", json!({"network": [8]}), "network[0]: invalid type: integer `8`, expected a CIDR"),
        (
            "network an object",
            json!({"network": {"cidr": "10.0.0.0/8"}}),
            "network: invalid type: map, expected a CIDR",
        ),
        ("network list with garbage", json!({"network": ["10.79.0.0/16", "x"]}), "network[1]: \"x\" is not a CIDR"),
        ("subnet a bool", json!({"subnet": true}), "subnet: invalid type: boolean `true`, expected a CIDR"),
    ] {
        push(what, "vxlan", &add, patched(&vx, patch), 7, needle);
    }
    push(
        "peer subnet with host bits",
        "vxlan",
        &add,
        patched(&vx, json!({"peersFile": null, "peers": [{"underlay": "198.18.0.2", "subnets": ["10.79.2.1/24"]}]})),
        7,
        "host bits",
    );
    push(
        "peer underlay garbage",
        "vxlan",
        &add,
        patched(&vx, json!({"peersFile": null, "peers": [{"underlay": "nope", "subnets": []}]})),
        7,
        "peers",
    );
    // host-local
    let hl = w.host_local();
    let hl_ipam = |ipam: Value| patched(&hl, json!({"ipam": ipam}));
    let dd = w.data.join("ipam");
    push("no subnet", "host-local", &add, hl_ipam(json!({"type": "host-local", "dataDir": dd})), 7, "subnet");
    push(
        "subnet /31",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/31", "dataDir": dd})),
        7,
        "too small",
    );
    push(
        "subnet host bits",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.1/24", "dataDir": dd})),
        7,
        "host bits",
    );
    push(
        "gateway outside subnet",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/24", "gateway": "10.1.0.1", "dataDir": dd})),
        7,
        "gateway",
    );
    push(
        "rangeStart garbage",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/24", "rangeStart": "x", "dataDir": dd})),
        7,
        "rangeStart",
    );
    push(
        "rangeEnd before start",
        "host-local",
        &add,
        hl_ipam(
            json!({"type": "host-local", "subnet": "10.76.0.0/24", "rangeStart": "10.76.0.9", "rangeEnd": "10.76.0.3", "dataDir": dd}),
        ),
        7,
        "range",
    );
    push(
        "mixed families in a set",
        "host-local",
        &add,
        hl_ipam(
            json!({"type": "host-local", "ranges": [[{"subnet": "10.76.0.0/24"}, {"subnet": "fd00:76::/64"}]], "dataDir": dd}),
        ),
        7,
        "famil",
    );
    push(
        "overlapping sets",
        "host-local",
        &add,
        hl_ipam(
            json!({"type": "host-local", "ranges": [[{"subnet": "10.76.0.0/24"}], [{"subnet": "10.76.0.0/16"}]], "dataDir": dd}),
        ),
        7,
        "overlap",
    );
    push(
        "dataDir relative",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/24", "dataDir": "relative/dir"})),
        7,
        "dataDir",
    );
    push(
        "dataDir a number",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/24", "dataDir": 5})),
        7,
        "dataDir",
    );
    push(
        "routes without dst",
        "host-local",
        &add,
        hl_ipam(
            json!({"type": "host-local", "subnet": "10.76.0.0/24", "routes": [{"gw": "10.76.0.1"}], "dataDir": dd}),
        ),
        7,
        "dst",
    );
    push(
        "CNI_ARGS IP not an IP",
        "host-local",
        &set(add.clone(), "CNI_ARGS", "IP=not-an-ip"),
        serde_json::to_vec(&hl).unwrap(),
        4,
        "IP",
    );
    push(
        "CNI_ARGS IP outside range",
        "host-local",
        &set(add.clone(), "CNI_ARGS", "IP=10.1.0.5"),
        serde_json::to_vec(&hl).unwrap(),
        999,
        "10.1.0.5",
    );
    push(
        "runtimeConfig ips garbage",
        "host-local",
        &add,
        patched(&hl, json!({"runtimeConfig": {"ips": ["banana"]}})),
        7,
        "runtimeConfig.ips",
    );
    push(
        "args.cni.ips not a list",
        "host-local",
        &add,
        patched(&hl, json!({"args": {"cni": {"ips": 5}}})),
        7,
        "args.cni.ips",
    );
    push(
        "lockTimeout negative",
        "host-local",
        &add,
        hl_ipam(json!({"type": "host-local", "subnet": "10.76.0.0/24", "lockTimeout": -1, "dataDir": dd})),
        7,
        "lockTimeout",
    );
    // flannel
    let fl = w.flannel();
    push(
        "subnetFile missing",
        "flannel",
        &add,
        patched(&fl, json!({"subnetFile": w.data.join("none.env")})),
        11,
        "none.env",
    );
    // Not a regular file: retrying cannot help (so not 11); the config points at the wrong thing (7).
    push("subnetFile is a FIFO", "flannel", &add, patched(&fl, json!({"subnetFile": w.fifo})), 7, "subnetFile");
    push("delegate a string", "flannel", &add, patched(&fl, json!({"delegate": "bridge"})), 7, "delegate");
    out
}

fn run_cases(w: &World, cases: &[Case], extra_dirs: &[PathBuf]) {
    let mut dirs = vec![w.data.path().to_path_buf()];
    dirs.extend_from_slice(extra_dirs);
    // IPv6 duplicate address detection changes `ip addr` on its own: let it finish first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.node.ip(&["addr"]).stdout.contains("tentative") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut before = snapshot(&w.node, &dirs);
    let mut pod_before = snapshot_pod(&w.pod);
    let mut failures = Vec::new();
    for c in cases {
        eprintln!("case {}", c.name);
        let out = w.node.run_plugin(&rcni_bin(c.bin), &c.env, &c.stdin);
        let mut problems = Vec::new();
        if out.success() {
            problems.push("succeeded".to_string());
        }
        match serde_json::from_str::<Value>(&out.stdout) {
            Ok(v) => {
                let text = format!("{} {}", v["msg"].as_str().unwrap_or(""), v["details"].as_str().unwrap_or(""));
                if v["code"].as_u64() != Some(c.code) {
                    problems.push(format!("code {} (want {})", v["code"], c.code));
                }
                if !text.contains(&c.needle) {
                    problems.push(format!("message does not name {:?}", c.needle));
                }
                if text.contains("internal error in the plugin") {
                    problems.push("panicked".into());
                }
            }
            Err(e) => problems.push(format!("stdout is not an error JSON ({e})")),
        }
        let after = snapshot(&w.node, &dirs);
        if after != before {
            problems.push(format!("changed the node: {}", diff(&before, &after)));
            before = after; // report each change once, at the case that made it
        }
        let pod_after = snapshot_pod(&w.pod);
        if pod_after != pod_before {
            problems.push(format!("changed the pod: {}", diff(&pod_before, &pod_after)));
            pod_before = pod_after;
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    {}",
                c.name,
                problems.join(", "),
                out.to_string().replace('\n', "\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The lines only one of two snapshots has.
fn diff(before: &[String], after: &[String]) -> String {
    let lines = |v: &[String]| v.iter().flat_map(|s| s.lines().map(str::to_string)).collect::<Vec<_>>();
    let (b, a) = (lines(before), lines(after));
    let gone: Vec<_> = b.iter().filter(|l| !a.contains(l)).map(|l| format!("-{l}")).collect();
    let new: Vec<_> = a.iter().filter(|l| !b.contains(l)).map(|l| format!("+{l}")).collect();
    [gone, new].concat().join(" | ")
}

fn snapshot_pod(pod: &PodNs) -> Vec<String> {
    vec![pod.sh("ip -d link show; ip addr show").stdout]
}

#[test]
fn hostile_plugin_input_is_refused_and_changes_nothing() {
    let w = World::new();
    let cases: Vec<Case> = plugin_cases(&w);
    assert!(cases.len() >= 150, "{} cases", cases.len());
    run_cases(&w, &cases, &[]);
}

// ------------------------------------------------------------------------------------------------
// firewall (helper "firewall"): the common cases and its own fields, with the firewall ledger of the
// node (/run/rcni/firewall-<netns inode>) in the snapshot.

fn firewall_conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "hfw", "type": "firewall",
           "prevResult": {"cniVersion": "1.0.0",
                          "interfaces": [{"name": "hbr0"}, {"name": "veth0"}, {"name": "eth0", "sandbox": "/x"}],
                          "ips": [{"address": "10.77.0.5/24", "interface": 2}]}})
}

fn firewall_cases(w: &World) -> Vec<Case> {
    let mut out = Vec::new();
    let conf = firewall_conf();
    common_cases(w, "firewall", &conf, &mut out);
    // Like the reference, firewall reads no CNI_ARGS keys: any key is fine (podman sends IgnoreUnknown, MAC).
    out.retain(|c| {
        !c.name.starts_with("firewall: CNI_ARGS") || c.name.ends_with("without =") || c.name.ends_with("empty key")
    });
    let add = w.add_env("hostilefw");
    let mut no_interfaces = conf.clone();
    no_interfaces["ingressPolicy"] = json!("same-bridge");
    no_interfaces["prevResult"]["interfaces"] = json!([]);
    no_interfaces["prevResult"]["ips"] = json!([{"address": "10.77.0.5/24"}]);
    let mut bad_bridge = conf.clone();
    bad_bridge["ingressPolicy"] = json!("same-bridge");
    bad_bridge["prevResult"]["interfaces"][0]["name"] = json!("a bridge with spaces");
    let mut isolated_no_interfaces = no_interfaces.clone();
    isolated_no_interfaces["ingressPolicy"] = json!("isolated");
    let mut isolated_bad_bridge = bad_bridge.clone();
    isolated_bad_bridge["ingressPolicy"] = json!("isolated");
    let own: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("no prevResult", patched(&conf, json!({"prevResult": null})), 7, "prevResult"),
        ("backend unknown", patched(&conf, json!({"backend": "pf"})), 7, "backend"),
        ("backend a number", patched(&conf, json!({"backend": 1})), 7, "backend"),
        ("backend firewalld", patched(&conf, json!({"backend": "firewalld"})), 2, "firewalld"),
        ("backend in capitals", patched(&conf, json!({"backend": "NFTABLES"})), 7, "backend"),
        ("ingressPolicy unknown", patched(&conf, json!({"ingressPolicy": "closed"})), 7, "ingressPolicy"),
        ("ingressPolicy a near miss", patched(&conf, json!({"ingressPolicy": "isolate"})), 7, "ingressPolicy"),
        (
            "admin chain with space",
            patched(&conf, json!({"iptablesAdminChainName": "A B"})),
            7,
            "iptablesAdminChainName",
        ),
        (
            "admin chain too long",
            patched(&conf, json!({"iptablesAdminChainName": "A".repeat(29)})),
            7,
            "iptablesAdminChainName",
        ),
        ("admin chain an option", patched(&conf, json!({"iptablesAdminChainName": "-F"})), 7, "iptablesAdminChainName"),
        (
            "admin chain built-in",
            patched(&conf, json!({"iptablesAdminChainName": "FORWARD"})),
            7,
            "iptablesAdminChainName",
        ),
        (
            "admin chain with quote",
            patched(&conf, json!({"iptablesAdminChainName": "A\"B"})),
            7,
            "iptablesAdminChainName",
        ),
        ("admin chain a list", patched(&conf, json!({"iptablesAdminChainName": ["A"]})), 7, "iptablesAdminChainName"),
        ("firewalldZone a number", patched(&conf, json!({"firewalldZone": 3})), 7, "firewalldZone"),
        ("acceptDnat a string", patched(&conf, json!({"acceptDnat": "true"})), 7, "acceptDnat"),
        ("same-bridge without interfaces", serde_json::to_vec(&no_interfaces).unwrap(), 7, "same-bridge"),
        ("same-bridge bad bridge name", serde_json::to_vec(&bad_bridge).unwrap(), 7, "prevResult.interfaces[0].name"),
        ("isolated without interfaces", serde_json::to_vec(&isolated_no_interfaces).unwrap(), 7, "isolated"),
        (
            "isolated bad bridge name",
            serde_json::to_vec(&isolated_bad_bridge).unwrap(),
            7,
            "prevResult.interfaces[0].name",
        ),
    ];
    for (what, stdin, code, needle) in own {
        out.push(case(format!("firewall: {what}"), "firewall", add.clone(), stdin, code, needle));
    }
    out
}

/// Every path under `dir` (empty if it does not exist).
fn walkdir(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        out.extend(walkdir(&e.path()));
    }
    out
}

#[test]
fn hostile_firewall_input_is_refused_and_changes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let ledger = PathBuf::from(format!("/run/rcni/firewall-{}", std::fs::metadata(w.node.path()).unwrap().ino()));
    // Keyed by the node netns' inode, which the kernel reuses: one left by an earlier run (before the
    // namespace guards removed it) is stale, as no live namespace has this inode but ours.
    let _ = std::fs::remove_dir_all(&ledger);
    let cases = firewall_cases(&w);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    run_cases(&w, &cases, std::slice::from_ref(&ledger));
    let made: Vec<_> = walkdir(&ledger);
    assert!(made.is_empty() && !ledger.exists(), "a refused ADD created the ledger: {made:?}");
}

/// One hostile cnitool invocation. cnitool is the runtime side: like upstream cnitool it reports an error
/// as text on stderr with exit status 1 (no error JSON), so `needle` is looked for in stderr.
struct CliCase {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    needle: String,
}

/// cnitool's inputs: a directory per kind of conflist (one bad file must not hide another), a result
/// cache with planted files, and the plugins of the table.
struct CliWorld {
    dir: TempDir,
}

impl CliWorld {
    fn new(w: &World) -> CliWorld {
        let dir = TempDir::new("hostile-cli");
        let good = json!({"cniVersion": "1.0.0", "name": "hcli", "plugins": [w.bridge()]});
        let lists: Vec<(&str, Vec<u8>)> = vec![
            ("good", serde_json::to_vec(&good).unwrap()),
            ("notjson", b"{\"cniVersion\":".to_vec()),
            (
                "plugins-not-list",
                serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "hcli", "plugins": {}})).unwrap(),
            ),
            ("no-plugins", serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "hcli", "plugins": []})).unwrap()),
            (
                "plugin-not-object",
                serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "hcli", "plugins": ["bridge"]})).unwrap(),
            ),
            (
                "type-slash",
                serde_json::to_vec(
                    &json!({"cniVersion": "1.0.0", "name": "hcli", "plugins": [{"type": "../../bin/sh"}]}),
                )
                .unwrap(),
            ),
            (
                "version-garbage",
                serde_json::to_vec(&json!({"cniVersion": "one", "name": "hcli", "plugins": [w.bridge()]})).unwrap(),
            ),
            (
                "name-number",
                serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": 5, "plugins": [w.bridge()]})).unwrap(),
            ),
        ];
        for (d, bytes) in lists {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            std::fs::write(dir.join(d).join("10-hcli.conflist"), bytes).unwrap();
        }
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::create_dir_all(dir.join("fifo")).unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&dir.join("fifo").join("10-hcli.conflist"), mode).unwrap();
        // Result caches (libcni's layout: results/<network>-<containerID>-<ifname>).
        for (d, what) in [("cache-garbage", "garbage"), ("cache-fifo", "fifo")] {
            let results = dir.join(d).join("results");
            std::fs::create_dir_all(&results).unwrap();
            let file = results.join("hcli-hostile-cli-eth0");
            match what {
                "fifo" => nix::unistd::mkfifo(&file, mode).unwrap(),
                _ => std::fs::write(&file, "{\"kind\": \"cniCacheV1\", \"result\": ").unwrap(),
            }
        }
        CliWorld { dir }
    }

    fn env(&self, w: &World, confs: &str, cache: &str) -> Vec<(String, String)> {
        vec![
            ("NETCONFPATH".into(), self.dir.join(confs).display().to_string()),
            ("CNI_PATH".into(), w.path()),
            ("CNI_CACHE_DIR".into(), self.dir.join(cache).display().to_string()),
            ("CNI_CONTAINERID".into(), "hostile-cli".into()),
        ]
    }
}

fn cnitool_cases(w: &World, c: &CliWorld) -> Vec<CliCase> {
    let pod = w.pod.path_str().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let add = args(&["add", "hcli", &pod]);
    let good = c.env(w, "good", "cache-none");
    let mut out = Vec::new();
    let mut push = |what: &str, args: Vec<String>, env: Vec<(String, String)>, needle: &str| {
        out.push(CliCase { name: format!("cnitool: {what}"), args, env, needle: needle.into() });
    };
    push("no arguments", Vec::new(), good.clone(), "add");
    push("unknown command", args(&["frob", "hcli", &pod]), good.clone(), "add");
    push("add without a netns", args(&["add", "hcli"]), good.clone(), "add");
    push("too many arguments", args(&["add", "hcli", &pod, "extra"]), good.clone(), "add");
    push("network not found", args(&["add", "nosuch", &pod]), good.clone(), "nosuch");
    push("NETCONFPATH empty", add.clone(), c.env(w, "empty", "cache-none"), "no net configurations");
    push("NETCONFPATH missing", add.clone(), c.env(w, "none", "cache-none"), "no net configurations");
    for (d, needle) in [
        ("notjson", "10-hcli.conflist"),
        ("plugins-not-list", "plugins"),
        ("no-plugins", "no plugin"),
        ("plugin-not-object", "plugin"),
        ("type-slash", "plugin type"),
        ("version-garbage", "one"),
        ("name-number", "name"),
        ("fifo", "10-hcli.conflist"),
    ] {
        push(&format!("conflist {d}"), add.clone(), c.env(w, d, "cache-none"), needle);
    }
    let with = |k: &str, v: &str| set(good.clone(), k, v);
    push("CAP_ARGS not JSON", add.clone(), with("CAP_ARGS", "{"), "CAP_ARGS");
    push("CAP_ARGS a list", add.clone(), with("CAP_ARGS", "[]"), "CAP_ARGS");
    push("CNI_ARGS without =", add.clone(), with("CNI_ARGS", "garbage"), "ARGS");
    push("CNI_IFNAME too long", add.clone(), with("CNI_IFNAME", "a-very-long-ifname"), "CNI_IFNAME");
    push("CNI_CONTAINERID with slash", add.clone(), with("CNI_CONTAINERID", "a/../b"), "containerID");
    push("netns missing", args(&["add", "hcli", "/run/netns/rcni-hostile-none"]), good.clone(), "CNI_NETNS");
    push("netns a plain file", args(&["add", "hcli", w.plain_file.to_str().unwrap()]), good.clone(), "CNI_NETNS");
    push("CNI_PATH without the plugin", add.clone(), with("CNI_PATH", "/nonexistent"), "bridge");
    push(
        "CNI_VALID_ATTACHMENTS garbage",
        args(&["gc", "hcli"]),
        with("CNI_VALID_ATTACHMENTS", "{\"x\":1}"),
        "CNI_VALID_ATTACHMENTS",
    );
    push(
        "cached result garbage",
        args(&["check", "hcli", &pod]),
        c.env(w, "good", "cache-garbage"),
        "hcli-hostile-cli-eth0",
    );
    push("cached result a FIFO", args(&["check", "hcli", &pod]), c.env(w, "good", "cache-fifo"), "prevResult");
    out
}

fn run_cli_cases(w: &World, cases: &[CliCase], dirs: &[PathBuf]) {
    // IPv6 duplicate address detection changes `ip addr` on its own: let it finish first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.node.ip(&["addr"]).stdout.contains("tentative") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut before = snapshot(&w.node, dirs);
    let mut failures = Vec::new();
    for c in cases {
        eprintln!("case {}", c.name);
        let out = w
            .node
            .cmd(rcni_bin("cnitool"))
            .args(&c.args)
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .timeout(std::time::Duration::from_secs(20))
            .run();
        let mut problems = Vec::new();
        if out.success() {
            problems.push("succeeded".to_string());
        }
        if out.status == -1 {
            problems.push("hung (killed after 20 s)".to_string());
        }
        if !out.stdout.trim().is_empty() {
            problems.push("printed on stdout".to_string());
        }
        if !out.stderr.contains(&c.needle) {
            problems.push(format!("stderr does not name {:?}", c.needle));
        }
        if out.stderr.contains("panicked") || out.stderr.contains("internal error in the plugin") {
            problems.push("panicked".into());
        }
        let after = snapshot(&w.node, dirs);
        if after != before {
            problems.push(format!("changed the node: {}", diff(&before, &after)));
            before = after;
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    {}",
                c.name,
                problems.join(", "),
                out.to_string().replace('\n', "\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// cnitool with hostile environment, arguments, conflist files and result-cache files: exit 1 with a
/// message on stderr that names what to fix, nothing on stdout, never a hang or a panic, and the node, the
/// data and the conflist/cache directories exactly as before.
#[test]
fn hostile_cnitool_input_is_refused_and_changes_nothing() {
    let w = World::new();
    let c = CliWorld::new(&w);
    let cases = cnitool_cases(&w, &c);
    assert!(cases.len() >= 25, "{} cases", cases.len());
    run_cli_cases(&w, &cases, &[w.data.path().to_path_buf(), c.dir.path().to_path_buf()]);
}

// ---- portmap (block owned by helper "portmap"; self-contained) ----

/// portmap's config with one valid mapping and a prevResult naming the world's pod.
fn portmap_conf(w: &World) -> Value {
    json!({"cniVersion": "1.0.0", "name": "hpm", "type": "portmap",
           "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
           "prevResult": {"cniVersion": "1.0.0",
               "interfaces": [{"name": "hbr0"}, {"name": "eth0", "sandbox": w.pod.path_str()}],
               "ips": [{"address": "10.77.0.5/24", "interface": 1}]}})
}

#[test]
fn hostile_portmap_input_is_refused_and_changes_nothing() {
    let w = World::new();
    let pm = portmap_conf(&w);
    let mut cases = Vec::new();
    common_cases(&w, "portmap", &pm, &mut cases);
    let add = w.add_env("hostile-pm");
    let maps = |m: Value| patched(&pm, json!({"runtimeConfig": {"portMappings": m}}));
    let specific: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("hostPort 0", maps(json!([{"hostPort": 0, "containerPort": 80}])), 7, "portMappings[0].hostPort"),
        ("hostPort 65536", maps(json!([{"hostPort": 65536, "containerPort": 80}])), 7, "portMappings[0].hostPort"),
        ("hostPort a string", maps(json!([{"hostPort": "80", "containerPort": 80}])), 7, "hostPort"),
        ("containerPort missing", maps(json!([{"hostPort": 80}])), 7, "portMappings[0].containerPort"),
        ("protocol icmp", maps(json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}])), 7, "protocol"),
        ("hostIP garbage", maps(json!([{"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}])), 7, "hostIP"),
        (
            "one host port, two targets",
            maps(json!([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}])),
            7,
            "portMappings[1]",
        ),
        ("portMappings an object", maps(json!({"hostPort": 80})), 7, "portMappings"),
        ("markMasqBit 32", patched(&pm, json!({"markMasqBit": 32})), 7, "markMasqBit"),
        ("hostPortConflict unknown", patched(&pm, json!({"hostPortConflict": "first"})), 7, "hostPortConflict"),
        ("backend unknown", patched(&pm, json!({"backend": "ipvs"})), 7, "backend"),
        (
            "backend iptables with nft-syntax conditions",
            patched(&pm, json!({"backend": "iptables", "conditionsV4": ["ip", "saddr", "198.18.0.1"]})),
            7,
            "conditionsV4",
        ),
        (
            "externalSetMarkChain not a chain name",
            patched(&pm, json!({"externalSetMarkChain": "KUBE MARK;MASQ"})),
            7,
            "externalSetMarkChain",
        ),
        (
            "externalSetMarkChain with backend nftables",
            patched(&pm, json!({"externalSetMarkChain": "KUBE-MARK-MASQ", "backend": "nftables"})),
            7,
            "externalSetMarkChain",
        ),
        (
            "externalSetMarkChain with markMasqBit",
            patched(&pm, json!({"externalSetMarkChain": "KUBE-MARK-MASQ", "markMasqBit": 14})),
            7,
            "externalSetMarkChain",
        ),
        ("snat a string", patched(&pm, json!({"snat": "yes"})), 6, "snat"),
        ("no prevResult", patched(&pm, json!({"prevResult": null})), 7, "prevResult"),
        (
            "prevResult without an address for the interface",
            patched(&pm, json!({"prevResult": {"cniVersion": "1.0.0", "interfaces": [], "ips": []}})),
            7,
            "eth0",
        ),
    ];
    for (what, stdin, code, needle) in specific {
        cases.push(case(format!("portmap: {what}"), "portmap", add.clone(), stdin, code, needle));
    }
    run_cases(&w, &cases, &[]);
}

// ------------------------------------------------------------------------------------------------
// tuning and bandwidth (chained after an interface plugin): the common cases and their own fields. Each
// is given a prevResult naming the pod's eth0, so only the bad field can be what is refused.

fn chained(w: &World, plugin_type: &str, name: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": plugin_type,
           "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": w.pod.path_str()}],
                          "ips": [{"address": "10.77.0.9/24", "interface": 0}]}})
}

fn meta_cases(w: &World) -> Vec<Case> {
    let mut out = Vec::new();
    let (tu, bw) = (chained(w, "tuning", "htu"), chained(w, "bandwidth", "hbw"));
    common_cases(w, "tuning", &tu, &mut out);
    common_cases(w, "bandwidth", &bw, &mut out);
    let add = w.add_env("hostile1");
    let mut push = |what: &str, bin: &'static str, stdin: Vec<u8>, needle: &str| {
        out.push(case(format!("{bin}: {what}"), bin, add.clone(), stdin, 7, needle));
    };
    // tuning: sysctl keys outside the pod's net tree, and values of the wrong type.
    for (what, key) in [
        ("sysctl traversal", "net/../kernel/hostname"),
        ("sysctl dot-dot segment", "net.ipv4.conf.eth0.."),
        ("sysctl absolute path", "/proc/sys/kernel/hostname"),
        ("sysctl non-net key", "kernel.hostname"),
        ("sysctl vm key", "vm.overcommit_memory"),
        ("sysctl empty key", ""),
        ("sysctl NUL in key", "net.ipv4.ip_forward\u{0}x"),
    ] {
        push(what, "tuning", patched(&tu, json!({"sysctl": {key: "1"}})), "sysctl");
    }
    push("sysctl a list", "tuning", patched(&tu, json!({"sysctl": ["net.ipv4.ip_forward"]})), "sysctl");
    push("sysctl value a number", "tuning", patched(&tu, json!({"sysctl": {"net.ipv4.ip_forward": 1}})), "sysctl");
    for (what, mac) in [
        ("mac garbage", json!("zz:zz:zz:zz:zz:zz")),
        ("mac too short", json!("02:00:00:00:01")),
        ("mac multicast", json!("01:00:5e:00:00:01")),
        ("mac a number", json!(5)),
    ] {
        push(what, "tuning", patched(&tu, json!({"mac": mac})), "mac");
    }
    push(
        "runtimeConfig.mac garbage",
        "tuning",
        patched(&tu, json!({"runtimeConfig": {"mac": "x"}})),
        "runtimeConfig.mac",
    );
    push("args.cni.mac garbage", "tuning", patched(&tu, json!({"args": {"cni": {"mac": "x"}}})), "args.cni.mac");
    push("mtu negative", "tuning", patched(&tu, json!({"mtu": -1})), "mtu");
    push("mtu beyond u32", "tuning", patched(&tu, json!({"mtu": 4294967296u64})), "mtu");
    push("mtu a string", "tuning", patched(&tu, json!({"mtu": "1500"})), "mtu");
    push("txQLen negative", "tuning", patched(&tu, json!({"txQLen": -5})), "txQLen");
    push("promisc a string", "tuning", patched(&tu, json!({"promisc": "yes"})), "promisc");
    push("allmulti a number", "tuning", patched(&tu, json!({"allmulti": 1})), "allmulti");
    // bandwidth: rates and bursts, missing halves, wrong types.
    let lim = |v: Value| patched(&bw, v);
    push("ingressRate negative", "bandwidth", lim(json!({"ingressRate": -1, "ingressBurst": 10000})), "ingressRate");
    push("egressRate negative", "bandwidth", lim(json!({"egressRate": -8, "egressBurst": 10000})), "egressRate");
    push("ingressBurst negative", "bandwidth", lim(json!({"ingressRate": 8000, "ingressBurst": -1})), "ingressBurst");
    push("ingressRate without burst", "bandwidth", lim(json!({"ingressRate": 8000})), "ingressBurst");
    push("egressBurst without rate", "bandwidth", lim(json!({"egressBurst": 8000})), "egressRate");
    push(
        "ingressRate below 8 bit/s",
        "bandwidth",
        lim(json!({"ingressRate": 1, "ingressBurst": 10000})),
        "ingressRate",
    );
    push(
        "ingressBurst over 4GB",
        "bandwidth",
        lim(json!({"ingressRate": 8000, "ingressBurst": 40000000000u64})),
        "ingressBurst",
    );
    push("egressRate a string", "bandwidth", lim(json!({"egressRate": "1M", "egressBurst": 10000})), "egressRate");
    push("ingressRate a float", "bandwidth", lim(json!({"ingressRate": 1.5, "ingressBurst": 10000})), "ingressRate");
    push(
        "runtimeConfig rate negative",
        "bandwidth",
        lim(json!({"runtimeConfig": {"bandwidth": {"ingressRate": -1, "ingressBurst": 1}}})),
        "ingressRate",
    );
    push("runtimeConfig.bandwidth a list", "bandwidth", lim(json!({"runtimeConfig": {"bandwidth": []}})), "bandwidth");
    out
}

#[test]
fn hostile_tuning_and_bandwidth_input_is_refused_and_changes_nothing() {
    let w = World::new();
    let cases = meta_cases(&w);
    run_cases(&w, &cases, &[]);
}
