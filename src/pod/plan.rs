//! Pure planning from an IPAM result to what the kernel must hold: gateways, default routes, the routes to
//! program in the pod. No netlink here, so every rule has a fast unit test.

use crate::cni::result::{AddResult, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first host address of `net` (network + 1): the gateway the reference assumes when IPAM gives none.
pub fn first_host(net: IpNetwork) -> IpAddr {
    match net {
        IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
        IpNetwork::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(1))),
    }
}

/// isGateway: every IP without a gateway gets its subnet's first host.
pub fn fill_gateways(ips: &mut [IpConfig]) {
    for ip in ips.iter_mut().filter(|ip| ip.gateway.is_none()) {
        ip.gateway = Some(first_host(ip.address));
    }
}

fn default_dst(v4: bool) -> IpNetwork {
    if v4 { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() }
}

/// isDefaultGateway: per family that has a gateway, add `default via <gw>` unless IPAM already gave a
/// default route with a gateway (the reference's rule, so results match it).
pub fn add_default_routes(result: &mut AddResult) {
    for v4 in [true, false] {
        let Some(gw) = result.ips.iter().filter(|i| i.address.is_ipv4() == v4).find_map(|i| i.gateway) else {
            continue;
        };
        let has = result.routes.iter().any(|r| r.dst == default_dst(v4) && r.gw.is_some());
        if !has {
            result.routes.push(Route::new(default_dst(v4), Some(gw)));
        }
    }
}

/// The routes to program in the pod: each route without `gw` goes via its family's first gateway (as the
/// reference does), and duplicates are dropped — the reference programs a default route twice when IPAM and
/// isDefaultGateway both give one, and fails with "file exists".
pub fn pod_routes(result: &AddResult) -> Vec<Route> {
    let first_gw = |v4: bool| result.ips.iter().filter(|i| i.address.is_ipv4() == v4).find_map(|i| i.gateway);
    let mut out: Vec<Route> = Vec::new();
    for r in &result.routes {
        let mut r = r.clone();
        if r.gw.is_none() {
            r.gw = first_gw(r.dst.is_ipv4());
        }
        let dup = out.iter().any(|o| o.dst == r.dst && o.table == r.table && o.priority == r.priority);
        if !dup {
            out.push(r);
        }
    }
    out
}

/// Gateway addresses for the bridge: `gw/prefix` of the pod address, one per distinct gateway.
pub fn bridge_gateways(ips: &[IpConfig]) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for ip in ips {
        if let Some(gw) = ip.gateway {
            if let Ok(n) = IpNetwork::new(gw, ip.address.prefix()) {
                if !out.iter().any(|o| o.ip() == gw) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Every subnet a host-local-style IPAM config names: `ipam.subnet`, `ipam.ranges[][].subnet` and the
/// `runtimeConfig.ipRanges` capability. Used as the network's own prefixes (never masqueraded, the
/// node's pod subnets for vxlan); empty for IPAM plugins that do not describe their ranges this way.
pub fn ipam_subnets(conf: &serde_json::Value) -> Vec<IpNetwork> {
    use serde_json::Value;
    let mut out: Vec<IpNetwork> = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str).and_then(|s| s.parse::<IpNetwork>().ok()) {
            let n = subnet_of(n);
            if !out.contains(&n) {
                out.push(n);
            }
        }
    };
    let ipam = conf.get("ipam");
    push(ipam.and_then(|i| i.get("subnet")));
    let range_lists = [ipam.and_then(|i| i.get("ranges")), conf.get("runtimeConfig").and_then(|r| r.get("ipRanges"))];
    for sets in range_lists.into_iter().flatten().filter_map(Value::as_array) {
        for set in sets.iter().filter_map(Value::as_array) {
            for r in set {
                push(r.get("subnet"));
            }
        }
    }
    out
}

/// The subnet (network address + prefix) an address lives in.
pub fn subnet_of(addr: IpNetwork) -> IpNetwork {
    IpNetwork::new(addr.network(), addr.prefix()).expect("a network address with its own prefix is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig { interface: Some(2), address: a.parse().unwrap(), gateway: gw.map(|g| g.parse().unwrap()) }
    }

    #[test]
    fn gateways_default_to_first_host() {
        let mut ips = vec![ip("10.1.2.7/24", None), ip("fd00:1::9/64", None), ip("10.9.0.5/16", Some("10.9.0.254"))];
        fill_gateways(&mut ips);
        assert_eq!(ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(ips[1].gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(ips[2].gateway, Some("10.9.0.254".parse().unwrap()));
        let gws = bridge_gateways(&ips);
        assert_eq!(gws[0].to_string(), "10.1.2.1/24");
        assert_eq!(gws[2].to_string(), "10.9.0.254/16");
    }

    #[test]
    fn default_routes_added_once_per_family() {
        let mut r = AddResult {
            ips: vec![ip("10.1.2.7/24", Some("10.1.2.1")), ip("fd00::7/64", Some("fd00::1"))],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        add_default_routes(&mut r);
        assert_eq!(r.routes.len(), 3, "IPAM's gw-less default does not count; v4 and v6 defaults added");
        add_default_routes(&mut r);
        assert_eq!(r.routes.len(), 3);
        let prog = pod_routes(&r);
        assert_eq!(prog.len(), 2, "the two v4 defaults collapse into one: {prog:?}");
        assert_eq!(prog[0].gw, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(prog[1].gw, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn subnets_of_an_ipam_config() {
        let conf = serde_json::json!({
            "ipam": {"subnet": "10.1.0.0/16", "ranges": [[{"subnet": "10.2.0.0/24"}, {"subnet": "10.3.0.0/24"}],
                     [{"subnet": "fd00::/64"}], [{"subnet": "bad"}]]},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.4.0.0/24"}]]}
        });
        let got: Vec<String> = ipam_subnets(&conf).iter().map(|n| n.to_string()).collect();
        assert_eq!(got, ["10.1.0.0/16", "10.2.0.0/24", "10.3.0.0/24", "fd00::/64", "10.4.0.0/24"]);
        assert!(ipam_subnets(&serde_json::json!({"ipam": {"type": "dhcp"}})).is_empty());
    }

    #[test]
    fn subnet() {
        assert_eq!(subnet_of("10.1.2.7/24".parse().unwrap()).to_string(), "10.1.2.0/24");
    }
}
