//! Links: read (`Link`), create (bridge, veth, vxlan), change (up/down, mtu, mac, master, promisc,
//! name, bridge-port flags), delete, and wait for oper-up — the requests, on `NetHandle`. What a link is
//! as the kernel reports it lives in `model`; the specs and the messages that say them in `message`.

use std::time::Duration;

use futures::StreamExt;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NetlinkPayload};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoKind, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage,
};

mod message;
mod model;

pub use message::{BridgePortFlags, BridgeSpec, BridgeVlan, VethEnd, VethSpec, VxlanSpec};
pub(crate) use message::{bridge_message, bridge_port_message, bridge_vlan_message, veth_message, vxlan_message};
use message::{get_by_index, name_mtu_mac, up_flags};
pub use model::{BridgeInfo, BridgePortInfo, Link, OperState, VxlanInfo};

use super::error::{NetError, Result};
use super::handle::NetHandle;
use super::mac::Mac;

/// `RTMGRP_LINK`: multicast group of link notifications (RTNLGRP_LINK = 1).
const RTMGRP_LINK: u32 = 1;

impl NetHandle {
    /// The link called `name`, or `None`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m, format!("get link {name}")).await
    }

    /// The link with `index`, or `None`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        self.get_link(get_by_index(index), format!("get link #{index}")).await
    }

    async fn get_link(&self, mut m: LinkMessage, what: String) -> Result<Option<Link>> {
        m.attributes.push(skip_stats());
        match self.get_one(RouteNetlinkMessage::GetLink(m), what).await? {
            Some(RouteNetlinkMessage::NewLink(l)) => Ok(Some(Link::from_message(&l))),
            _ => Ok(None),
        }
    }

    /// Like [`link_by_name`](Self::link_by_name), but absence is an ENODEV error naming the link.
    pub async fn require_link(&self, name: &str) -> Result<Link> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetError::from_errno(self.ctx(format!("find link {name}")), libc::ENODEV))
    }

    /// All links in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(skip_stats());
        let msgs = self.dump(RouteNetlinkMessage::GetLink(m), "list links").await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    async fn new_link(&self, m: LinkMessage, what: String, name: &str) -> Result<Link> {
        let master = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            _ => None,
        });
        // NLM_F_ECHO: the kernel sends the new link's notification back to us before the ACK, so no second
        // request (a GETLINK that waits for the rtnl lock again) is needed to learn its index and MAC.
        let echoed =
            self.ack_echo(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, &what).await?;
        let echo = echoed.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) if l.attributes.contains(&LinkAttribute::IfName(name.to_string())) => {
                Some(Link::from_message(l))
            }
            _ => None,
        });
        match echo {
            Some(mut l) => {
                // The echo is sent when the link is registered and configured, before the kernel attaches
                // it to IFLA_MASTER; the ACK says that succeeded too.
                if master.is_some() {
                    l.master = master;
                }
                Ok(l)
            }
            // Kernels before 6.3 do not echo a created link: read it back.
            None => self.link_by_name(name).await?.ok_or_else(|| {
                NetError::from_errno(self.ctx(format!("{what}: gone right after creation")), libc::ENODEV)
            }),
        }
    }

    /// Create a bridge. An existing link with the same name gives an error with `is_exists()`, so a
    /// caller racing another ADD can re-read and accept it.
    pub async fn create_bridge(&self, spec: &BridgeSpec) -> Result<Link> {
        self.new_link(bridge_message(spec), format!("create bridge {}", spec.name), &spec.name).await
    }

    /// Create a veth pair in one request: host end here, peer born in `spec.peer_ns` under its final
    /// name. Returns the host end. EEXIST means either name was taken (host here, or peer there).
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<Link> {
        let what = format!(
            "create veth {} with peer {} in netns {}",
            spec.host.name,
            spec.peer.name,
            spec.peer_ns.path().display()
        );
        // `spec.peer_ns` (borrowed for the whole call) keeps the fd in IFLA_NET_NS_FD open until the
        // kernel has answered.
        self.new_link(veth_message(spec), what, &spec.host.name).await
    }

    /// Create a VXLAN device.
    pub async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        self.new_link(vxlan_message(spec), format!("create vxlan {} (vni {})", spec.name, spec.vni), &spec.name).await
    }

    /// Create an ifb device (the target of an ingress redirect, shaped on its egress), up, with the given
    /// MTU and a transmit queue length of 0 (as the reference bandwidth plugin makes it).
    pub async fn create_ifb(&self, name: &str, mtu: u32) -> Result<Link> {
        let mut m = LinkMessage::default();
        name_mtu_mac(&mut m, name, Some(mtu), None);
        up_flags(&mut m, true);
        m.attributes.push(LinkAttribute::TxQueueLen(0));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.new_link(m, format!("create ifb {name}"), name).await
    }

    async fn set_link(&self, m: LinkMessage, what: String) -> Result<()> {
        // RTM_SETLINK takes no create/replace flags.
        self.ack(RouteNetlinkMessage::SetLink(m), 0, what).await
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let mut m = get_by_index(index);
        up_flags(&mut m, true);
        self.set_link(m, format!("set link #{index} up")).await
    }

    /// Bring up a link that needs no IPv6 address of its own (a bridge port: the pod's end has the
    /// addresses). In the same RTM_SETLINK, before the up, `IFLA_INET6_ADDR_GEN_MODE` none: the kernel then
    /// makes no link-local address for it, so no duplicate address detection, no router solicitations and
    /// no MLD reports run for it afterwards. That work takes the rtnl lock for every port of the node, and
    /// made each new pod's netlink requests wait longer the more pods there were. A kernel without IPv6
    /// (EAFNOSUPPORT for the attribute) just gets the up.
    pub async fn set_up_no_ipv6_addr(&self, index: u32) -> Result<()> {
        let mut m = get_by_index(index);
        up_flags(&mut m, true);
        m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]));
        match self.set_link(m, format!("set link #{index} up (addrgenmode none)")).await {
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => self.set_up(index).await,
            r => r,
        }
    }

    /// Bring a link up and set its `arp_notify` in one RTM_SETLINK. The kernel applies the flags before
    /// `IFLA_AF_SPEC`, so this up sends no gratuitous ARP (`arp_notify` is still off then) — the caller
    /// has the kernel announce the addresses once the bridge forwards from the port (`net::garp`) — while
    /// later changes of the link's address are announced by the kernel as usual.
    pub async fn set_up_arp_notify(&self, index: u32) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let mut m = get_by_index(index);
        up_flags(&mut m, true);
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)])]));
        self.set_link(m, format!("set link #{index} up with arp_notify")).await
    }

    pub async fn set_down(&self, index: u32) -> Result<()> {
        let mut m = get_by_index(index);
        up_flags(&mut m, false);
        self.set_link(m, format!("set link #{index} down")).await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(m, format!("set mtu {mtu} on link #{index}")).await
    }

    pub async fn set_mac(&self, index: u32, mac: Mac) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.set_link(m, format!("set mac {mac} on link #{index}")).await
    }

    /// Attach the link to a bridge (`ip link set X master B`).
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::Controller(master));
        self.set_link(m, format!("attach link #{index} to bridge #{master}")).await
    }

    /// Detach the link from its bridge (`ip link set X nomaster`).
    pub async fn set_nomaster(&self, index: u32) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::Controller(0));
        self.set_link(m, format!("detach link #{index} from its bridge")).await
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.set_flag(index, LinkFlags::Promisc, on, "promisc").await
    }

    /// All-multicast mode (`ip link set X allmulticast on|off`).
    pub async fn set_allmulti(&self, index: u32, on: bool) -> Result<()> {
        self.set_flag(index, LinkFlags::Allmulti, on, "allmulticast").await
    }

    /// One user-settable flag, leaving the others as they are (the change mask names only this one).
    async fn set_flag(&self, index: u32, flag: LinkFlags, on: bool, label: &str) -> Result<()> {
        let mut m = get_by_index(index);
        m.header.change_mask |= flag;
        if on {
            m.header.flags |= flag;
        }
        self.set_link(m, format!("set {label} {} on link #{index}", if on { "on" } else { "off" })).await
    }

    /// Transmit queue length (`ip link set X txqueuelen N`).
    pub async fn set_txqlen(&self, index: u32, qlen: u32) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::TxQueueLen(qlen));
        self.set_link(m, format!("set txqueuelen {qlen} on link #{index}")).await
    }

    /// Rename a link. The kernel refuses (EBUSY) while the link is up.
    pub async fn set_name(&self, index: u32, name: &str) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(m, format!("rename link #{index} to {name}")).await
    }

    /// Set a link's alias (`ip link set X alias A`), a free-form label the kernel keeps with the link.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let mut m = get_by_index(index);
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(m, format!("set alias {alias:?} on link #{index}")).await
    }

    /// Set hairpin / isolated on a bridge port (the link must be attached to a bridge).
    pub async fn set_bridge_port_flags(&self, port: u32, flags: &BridgePortFlags) -> Result<()> {
        if flags.hairpin.is_none() && flags.isolated.is_none() {
            return Ok(());
        }
        let what = format!("set bridge port flags {flags:?} on link #{port}");
        self.set_link(bridge_port_message(port, flags), what).await
    }

    /// Add a VLAN to a bridge port (or the bridge itself with `on_bridge`). Kernels without
    /// CONFIG_BRIDGE_VLAN_FILTERING answer `is_not_supported()`.
    pub async fn bridge_vlan_add(&self, index: u32, vlan: &BridgeVlan) -> Result<()> {
        let what = format!("add vlan {} to bridge port #{index}", vlan.vid);
        self.set_link(bridge_vlan_message(index, vlan), what).await
    }

    /// Remove a VLAN from a bridge port (or the bridge itself with `on_bridge`).
    pub async fn bridge_vlan_del(&self, index: u32, vlan: &BridgeVlan) -> Result<()> {
        let what = format!("delete vlan {} from bridge port #{index}", vlan.vid);
        let m = bridge_vlan_message(index, vlan);
        debug_assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        self.ack(RouteNetlinkMessage::DelLink(m), 0, what).await
    }

    /// Delete a link by index. Deleting one end of a veth deletes both.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        let what = format!("delete link #{index}");
        self.ack(RouteNetlinkMessage::DelLink(get_by_index(index)), 0, what).await
    }

    /// Delete a link by name; `is_not_found()` when there is none.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.ack(RouteNetlinkMessage::DelLink(m), 0, format!("delete link {name}")).await
    }

    /// `lo` of this namespace (it always exists; index 1).
    pub async fn loopback(&self) -> Result<Link> {
        self.require_link("lo").await
    }

    /// Set `lo` up or down.
    pub async fn set_loopback(&self, up: bool) -> Result<()> {
        let lo = self.loopback().await?;
        if up { self.set_up(lo.index).await } else { self.set_down(lo.index).await }
    }

    /// Wait until the link is operationally up, or fail with `is_timeout()` after `timeout`.
    ///
    /// Event-driven: subscribes to link notifications in the link's namespace *before* reading the
    /// current state (so no transition is missed), then wakes on every notification. Multicast
    /// messages can be dropped when the socket buffer overflows (ENOBUFS), so the state is also
    /// re-read every 100 ms as a fallback. A veth becomes oper-up once both ends are up, after the
    /// kernel's linkwatch runs (usually within milliseconds, at worst about a second).
    pub async fn wait_oper_up(&self, index: u32, timeout: Duration) -> Result<Link> {
        const RECHECK: Duration = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + timeout;
        // Usually it is up already: then one read answers, without a subscription socket. Otherwise the
        // subscription comes first and the state is read again under it, so no transition is missed.
        if let Some(link) = self.link_by_index(index).await? {
            if link.is_oper_up() {
                return Ok(link);
            }
        }
        let mut events = self.subscribe(RTMGRP_LINK)?;
        loop {
            let link = self.link_by_index(index).await?.ok_or_else(|| {
                NetError::from_errno(self.ctx(format!("wait for link #{index} to be up")), libc::ENODEV)
            })?;
            if link.is_oper_up() {
                return Ok(link);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(NetError::from_errno(
                    self.ctx(format!(
                        "wait for link {} to be oper-up (still {:?} after {:?})",
                        link.name, link.oper_state, timeout
                    )),
                    libc::ETIMEDOUT,
                ));
            }
            let until = deadline.min(now + RECHECK);
            // Drain notifications until one concerns our link (or the recheck timer fires).
            loop {
                match tokio::time::timeout_at(until, events.next()).await {
                    Err(_) => break,
                    Ok(None) => {
                        // Subscription died: keep polling on the timer.
                        tokio::time::sleep_until(until).await;
                        break;
                    }
                    Ok(Some((msg, _))) => {
                        if let NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l),
                        ) = &msg.payload
                        {
                            if l.header.index == index {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// For a link read: the kernel leaves out IPv6's counters (`IFLA_INET6_STATS`, `IFLA_INET6_ICMP6STATS` in
/// `IFLA_AF_SPEC`; it sends `IFLA_STATS`/`IFLA_STATS64` regardless), which [`Link`] has no use for: it
/// sums them over every CPU for each read, and they are a good part of the bytes the answer is parsed from.
pub(crate) fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DefaultNla;
    use netlink_packet_route::link::{
        AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridgePort, InfoData, InfoPortData, InfoPortKind,
        InfoVxlan, LinkProtoInfoBridge, State,
    };

    #[test]
    fn vxlan_message_is_explicit_about_learning() {
        let m = vxlan_message(&VxlanSpec { name: "vx0".into(), vni: 7, learning: false, ..Default::default() });
        let infos = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .unwrap();
        assert!(matches!(infos[0], LinkInfo::Kind(InfoKind::Vxlan)));
        let LinkInfo::Data(InfoData::Vxlan(d)) = &infos[1] else { panic!() };
        assert!(d.contains(&InfoVxlan::Id(7)));
        assert!(d.contains(&InfoVxlan::Learning(false)));
        assert!(!d.iter().any(|a| matches!(a, InfoVxlan::Port(_))), "no port: kernel default");
    }

    #[test]
    fn bridge_port_message_uses_af_bridge_protinfo() {
        let m = bridge_port_message(5, &BridgePortFlags { hairpin: Some(true), isolated: None });
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        assert_eq!(m.header.index, 5);
        assert_eq!(
            m.attributes,
            vec![LinkAttribute::ProtoInfoBridge(vec![LinkProtoInfoBridge::Other(DefaultNla::new(4, vec![1]))])]
        );
    }

    #[test]
    fn bridge_vlan_message_is_af_bridge() {
        let m = bridge_vlan_message(3, &BridgeVlan { vid: 10, pvid: true, untagged: true, on_bridge: false });
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        assert_eq!(
            m.attributes,
            vec![LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
                vid: 10
            })])]
        );
    }

    #[test]
    fn parses_link_message() {
        let mut m = LinkMessage::default();
        m.header.index = 3;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Controller(2),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Link(9),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
            ]),
        ];
        let l = Link::from_message(&m);
        assert_eq!(l.name, "eth0");
        assert!(l.is_kind("veth") && l.admin_up && l.lower_up && l.is_oper_up());
        assert_eq!(l.mac, Some(Mac([2, 0, 0, 0, 0, 1])));
        assert_eq!((l.mtu, l.master, l.peer_index), (Some(1450), Some(2), Some(9)));
        assert_eq!(l.bridge_port, Some(BridgePortInfo { hairpin: Some(true), isolated: None }));
    }
}
