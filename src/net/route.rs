//! Routes: add (exclusive or replace), delete, list.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};

use super::addr::IpFamily;
use super::error::{NetError, Result};
use super::handle::NetHandle;

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_*` values for [`RouteSpec::scope`].
pub const SCOPE_UNIVERSE: u8 = 0;
pub const SCOPE_LINK: u8 = 253;
pub const SCOPE_HOST: u8 = 254;

/// A route to add or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Trust that the gateway is reachable on `oif` even though no address of the link covers it
    /// (RTNH_F_ONLINK). The VXLAN overlay needs it: its device holds only a /32.
    pub onlink: bool,
    /// Priority / metric. `None`: kernel default (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
    /// `None`: the main table.
    pub table: Option<u32>,
    /// `RT_SCOPE_*`. `None`: like iproute2 — link scope for an IPv4 route without gateway, universe
    /// otherwise (IPv6 routes are always universe in the kernel).
    pub scope: Option<u8>,
    /// Preferred source address (`RTA_PREFSRC`).
    pub src: Option<IpAddr>,
    /// Path MTU metric (`RTAX_MTU`).
    pub mtu: Option<u32>,
    /// Advertised MSS metric (`RTAX_ADVMSS`).
    pub advmss: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` with everything else unset.
    pub fn to(dst: IpNetwork) -> RouteSpec {
        RouteSpec {
            dst,
            gw: None,
            oif: None,
            onlink: false,
            metric: None,
            table: None,
            scope: None,
            src: None,
            mtu: None,
            advmss: None,
        }
    }
}

/// A route as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub family: IpFamily,
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub metric: Option<u32>,
    pub table: u32,
    pub scope: u8,
    /// `RTPROT_*` (2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// `RTN_*` (1 unicast, 2 local, 3 broadcast, ...).
    pub kind: u8,
    pub src: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
}

/// Which routes [`NetHandle::routes`] returns. The default is both families of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteFilter {
    pub family: Option<IpFamily>,
    /// `None`: every table (main, local, policy tables...).
    pub table: Option<u32>,
    pub oif: Option<u32>,
}

