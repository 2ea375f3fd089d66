//! The bridge's DEL and GC in throwaway node and pod namespaces: DEL succeeds wherever the reference's
//! does, releases an address only once its interface is gone, and GC removes stale attachments (veth
//! pairs included) of its own network only.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{NodeNs, PodNs, TempDir, ip_files, rcni_bin};

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

/// Audit finding 6 for vxlan: its DEL must succeed wherever the reference's bridge DEL succeeds. Each case
/// is a config ADD refuses (a field only vxlan's ADD checks, or one both plugins read). The reference bridge
/// ADDs a pod and DELs it with the case's fields; where that DEL succeeds, our vxlan ADDs a pod with a good
/// config and must DEL it with the same fields, leaving no veth, no pod interface and no reservation.
#[test]
fn vxlan_del_succeeds_wherever_the_reference_bridge_del_does() {
    let cases: Vec<(&str, Value)> = vec![
        (
            "a peer subnet outside the network",
            json!({"peers": [{"underlay": "198.18.0.9", "subnets": ["10.1.0.0/24"]}]}),
        ),
        ("vni 0", json!({"vxlan": {"vni": 0, "underlay": "und0"}})),
        ("an underlay name too long", json!({"vxlan": {"vni": 4343, "underlay": "a-very-long-underlay"}})),
        ("a network with host bits", json!({"network": "10.84.0.1/16"})),
        ("an unknown masquerade backend", json!({"ipMasqBackend": "pf"})),
    ];
    let merged = |good: &Value, extra: &Value| {
        let mut bad = good.clone();
        for (k, v) in extra.as_object().unwrap() {
            bad[k] = v.clone();
        }
        bad
    };
    let (mut compared, mut failures) = (0, Vec::new());
    for (what, extra) in &cases {
        let data = TempDir::new("brtd-vxref");
        let node = NodeNs::new("brtd-vxref");
        let pod = PodNs::new("brtd-vxref-p");
        let good = conf("vxlen", "br0", "10.84.1.0/24", data.path(), json!({}));
        run(&node, &reference_dir(), "ADD", "vxl-1", pod.path_str(), &[], &good).ok();
        if !run(&node, &reference_dir(), "DEL", "vxl-1", pod.path_str(), &[], &merged(&good, extra)).success() {
            eprintln!("the reference refuses DEL with {what}: not compared");
            continue;
        }
        compared += 1;
        let data = TempDir::new("brtd-vx");
        let node = NodeNs::new("brtd-vx");
        node.sh("ip link add und0 type veth peer name und1 && ip link set und1 up && ip addr add 198.18.0.1/24 dev und0 && ip link set und0 up").ok();
        let pod = PodNs::new("brtd-vx-p");
        let good = json!({"cniVersion": "1.0.0", "name": "vxlen", "type": "vxlan", "network": "10.84.0.0/16",
                          "subnet": "10.84.1.0/24", "bridge": "vxbr0", "vxlan": {"vni": 4343, "underlay": "und0"},
                          "peers": [], "ipMasq": true, "dataDir": data.path().to_string_lossy()});
        let vx = |cmd: &str, c: &Value| {
            let env = support::cni_env(cmd, "vx-1", pod.path_str(), "eth0", &[rcni_dir()]);
            node.run_plugin(&rcni_bin("vxlan"), &env, c.to_string().as_bytes())
        };
        vx("ADD", &good).ok();
        assert_eq!(ip_files(data.path()).len(), 1);
        let out = vx("DEL", &merged(&good, extra));
        if !out.success() {
            failures.push(format!("vxlan DEL with {what} failed where the reference's succeeds: {out}"));
            continue;
        }
        assert!(veths(&node).iter().all(|v| v.starts_with("und")), "{what}: veth left: {:?}", veths(&node));
        assert!(pod.link("eth0").is_none(), "{what}: eth0 left in the pod");
        assert!(ip_files(data.path()).is_empty(), "{what}: IP not released");
    }
    assert!(compared >= 4, "the reference accepted only {compared} of the cases: the test compares too little");
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

fn ip_file_of(data: &Path, network: &str, cid: &str) -> Option<String> {
    let dir = data.join(network);
    std::fs::read_dir(&dir).ok()?.flatten().find_map(|f| {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        (text.lines().next() == Some(cid)).then(|| f.file_name().to_string_lossy().into_owned())
    })
}

fn spoof_chains(node: &NodeNs) -> String {
    node.cmd("nft").args(["list", "chains", "bridge"]).run().stdout
}

fn gc_conf(c: &Value, valid: &[&str]) -> Value {
    let mut c = c.clone();
    c["cni.dev/valid-attachments"] = valid.iter().map(|id| json!({"containerID": id, "ifname": "eth0"})).collect();
    c
}

/// Audit findings 5 and 3: GC of network A (valid: a1) on a bridge it shares with network B deletes the
/// veth pair of A's stale attachment a2 — whose netns lives on — before releasing its address, and
/// leaves B's live pod alone: its veth, its address and its macspoofchk rules.
#[test]
fn gc_deletes_stale_pairs_of_its_network_and_nothing_of_another() {
    let data = TempDir::new("brtd-gc");
    let node = NodeNs::new("brtd-gc");
    let a = conf("gc-a", "br0", "10.83.0.0/24", data.path(), json!({"macspoofchk": true}));
    // One bridge holds one gateway per family: B routes through an external one.
    let b = conf(
        "gc-b",
        "br0",
        "10.84.0.0/24",
        data.path(),
        json!({"macspoofchk": true, "isGateway": false, "ipMasq": false}),
    );
    let (a1, a2, b1) = (PodNs::new("brtd-gc-a1"), PodNs::new("brtd-gc-a2"), PodNs::new("brtd-gc-b1"));
    let dir = rcni_dir();
    run(&node, &dir, "ADD", "gc-a1", a1.path_str(), &[], &a).ok();
    run(&node, &dir, "ADD", "gc-a2", a2.path_str(), &[], &a).ok();
    run(&node, &dir, "ADD", "gc-b1", b1.path_str(), &[], &b).ok();
    assert_eq!(veths(&node).len(), 3);
    let mut gc = gc_conf(&a, &["gc-a1"]);
    gc["cniVersion"] = json!("1.1.0");
    let env = support::cni_env("GC", "", "", "", std::slice::from_ref(&dir));
    let env: Vec<_> = env.into_iter().filter(|(k, _)| k == "CNI_COMMAND" || k == "CNI_PATH").collect();
    node.run_plugin(&dir.join("bridge"), &env, gc.to_string().as_bytes()).ok();

    let b1_host = rcni::pod::names::host_veth_name("gc-b1", "eth0");
    let chains = spoof_chains(&node);
    let checks = [
        (a2.link("eth0").is_none(), "the stale attachment's pair is deleted (its netns still exists)"),
        (ip_file_of(data.path(), "gc-a", "gc-a2").is_none(), "the stale attachment's address is released"),
        (!chains.contains("cni-br-iface-gc-a2-eth0"), "its macspoofchk rules are removed"),
        (a1.ping("10.83.0.1"), "the valid attachment of A still works"),
        (b1.link("eth0").is_some(), "B's pod keeps its interface"),
        (node.link(&b1_host).is_some_and(|l| l.is_up()), "B's pod keeps its host veth"),
        (ip_file_of(data.path(), "gc-b", "gc-b1").is_some(), "B's pod keeps its address"),
        (chains.contains("cni-br-iface-gc-b1-eth0"), "B's live pod keeps its macspoofchk rules"),
    ];
    let failed: Vec<&str> = checks.iter().filter(|(ok, _)| !ok).map(|(_, what)| *what).collect();
    assert!(failed.is_empty(), "{failed:?}\n{chains}");
    assert_eq!(veths(&node).len(), 2);
    for (pod, cid, c) in [(&a1, "gc-a1", &a), (&b1, "gc-b1", &b)] {
        run(&node, &dir, "DEL", cid, pod.path_str(), &[], c).ok();
    }
    assert!(veths(&node).is_empty());
}

/// A retired pair whose background deleter never finished (killed): pod end down and renamed
/// `rcnidel<index>`, host end marked with the retired alias, address released — the state a DEL leaves
/// when its child is killed, made here by hand since the child cannot be stopped reliably in between. GC
/// deletes the pair; an unmarked veth on the node stays.
#[test]
fn gc_sweeps_retired_pairs_a_killed_background_delete_left() {
    let data = TempDir::new("brtd-inert");
    let node = NodeNs::new("brtd-inert");
    let pod = PodNs::new("brtd-inert-p");
    let c = conf("inert", "br0", "10.85.0.0/24", data.path(), json!({}));
    let dir = rcni_dir();
    run(&node, &dir, "ADD", "inert-1", pod.path_str(), &[], &c).ok();
    let host = rcni::pod::names::host_veth_name("inert-1", "eth0");
    node.ip(&["link", "set", &host, "alias", rcni::pod::veth::RETIRED_ALIAS]).ok();
    pod.ip(&["link", "set", "eth0", "down"]).ok();
    pod.ip(&["link", "set", "eth0", "name", "rcnidel99"]).ok();
    // DEL went through IPAM before its child was killed: the address is released.
    for f in ip_files(data.path()) {
        std::fs::remove_file(data.join("inert").join(f)).unwrap();
    }
    node.ip(&["link", "add", "vethforeign0", "type", "veth", "peer", "name", "vethforeign1"]).ok();
    let mut gc = gc_conf(&c, &[]);
    gc["cniVersion"] = json!("1.1.0");
    let env = vec![
        ("CNI_COMMAND".to_string(), "GC".to_string()),
        ("CNI_PATH".to_string(), support::join_path(std::slice::from_ref(&dir))),
    ];
    node.run_plugin(&dir.join("bridge"), &env, gc.to_string().as_bytes()).ok();
    assert!(pod.link("rcnidel99").is_none(), "the retired pair is deleted");
    let mut left = veths(&node);
    left.sort();
    assert_eq!(left, ["vethforeign0", "vethforeign1"], "a veth not marked as ours stays");
}

/// Audit finding 15: a link under an attachment's derived host name that is not its own (another
/// attachment's veth, peer in another netns) is never deleted — neither by ADD's "leftover" path nor
/// by DEL.
#[test]
fn host_veth_name_taken_by_another_attachment_is_never_deleted() {
    let data = TempDir::new("brtd-collide");
    let node = NodeNs::new("brtd-collide");
    let (pod, other) = (PodNs::new("brtd-collide-p"), PodNs::new("brtd-collide-o"));
    let c = conf("collide", "br0", "10.86.0.0/24", data.path(), json!({}));
    let dir = rcni_dir();
    let host = rcni::pod::names::host_veth_name("coll-1", "eth0");
    node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", other.name()]).ok();
    let out = run(&node, &dir, "ADD", "coll-1", pod.path_str(), &[], &c);
    assert!(!out.success(), "ADD must not take over another attachment's veth: {out}");
    assert!(node.link(&host).is_some() && other.link("eth0").is_some(), "the other veth is untouched by ADD");
    assert!(ip_files(data.path()).is_empty(), "the failed ADD released its address");
    run(&node, &dir, "DEL", "coll-1", pod.path_str(), &[], &c).ok();
    assert!(node.link(&host).is_some() && other.link("eth0").is_some(), "the other veth is untouched by DEL");
}

/// Audit finding 25: DEL removes the attachment's macspoofchk rules even when the config no longer asks
/// for macspoofchk (switched off since ADD).
#[test]
fn del_removes_spoof_checks_after_the_option_was_switched_off() {
    let data = TempDir::new("brtd-spoofoff");
    let node = NodeNs::new("brtd-spoofoff");
    let pod = PodNs::new("brtd-spoofoff-p");
    let on = conf("spoofoff", "br0", "10.87.0.0/24", data.path(), json!({"macspoofchk": true}));
    let dir = rcni_dir();
    run(&node, &dir, "ADD", "off-1", pod.path_str(), &[], &on).ok();
    assert!(spoof_chains(&node).contains("cni-br-iface-off-1-eth0"));
    let mut off = on.clone();
    off["macspoofchk"] = json!(false);
    run(&node, &dir, "DEL", "off-1", pod.path_str(), &[], &off).ok();
    let chains = spoof_chains(&node);
    assert!(!chains.contains("cni-br-iface-off-1-eth0"), "the rules of the attachment are gone: {chains}");
}
