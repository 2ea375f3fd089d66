//! Host port forwarding (the `portmap` plugin's kernel side) on the one nftables layer: O(1) per mapping.
//!
//! The reference writes one chain and several rules per container, so every ADD and DEL rewrites or
//! lists tables that grow with the pod count. Here the rules never change after the first ADD; a
//! mapping is one element of a map, keyed by what the packet carries:
//!
//! ```text
//! table inet rcni {
//!     map hostport4   { type inet_proto . inet_service : ipv4_addr . inet_service }             # any local address
//!     map hostipport4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service } # one host IP
//!     map hostport6 / hostipport6                                                           # same for IPv6
//!     map hostportrange4 / hostiprange4 / ...6 { flags interval; proto . first-last : addr }     # port ranges
//!     set hairpin4 { type ipv4_addr . ipv4_addr; flags interval }   # (source prefix . pod) to masquerade
//!     set hairpin6
//!     chain portmap-pre  { nat prerouting dstnat: fib daddr type local jump portmap-dnat }
//!     chain portmap-out  { nat output -100:       fib daddr type local jump portmap-dnat }
//!     chain portmap-dnat { most specific first (host-IP port, host-IP range, port, range); each marks the connection
//!                          (ct mark |= 1 << markMasqBit) and DNATs to the map's data }
//!     chain portmap-post { nat postrouting srcnat: marked and from 127.0.0.0/8, or marked and
//!                          (saddr . daddr) in the hairpin set: masquerade }
//!     chain portmap-guard { filter input 0: iifname != "lo" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8
//!                           ct status & dnat != dnat drop }
//! }
//! ```
//!
//! * Elements carry their owner `network/containerID/ifname` as comment ([`Owner::tag`]): a DEL removes
//!   only its own elements, so it needs neither the mappings nor the pod's IPs, and a late DEL of a
//!   displaced owner removes nothing. Which elements: those the owner's ADD recorded in its [`ledger`]
//!   (one lookup each, other owners never read); without a record, a dump of the maps filtered by owner.
//! * Structure ([`structure`], [`conditions`]) is written once from typed objects in one netlink batch and
//!   recognised by rule comments carrying the layout version and the mark bit; elements ([`elements`]) go over netlink in batches checked against
//!   the generation they were planned from.
//! * The guard closes what `route_localnet=1` opens (a pod reaching the node's 127.0.0.1-only services;
//!   CVE-2020-8558 class): it drops packets to 127/8 that did not come over `lo` and were not DNATed by
//!   us. It is installed with the structure, whether or not any interface has `route_localnet` set: without
//!   it such packets are martians anyway.

pub mod conditions;
mod element;
pub mod elements;
pub mod flush;
pub mod iptables;
pub mod ledger;
pub mod reference;
pub mod structure;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::net::command::CommandError;
use crate::net::nft::NetlinkError;

pub use element::Element;
pub use elements::{Applied, Displaced, Removed};
pub use structure::Structure;

/// The table (shared with masquerade).
pub const TABLE: &str = "rcni";

/// A transport protocol a host port can be mapped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Case-folded `tcp`, `udp`, `sctp`.
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One forwarding: packets to (`host_ip` or any local address, `proto`, `host_port`) go to
/// (`target`, `target_port`). `host_ip` and `target` are of the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub proto: Proto,
    pub host_port: u16,
    /// `None`: every local address of the target's family.
    pub host_ip: Option<IpAddr>,
    pub target: IpAddr,
    pub target_port: u16,
}

/// An address as it stands before `:port`: IPv6 in brackets.
fn bracketed(a: IpAddr) -> String {
    match a {
        IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, target) = (self.host_ip.map_or_else(|| "*".to_string(), bracketed), bracketed(self.target));
        write!(f, "{} {host}:{} -> {target}:{}", self.proto.as_str(), self.host_port, self.target_port)
    }
}

/// A run of consecutive host ports forwarded to the same ports of one target (`hostPort ==
/// containerPort` for each, as podman writes a published port range): one interval element instead of
/// one element per port. Packets keep their destination port; only the address is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
    /// `None`: every local address of the target's family.
    pub host_ip: Option<IpAddr>,
    pub target: IpAddr,
}

impl PortRange {
    /// Whether `m` is one of the ports this range forwards (same key, same target).
    pub fn covers(&self, m: &Mapping) -> bool {
        m.proto == self.proto
            && m.host_ip == self.host_ip
            && m.target == self.target
            && m.host_port == m.target_port
            && (self.first..=self.last).contains(&m.host_port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, target) = (self.host_ip.map_or_else(|| "*".to_string(), bracketed), bracketed(self.target));
        let (p, a, b) = (self.proto.as_str(), self.first, self.last);
        write!(f, "{p} {host}:{a}-{b} -> {target}:{a}-{b}")
    }
}

/// The forwarding elements for `mappings` (of one family): every run of two or more consecutive ports
/// with `hostPort == containerPort`, the same protocol, host IP and target becomes one [`PortRange`], the
/// rest stay single [`Mapping`]s. Sorted, so equal inputs give equal elements.
pub fn compact(mappings: &[Mapping]) -> Vec<Element> {
    let mut ms: Vec<Mapping> = mappings.to_vec();
    ms.sort_by_key(|m| (m.proto, m.host_ip, m.target, m.host_port, m.target_port));
    ms.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < ms.len() {
        let start = ms[i];
        let mut j = i;
        while start.host_port == start.target_port
            && j + 1 < ms.len()
            && ms[j + 1].host_port == ms[j + 1].target_port
            && ms[j + 1].host_port as u32 == ms[j].host_port as u32 + 1
            && (ms[j + 1].proto, ms[j + 1].host_ip, ms[j + 1].target) == (start.proto, start.host_ip, start.target)
        {
            j += 1;
        }
        if j > i {
            out.push(Element::Range(PortRange {
                proto: start.proto,
                first: start.host_port,
                last: ms[j].host_port,
                host_ip: start.host_ip,
                target: start.target,
            }));
        } else {
            out.push(Element::Mapping(start));
        }
        i = j + 1;
    }
    out
}

