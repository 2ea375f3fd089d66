//! rcni-overlay's /healthz and /metrics (flanneld's --healthz-ip/--healthz-port), fetched with curl from
//! inside the node's netns: health follows the agent's state (ok, degraded while etcd is down), the
//! metrics follow the peers, the syncs, the etcd errors and the event-to-kernel latency.

mod support;

use std::time::Duration;
use support::NodeNs;
use support::agent::{AgentNode, PREFIX};
use support::etcd::{Etcd, wait_for};
use support::underlay::Switch;

const LONG: Duration = Duration::from_secs(30);

/// (HTTP status, body) of GET `url` from inside `ns`; status 0 when nothing answers.
fn get(ns: &NodeNs, url: &str) -> (u16, String) {
    let out = ns.cmd("curl").args(["-s", "-m", "5", "-w", "\n%{http_code}", url]).run();
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn healthz_and_metrics_follow_the_agent() {
    let switch = Switch::new("ovh");
    let mut etcd = Etcd::start("ovh", &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    let n1 = AgentNode::with_flags("ovh", &switch, 1, &etcd.url(), &["--healthz-port", "9102"]);
    let n2 = AgentNode::new("ovh", &switch, 2, &etcd.url());
    wait_for("node 1's peer", LONG, || n1.routes().lines().count() == 1);
    let url = "http://198.18.0.1:9102";

    let (code, body) = get(&n1.ns, &format!("{url}/healthz"));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with(&format!("ok: {}, 1 peers", n1.subnet())), "{body}");
    let (code, m) = get(&n1.ns, &format!("{url}/metrics"));
    assert_eq!(code, 200);
    assert_eq!(metric(&m, "rcni_overlay_peers"), 1.0);
    assert_eq!(metric(&m, "rcni_overlay_etcd_errors_total"), 0.0);
    assert_eq!(metric(&m, "rcni_overlay_etcd_reachable"), 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let synced = metric(&m, "rcni_overlay_last_sync_timestamp_seconds");
    assert!(now - synced < 30.0 && synced <= now + 1.0, "last sync {synced} vs now {now}");
    assert_eq!(get(&n1.ns, &format!("{url}/nothing")).0, 404);
    assert_eq!(get(&n2.ns, "http://198.18.0.2:9102/healthz").0, 0, "no listener without --healthz-port");

    // A lease change is one more latency observation, and one more peer.
    let before = metric(&m, "rcni_overlay_event_to_kernel_seconds_count");
    let fake =
        r#"{"PublicIP":"198.18.0.50","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
    etcd.ctl(&["put", &format!("{PREFIX}/subnets/10.244.200.0-24"), fake]).ok();
    wait_for("the new peer in the metrics", LONG, || {
        let m = get(&n1.ns, &format!("{url}/metrics")).1;
        metric(&m, "rcni_overlay_peers") == 2.0 && metric(&m, "rcni_overlay_event_to_kernel_seconds_count") > before
    });
    let m = get(&n1.ns, &format!("{url}/metrics")).1;
    let inf = m.lines().find(|l| l.starts_with("rcni_overlay_event_to_kernel_seconds_bucket{le=\"+Inf\"}")).unwrap();
    assert!(inf.ends_with(&format!(" {}", metric(&m, "rcni_overlay_event_to_kernel_seconds_count"))), "{m}");

    // etcd down: still healthy (the node is served), but degraded, and the errors count.
    etcd.proc.kill();
    wait_for("degraded health", LONG, || get(&n1.ns, &format!("{url}/healthz")).1.starts_with("degraded"));
    let (code, body) = get(&n1.ns, &format!("{url}/healthz"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("2 peers"), "{body}");
    wait_for("etcd errors counted", LONG, || {
        metric(&get(&n1.ns, &format!("{url}/metrics")).1, "rcni_overlay_etcd_errors_total") > 0.0
    });
    assert_eq!(metric(&get(&n1.ns, &format!("{url}/metrics")).1, "rcni_overlay_etcd_reachable"), 0.0);
    etcd.restart();
    wait_for("ok again", LONG, || get(&n1.ns, &format!("{url}/healthz")).1.starts_with("ok"));
}
