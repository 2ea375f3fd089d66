//! What a link is as the kernel reports it (`Link` and its kind-specific parts), parsed from RTM_NEWLINK.

use std::net::IpAddr;

use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoPortData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    State,
};

use crate::net::mac::Mac;

/// RFC 2863 operational state (`IFLA_OPERSTATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl From<State> for OperState {
    fn from(s: State) -> Self {
        match s {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(v) => OperState::Other(v),
            _ => OperState::Unknown,
        }
    }
}

/// VXLAN parameters read back from a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    /// Destination UDP port (the kernel default is 8472 when none was given).
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub learning: Option<bool>,
    /// Underlay device index (`IFLA_VXLAN_LINK`).
    pub underlay: Option<u32>,
    pub udp_csum: Option<bool>,
}

/// Bridge (the device itself) parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeInfo {
    pub vlan_filtering: Option<bool>,
}

/// Bridge-port flags of a link enslaved to a bridge (from `IFLA_INFO_SLAVE_DATA`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgePortInfo {
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "veth", "bridge", "vxlan", ...; `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    /// Index of the bridge (controller) this link is attached to.
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    pub oper_state: OperState,
    /// Promiscuous mode as set by users (`IFF_PROMISC` of the user flags, not packet-capture counts).
    pub promisc: bool,
    /// All-multicast mode as set by users (`IFF_ALLMULTI`).
    pub allmulti: bool,
    /// Transmit queue length (`IFLA_TXQLEN`).
    pub txqlen: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index — in the peer's namespace when `link_netnsid` is set.
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer lives in another namespace (id local to this namespace).
    pub link_netnsid: Option<i32>,
    /// `IFLA_IFALIAS` (`ip link set X alias …`).
    pub alias: Option<String>,
    pub vxlan: Option<VxlanInfo>,
    pub bridge: Option<BridgeInfo>,
    pub bridge_port: Option<BridgePortInfo>,
}

impl Link {
    pub fn is_oper_up(&self) -> bool {
        self.oper_state == OperState::Up
    }

    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }

    pub(crate) fn from_message(msg: &LinkMessage) -> Link {
        let flags = msg.header.flags;
        let mut l = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: None,
            master: None,
            admin_up: flags.contains(LinkFlags::Up),
            lower_up: flags.contains(LinkFlags::LowerUp),
            oper_state: OperState::Unknown,
            promisc: flags.contains(LinkFlags::Promisc),
            allmulti: flags.contains(LinkFlags::Allmulti),
            txqlen: None,
            peer_index: None,
            link_netnsid: None,
            alias: None,
            vxlan: None,
            bridge: None,
            bridge_port: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(a) => l.mac = Mac::from_slice(a),
                LinkAttribute::Mtu(m) => l.mtu = Some(*m),
                LinkAttribute::TxQueueLen(q) => l.txqlen = Some(*q),
                LinkAttribute::Controller(m) => l.master = Some(*m),
                LinkAttribute::OperState(s) => l.oper_state = (*s).into(),
                LinkAttribute::Link(i) => l.peer_index = Some(*i),
                LinkAttribute::LinkNetNsId(i) => l.link_netnsid = Some(*i),
                LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => parse_link_info(infos, &mut l),
                _ => {}
            }
        }
        l
    }
}

fn parse_link_info(infos: &[LinkInfo], l: &mut Link) {
    for info in infos {
        match info {
            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::Vxlan(vx)) => {
                let mut v = VxlanInfo::default();
                for a in vx {
                    match a {
                        InfoVxlan::Id(id) => v.vni = Some(*id),
                        InfoVxlan::Port(p) => v.port = Some(*p),
                        InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(*ip)),
                        InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(*ip)),
                        InfoVxlan::Learning(b) => v.learning = Some(*b),
                        InfoVxlan::Link(i) => v.underlay = Some(*i),
                        InfoVxlan::UDPCsum(b) => v.udp_csum = Some(*b),
                        _ => {}
                    }
                }
                l.vxlan = Some(v);
            }
            LinkInfo::Data(InfoData::Bridge(br)) => {
                let mut b = BridgeInfo::default();
                for a in br {
                    if let InfoBridge::VlanFiltering(f) = a {
                        b.vlan_filtering = Some(*f);
                    }
                }
                l.bridge = Some(b);
            }
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                let mut p = BridgePortInfo::default();
                for a in port {
                    match a {
                        InfoBridgePort::HairpinMode(b) => p.hairpin = Some(*b),
                        InfoBridgePort::Isolated(b) => p.isolated = Some(*b),
                        _ => {}
                    }
                }
                l.bridge_port = Some(p);
            }
            _ => {}
        }
    }
}
