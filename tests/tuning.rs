//! The tuning plugin in throwaway namespaces: chained after our bridge through our cnitool (the Kubernetes
//! guide's list, conf/60-bridge-tuning.conflist), and run directly on a veth inside a pod netns to see DEL
//! put the originals back. Differential against the reference tuning (/usr/lib/cni, 1.1.1) on the same
//! input, and backup interop both ways.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, cni_env, rcni_bin, reference_plugin, unique_suffix};

fn rcni_path() -> Vec<PathBuf> {
    vec![rcni_bin("tuning").parent().unwrap().to_path_buf()]
}

/// The conf/ example with host-local's dataDir in `data` and tuning's dataDir in `backups`.
fn example(file: &str, data: &Path, backups: &Path) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf").join(file)).unwrap();
    let mut v: Value = serde_json::from_str(&text.replace("/var/lib/cni/networks", &data.to_string_lossy())).unwrap();
    for p in v["plugins"].as_array_mut().unwrap() {
        if p["type"] == "tuning" {
            p["dataDir"] = json!(backups);
        }
    }
    v
}

fn err_of(out: &support::Output) -> (u64, String) {
    let v = out.json();
    (
        v["code"].as_u64().unwrap(),
        format!("{} {}", v["msg"].as_str().unwrap_or(""), v["details"].as_str().unwrap_or("")),
    )
}

