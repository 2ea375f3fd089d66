//! The bridge's DEL and GC in throwaway node and pod namespaces: DEL succeeds wherever the reference's
//! does, releases an address only once its interface is gone, and GC removes stale attachments (veth
//! pairs included) of its own network only.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{NodeNs, PodNs, TempDir, rcni_bin};

fn rcni_dir() -> PathBuf {
    rcni_bin("bridge").parent().unwrap().to_path_buf()
}

fn reference_dir() -> PathBuf {
    support::reference_plugin("bridge").parent().unwrap().to_path_buf()
}

/// A single-plugin bridge config (as a runtime hands it to the plugin), host-local in `data`.
fn conf(name: &str, bridge: &str, subnet: &str, data: &Path, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": true,
        "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data.to_string_lossy()}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// host-local reservation files (IP files) left in a dataDir.
fn ip_files(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n != "lock" && !n.starts_with("last_reserved_ip") {
                out.push(n);
            }
        }
    }
    out
}

fn veths(ns: &support::NetNs) -> Vec<String> {
    ns.links().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).map(|l| l.ifname).collect()
}

/// Runs `plugin` (from `dir`) with `cmd` for attachment (`cid`, eth0) of `pod`, extra env on top.
fn run(
    node: &NodeNs,
    dir: &Path,
    cmd: &str,
    cid: &str,
    netns: &str,
    extra_env: &[(&str, &str)],
    conf: &Value,
) -> support::Output {
    let mut env = support::cni_env(cmd, cid, netns, "eth0", &[dir.to_path_buf()]);
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    node.run_plugin(&dir.join("bridge"), &env, conf.to_string().as_bytes())
}

/// Audit finding 6: a DEL must not be refused for what only ADD needs. Each case ADDs a pod with a good
/// config, then DELs it with a config that ADD would refuse (or rcni found odd): the reference's DEL
/// succeeds, so ours must too, and leave nothing behind.
#[test]
fn del_succeeds_with_configs_only_add_refuses_like_the_reference() {
    let odd_prev = json!({"cniVersion": "1.0.0", "interfaces": [],
                          "ips": [{"address": "10.81.0.2/24", "interface": 7}]});
    type Case = (&'static str, Value, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        ("bad MAC in CNI_ARGS", json!({}), vec![("CNI_ARGS", "IgnoreUnknown=1;MAC=zz")]),
        ("bad runtimeConfig.mac", json!({"runtimeConfig": {"mac": "zz"}}), vec![]),
        ("vlan with isGateway", json!({"vlan": 100}), vec![]),
        ("prevResult with an interface index past the list", json!({"prevResult": odd_prev}), vec![]),
    ];
    let mut failures = Vec::new();
    for (dir, who) in [(reference_dir(), "reference"), (rcni_dir(), "rcni")] {
        for (what, extra, env) in &cases {
            let data = TempDir::new("brtd-lenient");
            let node = NodeNs::new("brtd-lenient");
            let pod = PodNs::new("brtd-lenient-p");
            let good = conf("lenient", "br0", "10.81.0.0/24", data.path(), json!({}));
            run(&node, &dir, "ADD", "len-1", pod.path_str(), &[], &good).ok();
            assert_eq!(ip_files(data.path()).len(), 1);
            let mut bad = good.clone();
            for (k, v) in extra.as_object().unwrap() {
                bad[k] = v.clone();
            }
            let out = run(&node, &dir, "DEL", "len-1", pod.path_str(), env, &bad);
            if !out.success() {
                failures.push(format!("{who}: DEL with {what} failed: {out}"));
                continue;
            }
            assert!(veths(&node).is_empty(), "{who}, {what}: veth left in the node: {:?}", veths(&node));
            assert!(pod.link("eth0").is_none(), "{who}, {what}: eth0 left in the pod");
            assert!(ip_files(data.path()).is_empty(), "{who}, {what}: IP not released");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs the bridge without CAP_NET_ADMIN (every netlink change fails with EPERM), as a real teardown
/// error of the veth.
fn run_without_net_admin(node: &NodeNs, cmd: &str, cid: &str, netns: &str, conf: &Value) -> support::Output {
    let env = support::cni_env(cmd, cid, netns, "eth0", &[rcni_dir()]);
    node.cmd("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"])
        .arg(rcni_bin("bridge"))
        .envs(env)
        .stdin(conf.to_string())
        .run()
}

/// Audit finding 8: when the veth cannot be removed (a real error, not "absent"), DEL fails and keeps the
/// address reserved — it is never free while an interface still holds it. The retried DEL releases it.
#[test]
fn del_keeps_the_address_while_the_veth_could_not_be_removed() {
    for background in [true, false] {
        let data = TempDir::new("brtd-keep");
        let node = NodeNs::new("brtd-keep");
        let pod = PodNs::new("brtd-keep-p");
        let c = conf("keep", "br0", "10.82.0.0/24", data.path(), json!({"deleteLinkInBackground": background}));
        run(&node, &rcni_dir(), "ADD", "keep-1", pod.path_str(), &[], &c).ok();
        let out = run_without_net_admin(&node, "DEL", "keep-1", pod.path_str(), &c);
        assert!(!out.success(), "background={background}: DEL without CAP_NET_ADMIN cannot remove the veth: {out}");
        assert!(pod.link("eth0").is_some(), "background={background}: the pod interface is still there");
        assert_eq!(ip_files(data.path()).len(), 1, "background={background}: the address must stay reserved");
        run(&node, &rcni_dir(), "DEL", "keep-1", pod.path_str(), &[], &c).ok();
        assert!(pod.link("eth0").is_none() && veths(&node).is_empty(), "background={background}");
        assert!(ip_files(data.path()).is_empty(), "background={background}: the retried DEL releases it");
    }
}
