use super::harness::{TestNs, node_pod_pair, require_root};
use crate::net::route::SCOPE_LINK;
use crate::net::{AddrOptions, IpFamily, Mac, RouteFilter, RouteSpec, VxlanSpec};

#[tokio::test]
async fn routes_add_replace_list_delete() {
    require_root!();
    let node = TestNs::new("route-node");
    let pod = TestNs::new("route-pod");
    let (nh, _ph, host, _eth0) = node_pod_pair(&node, &pod, "vh0").await;
    nh.add_address(host, "10.30.0.1/24".parse().unwrap(), AddrOptions::default()).await.unwrap();
    nh.add_address(host, "fd00:30::1/64".parse().unwrap(), AddrOptions { nodad: true, ..Default::default() })
        .await
        .unwrap();

    let spec = RouteSpec {
        gw: Some("10.30.0.2".parse().unwrap()),
        oif: Some(host),
        metric: Some(100),
        mtu: Some(1400),
        advmss: Some(1360),
        ..RouteSpec::to("10.31.0.0/16".parse().unwrap())
    };
    nh.add_route(&spec).await.unwrap();
    let e = nh.add_route(&spec).await.unwrap_err();
    assert!(e.is_exists(), "{e}");
    let routes = nh.routes(&RouteFilter { family: Some(IpFamily::V4), ..Default::default() }).await.unwrap();
    let r = routes.iter().find(|r| r.dst == spec.dst).expect("route listed");
    assert_eq!((r.gw, r.oif, r.metric, r.mtu, r.advmss), (spec.gw, Some(host), Some(100), Some(1400), Some(1360)));
    assert_eq!(r.table, 254);
    // The connected route of the address is there too, with link scope.
    assert!(routes.iter().any(|r| r.dst == "10.30.0.0/24".parse().unwrap() && r.scope == SCOPE_LINK));

    // Replace changes the gateway in place.
    let spec2 = RouteSpec { gw: Some("10.30.0.3".parse().unwrap()), ..spec.clone() };
    nh.replace_route(&spec2).await.unwrap();
    let routes = nh.routes(&RouteFilter { oif: Some(host), ..Default::default() }).await.unwrap();
    let mine: Vec<_> = routes.iter().filter(|r| r.dst == spec.dst).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].gw, spec2.gw);

    // IPv6 via a gateway, and a route in another table.
    let v6 = RouteSpec { gw: Some("fd00:30::2".parse().unwrap()), ..RouteSpec::to("fd00:31::/64".parse().unwrap()) };
    nh.add_route(&v6).await.unwrap();
    let t100 = RouteSpec { oif: Some(host), table: Some(100), ..RouteSpec::to("0.0.0.0/0".parse().unwrap()) };
    nh.add_route(&t100).await.unwrap();
    let in100 = nh.routes(&RouteFilter { table: Some(100), ..Default::default() }).await.unwrap();
    assert_eq!(in100.len(), 1);
    assert_eq!(in100[0].dst, "0.0.0.0/0".parse().unwrap());
    assert!(!nh.routes(&RouteFilter::default()).await.unwrap().iter().any(|r| r.table == 100));
    let v6r = nh.routes(&RouteFilter { family: Some(IpFamily::V6), ..Default::default() }).await.unwrap();
    assert!(v6r.iter().any(|r| r.dst == v6.dst && r.gw == v6.gw));

    // Delete: unset fields match anything; a second delete is not-found.
    nh.del_route(&RouteSpec::to(spec.dst)).await.unwrap();
    let e = nh.del_route(&RouteSpec::to(spec.dst)).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    nh.del_route(&v6).await.unwrap();
    nh.del_route(&t100).await.unwrap();
    let e = nh.del_route(&v6).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn onlink_route_via_vxlan() {
    require_root!();
    let node = TestNs::new("onlink-node");
    let nh = node.handle();
    let vx = nh
        .create_vxlan(&VxlanSpec {
            name: "vx0".into(),
            vni: 1,
            mac: Some(Mac::from_ip("198.18.0.1".parse().unwrap())),
            up: true,
            ..Default::default()
        })
        .await
        .unwrap();
    nh.add_address(vx.index, "10.244.1.0/32".parse().unwrap(), AddrOptions::default()).await.unwrap();
    let base = RouteSpec {
        gw: Some("10.244.2.0".parse().unwrap()),
        oif: Some(vx.index),
        ..RouteSpec::to("10.244.2.0/24".parse().unwrap())
    };
    // Without onlink the kernel refuses: the gateway is on no connected subnet of vx0.
    let e = nh.add_route(&base).await.unwrap_err();
    assert!(e.errno().is_some(), "{e}");
    eprintln!("expected failure without onlink: {e}");
    let onlink = RouteSpec { onlink: true, ..base };
    nh.replace_route(&onlink).await.unwrap();
    let r = nh.routes(&RouteFilter { oif: Some(vx.index), ..Default::default() }).await.unwrap();
    let r = r.iter().find(|r| r.dst == onlink.dst).expect("onlink route");
    assert!(r.onlink);
    assert_eq!(r.gw, onlink.gw);
    assert!(node.ip(&["route", "show", "dev", "vx0"]).contains("onlink"));
}
