//! Our loopback plugin through our cnitool, in throwaway namespaces, for every cniVersion a runtime uses.

mod support;

use serde_json::json;
use std::path::PathBuf;
use support::{Cnitool, NetConfDir, NodeNs, PodNs, rcni_bin, unique_suffix};

fn rcni_path() -> Vec<PathBuf> {
    vec![rcni_bin("loopback").parent().unwrap().to_path_buf()]
}

fn cycle(version: &str) {
    let node = NodeNs::new("lo-cycle");
    let pod = PodNs::new("lo-cycle");
    let net = format!("lo-{}", unique_suffix());
    let conf = NetConfDir::new(&json!({"cniVersion": version, "name": net, "plugins": [{"type": "loopback"}]}));
    let mut tool = Cnitool::new(&conf, &rcni_path());
    tool.set("CNI_IFNAME", "lo");
    assert!(!pod.link("lo").unwrap().is_up());

    let result = tool.run(&node, &["add", &net, pod.path_str()]).ok().json();
    assert_eq!(result["cniVersion"], version);
    assert_eq!(result["interfaces"], json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": pod.path_str()}]));
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips[0]["address"], "127.0.0.1/8");
    assert_eq!(ips[0]["interface"], 0);
    assert_eq!(ips[1]["address"], "::1/128");
    if version.starts_with("0.") {
        assert_eq!(ips[0]["version"], "4", "0.3.x/0.4.0 results mark the IP version");
        assert_eq!(result["dns"], json!({}));
    } else {
        assert!(ips[0].get("version").is_none());
    }
    assert!(pod.link("lo").unwrap().is_up(), "lo is up in the pod");
    assert!(pod.addr_cidrs("lo").contains(&"127.0.0.1/8".to_string()));

    if version != "0.3.1" {
        tool.run(&node, &["check", &net, pod.path_str()]).ok();
    }
    tool.run(&node, &["status", &net]).ok();
    tool.run_with(&node, &["gc", &net], &[("CNI_VALID_ATTACHMENTS", "[]")]).ok();
    // GC with an empty valid list deletes the cached attachment through a synthesized DEL: lo goes down.
    assert!(!pod.link("lo").unwrap().is_up());
    tool.run(&node, &["add", &net, pod.path_str()]).ok();
    tool.run(&node, &["del", &net, pod.path_str()]).ok();
    assert!(!pod.link("lo").unwrap().is_up(), "DEL sets lo down");
    tool.run(&node, &["del", &net, pod.path_str()]).ok();
    assert!(tool.cache_files().is_empty(), "no cache file left: {:?}", tool.cache_files());
    assert_eq!(node.link_names(), vec!["lo".to_string()], "no link left in the node");
}

#[test]
fn loopback_cycle_0_3_1() {
    cycle("0.3.1");
}

#[test]
fn loopback_cycle_0_4_0() {
    cycle("0.4.0");
}

#[test]
fn loopback_cycle_1_0_0() {
    cycle("1.0.0");
}

#[test]
fn loopback_cycle_1_1_0() {
    cycle("1.1.0");
}

#[test]
fn loopback_check_fails_when_lo_is_down() {
    let node = NodeNs::new("lo-check");
    let pod = PodNs::new("lo-check");
    let net = format!("lo-{}", unique_suffix());
    let conf = NetConfDir::new(&json!({"cniVersion": "1.1.0", "name": net, "plugins": [{"type": "loopback"}]}));
    let tool = Cnitool::new(&conf, &rcni_path());
    tool.run(&node, &["add", &net, pod.path_str()]).ok();
    pod.ip(&["link", "set", "lo", "down"]);
    let out = tool.run(&node, &["check", &net, pod.path_str()]).fails();
    assert!(out.stderr.contains("loopback interface is down"), "{out:?}");
    tool.run(&node, &["del", &net, pod.path_str()]).ok();
}

#[test]
fn loopback_del_with_vanished_netns_succeeds() {
    let node = NodeNs::new("lo-gone");
    let net = format!("lo-{}", unique_suffix());
    let conf = NetConfDir::new(&json!({"cniVersion": "1.1.0", "name": net, "plugins": [{"type": "loopback"}]}));
    let tool = Cnitool::new(&conf, &rcni_path());
    let path = {
        let pod = PodNs::new("lo-gone");
        tool.run(&node, &["add", &net, pod.path_str()]).ok();
        pod.path_str().to_string()
    };
    assert!(!std::path::Path::new(&path).exists());
    tool.run(&node, &["del", &net, &path]).ok();
}
