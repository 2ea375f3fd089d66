//! Neighbours: static ARP/ND entries (ip -> mac) and bridge FDB entries (mac -> remote VTEP) on
//! VXLAN devices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::addr::IpFamily;
use super::error::Result;
use super::handle::NetHandle;
use super::mac::Mac;

/// `NUD_PERMANENT`: never expires, never probed.
const NUD_PERMANENT: u16 = 0x80;
/// `NTF_SELF` / `NTF_MASTER`, as raw bits for reading back.
const NTF_SELF: u8 = 0x02;
const NTF_MASTER: u8 = 0x04;

/// An ARP (IPv4) or ND (IPv6) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    /// `NUD_*` bits.
    pub state: u16,
    /// `NTF_*` bits.
    pub flags: u8,
}

impl Neighbour {
    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }
}

/// A bridge forwarding-database entry (family AF_BRIDGE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: Mac,
    /// For VXLAN devices: the remote VTEP (`NDA_DST`).
    pub dst: Option<IpAddr>,
    pub vni: Option<u32>,
    pub vlan: Option<u16>,
    /// Bridge the entry belongs to (`NDA_MASTER`), for entries kept by a bridge.
    pub master: Option<u32>,
    /// `NUD_*` bits.
    pub state: u16,
    /// `NTF_*` bits.
    pub flags: u8,
}

impl FdbEntry {
    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }

    /// Kept by the device itself (NTF_SELF), e.g. a VXLAN device's remote table.
    pub fn is_self(&self) -> bool {
        self.flags & NTF_SELF != 0
    }

    /// Kept by the bridge the device is attached to (NTF_MASTER).
    pub fn is_master(&self) -> bool {
        self.flags & NTF_MASTER != 0
    }
}

fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// An NDA_DST as an IP. In AF_BRIDGE messages the crate cannot know the family and hands us raw
/// bytes; the length tells (4 or 16).
fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&b[..]).ok()?))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..]).ok()?))),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn arp_message(index: u32, ip: IpAddr, mac: Option<Mac>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = IpFamily::of(&ip).to_af();
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(neigh_address(ip)));
    if let Some(mac) = mac {
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

pub(crate) fn fdb_message(index: u32, mac: Mac, dst: Option<IpAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    // The vxlan driver accepts only PERMANENT or REACHABLE entries.
    m.header.state = NeighbourState::Permanent;
    // NTF_SELF (spelled `Own` in netlink-packet-route): address the device's own table. Without it
    // the request goes to the bridge the device is attached to, or fails with EOPNOTSUPP.
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(dst) = dst {
        m.attributes.push(NeighbourAttribute::Destination(neigh_address(dst)));
    }
    m
}

impl NetHandle {
    /// Set a permanent neighbour entry `ip -> mac` on the link, replacing any existing one.
    pub async fn set_neighbour(&self, index: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let what = format!("set neighbour {ip} lladdr {mac} on link #{index}");
        self.ack(
            RouteNetlinkMessage::NewNeighbour(arp_message(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_REPLACE,
            what,
        )
        .await
    }

    /// Delete the neighbour entry for `ip` on the link; `is_not_found()` when absent.
    pub async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let what = format!("delete neighbour {ip} on link #{index}");
        self.ack(RouteNetlinkMessage::DelNeighbour(arp_message(index, ip, None)), 0, what).await
    }

    /// ARP/ND entries, optionally of one link / one family.
    pub async fn neighbours(&self, index: Option<u32>, family: Option<IpFamily>) -> Result<Vec<Neighbour>> {
        let mut m = NeighbourMessage::default();
        m.header.family = IpFamily::to_af_opt(family);
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(m), "list neighbours").await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neighbour_from(n),
                _ => None,
            })
            .filter(|n| index.is_none_or(|i| n.index == i))
            .collect())
    }

    /// Set a permanent FDB entry `mac -> dst` on a VXLAN device (NTF_SELF), replacing the entry with
    /// the same MAC. Use [`append_fdb`](Self::append_fdb) for several remotes behind one MAC.
    pub async fn set_fdb(&self, index: u32, mac: Mac, dst: IpAddr) -> Result<()> {
        let what = format!("set fdb {mac} dst {dst} on link #{index}");
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_REPLACE,
            what,
        )
        .await
    }

    /// Add one more remote for `mac` (`bridge fdb append`): meaningful for the all-zeros MAC (head-end
    /// replication of BUM traffic) or multicast MACs. Replacing would drop the other remotes.
    pub async fn append_fdb(&self, index: u32, mac: Mac, dst: IpAddr) -> Result<()> {
        let what = format!("append fdb {mac} dst {dst} on link #{index}");
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_APPEND,
            what,
        )
        .await
    }

    /// Delete the FDB entry `mac` (only the remote `dst`, if given) from the device's own table.
    /// `is_not_found()` when absent.
    pub async fn del_fdb(&self, index: u32, mac: Mac, dst: Option<IpAddr>) -> Result<()> {
        let what = match dst {
            Some(d) => format!("delete fdb {mac} dst {d} on link #{index}"),
            None => format!("delete fdb {mac} on link #{index}"),
        };
        self.ack(RouteNetlinkMessage::DelNeighbour(fdb_message(index, mac, dst)), 0, what).await
    }

    /// FDB entries (AF_BRIDGE), optionally of one device.
    pub async fn fdb(&self, index: Option<u32>) -> Result<Vec<FdbEntry>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(m), "list fdb").await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => fdb_from(n),
                _ => None,
            })
            .filter(|f| index.is_none_or(|i| f.index == i))
            .collect())
    }
}

fn neighbour_from(n: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = ip_of(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_slice(l),
            _ => {}
        }
    }
    Some(Neighbour {
        index: n.header.ifindex,
        ip: ip?,
        mac,
        state: u16::from(n.header.state),
        flags: n.header.flags.bits(),
    })
}

fn fdb_from(n: &NeighbourMessage) -> Option<FdbEntry> {
    let mut e = FdbEntry {
        index: n.header.ifindex,
        mac: Mac::ZERO,
        dst: None,
        vni: None,
        vlan: None,
        master: None,
        state: u16::from(n.header.state),
        flags: n.header.flags.bits(),
    };
    let mut have_mac = false;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => {
                e.mac = Mac::from_slice(l)?;
                have_mac = true;
            }
            NeighbourAttribute::Destination(d) => e.dst = ip_of(d),
            NeighbourAttribute::Vni(v) => e.vni = Some(*v),
            NeighbourAttribute::Vlan(v) => e.vlan = Some(*v),
            NeighbourAttribute::Controller(c) => e.master = Some(*c),
            _ => {}
        }
    }
    have_mac.then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_message_is_self_permanent_bridge() {
        let m = fdb_message(7, Mac([2, 0, 0, 0, 0, 9]), Some("198.18.0.2".parse().unwrap()));
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert_eq!(m.header.flags.bits(), NTF_SELF);
        assert_eq!(u16::from(m.header.state), NUD_PERMANENT);
        assert!(m.attributes.contains(&NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9])));
    }

    #[test]
    fn bridge_dst_bytes_decode_by_length() {
        assert_eq!(ip_of(&NeighbourAddress::Other(vec![198, 18, 0, 2])), Some("198.18.0.2".parse().unwrap()));
        let mut v6 = vec![0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 1;
        assert_eq!(ip_of(&NeighbourAddress::Other(v6)), Some("fd00::1".parse().unwrap()));
        assert_eq!(ip_of(&NeighbourAddress::Other(vec![1, 2])), None);
    }
}
