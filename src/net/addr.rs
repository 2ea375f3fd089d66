//! IP addresses on links: list, add, delete.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::{NetError, Result};
use super::handle::NetHandle;

/// IPv4 or IPv6, for filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(ip: &IpAddr) -> IpFamily {
        if ip.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 }
    }

    /// The families `ips` use, v4 first.
    pub fn used_by(ips: impl IntoIterator<Item = IpAddr> + Clone) -> Vec<IpFamily> {
        IpFamily::BOTH.into_iter().filter(|f| ips.clone().into_iter().any(|ip| IpFamily::of(&ip) == *f)).collect()
    }

    /// The prefix length of one address.
    pub fn host_prefix(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }

    /// The family's multicast range (never masqueraded).
    pub fn multicast(self) -> &'static str {
        match self {
            IpFamily::V4 => "224.0.0.0/4",
            IpFamily::V6 => "ff00::/8",
        }
    }

    /// The family's iptables tool (`-save` / `-restore` are appended for those).
    pub fn iptables(self) -> &'static str {
        match self {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        }
    }

    /// The nf_tables family number (`NFPROTO_IPV4`, `NFPROTO_IPV6`).
    pub fn nfproto(self) -> u8 {
        match self {
            IpFamily::V4 => libc::NFPROTO_IPV4 as u8,
            IpFamily::V6 => libc::NFPROTO_IPV6 as u8,
        }
    }

    pub(crate) fn to_af(self) -> AddressFamily {
        match self {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        }
    }

    pub(crate) fn to_af_opt(f: Option<IpFamily>) -> AddressFamily {
        f.map_or(AddressFamily::Unspec, IpFamily::to_af)
    }
}

/// An address on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// Address and prefix length (e.g. 10.244.1.5/24).
    pub net: IpNetwork,
    /// `IFA_F_*` flags (from `IFA_FLAGS`, which supersedes the 8-bit header field).
    pub flags: u32,
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    pub scope: u8,
}

const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

impl Address {
    pub fn ip(&self) -> IpAddr {
        self.net.ip()
    }

    /// IPv6 DAD still running: the address cannot be used as a source yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    /// IPv6 DAD found a duplicate.
    pub fn dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }

    pub fn is_link_local(&self) -> bool {
        self.scope == 253
    }

    fn from_message(m: &AddressMessage) -> Option<Address> {
        let mut local = None;
        let mut address = None;
        let mut flags = u32::from(m.header.flags.bits());
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
        // and equal to IFA_LOCAL otherwise. IPv6 sends only IFA_ADDRESS.
        let ip = local.or(address)?;
        let net = IpNetwork::new(ip, m.header.prefix_len).ok()?;
        Some(Address { index: m.header.index, net, flags, scope: u8::from(m.header.scope) })
    }
}

/// Options for [`NetHandle::add_address`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection (`IFA_F_NODAD`), so the address is usable at once.
    pub nodad: bool,
    /// Treat "already there" (EEXIST) as success, e.g. the bridge gateway address added by a
    /// concurrent ADD. Only the exact same address/prefix counts: the kernel reports EEXIST for it.
    pub exists_ok: bool,
}

pub(crate) fn address_message(index: u32, net: IpNetwork, nodad: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = net.prefix();
    m.header.family = IpFamily::of(&net.ip()).to_af();
    let ip = net.ip();
    // IFA_LOCAL is what makes it "our" address; IFA_ADDRESS equal to it says "not point-to-point".
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    if let (IpNetwork::V4(v4), true) = (net, net.prefix() < 31) {
        // Like `ip addr add ... brd +` and the Go reference: without it the subnet broadcast address
        // is not recognised as such on this link.
        m.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
    }
    if nodad {
        m.header.flags |= AddressHeaderFlags::Nodad;
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m
}

impl NetHandle {
    /// Addresses, optionally only of one link and/or one family.
    pub async fn addresses(&self, index: Option<u32>, family: Option<IpFamily>) -> Result<Vec<Address>> {
        let mut m = AddressMessage::default();
        m.header.family = IpFamily::to_af_opt(family);
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(m), "list addresses").await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Address::from_message(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Add `net` (address + prefix) to the link.
    pub async fn add_address(&self, index: u32, net: IpNetwork, opts: AddrOptions) -> Result<()> {
        let what = format!("add address {net} to link #{index}");
        let r = self
            .ack(
                RouteNetlinkMessage::NewAddress(address_message(index, net, opts.nodad)),
                NLM_F_CREATE | NLM_F_EXCL,
                what,
            )
            .await;
        match r {
            Err(e) if opts.exists_ok && e.is_exists() => Ok(()),
            r => r,
        }
    }

    /// Remove `net` from the link; `is_not_found()` when it is not there.
    pub async fn del_address(&self, index: u32, net: IpNetwork) -> Result<()> {
        let what = format!("delete address {net} from link #{index}");
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = net.prefix();
        m.header.family = IpFamily::of(&net.ip()).to_af();
        m.attributes.push(AddressAttribute::Local(net.ip()));
        m.attributes.push(AddressAttribute::Address(net.ip()));
        self.ack(RouteNetlinkMessage::DelAddress(m), 0, what).await
    }

    /// Wait until no IPv6 address of the link is tentative (DAD done), or fail with `is_timeout()`.
    /// A DAD failure is an EADDRINUSE error naming the address. Polls every 10 ms: DAD takes about a
    /// second by default, so the poll cost is negligible.
    pub async fn wait_addresses_settled(&self, index: u32, timeout: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let addrs = self.addresses(Some(index), Some(IpFamily::V6)).await?;
            if let Some(a) = addrs.iter().find(|a| a.dad_failed()) {
                return Err(NetError::from_errno(
                    self.ctx(format!("duplicate address detection failed for {} on link #{index}", a.net)),
                    libc::EADDRINUSE,
                ));
            }
            let Some(t) = addrs.iter().find(|a| a.is_tentative()) else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(NetError::from_errno(
                    self.ctx(format!("wait for {} on link #{index} to finish DAD", t.net)),
                    libc::ETIMEDOUT,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_message_has_local_address_broadcast() {
        let m = address_message(4, "10.1.2.3/24".parse().unwrap(), false);
        assert_eq!(m.header.prefix_len, 24);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert!(m.attributes.contains(&AddressAttribute::Broadcast("10.1.2.255".parse().unwrap())));
        let m = address_message(4, "10.1.2.3/31".parse().unwrap(), false);
        assert!(!m.attributes.iter().any(|a| matches!(a, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn v6_nodad_sets_both_flag_fields() {
        let m = address_message(4, "fd00::5/64".parse().unwrap(), true);
        assert!(m.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(m.attributes.contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }
}
