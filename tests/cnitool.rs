//! cnitool and the runtime (`rcni::cni::runtime`) against real plugin binaries in throwaway namespaces.
//!
//! The plugins here are the reference ones from /usr/lib/cni (Debian's 1.1.1, which speaks up to
//! cniVersion 1.0.0); they exercise the runtime side only: config loading, stdin injection, prevResult
//! and capability passing, the result cache, DEL order and idempotence, GC of cached attachments.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use rcni::cni::runtime::cache::base64_bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use support::{Cnitool, NetConfDir, NodeNs, PodNs, REFERENCE_PLUGIN_DIR, TempDir, leftover_netns, unique_suffix};

/// Upstream cnitool's container ID for a netns path.
fn cnitool_id(netns: &str) -> String {
    let d = Sha512::digest(netns.as_bytes());
    format!("cnitool-{}", d[..10].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn ref_path() -> Vec<PathBuf> {
    support::reference_plugin("loopback");
    vec![PathBuf::from(REFERENCE_PLUGIN_DIR)]
}

#[test]
fn loopback_add_check_del() {
    {
        let node = NodeNs::new("ct-lo");
        let pod = PodNs::new("ct-lo");
        let net = format!("lo-{}", unique_suffix());
        let conflist = json!({"cniVersion": "1.0.0", "name": net, "plugins": [{"type": "loopback"}]});
        let conf = NetConfDir::new(&conflist);
        let tool = Cnitool::new(&conf, &ref_path());
        assert!(!pod.link("lo").unwrap().is_up());

        let out = tool.run(&node, &["add", &net, pod.path_str()]).ok();
        let result = out.json();
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][0]["name"], "lo");
        assert_eq!(result["interfaces"][0]["sandbox"], pod.path_str());
        assert!(pod.link("lo").unwrap().is_up());
        assert!(pod.addr_cidrs("lo").contains(&"127.0.0.1/8".to_string()));

        // The cache file, in libcni's format.
        let cid = cnitool_id(pod.path_str());
        let file = tool.cache_file(&net, &cid, "eth0");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&tool.cache.join("results")), 0o700);
        let cached: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(cached["kind"], "cniCacheV1");
        assert_eq!(cached["containerId"], cid);
        assert_eq!(cached["ifName"], "eth0");
        assert_eq!(cached["networkName"], net);
        assert_eq!(cached["netns"], pod.path_str());
        assert!(cached.get("cniArgs").is_none());
        assert!(cached.get("capabilityArgs").is_none());
        let config = base64_bytes::decode(cached["config"].as_str().unwrap()).unwrap();
        assert_eq!(config, std::fs::read(conf.path().join(format!("10-{net}.conflist"))).unwrap());
        assert_eq!(cached["result"], result);

        tool.run(&node, &["check", &net, pod.path_str()]).ok();
        // STATUS and GC are no-ops below 1.1.0 (apart from GC's handling of cached attachments).
        tool.run(&node, &["status", &net]).ok();
        tool.run(&node, &["gc", &net]).ok();
        assert!(file.exists(), "gc without CNI_VALID_ATTACHMENTS keeps cached attachments");

        tool.run(&node, &["del", &net, pod.path_str()]).ok();
        assert!(!pod.link("lo").unwrap().is_up());
        assert!(!file.exists());
        assert!(tool.cache_files().is_empty());
        tool.run(&node, &["del", &net, pod.path_str()]).ok();

        // An explicit container ID and ifname.
        tool.run_with(&node, &["add", &net, pod.path_str()], &[("CNI_CONTAINERID", "my-ctr"), ("CNI_IFNAME", "lo0")])
            .ok();
        assert!(tool.cache_file(&net, "my-ctr", "lo0").exists());
        tool.run_with(&node, &["del", &net, pod.path_str()], &[("CNI_CONTAINERID", "my-ctr"), ("CNI_IFNAME", "lo0")])
            .ok();
        assert!(tool.cache_files().is_empty());
    }
    assert!(leftover_netns("ct-lo").is_empty(), "{:?}", leftover_netns("ct-lo"));
}

fn bridge_conflist(net: &str, bridge: &str, data_dir: &std::path::Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "capabilities": {"ips": true},
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "ranges": [[{"subnet": "10.77.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "loopback"}
        ]
    })
}

