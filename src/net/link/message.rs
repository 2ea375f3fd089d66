//! What to create or change, and the RTM_NEWLINK / RTM_SETLINK messages that say it: bridge, veth and
//! VXLAN specs, bridge-port flags and VLANs.

use std::net::IpAddr;

use netlink_packet_core::DefaultNla;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};

use crate::net::mac::Mac;
use crate::net::netns::Netns;

/// Bridge port attributes inside `IFLA_PROTINFO` (include/uapi/linux/if_link.h).
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// A bridge to create.
#[derive(Clone, Debug, Default)]
pub struct BridgeSpec {
    pub name: String,
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
    /// Pin the MAC at creation. Without it the bridge takes the lowest MAC of its ports and changes
    /// whenever ports come and go (and udev may rewrite it), which breaks neighbours' ARP caches.
    pub mac: Option<Mac>,
    pub up: bool,
}

/// One end of a veth pair.
#[derive(Clone, Debug, Default)]
pub struct VethEnd {
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
}

/// A veth pair: `host` in the handle's namespace, `peer` born directly in `peer_ns` under its final
/// name, both in one RTM_NEWLINK.
///
/// The peer cannot be created up: the kernel registers and configures the peer before the host end
/// exists, and opening a veth without a peer fails with ENOTCONN (drivers/net/veth.c `veth_open`).
/// Set it up afterwards through a handle in `peer_ns`.
#[derive(Clone, Debug)]
pub struct VethSpec<'a> {
    pub host: VethEnd,
    /// Bring the host end up as part of creation (saves a round trip; fine, the peer exists by then).
    pub host_up: bool,
    /// Attach the host end to this bridge at creation.
    pub host_master: Option<u32>,
    pub peer: VethEnd,
    pub peer_ns: &'a Netns,
}

/// A VXLAN device to create.
#[derive(Clone, Debug, Default)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// Destination UDP port; `None` lets the kernel pick its default (8472, not IANA's 4789).
    pub port: Option<u16>,
    /// Source VTEP address; its family decides the underlay family.
    pub local: Option<IpAddr>,
    /// Underlay device index.
    pub underlay: Option<u32>,
    pub learning: bool,
    /// `None`: the kernel derives it from the underlay device (minus the encapsulation overhead).
    pub mtu: Option<u32>,
    /// Set at creation: udev's `MACAddressPolicy=persistent` would otherwise rewrite the MAC of a new
    /// virtual device right after creation, and peers would hold a stale VTEP MAC (flannel#1155).
    pub mac: Option<Mac>,
    pub udp_csum: Option<bool>,
    pub up: bool,
}

/// Bridge-port flags to change; `None` leaves a flag as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct BridgePortFlags {
    /// Hairpin mode (reflective relay): frames may leave through the port they came in.
    pub hairpin: Option<bool>,
    /// Isolated ports cannot talk to each other, only to non-isolated ports.
    pub isolated: Option<bool>,
}

/// A VLAN on a bridge port (or on the bridge itself), for bridges with `vlan_filtering`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Untagged ingress frames get this VLAN.
    pub pvid: bool,
    /// Egress frames of this VLAN leave untagged.
    pub untagged: bool,
    /// Apply to the bridge device itself (`bridge vlan add ... self`), not to a port.
    pub on_bridge: bool,
}

pub(crate) fn bridge_vlan_message(index: u32, vlan: &BridgeVlan) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if vlan.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if vlan.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut spec = Vec::new();
    if vlan.on_bridge {
        spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
    }
    spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid: vlan.vid }));
    let mut m = get_by_index(index);
    // AF_BRIDGE is what routes RTM_SETLINK/RTM_DELLINK to the bridge VLAN code. Without it a
    // RTM_DELLINK would delete the link itself.
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes.push(LinkAttribute::AfSpecBridge(spec));
    m
}

pub(super) fn get_by_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

pub(super) fn up_flags(m: &mut LinkMessage, up: bool) {
    m.header.change_mask |= LinkFlags::Up;
    if up {
        m.header.flags |= LinkFlags::Up;
    } else {
        m.header.flags.remove(LinkFlags::Up);
    }
}