#[test]
fn guide_list_sets_sysctl_in_the_pod_only_and_the_mac_from_the_capability() {
    let node = NodeNs::new("tu-guide");
    let pod = PodNs::new("tu-guide");
    let data = TempDir::new("tu-guide-ipam");
    let backups = TempDir::new("tu-guide-bak");
    let conflist = example("60-bridge-tuning.conflist", data.path(), backups.path());
    let name = conflist["name"].as_str().unwrap().to_string();
    let conf = NetConfDir::new(&conflist);
    let mut tool = Cnitool::new(&conf, &rcni_path());
    let mac = "02:aa:bb:cc:dd:01";
    tool.set("CAP_ARGS", &json!({"mac": mac}).to_string());
    let node_before = node.sysctl("net.core.somaxconn");

    let result = tool.run(&node, &["add", &name, pod.path_str()]).ok().json();
    assert_eq!(pod.sysctl("net.core.somaxconn"), "500", "set inside the pod");
    assert_eq!(node.sysctl("net.core.somaxconn"), node_before, "the node's value is untouched");
    assert_ne!(node_before, "500");
    assert_eq!(pod.link("eth0").unwrap().address, mac, "the link has the MAC the runtime asked for");
    let eth0 = result["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "eth0").unwrap();
    assert_eq!(eth0["mac"], mac, "the result carries the new MAC: {result}");
    assert_eq!(eth0["sandbox"], pod.path_str());
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert!(pod.wait_ping(&gw, std::time::Duration::from_secs(5)), "the pod still reaches its gateway");
    let files: Vec<_> = std::fs::read_dir(backups.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "one backup file: {files:?}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(saved["mac"].as_str().is_some_and(|m| m != mac), "the original MAC is saved: {saved}");

    tool.run(&node, &["check", &name, pod.path_str()]).ok();
    pod.set_sysctl("net.core.somaxconn", "501");
    let out = tool.run(&node, &["check", &name, pod.path_str()]).fails();
    assert!(out.stderr.contains("net.core.somaxconn is \"501\""), "CHECK names the sysctl: {out}");
    pod.set_sysctl("net.core.somaxconn", "500");

    tool.run(&node, &["del", &name, pod.path_str()]).ok();
    assert!(std::fs::read_dir(backups.path()).unwrap().next().is_none(), "DEL removed the backup");
    tool.run(&node, &["del", &name, pod.path_str()]).ok();
}

#[test]
fn mac_from_cni_args_as_podman_sends_it() {
    let node = NodeNs::new("tu-podman");
    let pod = PodNs::new("tu-podman");
    let data = TempDir::new("tu-podman-ipam");
    let backups = TempDir::new("tu-podman-bak");
    let conflist = example("60-bridge-tuning.conflist", data.path(), backups.path());
    let name = conflist["name"].as_str().unwrap().to_string();
    let conf = NetConfDir::new(&conflist);
    let mut tool = Cnitool::new(&conf, &rcni_path());
    tool.set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:02");
    let result = tool.run(&node, &["add", &name, pod.path_str()]).ok().json();
    assert_eq!(pod.link("eth0").unwrap().address, "02:aa:bb:cc:dd:02");
    let eth0 = result["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "eth0").unwrap();
    assert_eq!(eth0["mac"], "02:aa:bb:cc:dd:02", "{result}");
    tool.run(&node, &["del", &name, pod.path_str()]).ok();
}

/// A pod netns with an `eth0` veth (its peer stays in the pod too, so DEL's restore can be observed).
struct VethPod {
    pod: PodNs,
    ifname: String,
}

impl VethPod {
    fn new(tag: &str, ifname: &str) -> VethPod {
        let pod = PodNs::new(tag);
        pod.ip(&["link", "add", ifname, "type", "veth", "peer", "name", "peer0"]).ok();
        pod.ip(&["link", "set", ifname, "address", "02:00:00:00:00:0a", "up"]).ok();
        pod.ip(&["link", "set", "peer0", "up"]).ok();
        VethPod { pod, ifname: ifname.to_string() }
    }

    fn prev_result(&self) -> Value {
        json!({"cniVersion": "1.0.0",
               "interfaces": [{"name": self.ifname, "mac": "02:00:00:00:00:0a", "sandbox": self.pod.path_str()}],
               "ips": [{"address": "10.92.0.2/24", "interface": 0}]})
    }

    /// (mac, mtu, promisc, allmulti, txqlen) of the interface.
    fn state(&self) -> (String, u64, bool, bool, u64) {
        let l = self.pod.link(&self.ifname).unwrap();
        let has = |f: &str| l.flags.iter().any(|x| x == f);
        (l.address.clone(), l.mtu, has("PROMISC"), has("ALLMULTI"), l.raw["txqlen"].as_u64().unwrap())
    }
}

fn conf(extra: Value, backups: &Path, prev: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "tu", "type": "tuning", "dataDir": backups, "prevResult": prev});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn run(node: &NodeNs, bin: &Path, cmd: &str, cid: &str, p: &VethPod, conf: &Value) -> support::Output {
    run_env(node, bin, cmd, cid, p.pod.path_str(), &p.ifname, conf, &[])
}

#[allow(clippy::too_many_arguments)]
fn run_env(
    node: &NodeNs,
    bin: &Path,
    cmd: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
    extra: &[(&str, &str)],
) -> support::Output {
    // The reference's skel wants CNI_PATH even where nothing is delegated.
    let mut env = cni_env(cmd, cid, netns, ifname, &rcni_path());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    node.run_plugin(bin, &env, &serde_json::to_vec(conf).unwrap())
}

const ORIGINAL: (&str, u64, bool, bool, u64) = ("02:00:00:00:00:0a", 1500, false, false, 1000);

fn original() -> (String, u64, bool, bool, u64) {
    (ORIGINAL.0.to_string(), ORIGINAL.1, ORIGINAL.2, ORIGINAL.3, ORIGINAL.4)
}

#[test]
fn link_attributes_set_checked_and_restored_on_del() {
    let node = NodeNs::new("tu-link");
    let p = VethPod::new("tu-link", "eth0");
    let backups = TempDir::new("tu-link-bak");
    let cid = format!("c{}", unique_suffix());
    let extra = json!({"mac": "02:00:00:00:00:bb", "mtu": 1400, "promisc": true, "allmulti": true, "txQLen": 77});
    let c = conf(extra, backups.path(), p.prev_result());
    assert_eq!(p.state(), original());

    let out = run(&node, &rcni_bin("tuning"), "ADD", &cid, &p, &c).ok().json();
    assert_eq!(p.state(), ("02:00:00:00:00:bb".into(), 1400, true, true, 77));
    assert_eq!(out["interfaces"][0]["mac"], "02:00:00:00:00:bb");
    assert_eq!(out["ips"], p.prev_result()["ips"], "the rest of prevResult passes through");
    let file = backups.join(format!("{cid}_eth0.json"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        "{\n \"mac\": \"02:00:00:00:00:0a\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"allmulti\": false,\n \"txQLen\": 1000\n}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    run(&node, &rcni_bin("tuning"), "CHECK", &cid, &p, &c).ok();
    p.pod.ip(&["link", "set", "eth0", "mtu", "1300"]).ok();
    let (code, msg) = err_of(&run(&node, &rcni_bin("tuning"), "CHECK", &cid, &p, &c).fails());
    assert!(msg.contains("MTU") && msg.contains("1400"), "{code} {msg}");
    p.pod.ip(&["link", "set", "eth0", "mtu", "1400"]).ok();

    // A repeated ADD keeps the originals from before the first one.
    run(&node, &rcni_bin("tuning"), "ADD", &cid, &p, &c).ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    run(&node, &rcni_bin("tuning"), "DEL", &cid, &p, &c).ok();
    assert_eq!(p.state(), original(), "DEL restored every attribute");
    assert!(!file.exists(), "DEL removed the backup");
    run(&node, &rcni_bin("tuning"), "DEL", &cid, &p, &c).ok();
}

#[test]
fn check_compares_whitespace_normalized_and_only_what_was_configured() {
    let node = NodeNs::new("tu-check");
    let p = VethPod::new("tu-check", "eth0");
    let backups = TempDir::new("tu-check-bak");
    let c = conf(json!({"sysctl": {"net.ipv4.tcp_rmem": "4096 131072 6291456"}}), backups.path(), p.prev_result());
    run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).ok();
    assert_eq!(p.pod.sysctl("net.ipv4.tcp_rmem").split_whitespace().collect::<Vec<_>>(), ["4096", "131072", "6291456"]);
    run(&node, &rcni_bin("tuning"), "CHECK", "c1", &p, &c).ok();
    // The reference compares the exact string and fails on the kernel's tabs.
    run(&node, &reference_plugin("tuning"), "CHECK", "c1", &p, &c).fails();
    // A packet capture in the pod (promisc on) is not tuning's business when promisc was not configured.
    p.pod.ip(&["link", "set", "eth0", "promisc", "on"]).ok();
    run(&node, &rcni_bin("tuning"), "CHECK", "c1", &p, &c).ok();
    run(&node, &reference_plugin("tuning"), "CHECK", "c1", &p, &c).fails();
}

#[test]
fn sysctl_with_ifname_token_reaches_a_dotted_interface() {
    let node = NodeNs::new("tu-ifname");
    let p = VethPod::new("tu-ifname", "eth0.100");
    let backups = TempDir::new("tu-ifname-bak");
    let c = conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}), backups.path(), p.prev_result());
    assert_eq!(p.pod.cmd("cat").arg("/proc/sys/net/ipv4/conf/eth0.100/arp_filter").run().ok().stdout.trim(), "0");
    run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).ok();
    assert_eq!(p.pod.cmd("cat").arg("/proc/sys/net/ipv4/conf/eth0.100/arp_filter").run().ok().stdout.trim(), "1");
    run(&node, &rcni_bin("tuning"), "CHECK", "c1", &p, &c).ok();
}