#[test]
fn bridge_host_local_chain() {
    {
        let node = NodeNs::new("ct-br");
        let pod1 = PodNs::new("ct-br-a");
        let pod2 = PodNs::new("ct-br-b");
        let ipam = TempDir::new("ct-br-ipam");
        let net = format!("br-{}", unique_suffix());
        let bridge = format!("br{}", unique_suffix());
        let conf = NetConfDir::new(&bridge_conflist(&net, &bridge, ipam.path()));
        let mut tool = Cnitool::new(&conf, &ref_path());
        tool.set("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web");

        // pod1 asks for a fixed IP through the "ips" capability (host-local reads runtimeConfig.ips).
        let out = tool
            .run_with(&node, &["add", &net, pod1.path_str()], &[("CAP_ARGS", r#"{"ips":["10.77.0.42/24"],"mac":"x"}"#)])
            .ok();
        let r1 = out.json();
        assert_eq!(r1["cniVersion"], "1.0.0");
        assert_eq!(r1["ips"][0]["address"], "10.77.0.42/24");
        assert_eq!(r1["ips"][0]["gateway"], "10.77.0.1");
        // The loopback plugin after bridge passed prevResult through.
        let names: Vec<_> = r1["interfaces"].as_array().unwrap().iter().map(|i| i["name"].clone()).collect();
        assert!(names.contains(&json!(bridge)) && names.contains(&json!("eth0")), "{r1}");

        let r2 = tool.run(&node, &["add", &net, pod2.path_str()]).ok().json();
        let ip2 = r2["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
        assert!(ip2.starts_with("10.77.0.") && ip2 != "10.77.0.42", "{r2}");

        // Kernel state: bridge with the gateway address in the node, two veths enslaved, eth0 in pods.
        let br = node.link(&bridge).expect("bridge in node");
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert!(br.is_up());
        assert!(node.addr_cidrs(&bridge).contains(&"10.77.0.1/24".to_string()));
        let ports: Vec<_> = node.links().into_iter().filter(|l| l.master.as_deref() == Some(&bridge)).collect();
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert!(ports.iter().all(|p| p.kind.as_deref() == Some("veth")));
        assert_eq!(pod1.addr_cidrs("eth0"), ["10.77.0.42/24"]);
        assert_eq!(pod1.default_gateway("-4").as_deref(), Some("10.77.0.1"));
        assert!(pod1.link("lo").unwrap().is_up(), "loopback ran in the chain");
        assert!(pod1.wait_ping("10.77.0.1", Duration::from_secs(5)));
        assert!(pod1.wait_ping(&ip2, Duration::from_secs(5)));
        assert!(pod2.wait_ping("10.77.0.42", Duration::from_secs(5)));
        assert!(ipam.join(&net).join("10.77.0.42").exists());

        // Cache: CNI_ARGS pairs and the capability args as given.
        let id1 = cnitool_id(pod1.path_str());
        let id2 = cnitool_id(pod2.path_str());
        let cached: Value =
            serde_json::from_slice(&std::fs::read(tool.cache_file(&net, &id1, "eth0")).unwrap()).unwrap();
        assert_eq!(cached["cniArgs"], json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]]));
        assert_eq!(cached["capabilityArgs"], json!({"ips": ["10.77.0.42/24"], "mac": "x"}));
        assert_eq!(cached["result"], r1);

        tool.run(&node, &["check", &net, pod1.path_str()]).ok();
        tool.run(&node, &["check", &net, pod2.path_str()]).ok();

        // CHECK with the pod's address gone fails with the plugin's error.
        pod1.ip(&["addr", "del", "10.77.0.42/24", "dev", "eth0"]).ok();
        let out = tool.run(&node, &["check", &net, pod1.path_str()]).fails();
        assert!(out.stderr.contains("10.77.0.42"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");

        // DEL pod1: interface, veth, reservation and cache gone; a second DEL is fine.
        tool.run(&node, &["del", &net, pod1.path_str()]).ok();
        assert!(pod1.link("eth0").is_none());
        assert_eq!(node.links().into_iter().filter(|l| l.master.as_deref() == Some(&bridge)).count(), 1);
        assert!(!ipam.join(&net).join("10.77.0.42").exists());
        assert!(!tool.cache_file(&net, &id1, "eth0").exists());
        tool.run(&node, &["del", &net, pod1.path_str()]).ok();

        // GC without CNI_VALID_ATTACHMENTS: cached attachments count as valid, pod2 stays.
        tool.run(&node, &["gc", &net]).ok();
        assert!(pod2.link("eth0").is_some());
        // GC with pod2 listed as valid: nothing happens either.
        let valid = format!(r#"[{{"containerID":"{id2}","ifname":"eth0"}}]"#);
        tool.run_with(&node, &["gc", &net], &[("CNI_VALID_ATTACHMENTS", &valid)]).ok();
        assert!(pod2.link("eth0").is_some());
        // GC with nothing valid: pod2's cached attachment gets a DEL with its cached parameters.
        tool.run_with(&node, &["gc", &net], &[("CNI_VALID_ATTACHMENTS", "[]")]).ok();
        assert!(pod2.link("eth0").is_none());
        assert!(tool.cache_files().is_empty());
        assert_eq!(node.links().into_iter().filter(|l| l.master.as_deref() == Some(&bridge)).count(), 0);
        let left: Vec<_> = std::fs::read_dir(ipam.join(&net))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("10."))
            .collect();
        assert!(left.is_empty(), "IP reservations left: {left:?}");
    }
    assert!(leftover_netns("ct-br").is_empty(), "{:?}", leftover_netns("ct-br"));
}

#[test]
fn errors_are_reported() {
    {
        let node = NodeNs::new("ct-err");
        let pod = PodNs::new("ct-err");
        let net = format!("e-{}", unique_suffix());
        let conf = NetConfDir::new(&json!({"cniVersion": "1.0.0", "name": net, "plugins": [{"type": "loopback"}]}));
        // A 1.1.0 list: the 1.1.1 reference loopback rejects it; the plugin's error comes through.
        let new_net = format!("n-{}", unique_suffix());
        conf.write(
            "20-new.conflist",
            &json!({"cniVersion": "1.1.0", "name": new_net, "plugins": [{"type": "loopback"}]}),
        );
        let tool = Cnitool::new(&conf, &ref_path());

        // Usage errors.
        let out = tool.run(&node, &["add", &net]).fails();
        assert!(out.stderr.contains("add    <net> <netns>"), "{out}");
        tool.run(&node, &["frobnicate", &net, pod.path_str()]).fails();

        let out = tool.run(&node, &["add", "nope", pod.path_str()]).fails();
        assert!(out.stderr.contains("no net configuration with name \"nope\""), "{out}");

        let out = tool.run(&node, &["add", &new_net, pod.path_str()]).fails();
        assert!(out.stderr.contains("plugin type=\"loopback\" failed (add): incompatible CNI versions"), "{out}");
        assert!(tool.cache_files().is_empty());
        // STATUS on a 1.1.0 list asks the plugin; 1.1.1 does not know STATUS and fails.
        let out = tool.run(&node, &["status", &new_net]).fails();
        assert!(out.stderr.contains("plugin type=\"loopback\" failed (status): "), "{out}");

        // Plugin not on CNI_PATH.
        let empty = TempDir::new("ct-err-bin");
        let tool2 = Cnitool::new(&conf, &[empty.path().to_path_buf()]);
        let out = tool2.run(&node, &["add", &net, pod.path_str()]).fails();
        assert!(out.stderr.contains("failed to find plugin \"loopback\""), "{out}");

        // Bad CAP_ARGS.
        let out = tool.run_with(&node, &["add", &net, pod.path_str()], &[("CAP_ARGS", "[1]")]).fails();
        assert!(out.stderr.contains("CAP_ARGS"), "{out}");
        let out = tool.run_with(&node, &["gc", &net], &[("CNI_VALID_ATTACHMENTS", "{}")]).fails();
        assert!(out.stderr.contains("CNI_VALID_ATTACHMENTS"), "{out}");
        assert!(!pod.link("lo").unwrap().is_up());
    }
    assert!(leftover_netns("ct-err").is_empty());
}

#[test]
fn harness_cleans_up_on_panic() {
    let names = std::sync::Mutex::new(Vec::new());
    let res = std::panic::catch_unwind(|| {
        let node = NodeNs::new("ct-panic");
        let pod = PodNs::new("ct-panic");
        let dir = TempDir::new("ct-panic");
        names.lock().unwrap().extend([node.name().to_string(), pod.name().to_string()]);
        names.lock().unwrap().push(dir.path().to_string_lossy().into_owned());
        assert!(support::netns_list().contains(&node.name().to_string()));
        // Commands really run inside the namespace: only lo there, and up in the node only.
        assert_eq!(node.link_names(), ["lo"]);
        assert!(node.link("lo").unwrap().is_up() && !pod.link("lo").unwrap().is_up());
        panic!("boom");
    });
    assert!(res.is_err());
    let names = names.into_inner().unwrap();
    let list = support::netns_list();
    assert!(!list.contains(&names[0]) && !list.contains(&names[1]), "{list:?}");
    assert!(!std::path::Path::new(&names[2]).exists());
    assert!(leftover_netns("ct-panic").is_empty());
}