pub(crate) fn bridge_message(spec: &BridgeSpec) -> LinkMessage {
    let mut m = LinkMessage::default();
    name_mtu_mac(&mut m, &spec.name, spec.mtu, spec.mac);
    if spec.up {
        up_flags(&mut m, true);
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    // Only when asked for: kernels without CONFIG_BRIDGE_VLAN_FILTERING reject the attribute with
    // EOPNOTSUPP even when it says "off".
    if spec.vlan_filtering {
        info.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
    }
    m.attributes.push(LinkAttribute::LinkInfo(info));
    m
}

/// The attributes every new link of ours may carry: its name, and an MTU and MAC when given.
pub(super) fn name_mtu_mac(m: &mut LinkMessage, name: &str, mtu: Option<u32>, mac: Option<Mac>) {
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
}

/// Each veth end is created with one transmit and one receive queue. Without these attributes the driver
/// makes one queue per CPU and then, already registered, cuts the real count to one, and each cut waits for
/// an expedited RCU grace period under the rtnl lock (`netif_set_real_num_tx_queues`, once per end): on a
/// busy node that is the longest wait of the whole creation. One real queue is what the driver's default
/// ends with too; only raising the count later (`ethtool -L`) is no longer possible.
const VETH_QUEUES: u32 = 1;

fn end_attrs(m: &mut LinkMessage, end: &VethEnd) {
    name_mtu_mac(m, &end.name, end.mtu, end.mac);
    m.attributes.push(LinkAttribute::NumTxQueues(VETH_QUEUES));
    m.attributes.push(LinkAttribute::NumRxQueues(VETH_QUEUES));
}

pub(crate) fn veth_message(spec: &VethSpec<'_>) -> LinkMessage {
    let mut peer = LinkMessage::default();
    end_attrs(&mut peer, &spec.peer);
    // The peer's own IFLA_NET_NS_FD: the kernel creates it in that namespace and checks the name
    // there, so the pod end never exists under a temporary name or in the node namespace.
    peer.attributes.push(LinkAttribute::NetNsFd(spec.peer_ns.raw_fd()));

    let mut m = LinkMessage::default();
    end_attrs(&mut m, &spec.host);
    if spec.host_up {
        up_flags(&mut m, true);
    }
    if let Some(master) = spec.host_master {
        m.attributes.push(LinkAttribute::Controller(master));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    m
}

pub(crate) fn vxlan_message(spec: &VxlanSpec) -> LinkMessage {
    let mut data = vec![InfoVxlan::Id(spec.vni)];
    match spec.local {
        Some(IpAddr::V4(ip)) => data.push(InfoVxlan::Local(ip)),
        Some(IpAddr::V6(ip)) => data.push(InfoVxlan::Local6(ip)),
        None => {}
    }
    if let Some(dev) = spec.underlay {
        // IFLA_VXLAN_LINK, not IFLA_LINK: the generic attribute is ignored by the vxlan driver.
        data.push(InfoVxlan::Link(dev));
    }
    if let Some(port) = spec.port {
        data.push(InfoVxlan::Port(port));
    }
    // Always explicit: the kernel turns learning on for new devices unless told otherwise.
    data.push(InfoVxlan::Learning(spec.learning));
    if let Some(c) = spec.udp_csum {
        data.push(InfoVxlan::UDPCsum(c));
    }
    let mut m = LinkMessage::default();
    name_mtu_mac(&mut m, &spec.name, spec.mtu, spec.mac);
    if spec.up {
        up_flags(&mut m, true);
    }
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), LinkInfo::Data(InfoData::Vxlan(data))]));
    m
}

pub(crate) fn bridge_port_message(port: u32, flags: &BridgePortFlags) -> LinkMessage {
    let mut nested = Vec::new();
    if let Some(h) = flags.hairpin {
        nested.push(LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![h as u8])));
    }
    if let Some(i) = flags.isolated {
        nested.push(LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_ISOLATED, vec![i as u8])));
    }
    let mut m = get_by_index(port);
    // AF_BRIDGE RTM_SETLINK goes to the bridge's ndo_bridge_setlink (the port's master), which reads
    // IFLA_PROTINFO as nested brport attributes only when NLA_F_NESTED is set (the crate sets it);
    // without the flag the kernel would take it as a legacy port-state byte.
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes.push(LinkAttribute::ProtoInfoBridge(nested));
    m
}