#[test]
fn args_cni_sysctl_without_config_sysctl_is_applied() {
    let node = NodeNs::new("tu-args");
    let p = VethPod::new("tu-args", "eth0");
    let backups = TempDir::new("tu-args-bak");
    let c = conf(json!({"args": {"cni": {"sysctl": {"net.core.somaxconn": "321"}}}}), backups.path(), p.prev_result());
    // The reference panics here (nil map) and prints no JSON.
    let r = run(&node, &reference_plugin("tuning"), "ADD", "c1", &p, &c).fails();
    assert!(serde_json::from_str::<Value>(&r.stdout).is_err() || r.stderr.contains("panic"), "{r}");
    run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).ok();
    assert_eq!(p.pod.sysctl("net.core.somaxconn"), "321");
}

#[test]
fn bad_input_is_refused_before_any_write() {
    let node = NodeNs::new("tu-bad");
    let p = VethPod::new("tu-bad", "eth0");
    let backups = TempDir::new("tu-bad-bak");
    let before = p.pod.sysctl("net.core.somaxconn");
    let node_before = node.sysctl("net.core.somaxconn");
    let prev = p.prev_result();
    let with_good = |bad: Value| {
        let mut s = json!({"net.core.somaxconn": "777"});
        for (k, v) in bad.as_object().unwrap() {
            s[k] = v.clone();
        }
        conf(json!({"sysctl": s}), backups.path(), prev.clone())
    };
    let cases: Vec<(Value, u64, &str)> = vec![
        (with_good(json!({"net/../kernel/hostname": "x"})), 7, "net/../kernel/hostname"),
        (with_good(json!({"net.ipv4/../../kernel/x": "x"})), 7, "net.ipv4/../../kernel/x"),
        (with_good(json!({"kernel.hostname": "x"})), 7, "kernel.hostname"),
        (with_good(json!({"/etc/passwd": "x"})), 7, "/etc/passwd"),
        (with_good(json!({"net.core.busy_poll": "1"})), 7, "not namespaced"),
        (with_good(json!({"net.ipv4.conf.nosuch0.arp_filter": "1"})), 7, "does not exist"),
        (with_good(json!({"net.core.somaxconn2": 5})), 7, "must be a string"),
        (
            conf(
                json!({"mac": "01:00:5e:00:00:01", "sysctl": {"net.core.somaxconn": "777"}}),
                backups.path(),
                prev.clone(),
            ),
            7,
            "unicast",
        ),
        (conf(json!({"mtu": -3}), backups.path(), prev.clone()), 7, "mtu -3"),
        (
            {
                let mut c = conf(json!({"sysctl": {"net.core.somaxconn": "777"}}), backups.path(), prev.clone());
                c.as_object_mut().unwrap().remove("prevResult");
                c
            },
            7,
            "prevResult",
        ),
    ];
    for (c, want, needle) in cases {
        let out = run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).fails();
        let (code, msg) = err_of(&out);
        assert_eq!(code, want, "{c}: {out}");
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        assert_eq!(p.pod.sysctl("net.core.somaxconn"), before, "nothing written for {c}");
    }
    // Duplicate keys never make it into a JSON value: raw text.
    let dup = format!(
        r#"{{"cniVersion":"1.0.0","name":"tu","type":"tuning","prevResult":{},"sysctl":{{"net.core.somaxconn":"1","net.core.somaxconn":"2"}}}}"#,
        prev
    );
    let env = cni_env("ADD", "c1", p.pod.path_str(), "eth0", &rcni_path());
    let (code, msg) = err_of(&node.run_plugin(&rcni_bin("tuning"), &env, dup.as_bytes()).fails());
    assert_eq!(code, 7);
    assert!(msg.contains("duplicated sysctl key"), "{msg}");

    // The node's own netns as CNI_NETNS: refused (code 8) before anything is written to the node.
    let c = conf(json!({"sysctl": {"net.core.somaxconn": "778"}}), backups.path(), prev.clone());
    let out = run_env(&node, &rcni_bin("tuning"), "ADD", "c1", node.path_str(), "eth0", &c, &[]).fails();
    assert_eq!(err_of(&out).0, 8, "{out}");
    let out = run_env(&node, &rcni_bin("tuning"), "ADD", "c1", "/proc/self/ns/net", "eth0", &c, &[]).fails();
    assert_eq!(err_of(&out).0, 8, "{out}");
    assert_eq!(node.sysctl("net.core.somaxconn"), node_before, "the node is untouched");
    assert!(std::fs::read_dir(backups.path()).unwrap().next().is_none(), "no backup left by a refused ADD");
}

