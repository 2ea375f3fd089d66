//! The flannel plugin in throwaway node and pod namespaces: the kube-flannel conflist (conf/50-flannel.conflist)
//! through our cnitool with a subnet.env the test writes, our bridge in-process and the reference bridge
//! exec'd, DEL after subnet.env is gone, the error when it is missing, failed ADDs leaving nothing, STATUS,
//! and the saved delegate config compared with what flannel's plugin renders.
//!
//! Debian's containernetworking-plugins 1.1.1 ships no flannel plugin, so the differential part compares
//! the config handed to the delegate with flannel's documented rendering (README of flannel-io/cni-plugin).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcni::subnet_env::SubnetEnv;
use serde_json::{Value, json};
use support::{
    Cnitool, NetConfDir, NodeNs, PluginDir, PodNs, REFERENCE_PLUGIN_DIR, TempDir, cni_env, leftover_netns, rcni_bin,
    reference_plugin, reservations,
};

/// A node's files: subnet.env, flannel's dataDir and host-local's dataDir, all under one temp dir.
struct NodeFiles {
    dir: TempDir,
}

impl NodeFiles {
    fn new(tag: &str) -> NodeFiles {
        NodeFiles { dir: TempDir::new(tag) }
    }
    fn subnet_env(&self) -> PathBuf {
        self.dir.join("run/flannel/subnet.env")
    }
    fn flannel_data(&self) -> PathBuf {
        self.dir.join("flannel")
    }
    fn ipam_data(&self) -> PathBuf {
        self.dir.join("networks")
    }
    fn saved(&self, container_id: &str) -> PathBuf {
        self.flannel_data().join(container_id)
    }
    fn write_env(&self, ipmasq: bool) -> SubnetEnv {
        let env =
            SubnetEnv::for_lease("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), 1450, ipmasq);
        env.write(&self.subnet_env()).unwrap();
        env
    }
}

/// conf/50-flannel.conflist with the flannel entry's paths moved into `files` (nothing else changed).
fn kube_flannel(files: &NodeFiles) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/50-flannel.conflist")).unwrap();
    let mut conf: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        conf,
        json!({"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,
               "isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}),
        "conf/50-flannel.conflist is kube-flannel's conflist"
    );
    let flannel = &mut conf["plugins"][0];
    flannel["subnetFile"] = json!(files.subnet_env());
    flannel["dataDir"] = json!(files.flannel_data());
    flannel["ipam"] = json!({"dataDir": files.ipam_data()});
    conf
}

/// The delegate config flannel's plugin renders for the kube-flannel entry and a subnet.env of
/// 10.244.0.0/16, 10.244.5.1/24, MTU 1450: the delegate's keys, then name, type bridge, ipMasq = not
/// FLANNEL_IPMASQ, mtu, isGateway, cniVersion, host-local ranges from the masked subnet, a route to the network.
fn flannels_rendering(files: &NodeFiles, ipmasq: bool) -> Value {
    json!({
        "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge",
        "hairpinMode": true, "isDefaultGateway": true, "isGateway": true,
        "ipMasq": !ipmasq, "mtu": 1450,
        "ipam": {"type": "host-local", "dataDir": files.ipam_data(),
                 "ranges": [[{"subnet": "10.244.5.0/24"}]], "routes": [{"dst": "10.244.0.0/16"}]}
    })
}

/// Our flannel, bridge, host-local and portmap first on CNI_PATH, the reference directory after.
fn rcni_first() -> (PluginDir, Vec<PathBuf>) {
    let ours = PluginDir::new(&[
        ("flannel", rcni_bin("flannel")),
        ("bridge", rcni_bin("bridge")),
        ("host-local", rcni_bin("host-local")),
        ("portmap", PathBuf::from(env!("CARGO_BIN_EXE_portmap"))),
    ]);
    let path = vec![ours.path().to_path_buf(), PathBuf::from(REFERENCE_PLUGIN_DIR)];
    (ours, path)
}

fn pod_ip(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// One TCP exchange: a server in `to` listening on `ip`:5000 answers what it read in upper case.
fn tcp_exchange(from: &PodNs, to: &PodNs, ip: &str) -> String {
    let addr = format!("{ip}:5000");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let (addr, ready_tx) = (&addr, ready_tx);
        let server = s.spawn(move || {
            to.run_inside(|| {
                let l = TcpListener::bind(addr).expect("bind in pod");
                ready_tx.send(()).unwrap();
                let (mut c, _) = l.accept().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap();
                c.write_all(buf[..n].to_ascii_uppercase().as_slice()).unwrap();
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(20)).expect("server ready");
        let reply = from.run_inside(|| {
            let mut c = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(20)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c.write_all(b"hello flannel").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        });
        server.join().unwrap();
        reply
    })
}

fn saved_json(files: &NodeFiles, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(files.saved(id)).unwrap()).unwrap()
}

fn veth_ports(node: &NodeNs, bridge: &str) -> usize {
    node.links().into_iter().filter(|l| l.master.as_deref() == Some(bridge)).count()
}

/// Two pods through the kube-flannel conflist, our bridge in-process: addresses from FLANNEL_SUBNET, default
/// route via the bridge gateway, TCP between them, the saved delegate config as flannel renders it, CHECK;
/// then subnet.env removed: ADD fails with code 11 leaving nothing, DEL still cleans everything up.
#[test]
fn kube_flannel_conflist_in_process_bridge() {
    {
        let node = NodeNs::new("fl-kube");
        let (pod1, pod2, pod3) = (PodNs::new("fl-kube-a"), PodNs::new("fl-kube-b"), PodNs::new("fl-kube-c"));
        let files = NodeFiles::new("fl-kube-files");
        files.write_env(true);
        let (_ours, path) = rcni_first();
        let conf = NetConfDir::new(&kube_flannel(&files));
        let mut tool = Cnitool::new(&conf, &path);
        tool.set("RCNI_TRACE", "1");

        let add1 = tool.run_with(&node, &["add", "cbr0", pod1.path_str()], &[("CNI_CONTAINERID", "pod-a")]).ok();
        assert!(add1.stderr.contains("bridge in-process"), "our bridge runs in-process: {add1}");
        let r1 = add1.json();
        let r2 = tool.run_with(&node, &["add", "cbr0", pod2.path_str()], &[("CNI_CONTAINERID", "pod-b")]).ok().json();
        assert_eq!(r1["cniVersion"], "0.3.1");
        let (ip1, ip2) = (pod_ip(&r1), pod_ip(&r2));
        for (r, ip) in [(&r1, &ip1), (&r2, &ip2)] {
            assert!(ip.starts_with("10.244.5.") && ip != "10.244.5.1", "{r}");
            assert_eq!(r["ips"][0]["gateway"], "10.244.5.1", "{r}");
        }
        assert_ne!(ip1, ip2);

        // Kernel: cni0 holds the gateway address, both veths on it with hairpin, pods' MTU and routes.
        assert!(node.addr_cidrs("cni0").contains(&"10.244.5.1/24".to_string()));
        assert_eq!(veth_ports(&node, "cni0"), 2);
        for pod in [&pod1, &pod2] {
            assert_eq!(pod.link("eth0").unwrap().mtu, 1450);
            assert_eq!(pod.default_gateway("-4").as_deref(), Some("10.244.5.1"));
            let routes = pod.routes4();
            assert!(
                routes.iter().any(|r| r.dst == "10.244.0.0/16" && r.gateway.as_deref() == Some("10.244.5.1")),
                "route to FLANNEL_NETWORK: {routes:?}"
            );
        }
        let hairpin = node.sh("cat /sys/class/net/cni0/brif/*/hairpin_mode");
        assert_eq!(hairpin.stdout.split_whitespace().collect::<Vec<_>>(), ["1", "1"], "{hairpin}");
        assert_eq!(tcp_exchange(&pod1, &pod2, &ip2), "HELLO FLANNEL");
        assert_eq!(tcp_exchange(&pod2, &pod1, &ip1), "HELLO FLANNEL");

        // The saved delegate config: flannel's rendering, private.
        assert_eq!(saved_json(&files, "pod-a"), flannels_rendering(&files, true));
        assert_eq!(std::fs::metadata(files.saved("pod-a")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(files.flannel_data()).unwrap().permissions().mode() & 0o777, 0o700);
        // FLANNEL_IPMASQ=true: the agent masquerades, so the bridge installs no masquerade rule.
        assert!(!node.nft_ruleset().contains("masquerade"), "{}", node.nft_ruleset());

        // (No CHECK here: cniVersion 0.3.1 predates it; failed_add_status_and_dual_stack checks with 1.1.0.)

        // subnet.env gone (agent stopped): a new pod gets code 11 naming the file and the agent, and nothing.
        std::fs::remove_file(files.subnet_env()).unwrap();
        let out = tool.run_with(&node, &["add", "cbr0", pod3.path_str()], &[("CNI_CONTAINERID", "pod-c")]).fails();
        assert!(out.stderr.contains(&files.subnet_env().display().to_string()), "{out}");
        assert!(out.stderr.contains("rcni-overlay") && out.stderr.contains("flanneld"), "{out}");
        // The error object itself (cnitool prints only the message): the plugin as libcni runs it.
        let mut plugin_conf = kube_flannel(&files)["plugins"][0].clone();
        plugin_conf["name"] = json!("cbr0");
        plugin_conf["cniVersion"] = json!("0.3.1");
        let out = flannel(&node, "ADD", "pod-c", pod3.path_str(), &path, &plugin_conf).fails();
        let err = out.json();
        assert_eq!(err["code"], 11, "{out}");
        let text = format!("{} {}", err["msg"], err["details"]);
        assert!(text.contains(&files.subnet_env().display().to_string()), "{out}");
        assert!(text.contains("rcni-overlay") && text.contains("flanneld"), "{out}");
        assert!(!files.saved("pod-c").exists());
        assert!(pod3.link("eth0").is_none());
        assert_eq!(veth_ports(&node, "cni0"), 2);

        // DEL without subnet.env: the saved config is enough. veth, reservation and saved file go.
        tool.run_with(&node, &["del", "cbr0", pod1.path_str()], &[("CNI_CONTAINERID", "pod-a")]).ok();
        support::wait_for_detached_helpers();
        assert!(pod1.link("eth0").is_none());
        assert_eq!(veth_ports(&node, "cni0"), 1);
        assert!(!files.saved("pod-a").exists());
        let held: Vec<_> = reservations(&files.ipam_data()).into_iter().map(|(_, ip, _)| ip).collect();
        assert_eq!(held, vec![ip2.clone()], "only pod-b's address is still reserved");
        // DEL again (no saved file): success, nothing touched.
        tool.run_with(&node, &["del", "cbr0", pod1.path_str()], &[("CNI_CONTAINERID", "pod-a")]).ok();
        assert_eq!(veth_ports(&node, "cni0"), 1);

        tool.run_with(&node, &["del", "cbr0", pod2.path_str()], &[("CNI_CONTAINERID", "pod-b")]).ok();
        support::wait_for_detached_helpers();
        assert_eq!(veth_ports(&node, "cni0"), 0);
        assert!(reservations(&files.ipam_data()).is_empty());
        assert_eq!(std::fs::read_dir(files.flannel_data()).unwrap().count(), 0, "no saved config left");
    }
    assert!(leftover_netns("fl-kube").is_empty(), "{:?}", leftover_netns("fl-kube"));
}

/// The same conflist with the reference bridge and host-local on CNI_PATH (only our flannel in front): the
/// bridge is exec'd, the pod gets the same network, DEL after subnet.env removal cleans up. With
/// FLANNEL_IPMASQ=false the delegate gets ipMasq true.
#[test]
fn reference_bridge_is_execd() {
    {
        let node = NodeNs::new("fl-ref");
        let pod = PodNs::new("fl-ref-a");
        let files = NodeFiles::new("fl-ref-files");
        files.write_env(false);
        let ours = PluginDir::new(&[("flannel", rcni_bin("flannel"))]);
        reference_plugin("bridge");
        let path = vec![ours.path().to_path_buf(), PathBuf::from(REFERENCE_PLUGIN_DIR)];
        let conf = NetConfDir::new(&kube_flannel(&files));
        let mut tool = Cnitool::new(&conf, &path);
        tool.set("RCNI_TRACE", "1");

        let add = tool.run_with(&node, &["add", "cbr0", pod.path_str()], &[("CNI_CONTAINERID", "ref-a")]).ok();
        assert!(!add.stderr.contains("bridge in-process"), "the reference bridge is exec'd: {add}");
        let r = add.json();
        assert_eq!(r["ips"][0]["gateway"], "10.244.5.1", "{r}");
        assert!(pod_ip(&r).starts_with("10.244.5."));
        assert_eq!(pod.default_gateway("-4").as_deref(), Some("10.244.5.1"));
        assert_eq!(pod.link("eth0").unwrap().mtu, 1450);
        assert!(pod.wait_ping("10.244.5.1", Duration::from_secs(10)));
        assert_eq!(saved_json(&files, "ref-a"), flannels_rendering(&files, false));

        std::fs::remove_file(files.subnet_env()).unwrap();
        tool.run_with(&node, &["del", "cbr0", pod.path_str()], &[("CNI_CONTAINERID", "ref-a")]).ok();
        assert!(pod.link("eth0").is_none());
        assert_eq!(veth_ports(&node, "cni0"), 0);
        assert!(reservations(&files.ipam_data()).is_empty());
        assert!(!files.saved("ref-a").exists());
    }
    assert!(leftover_netns("fl-ref").is_empty(), "{:?}", leftover_netns("fl-ref"));
}

/// Run our flannel binary directly inside `node`.
fn flannel(node: &NodeNs, command: &str, id: &str, pod: &str, path: &[PathBuf], conf: &Value) -> support::Output {
    node.run_plugin(&rcni_bin("flannel"), &cni_env(command, id, pod, "eth0", path), &serde_json::to_vec(conf).unwrap())
}

/// A failed delegate ADD leaves no saved config (and restores the previous one of a re-ADD); STATUS is 50
/// without subnet.env and succeeds with it; a dual-stack subnet.env gives both ranges and both routes.
#[test]
fn failed_add_status_and_dual_stack() {
    {
        let node = NodeNs::new("fl-misc");
        let pod = PodNs::new("fl-misc-a");
        let files = NodeFiles::new("fl-misc-files");
        let (_ours, path) = rcni_first();
        let base = |delegate: Value| {
            json!({"cniVersion": "1.1.0", "name": "fl", "type": "flannel",
                   "subnetFile": files.subnet_env(), "dataDir": files.flannel_data(),
                   "ipam": {"dataDir": files.ipam_data()}, "delegate": delegate})
        };

        // STATUS without subnet.env: not available (50), naming the file.
        let out = flannel(&node, "STATUS", "", "", &path, &base(json!({}))).fails();
        assert_eq!(out.json()["code"], 50, "{out}");
        assert!(out.stdout.contains("subnet.env"), "{out}");

        let env = SubnetEnv::for_lease("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), 1450, true)
            .with_ipv6_lease("fd00:10:244::/56".parse().unwrap(), "fd00:10:244:5::/64".parse().unwrap());
        env.write(&files.subnet_env()).unwrap();
        flannel(&node, "STATUS", "", "", &path, &base(json!({}))).ok();

        // A delegate that fails (bridge name too long for the kernel): error, no saved config, no veth.
        let out = flannel(&node, "ADD", "bad", pod.path_str(), &path, &base(json!({"bridge": "much-too-long-name"})));
        let out = out.fails();
        assert!(out.stdout.contains("much-too-long-name"), "{out}");
        assert!(!files.saved("bad").exists(), "failed ADD left its saved config");
        assert!(node.veth_names().is_empty());
        // A delegate type that is not on CNI_PATH: same.
        flannel(&node, "ADD", "bad", pod.path_str(), &path, &base(json!({"type": "nonexistent"}))).fails();
        assert!(!files.saved("bad").exists());

        // Dual stack: both families in the pod, both ranges and routes in the saved config.
        let r = flannel(&node, "ADD", "dual", pod.path_str(), &path, &base(json!({"bridge": "cni1"}))).ok().json();
        let ips: Vec<&str> = r["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
        assert!(ips.iter().any(|a| a.starts_with("10.244.5.")) && ips.iter().any(|a| a.starts_with("fd00:10:244:5::")));
        let saved = saved_json(&files, "dual");
        assert_eq!(saved["ipam"]["ranges"], json!([[{"subnet": "10.244.5.0/24"}], [{"subnet": "fd00:10:244:5::/64"}]]));
        assert_eq!(saved["ipam"]["routes"], json!([{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}]));

        // A repeated ADD of the live container fails in the bridge and keeps the saved config DEL needs.
        let before = std::fs::read(files.saved("dual")).unwrap();
        flannel(&node, "ADD", "dual", pod.path_str(), &path, &base(json!({"bridge": "cni2"}))).fails();
        assert_eq!(std::fs::read(files.saved("dual")).unwrap(), before, "the live pod's saved config was restored");

        // CHECK with the ADD result as prevResult, then DEL with a config whose delegate changed: the saved
        // one is used (cni1, not cni9).
        let mut check = base(json!({"bridge": "cni1"}));
        check["prevResult"] = r.clone();
        flannel(&node, "CHECK", "dual", pod.path_str(), &path, &check).ok();
        flannel(&node, "DEL", "dual", pod.path_str(), &path, &base(json!({"bridge": "cni9"}))).ok();
        support::wait_for_detached_helpers();
        assert!(pod.link("eth0").is_none());
        assert!(node.link("cni9").is_none());
        assert!(reservations(&files.ipam_data()).is_empty());
        assert!(!files.saved("dual").exists());
        // CHECK of a container that is not there: unknown container (3).
        let out = flannel(&node, "CHECK", "dual", pod.path_str(), &path, &check).fails();
        assert_eq!(out.json()["code"], 3, "{out}");
    }
    assert!(leftover_netns("fl-misc").is_empty(), "{:?}", leftover_netns("fl-misc"));
}

/// Our bridge exec'd on request and in-process by default serve one network; GC is the delegate's: with the config rendered from subnet.env and the runtime's valid attachments, the
/// bridge's host-local releases the address no valid attachment holds and keeps the other.
#[test]
fn gc_releases_what_no_valid_attachment_holds() {
    {
        let node = NodeNs::new("fl-gc");
        let (pod1, pod2) = (PodNs::new("fl-gc-a"), PodNs::new("fl-gc-b"));
        let files = NodeFiles::new("fl-gc-files");
        files.write_env(true);
        let (_ours, path) = rcni_first();
        let conf = json!({"cniVersion": "1.1.0", "name": "flgc", "type": "flannel",
                          "subnetFile": files.subnet_env(), "dataDir": files.flannel_data(),
                          "ipam": {"dataDir": files.ipam_data()}});
        // gc-a through the in-process bridge, gc-b through our bridge exec'd (RCNI_DELEGATE_EXEC=1): same network.
        let mut env = cni_env("ADD", "gc-a", pod1.path_str(), "eth0", &path);
        env.push(("RCNI_TRACE".into(), "1".into()));
        let add1 = node.run_plugin(&rcni_bin("flannel"), &env, &serde_json::to_vec(&conf).unwrap()).ok();
        assert!(add1.stderr.contains("bridge in-process"), "{add1}");
        let ip1 = pod_ip(&add1.json());
        let mut env = cni_env("ADD", "gc-b", pod2.path_str(), "eth0", &path);
        env.extend([("RCNI_TRACE".into(), "1".into()), ("RCNI_DELEGATE_EXEC".into(), "1".into())]);
        let add2 = node.run_plugin(&rcni_bin("flannel"), &env, &serde_json::to_vec(&conf).unwrap()).ok();
        assert!(!add2.stderr.contains("bridge in-process"), "RCNI_DELEGATE_EXEC=1 execs the bridge: {add2}");
        assert!(pod2.wait_ping(&ip1, Duration::from_secs(10)), "both pods on one bridge");
        assert_eq!(reservations(&files.ipam_data()).len(), 2);

        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-a", "ifname": "eth0"}]);
        flannel(&node, "GC", "", "", &path, &gc).ok();
        let held: Vec<_> = reservations(&files.ipam_data()).into_iter().map(|(_, ip, _)| ip).collect();
        assert_eq!(held, vec![ip1], "gc-b's address released, gc-a's kept");

        for (id, pod) in [("gc-a", &pod1), ("gc-b", &pod2)] {
            flannel(&node, "DEL", id, pod.path_str(), &path, &conf).ok();
        }
        support::wait_for_detached_helpers();
        assert!(reservations(&files.ipam_data()).is_empty());
        assert_eq!(veth_ports(&node, "cni0"), 0);
        assert_eq!(std::fs::read_dir(files.flannel_data()).unwrap().count(), 0);
    }
    assert!(leftover_netns("fl-gc").is_empty(), "{:?}", leftover_netns("fl-gc"));
}

/// Every CNI version the skel supports: ADD prints its result in the config's version (0.1.0/0.2.0: `ip4`,
/// later: `ips`) with an address from FLANNEL_SUBNET, and DEL removes the pod again.
#[test]
fn every_cni_version_adds_and_deletes() {
    {
        let node = NodeNs::new("fl-ver");
        let files = NodeFiles::new("fl-ver-files");
        files.write_env(true);
        let (_ours, path) = rcni_first();
        for (i, ver) in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
            let pod = PodNs::new("fl-ver-pod");
            let id = format!("ver-{i}");
            let conf = json!({"cniVersion": ver, "name": "flver", "type": "flannel",
                              "subnetFile": files.subnet_env(), "dataDir": files.flannel_data(),
                              "ipam": {"dataDir": files.ipam_data()}});
            let r = flannel(&node, "ADD", &id, pod.path_str(), &path, &conf).ok().json();
            let addr = if ver.starts_with("0.1") || ver.starts_with("0.2") {
                r["ip4"]["ip"].as_str().map(str::to_string)
            } else {
                r["ips"][0]["address"].as_str().map(str::to_string)
            };
            assert!(addr.as_deref().is_some_and(|a| a.starts_with("10.244.5.")), "{ver}: {r}");
            assert_eq!(r["cniVersion"], *ver, "{r}");
            assert_eq!(saved_json(&files, &id)["cniVersion"], *ver);
            flannel(&node, "DEL", &id, pod.path_str(), &path, &conf).ok();
            support::wait_for_detached_helpers();
            assert!(pod.link("eth0").is_none(), "{ver}");
            assert!(!files.saved(&id).exists(), "{ver}");
        }
        assert!(reservations(&files.ipam_data()).is_empty());
    }
    assert!(leftover_netns("fl-ver").is_empty(), "{:?}", leftover_netns("fl-ver"));
}
