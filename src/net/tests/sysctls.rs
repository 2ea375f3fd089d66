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

/// A pod handle's thread stays in the pod netns for as many jobs as asked, in order, and the caller's
/// thread never moves: sysctls written through it land in the pod, not in the node.
#[tokio::test]
async fn handle_thread_runs_jobs_in_its_netns() {
    require_root!();
    let node = TestNs::new("nsthread-node");
    let pod = TestNs::new("nsthread-pod");
    let (_nh, ph, _, _) = node_pod_pair(&node, &pod, "vh1").await;
    let before = crate::net::current_thread_netns_id().unwrap();
    for _ in 0..3 {
        let id = ph.run_in_ns(|| crate::net::current_thread_netns_id().unwrap()).unwrap();
        assert_eq!(id, pod.ns.id(), "the job ran in the pod netns");
    }
    assert_eq!(crate::net::current_thread_netns_id().unwrap(), before, "the caller stayed where it was");
    ph.run_in_ns(|| sysctl::write("net/ipv6/conf/eth0/accept_dad", "0")).unwrap().unwrap();
    assert_eq!(sysctl::read_in(&pod.ns, "net/ipv6/conf/eth0/accept_dad").unwrap(), "0");
    let e = ph.run_in_ns(|| sysctl::write("net/ipv6/conf/vh1/accept_dad", "0")).unwrap().unwrap_err();
    assert!(e.is_not_found(), "the node's end is not in the pod netns: {e}");
    // A clone shares the thread; the thread ends with the last one.
    let clone = ph.clone();
    drop(ph);
    assert_eq!(clone.run_in_ns(|| crate::net::current_thread_netns_id().unwrap()).unwrap(), pod.ns.id());
}