#[test]
fn allowlist_limits_keys_including_args_cni() {
    let node = NodeNs::new("tu-allow");
    let p = VethPod::new("tu-allow", "eth0");
    let backups = TempDir::new("tu-allow-bak");
    let files = TempDir::new("tu-allow-list");
    let list = files.write("allowlist.conf", "^net\\.core\\.somaxconn$\n\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n");
    let allow = [("RCNI_TUNING_ALLOWLIST", list.to_str().unwrap())];
    let prev = p.prev_result();
    let go = |c: &Value, extra: &[(&str, &str)]| {
        run_env(&node, &rcni_bin("tuning"), "ADD", "c1", p.pod.path_str(), "eth0", c, extra)
    };

    let ok = conf(
        json!({"sysctl": {"net.core.somaxconn": "600", "net.ipv4.conf.IFNAME.arp_filter": "1"}}),
        backups.path(),
        prev.clone(),
    );
    go(&ok, &allow).ok();
    assert_eq!(p.pod.sysctl("net.core.somaxconn"), "600");
    let bad = conf(json!({"sysctl": {"net.ipv4.tcp_syncookies": "0"}}), backups.path(), prev.clone());
    let (code, msg) = err_of(&go(&bad, &allow).fails());
    assert_eq!(code, 7);
    assert!(msg.contains("Sysctl net.ipv4.tcp_syncookies is not allowed") && msg.contains("somaxconn"), "{msg}");
    let via_args =
        conf(json!({"args": {"cni": {"sysctl": {"net.ipv4.tcp_syncookies": "0"}}}}), backups.path(), prev.clone());
    go(&via_args, &allow).fails();
    // No file: everything under net is allowed.
    let missing = files.join("absent.conf");
    go(&bad, &[("RCNI_TUNING_ALLOWLIST", missing.to_str().unwrap())]).ok();
    assert_eq!(p.pod.sysctl("net.ipv4.tcp_syncookies"), "0");
}

