//! Apply an IPAM result to the pod's interface (sysctls, addresses, up, routes), and check it later.

use crate::cni::result::{IpConfig, Route};
use crate::cni::{CniError, CniResult};
use crate::net::{AddrOptions, IpFamily, Link, NetHandle, RouteFilter, RouteSpec, sysctl};
use std::time::Duration;

/// How long to wait for IPv6 duplicate address detection when `enabledad` is on (the reference waits 5 s).
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

pub struct IfaceSetup<'a> {
    pub link: &'a Link,
    pub ips: &'a [IpConfig],
    /// Already planned: gateways filled in, duplicates dropped (see `plan::pod_routes`).
    pub routes: &'a [Route],
    pub enable_dad: bool,
}

/// Sysctls are written by the pod handle's thread inside the pod netns (they follow the writing thread's
/// namespace; IPv6 device settings cannot be set over netlink). Keys missing on a host without IPv6 are
/// skipped.
fn write_sysctls(pod: &NetHandle, kvs: Vec<(String, &'static str)>) -> CniResult<()> {
    pod.run_in_ns(move || {
        for (k, v) in &kvs {
            match sysctl::write(k, v) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    })??;
    Ok(())
}

/// The pod interface up, before IPAM's result is in and before its addresses. DAD is set first, for every
/// pod that gets addresses (IPv4-only too, as the reference does): off unless "enabledad", so that the
/// link-local address made at the up is valid at once instead of being probed for with a multicast that
/// the bridge floods to every port. With DAD off the kernel starts that address's IPv6 (a router
/// solicitation and MLD reports, each flooded to every port) right after the up, on a kworker that holds
/// the rtnl lock; up this early, that work overlaps the wait for IPAM instead of the ADD's later requests.
/// arp_notify as the reference sets it, in the up request but applied after it: no addresses yet, and the
/// caller has the kernel announce them once the port forwards (`net::garp`, `attach::announce`).
pub async fn bring_up(pod: &NetHandle, link: &Link, enable_dad: bool) -> CniResult<()> {
    let mut kvs = vec![(format!("net/ipv6/conf/{}/accept_dad", link.name), if enable_dad { "1" } else { "0" })];
    if enable_dad {
        kvs.push((format!("net/ipv6/conf/{}/enhanced_dad", link.name), "1"));
    }
    write_sysctls(pod, kvs)?;
    pod.set_up_arp_notify(link.index)
        .await
        .map_err(|e| CniError::internal(format!("failed to set {:?} up with arp_notify: {e}", link.name)))
}

/// Addresses and routes on the pod interface, which [`bring_up`] has brought up.
pub async fn configure(pod: &NetHandle, s: &IfaceSetup<'_>) -> CniResult<()> {
    let has_v6 = s.ips.iter().any(|i| i.address.is_ipv6());
    if has_v6 {
        // IPv6 on before the first IPv6 address, as the reference does; addresses kept when the link
        // goes down, so that a later up does not lose them.
        let ifname = &s.link.name;
        write_sysctls(
            pod,
            vec![
                ("net/ipv6/conf/lo/disable_ipv6".to_string(), "0"),
                (format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0"),
                (format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1"),
            ],
        )?;
    }
    for ip in s.ips {
        let opts = AddrOptions { nodad: ip.address.is_ipv6() && !s.enable_dad, exists_ok: false };
        pod.add_address(s.link.index, ip.address, opts).await.map_err(|e| {
            CniError::internal(format!("failed to add IP addr {} to {:?}: {e}", ip.address, s.link.name))
        })?;
    }
    if has_v6 && s.enable_dad {
        pod.wait_addresses_settled(s.link.index, DAD_TIMEOUT)
            .await
            .map_err(|e| CniError::internal(format!("IPv6 duplicate address detection on {}: {e}", s.link.name)))?;
    }
    for r in s.routes {
        let spec = route_spec(r, s.link.index);
        match pod.add_route(&spec).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(CniError::internal(format!(
                    "failed to add route '{}{via} dev {}': {e}",
                    r.dst, s.link.name
                )));
            }
        }
    }
    Ok(())
}

fn route_spec(r: &Route, oif: u32) -> RouteSpec {
    let mut spec = RouteSpec::to(r.dst);
    spec.gw = r.gw;
    spec.oif = Some(oif);
    spec.metric = r.priority;
    spec.table = r.table;
    spec.scope = r.scope;
    spec.mtu = r.mtu;
    spec.advmss = r.advmss;
    spec
}

/// CHECK: every address is on the interface with its prefix, and every route exists (a default route is
/// matched by its gateway, as the reference does).
pub async fn check(pod: &NetHandle, link: &Link, ips: &[IpConfig], routes: &[Route]) -> CniResult<()> {
    let have: Vec<_> = pod.addresses(Some(link.index), None).await?.into_iter().map(|a| a.net).collect();
    for ip in ips {
        if !have.contains(&ip.address) {
            return Err(CniError::internal(format!("address {} is missing on {} in the pod", ip.address, link.name))
                .with_details("something removed it after ADD; DEL and ADD the pod again"));
        }
    }
    for r in routes {
        let fam = if r.dst.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 };
        let filter =
            RouteFilter { family: Some(fam), table: Some(r.table.unwrap_or(crate::net::TABLE_MAIN)), oif: None };
        let found = pod.routes(&filter).await?.into_iter().any(|k| {
            k.dst == r.dst && (r.gw.is_none() || k.gw == r.gw) && (k.oif.is_none() || k.oif == Some(link.index))
        });
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(CniError::internal(format!("route {}{via} is missing in the pod", r.dst))
                .with_details("something removed it after ADD; DEL and ADD the pod again"));
        }
    }
    Ok(())
}
