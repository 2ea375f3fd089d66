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
//!     set hairpin4 { type ipv4_addr . ipv4_addr; flags interval }   # (source prefix . pod) to masquerade
//!     set hairpin6
//!     chain portmap-pre  { nat prerouting dstnat: fib daddr type local jump portmap-dnat }
//!     chain portmap-out  { nat output -100:       fib daddr type local jump portmap-dnat }
//!     chain portmap-dnat { the host-IP map first, then the wildcard map; each marks the connection
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
//! * Structure ([`structure`]) is written once with `nft -f` and recognised by rule comments carrying the
//!   layout version and the mark bit; elements ([`elements`]) go over netlink in batches checked against
//!   the generation they were planned from.
//! * The guard closes what `route_localnet=1` opens (a pod reaching the node's 127.0.0.1-only services;
//!   CVE-2020-8558 class): it drops packets to 127/8 that did not come over `lo` and were not DNATed by
//!   us. It is installed with the structure, whether or not any interface has `route_localnet` set: without
//!   it such packets are martians anyway.

pub mod conditions;
pub mod elements;
pub mod flush;
pub mod ledger;
pub mod reference;
pub mod structure;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::net::command::CommandError;
use crate::net::nft::NetlinkError;

pub use elements::{Applied, Displaced, Element, Removed};
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

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host_ip {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None => "*".to_string(),
        };
        let target = match self.target {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        write!(f, "{} {host}:{} -> {target}:{}", self.proto.as_str(), self.host_port, self.target_port)
    }
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
        mapping: Mapping,
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
            Error::Conflict { mapping, owner } => write!(
                f,
                "host port {} {}:{} is already mapped by {owner} (hostPortConflict is \"error\"): remove that \
                 mapping first, pick another hostPort, or set hostPortConflict to \"replace\"",
                mapping.proto.as_str(),
                mapping.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "*".into()),
                mapping.host_port
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