#[test]
fn failed_add_undoes_its_sysctls_link_changes_and_backup() {
    let node = NodeNs::new("tu-undo");
    let p = VethPod::new("tu-undo", "eth0");
    let backups = TempDir::new("tu-undo-bak");
    let before = p.pod.sysctl("net.core.somaxconn");
    // veth's largest MTU is 65535: the MTU step fails after the sysctl and the MAC were changed.
    let c = conf(
        json!({"sysctl": {"net.core.somaxconn": "999"}, "mac": "02:00:00:00:00:cc", "mtu": 70000}),
        backups.path(),
        p.prev_result(),
    );
    let out = run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).fails();
    assert!(err_of(&out).1.contains("mtu 70000"), "{out}");
    assert_eq!(p.pod.sysctl("net.core.somaxconn"), before, "sysctl put back");
    assert_eq!(p.state(), original(), "MAC put back");
    assert!(std::fs::read_dir(backups.path()).unwrap().next().is_none(), "no backup left");
}

#[test]
fn del_after_the_netns_is_gone_succeeds_and_removes_the_backup() {
    let node = NodeNs::new("tu-gone");
    let backups = TempDir::new("tu-gone-bak");
    let p = VethPod::new("tu-gone", "eth0");
    let c = conf(json!({"mtu": 1400}), backups.path(), p.prev_result());
    run(&node, &rcni_bin("tuning"), "ADD", "c1", &p, &c).ok();
    let file = backups.join("c1_eth0.json");
    assert!(file.exists());
    let path = p.pod.path_str().to_string();
    drop(p);
    run_env(&node, &rcni_bin("tuning"), "DEL", "c1", &path, "eth0", &c, &[]).ok();
    run_env(&node, &rcni_bin("tuning"), "DEL", "c1", "", "eth0", &c, &[]).ok();
    assert!(!file.exists(), "backup removed although the netns is gone");
}

/// Same input to the reference and to ours, on two identical pods: same result JSON, same link state,
/// same backup file (1.1.1 has no txQLen, so it is left out).
#[test]
fn differential_against_reference_tuning() {
    let node = NodeNs::new("tu-diff");
    let ours = VethPod::new("tu-diff-a", "eth0");
    let theirs = VethPod::new("tu-diff-b", "eth0");
    let (bak_ours, bak_theirs) = (TempDir::new("tu-diff-ba"), TempDir::new("tu-diff-bb"));
    let extra = json!({"mac": "02:00:00:00:00:dd", "mtu": 1450, "promisc": true, "allmulti": true,
                       "sysctl": {"net.core.somaxconn": "512", "net.ipv4.conf.IFNAME.arp_filter": "1"}});
    let mut a = conf(extra.clone(), bak_ours.path(), ours.prev_result());
    let mut b = conf(extra, bak_theirs.path(), theirs.prev_result());
    // Identical prevResults, so the results compare as they are.
    a["prevResult"]["interfaces"][0]["sandbox"] = json!("/pod");
    b["prevResult"]["interfaces"][0]["sandbox"] = json!("/pod");
    let ra = run(&node, &rcni_bin("tuning"), "ADD", "c1", &ours, &a).ok().json();
    let rb = run(&node, &reference_plugin("tuning"), "ADD", "c1", &theirs, &b).ok().json();
    // Go prints an empty `"dns": {}` in 1.x results, which ours leaves out (both mean "no DNS").
    let without_empty_dns = |mut r: Value| {
        if r["dns"] == json!({}) {
            r.as_object_mut().unwrap().remove("dns");
        }
        r
    };
    assert_eq!(without_empty_dns(ra), without_empty_dns(rb), "same result JSON");
    assert_eq!(ours.state(), theirs.state(), "same link state");
    for key in ["net.core.somaxconn", "net.ipv4.conf.eth0.arp_filter"] {
        assert_eq!(ours.pod.sysctl(key), theirs.pod.sysctl(key), "{key}");
    }
    let read = |d: &TempDir| std::fs::read_to_string(d.join("c1_eth0.json")).unwrap();
    assert_eq!(read(&bak_ours), read(&bak_theirs), "byte-identical backup files");
    run(&node, &rcni_bin("tuning"), "CHECK", "c1", &ours, &a).ok();
    // 1.1.1's CHECK does not substitute IFNAME (fixed in v1.3.0) and looks for .../conf/IFNAME/arp_filter.
    run(&node, &reference_plugin("tuning"), "CHECK", "c1", &theirs, &b).fails();
    run(&node, &rcni_bin("tuning"), "DEL", "c1", &ours, &a).ok();
    run(&node, &reference_plugin("tuning"), "DEL", "c1", &theirs, &b).ok();
    assert_eq!(ours.state(), theirs.state());
    assert_eq!(ours.state(), original());
}