impl Default for RouteFilter {
    fn default() -> Self {
        RouteFilter { family: None, table: Some(TABLE_MAIN), oif: None }
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn header_table(table: u32) -> u8 {
    // The header field is 8 bits; larger ids travel only in RTA_TABLE, with RT_TABLE_UNSPEC here.
    u8::try_from(table).unwrap_or(0)
}

/// Fields shared by add and delete: destination, gateway, device, metric, table.
fn base_message(spec: &RouteSpec) -> Result<RouteMessage> {
    let family = IpFamily::of(&spec.dst.ip());
    if let Some(gw) = spec.gw {
        if IpFamily::of(&gw) != family {
            return Err(NetError::from_errno(
                format!("route {}: gateway {gw} is of another address family", spec.dst),
                libc::EINVAL,
            ));
        }
    }
    let table = spec.table.unwrap_or(TABLE_MAIN);
    let mut m = RouteMessage::default();
    m.header.address_family = family.to_af();
    m.header.destination_prefix_length = spec.dst.prefix();
    m.header.table = header_table(table);
    m.attributes.push(RouteAttribute::Table(table));
    if spec.dst.prefix() > 0 {
        // Store the network address: the kernel rejects host bits under the prefix for IPv4
        // ("Invalid prefix for given prefix length").
        m.attributes.push(RouteAttribute::Destination(route_address(spec.dst.network())));
    }
    if let Some(gw) = spec.gw {
        m.attributes.push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = spec.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = spec.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    if spec.onlink {
        m.header.flags |= RouteFlags::Onlink;
    }
    Ok(m)
}

pub(crate) fn add_message(spec: &RouteSpec) -> Result<RouteMessage> {
    let mut m = base_message(spec)?;
    m.header.protocol = RouteProtocol::Boot;
    m.header.kind = RouteType::Unicast;
    let default_scope = match (spec.dst, spec.gw) {
        (IpNetwork::V4(_), None) => SCOPE_LINK,
        _ => SCOPE_UNIVERSE,
    };
    m.header.scope = RouteScope::from(spec.scope.unwrap_or(default_scope));
    if let Some(src) = spec.src {
        m.attributes.push(RouteAttribute::PrefSource(route_address(src)));
    }
    let mut metrics = Vec::new();
    if let Some(mtu) = spec.mtu {
        metrics.push(RouteMetric::Mtu(mtu));
    }
    if let Some(advmss) = spec.advmss {
        metrics.push(RouteMetric::Advmss(advmss));
    }
    if !metrics.is_empty() {
        m.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Ok(m)
}

pub(crate) fn del_message(spec: &RouteSpec) -> Result<RouteMessage> {
    let mut m = base_message(spec)?;
    // RT_SCOPE_NOWHERE is the kernel's "any scope" for deletes; RTN_UNSPEC / RTPROT_UNSPEC likewise
    // match any type / protocol (net/ipv4/fib_trie.c fib_table_delete).
    m.header.scope = RouteScope::from(spec.scope.unwrap_or(255));
    m.header.protocol = RouteProtocol::Unspec;
    m.header.kind = RouteType::Unspec;
    Ok(m)
}

impl Route {
    fn from_message(m: &RouteMessage) -> Option<Route> {
        let h: &RouteHeader = &m.header;
        let family = match h.address_family {
            netlink_packet_route::AddressFamily::Inet => IpFamily::V4,
            netlink_packet_route::AddressFamily::Inet6 => IpFamily::V6,
            _ => return None,
        };
        let mut dst_ip = None;
        let mut r = Route {
            family,
            dst: match family {
                IpFamily::V4 => "0.0.0.0/0".parse().ok()?,
                IpFamily::V6 => "::/0".parse().ok()?,
            },
            gw: None,
            oif: None,
            onlink: h.flags.contains(RouteFlags::Onlink),
            metric: None,
            table: u32::from(h.table),
            scope: u8::from(h.scope),
            protocol: u8::from(h.protocol),
            kind: u8::from(h.kind),
            src: None,
            mtu: None,
            advmss: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dst_ip = ip_of(d),
                RouteAttribute::Gateway(g) => r.gw = ip_of(g),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::PrefSource(s) => r.src = ip_of(s),
                RouteAttribute::Metrics(ms) => {
                    for metric in ms {
                        match metric {
                            RouteMetric::Mtu(v) => r.mtu = Some(*v),
                            RouteMetric::Advmss(v) => r.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(ip) = dst_ip {
            r.dst = IpNetwork::new(ip, h.destination_prefix_length).ok()?;
        }
        Some(r)
    }
}

impl NetHandle {
    /// Add a route; EEXIST (`is_exists()`) when an equal route (same dst, table, metric/tos) exists.
    pub async fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        let what = format!("add route {}", describe(spec));
        self.ack(RouteNetlinkMessage::NewRoute(add_message(spec)?), NLM_F_CREATE | NLM_F_EXCL, what).await
    }

    /// Add or replace the route with the same key (dst, table, metric/tos).
    pub async fn replace_route(&self, spec: &RouteSpec) -> Result<()> {
        let what = format!("replace route {}", describe(spec));
        self.ack(RouteNetlinkMessage::NewRoute(add_message(spec)?), NLM_F_CREATE | NLM_F_REPLACE, what).await
    }

    /// Delete the route matching `spec` (unset fields match anything); `is_not_found()` (ESRCH) when
    /// none matches.
    pub async fn del_route(&self, spec: &RouteSpec) -> Result<()> {
        let what = format!("delete route {}", describe(spec));
        self.ack(RouteNetlinkMessage::DelRoute(del_message(spec)?), 0, what).await
    }

    /// Routes matching `filter` (cached/cloned entries excluded).
    pub async fn routes(&self, filter: &RouteFilter) -> Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = IpFamily::to_af_opt(filter.family);
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(m), "list routes").await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if !r.header.flags.contains(RouteFlags::Cloned) => {
                    Route::from_message(r)
                }
                _ => None,
            })
            .filter(|r| filter.table.is_none_or(|t| r.table == t))
            .filter(|r| filter.oif.is_none_or(|o| r.oif == Some(o)))
            .filter(|r| filter.family.is_none_or(|f| r.family == f))
            .collect())
    }
}

/// `10.244.2.0/24 via 10.244.2.0 dev #5 onlink table 254` — for error messages.
fn describe(spec: &RouteSpec) -> String {
    let mut s = spec.dst.to_string();
    if let Some(gw) = spec.gw {
        s += &format!(" via {gw}");
    }
    if let Some(oif) = spec.oif {
        s += &format!(" dev #{oif}");
    }
    if spec.onlink {
        s += " onlink";
    }
    if let Some(m) = spec.metric {
        s += &format!(" metric {m}");
    }
    if let Some(t) = spec.table {
        s += &format!(" table {t}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scope_like_iproute2() {
        let m = add_message(&RouteSpec::to("10.1.0.0/16".parse().unwrap())).unwrap();
        assert_eq!(m.header.scope, RouteScope::Link);
        let spec = RouteSpec { gw: Some("10.0.0.1".parse().unwrap()), ..RouteSpec::to("10.1.0.0/16".parse().unwrap()) };
        assert_eq!(add_message(&spec).unwrap().header.scope, RouteScope::Universe);
        assert_eq!(
            add_message(&RouteSpec::to("fd00::/64".parse().unwrap())).unwrap().header.scope,
            RouteScope::Universe
        );
    }

    #[test]
    fn destination_is_network_address_and_big_tables_use_attr() {
        let spec = RouteSpec { table: Some(1000), ..RouteSpec::to("10.1.2.3/16".parse().unwrap()) };
        let m = add_message(&spec).unwrap();
        assert!(m.attributes.contains(&RouteAttribute::Destination(RouteAddress::Inet("10.1.0.0".parse().unwrap()))));
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(m.header.table, 0);
        assert_eq!(describe(&spec), "10.1.2.3/16 table 1000");
    }

    #[test]
    fn mixed_family_gateway_is_rejected() {
        let spec = RouteSpec { gw: Some("fd00::1".parse().unwrap()), ..RouteSpec::to("10.0.0.0/8".parse().unwrap()) };
        assert_eq!(add_message(&spec).unwrap_err().errno(), Some(libc::EINVAL));
    }

    #[test]
    fn delete_matches_any_scope_and_protocol() {
        let m = del_message(&RouteSpec::to("0.0.0.0/0".parse().unwrap())).unwrap();
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
    }
}