/// Sources whose connections to `pod` through a host port are masqueraded, so the pod's reply comes
/// back through the node (hairpin and other pods on the same bridge): the pod's subnet, or everything
/// with `masqAll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hairpin {
    pub sources: IpNetwork,
    pub pod: IpAddr,
}

/// Who made an element: one attachment of one network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// nft's limit for comments.
const MAX_COMMENT: usize = 127;

impl Owner {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Owner {
        Owner { network: network.to_string(), container_id: container_id.to_string(), ifname: ifname.to_string() }
    }

    /// The element comment: `network/containerID/ifname`; an owner too long for a comment is shortened
    /// deterministically (prefixes and a hash), so equal owners still compare equal.
    pub fn tag(&self) -> String {
        let plain = format!("{}/{}/{}", self.network, self.container_id, self.ifname);
        if plain.len() <= MAX_COMMENT {
            return plain;
        }
        let net: String = self.network.chars().take(24).collect();
        let cid: String = self.container_id.chars().take(64).collect();
        let ifname: String = self.ifname.chars().take(15).collect();
        let h = &crate::net::masq::sha512_hex(&plain)[..16];
        format!("{net}/{cid}~{h}/{ifname}")
    }

    /// Whether `tag` was made by [`Owner::tag`] for an attachment of `network`.
    pub fn tag_of_network(tag: &str, network: &str) -> bool {
        if tag.starts_with(&format!("{network}/")) {
            return true;
        }
        // Shortened tags keep the first 24 characters of the network and a `~hash`.
        let net: String = network.chars().take(24).collect();
        net.len() < network.len() && tag.starts_with(&format!("{net}/")) && tag.contains('~')
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// What to do when a host port is already mapped by another owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// The newer mapping wins; the displaced owner is reported (the plugin warns on stderr).
    #[default]
    Replace,
    /// The ADD fails and names the current owner.
    Error,
}

/// Errors of this module; messages say which object, what failed and what to do.
#[derive(Debug)]
pub enum Error {
    Command {
        what: String,
        err: CommandError,
        hint: String,
    },
    Netlink {
        what: String,
        err: NetlinkError,
    },
    /// A host port is mapped by another owner and the policy is [`ConflictPolicy::Error`].
    Conflict {
        /// The mapping or range of this ADD.
        what: String,
        owner: String,
    },
    /// The node's portmap structure uses another mark bit.
    MarkBit {
        wanted: u8,
        found: u8,
    },
    /// CHECK found the state different from what ADD sets up.
    Check(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command { what, err, hint } => write!(f, "{what}: {err}{hint}"),
            Error::Netlink { what, err } => write!(f, "{what}: {err}"),
            Error::Conflict { what, owner } => write!(
                f,
                "host port {what}: the host port is already mapped by {owner} (hostPortConflict is \"error\"): remove \
                 that mapping first, pick another hostPort, or set hostPortConflict to \"replace\""
            ),
            Error::MarkBit { wanted, found } => write!(
                f,
                "markMasqBit {wanted}: the portmap rules on this node already use bit {found} (table inet \
                 {TABLE}); every portmap network of a node must use the same markMasqBit"
            ),
            Error::Check(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn nl_err(what: impl Into<String>, err: NetlinkError) -> Error {
    Error::Netlink { what: format!("portmap: {}", what.into()), err }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(proto: Proto, host_port: u16, target_port: u16) -> Mapping {
        Mapping { proto, host_port, host_ip: None, target: "10.0.0.2".parse().unwrap(), target_port }
    }

    #[test]
    fn compact_makes_runs_of_identical_ports_ranges() {
        let mut ms: Vec<Mapping> = (8000..=8999).rev().map(|p| m(Proto::Tcp, p, p)).collect();
        ms.push(m(Proto::Tcp, 9000, 90)); // not identical: stays single, ends the run
        ms.push(m(Proto::Udp, 8000, 8000)); // another protocol, alone: single
        ms.push(m(Proto::Tcp, 8500, 8500)); // a repeat inside the run
        ms.push(m(Proto::Tcp, 10, 10));
        ms.push(m(Proto::Tcp, 11, 11));
        ms.push(m(Proto::Tcp, 13, 13)); // gap: single
        let e = compact(&ms);
        let range = |first, last| {
            Element::Range(PortRange { proto: Proto::Tcp, first, last, host_ip: None, target: ms[0].target })
        };
        assert_eq!(
            e,
            vec![
                range(10, 11),
                Element::Mapping(m(Proto::Tcp, 13, 13)),
                range(8000, 8999),
                Element::Mapping(m(Proto::Tcp, 9000, 90)),
                Element::Mapping(m(Proto::Udp, 8000, 8000)),
            ]
        );
        let hip = Mapping { host_ip: Some("198.18.0.1".parse().unwrap()), ..m(Proto::Tcp, 8001, 8001) };
        assert_eq!(compact(&[m(Proto::Tcp, 8000, 8000), hip]).len(), 2, "another host IP is another key");
        assert_eq!(compact(&[m(Proto::Tcp, 65535, 65535)]), vec![Element::Mapping(m(Proto::Tcp, 65535, 65535))]);
    }
}
