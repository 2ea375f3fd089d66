use std::time::Duration;

use super::harness::{TestNs, node_pod_pair, require_root};
use crate::net::{AddrOptions, IpFamily, sysctl};

#[tokio::test]
async fn addresses_v4_v6_add_list_delete() {
    require_root!();
    let node = TestNs::new("addr-node");
    let pod = TestNs::new("addr-pod");
    let (_nh, ph, _h, eth0) = node_pod_pair(&node, &pod, "vh0").await;
    let v4 = "10.22.0.5/24".parse().unwrap();
    let v6 = "fd00:22::5/64".parse().unwrap();
    ph.add_address(eth0, v4, AddrOptions::default()).await.unwrap();
    ph.add_address(eth0, v6, AddrOptions { nodad: true, ..Default::default() }).await.unwrap();

    let a4 = ph.addresses(Some(eth0), Some(IpFamily::V4)).await.unwrap();
    assert_eq!(a4.iter().map(|a| a.net).collect::<Vec<_>>(), vec![v4]);
    let a6 = ph.addresses(Some(eth0), Some(IpFamily::V6)).await.unwrap();
    let ours = a6.iter().find(|a| a.net == v6).expect("v6 listed");
    assert!(!ours.is_tentative(), "NODAD: usable at once");
    assert!(pod.ip(&["-6", "addr", "show", "dev", "eth0"]).contains("nodad"));
    // All families, all links: includes both.
    let all = ph.addresses(None, None).await.unwrap();
    assert!(all.iter().any(|a| a.net == v4) && all.iter().any(|a| a.net == v6));

    // EEXIST, and the option that tolerates it.
    let e = ph.add_address(eth0, v4, AddrOptions::default()).await.unwrap_err();
    assert!(e.is_exists(), "{e}");
    ph.add_address(eth0, v4, AddrOptions { exists_ok: true, ..Default::default() }).await.unwrap();

    ph.del_address(eth0, v4).await.unwrap();
    ph.del_address(eth0, v6).await.unwrap();
    assert!(ph.addresses(Some(eth0), Some(IpFamily::V4)).await.unwrap().is_empty());
    let e = ph.del_address(eth0, v4).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = ph.del_address(eth0, v6).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn ipv6_dad_settles() {
    require_root!();
    let node = TestNs::new("dad-node");
    let pod = TestNs::new("dad-pod");
    let (_nh, ph, _h, eth0) = node_pod_pair(&node, &pod, "vh0").await;
    // Short DAD so the test is quick: one probe, 100 ms.
    sysctl::write_all_in(
        &pod.ns,
        &[("net/ipv6/neigh/eth0/retrans_time_ms", "100"), ("net/ipv6/conf/eth0/dad_transmits", "1")],
    )
    .unwrap();
    ph.wait_oper_up(eth0, Duration::from_secs(3)).await.unwrap();
    let v6 = "fd00:23::5/64".parse().unwrap();
    ph.add_address(eth0, v6, AddrOptions::default()).await.unwrap();
    let a = ph.addresses(Some(eth0), Some(IpFamily::V6)).await.unwrap();
    assert!(a.iter().find(|a| a.net == v6).unwrap().is_tentative(), "DAD running");
    ph.wait_addresses_settled(eth0, Duration::from_secs(5)).await.unwrap();
    let a = ph.addresses(Some(eth0), Some(IpFamily::V6)).await.unwrap();
    assert!(!a.iter().find(|a| a.net == v6).unwrap().is_tentative());
}
