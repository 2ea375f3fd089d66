use super::harness::{TestNs, node_pod_pair, require_root};
use crate::net::sysctl;

#[tokio::test]
async fn sysctl_in_pod_netns_only() {
    require_root!();
    let node = TestNs::new("sysctl-node");
    let pod = TestNs::new("sysctl-pod");
    let _ = node_pod_pair(&node, &pod, "vh0").await;
    sysctl::write_in(&pod.ns, "net/ipv4/conf/eth0/arp_notify", "1").unwrap();
    assert_eq!(sysctl::read_in(&pod.ns, "net/ipv4/conf/eth0/arp_notify").unwrap(), "1");
    sysctl::write_in(&pod.ns, "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(sysctl::read_in(&pod.ns, "net.ipv4.ip_forward").unwrap(), "1");
    // Per-namespace: the node namespace is untouched (fresh namespaces start with forwarding off).
    assert_eq!(sysctl::read_in(&node.ns, "net.ipv4.ip_forward").unwrap(), "0");
    // eth0 exists only in the pod: in the node its key is missing, and that is distinguishable.
    let e = sysctl::read_in(&node.ns, "net/ipv4/conf/eth0/arp_notify").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&node.name), "{e}");
    let e = sysctl::write_in(&pod.ns, "net/ipv6/conf/nope0/accept_dad", "0").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
