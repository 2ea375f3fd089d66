use super::harness::{TestNs, require_root};
use crate::net::{IpFamily, Mac, VxlanSpec};

#[tokio::test]
async fn arp_nd_and_fdb_entries_on_vxlan() {
    require_root!();
    let node = TestNs::new("neigh-node");
    let nh = node.handle();
    let vx = nh
        .create_vxlan(&VxlanSpec {
            name: "vx0".into(),
            vni: 1,
            local: Some("198.18.0.1".parse().unwrap()),
            up: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let peer_u = "198.18.0.2".parse().unwrap();
    let peer_mac = Mac::from_ip(peer_u);
    let gw = "10.244.2.0".parse().unwrap();

    // ARP: set, replace, list, delete.
    nh.set_neighbour(vx.index, gw, Mac([2, 0, 0, 0, 0, 1])).await.unwrap();
    nh.set_neighbour(vx.index, gw, peer_mac).await.unwrap();
    let n = nh.neighbours(Some(vx.index), Some(IpFamily::V4)).await.unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].ip, n[0].mac), (gw, Some(peer_mac)));
    assert!(n[0].is_permanent());
    // ND as well.
    let gw6 = "fd00:244:2::".parse().unwrap();
    nh.set_neighbour(vx.index, gw6, peer_mac).await.unwrap();
    assert!(nh.neighbours(Some(vx.index), None).await.unwrap().iter().any(|n| n.ip == gw6));

    // FDB with NTF_SELF: mac -> remote VTEP.
    nh.set_fdb(vx.index, peer_mac, peer_u).await.unwrap();
    nh.set_fdb(vx.index, peer_mac, peer_u).await.unwrap(); // replace is idempotent
    let f = nh.fdb(Some(vx.index)).await.unwrap();
    let e = f.iter().find(|e| e.mac == peer_mac).expect("fdb entry");
    assert_eq!(e.dst, Some(peer_u));
    assert!(e.is_self() && e.is_permanent(), "{e:?}");
    assert!(node.ip(&["neigh", "show", "dev", "vx0"]).contains("10.244.2.0"));

    // Head-end replication: two remotes behind the all-zeros MAC.
    let r1 = "198.18.0.3".parse().unwrap();
    let r2 = "198.18.0.4".parse().unwrap();
    nh.append_fdb(vx.index, Mac::ZERO, r1).await.unwrap();
    nh.append_fdb(vx.index, Mac::ZERO, r2).await.unwrap();
    let zeros = |f: &Vec<crate::net::FdbEntry>| {
        let mut d: Vec<_> = f.iter().filter(|e| e.mac == Mac::ZERO).filter_map(|e| e.dst).collect();
        d.sort();
        d
    };
    assert_eq!(zeros(&nh.fdb(Some(vx.index)).await.unwrap()), vec![r1, r2]);
    nh.del_fdb(vx.index, Mac::ZERO, Some(r1)).await.unwrap();
    assert_eq!(zeros(&nh.fdb(Some(vx.index)).await.unwrap()), vec![r2]);

    // Deletion and not-found.
    nh.del_fdb(vx.index, peer_mac, Some(peer_u)).await.unwrap();
    let e = nh.del_fdb(vx.index, peer_mac, Some(peer_u)).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(!nh.fdb(Some(vx.index)).await.unwrap().iter().any(|e| e.mac == peer_mac));
    nh.del_neighbour(vx.index, gw).await.unwrap();
    nh.del_neighbour(vx.index, gw6).await.unwrap();
    let e = nh.del_neighbour(vx.index, gw).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Only ours are gone: the up device may hold kernel-made entries (IPv6 multicast, NOARP).
    let left = nh.neighbours(Some(vx.index), None).await.unwrap();
    assert!(!left.iter().any(|n| n.ip == gw || n.ip == gw6), "{left:?}");
}