/// ADD with the reference, DEL with ours restores; and the other way round.
#[test]
fn backups_restore_across_implementations() {
    let node = NodeNs::new("tu-interop");
    let backups = TempDir::new("tu-interop-bak");
    for (adder, deleter) in
        [(reference_plugin("tuning"), rcni_bin("tuning")), (rcni_bin("tuning"), reference_plugin("tuning"))]
    {
        let p = VethPod::new("tu-interop", "eth0");
        let c = conf(
            json!({"mac": "02:00:00:00:00:ee", "mtu": 1280, "promisc": true, "allmulti": true}),
            backups.path(),
            p.prev_result(),
        );
        run(&node, &adder, "ADD", "c9", &p, &c).ok();
        assert_eq!(p.state(), ("02:00:00:00:00:ee".into(), 1280, true, true, 1000), "{}", adder.display());
        run(&node, &deleter, "DEL", "c9", &p, &c).ok();
        assert_eq!(p.state(), original(), "{} restored what {} changed", deleter.display(), adder.display());
        assert!(!backups.join("c9_eth0.json").exists());
    }
}

/// Our bridge's macspoofchk pins the pod's MAC; a MAC from tuning must move the pin, or the pod is cut
/// off. With the reference tuning in the same list, the pod cannot reach its gateway.
#[test]
fn a_new_mac_moves_the_bridge_spoof_check_with_it() {
    for (tuning, reachable) in [(rcni_bin("tuning"), true), (reference_plugin("tuning"), false)] {
        let node = NodeNs::new("tu-spoof");
        let pod = PodNs::new("tu-spoof");
        let data = TempDir::new("tu-spoof-ipam");
        let backups = TempDir::new("tu-spoof-bak");
        let mut conflist = example("60-bridge-tuning.conflist", data.path(), backups.path());
        conflist["plugins"][0]["macspoofchk"] = json!(true);
        let name = conflist["name"].as_str().unwrap().to_string();
        let conf = NetConfDir::new(&conflist);
        let plugins = support::PluginDir::new(&[
            ("bridge", rcni_bin("bridge")),
            ("host-local", rcni_bin("host-local")),
            ("tuning", tuning.clone()),
        ]);
        let mut tool = Cnitool::new(&conf, &[plugins.path().to_path_buf()]);
        tool.set("CAP_ARGS", &json!({"mac": "02:aa:bb:cc:dd:07"}).to_string());
        let result = tool.run(&node, &["add", &name, pod.path_str()]).ok().json();
        assert_eq!(pod.link("eth0").unwrap().address, "02:aa:bb:cc:dd:07");
        let gw = result["ips"][0]["gateway"].as_str().unwrap().to_string();
        let pinged = pod.wait_ping(&gw, std::time::Duration::from_secs(if reachable { 5 } else { 2 }));
        assert_eq!(pinged, reachable, "{}: gateway reachable with the new MAC", tuning.display());
        if reachable {
            let rules = node.cmd("nft").args(["list", "table", "bridge", "nat"]).run().ok().stdout;
            assert!(rules.contains("02:aa:bb:cc:dd:07"), "the spoof check pins the new MAC: {rules}");
            tool.run(&node, &["check", &name, pod.path_str()]).ok();
        }
        tool.run(&node, &["del", &name, pod.path_str()]).ok();
    }
}
