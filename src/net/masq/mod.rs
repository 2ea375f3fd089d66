//! IP masquerade (source NAT to the node's address) for pod addresses, used by the bridge and vxlan plugins.
//!
//! Everything here works in the network namespace of the calling thread (the node's netns when a plugin
//! runs); nothing here changes netns. Two backends:
//!
//! # nftables (default)
//!
//! The reference plugins add a chain and a POSTROUTING jump per container, so every ADD rewrites a table
//! that grows with the pod count. Here a network has ONE rule per address family and a set of pod
//! addresses; adding or removing a pod is one set element, O(1). Layout (`nft list table inet rcni`):
//!
//! ```text
//! table inet rcni {
//!     comment "rcni: masquerade of pod addresses"
//!     set pods4-<h> { type ipv4_addr; comment "pods of network \"<network>\"" }   # plain hash set
//!     set pods6-<h> { type ipv6_addr; ... }
//!     set exempt4-<h> { type ipv4_addr; flags interval; }    # destinations never masqueraded
//!     set exempt6-<h> { type ipv6_addr; flags interval; }
//!     chain masq-<h> {
//!         comment "rcni masquerade for network \"<network>\""
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @pods4-<h> ip daddr != @exempt4-<h> ip daddr != 224.0.0.0/4 masquerade comment "rcni-masq v1 ip <fp>"
//!         ip6 saddr @pods6-<h> ip6 daddr != @exempt6-<h> ip6 daddr != ff00::/8 masquerade comment "rcni-masq v1 ip6 <fp>"
//!     }
//! }
//! ```
//!
//! * `<h>` = first 16 hex digits of SHA-512(network name); the full name is in the comments.
//! * One *base* chain per network (not one shared chain) keeps networks independent: (re)writing one
//!   network's chain never touches another's. The first chain that masquerades a new connection wins
//!   (NAT is decided once per conntrack entry), and a network only matches its own pods' sources.
//! * The exempt sets hold the destination prefixes that must NOT be masqueraded: the pod subnet for
//!   bridge, the whole cluster network for vxlan.
//! * Each pod element carries its owner `containerID/ifname` as the element comment. A DEL removes an
//!   element only if the owner matches, so a late DEL of an old pod never removes the entry of a new pod
//!   that got the same IP. An ADD of an address present with another owner replaces the owner (delete +
//!   add in one transaction).
//! * `<fp>` fingerprints the network name, the exempt prefixes and the layout version. Setup first reads the
//!   chain's rules over netlink (one cheap dump of two rules); only when they are missing or have another
//!   fingerprint does it (re)write the structure (`layout.rs`: typed nf_tables objects, no `nft` process),
//!   flushing and rewriting this network's chain and exempt sets (O(1) in the number of pods) in the same
//!   transaction as the pod's element.
//! * Every pod add / owner lookup / delete talks nf_tables netlink directly. Read-modify-write is made
//!   race-free with the ruleset generation id: the batch carries the generation read before the probe and
//!   the lookups, and the kernel rejects it (ERESTART) if anything changed in between; we then plan again.
//! * Closing the nfnetlink socket after a deletion waits for one RCU grace period (current kernels flush
//!   nf_tables' deferred destroy work whenever an nfnetlink socket is released; `nft` and `iptables-nft`
//!   pay the same wait), hence the lingering sockets of `crate::net::nft::socket`. Measure with
//!   `cargo test --release --test masq -- --ignored --nocapture bench`.
//!
//! # A whole cluster network ([`cluster`])
//!
//! The overlay agent's `--ip-masq` masquerades by source *prefix* instead of pod address: one rule per
//! family and one interval element (the cluster network), see the [`cluster`] module.
//!
//! # iptables (`ipMasqBackend: "iptables"`)
//!
//! Reference compatible, so that our DEL cleans rules a reference ADD made and the other way round: per
//! container the chain `CNI-` + 24 hex digits of SHA-512(network ‖ containerID) in table `nat`, rules
//! `-d <subnet> -j ACCEPT`, `! -d 224.0.0.0/4 -j MASQUERADE` (v6 `ff00::/8`), and in POSTROUTING
//! `-s <ip>/32 -j <chain>`, every rule commented `name: "<network>" id: "<containerID>"`.
//!
//! # Teardown always cleans both
//!
//! [`teardown`] removes the pod's nft elements (owner-checked), the reference plugins' nftables rules of
//! this attachment (table `inet cni_plugins_masquerade`, found by their comment hash) and, when they exist
//! (probed cheaply over netlink and `/proc`), the reference iptables chain of this (network, container)
//! with every POSTROUTING jump to it — found by listing, so it works without knowing the IPs (reference
//! pain point: rules leaked when DEL had no netns). [`gc`] does the same for every stale owner.

pub mod cluster;
mod iptables;
mod layout;
mod nft;
mod reference;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha512};

use crate::net::command::CommandError;

pub use crate::net::nft::NetlinkError;
pub use nft::{Names as NftNames, TABLE as NFT_TABLE};

/// Which implementation manages the masquerade rules (`ipMasqBackend` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// One rule per network and a set of pod addresses (default).
    #[default]
    Nftables,
    /// The reference plugins' per-container iptables chains.
    Iptables,
}

impl Backend {
    /// The accepted configuration strings.
    pub const ALLOWED: &'static [&'static str] = &["nftables", "iptables"];

    /// Parses the config value; `None` or empty selects the default (nftables).
    pub fn parse(value: Option<&str>) -> Result<Backend, Error> {
        match value.map(str::trim) {
            None | Some("") | Some("nftables") => Ok(Backend::Nftables),
            Some("iptables") => Ok(Backend::Iptables),
            Some(other) => Err(Error::UnknownBackend(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::parse(Some(s))
    }
}

/// One attachment of a pod to a network: its owner and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub container_id: String,
    pub ifname: String,
    /// The pod's addresses with their subnet prefix (e.g. 10.244.1.5/24), as in the CNI result.
    pub ips: Vec<IpNetwork>,
}

impl PodEntry {
    pub fn owner(&self) -> Owner {
        Owner::new(&self.container_id, &self.ifname)
    }
}

/// The owner of a masqueraded address: (containerID, ifname).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner { container_id: container_id.to_string(), ifname: ifname.to_string() }
    }

    /// The element comment that records this owner: `containerID/ifname`. nft limits comments to 128
    /// bytes; a longer owner is shortened deterministically (prefix + hash), so comparisons still work.
    pub fn tag(&self) -> String {
        let plain = format!("{}/{}", self.container_id, self.ifname);
        if plain.len() <= MAX_COMMENT {
            return plain;
        }
        let prefix: String = self.container_id.chars().take(80).collect();
        let ifname: String = self.ifname.chars().take(16).collect();
        format!("{prefix}~{}/{ifname}", &sha512_hex(&plain)[..16])
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// A pod address in a network's nft set, with the owner tag recorded in its comment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub addr: IpAddr,
    /// The element comment (`containerID/ifname`, see [`Owner::tag`]); empty if the element has none.
    pub owner: String,
}

/// nft's limit for comments (userspace rejects longer ones).
const MAX_COMMENT: usize = 127;

/// Errors of this module; the messages say which object, what failed and what to do.
#[derive(Debug)]
pub enum Error {
    UnknownBackend(String),
    /// A command (`nft`, `iptables`, ...) could not be run or failed.
    Command {
        what: String,
        err: CommandError,
        /// What the operator can do, or the input the command got.
        hint: String,
    },
    /// An nf_tables netlink operation failed.
    Netlink {
        what: String,
        err: NetlinkError,
    },
    /// CHECK found the state different from what ADD sets up.
    Check(String),
    /// Invalid input (e.g. an empty network name).
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownBackend(v) => write!(
                f,
                "unknown ipmasq backend {v:?}: allowed values are {}",
                Backend::ALLOWED.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            ),
            Error::Command { what, err, hint } => write!(f, "{what}: {err}{hint}"),
            Error::Netlink { what, err } => write!(f, "{what}: {err}"),
            Error::Check(msg) => write!(f, "{msg}"),
            Error::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Hex SHA-512 of `s`.
pub(crate) fn sha512_hex(s: &str) -> String {
    let digest = Sha512::digest(s.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The reference plugins' per-container iptables chain: `CNI-` + 24 hex of SHA-512(network ‖ containerID).
pub fn reference_chain_name(network: &str, container_id: &str) -> String {
    format!("CNI-{}", &sha512_hex(&format!("{network}{container_id}"))[..24])
}

/// The reference plugins' rule comment: `name: "<network>" id: "<containerID>"` (Go's %q quoting).
pub fn reference_comment(network: &str, container_id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(container_id))
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn validate(network: &str, pod: Option<&PodEntry>) -> Result<()> {
    if network.is_empty() {
        return Err(Error::Invalid("masquerade: the network name is empty".to_string()));
    }
    if let Some(pod) = pod {
        if pod.container_id.is_empty() {
            return Err(Error::Invalid(format!("masquerade for network {network:?}: the container ID is empty")));
        }
    }
    Ok(())
}

/// Sets up masquerading of `pod`'s addresses in `network`: traffic from them to anything but `exempt`
/// (and multicast) leaves with the node's address. Idempotent; all of the pod's addresses are added in
/// one transaction (all or nothing).
pub fn setup(backend: Backend, network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    validate(network, Some(pod))?;
    match backend {
        Backend::Nftables => nft::setup(network, exempt, pod),
        Backend::Iptables => iptables::setup(network, exempt, pod),
    }
}

/// Removes `pod`'s masquerading in `network`, whatever backend created it: the nft elements whose owner
/// is this pod (an element owned by someone else is left alone), the rules the reference plugins'
/// nftables backend made for this (network, ifname, containerID), and the reference iptables chain of
/// this (network, containerID) — each probed cheaply first. Anything already gone counts as success.
pub fn teardown(network: &str, pod: &PodEntry) -> Result<()> {
    validate(network, Some(pod))?;
    nft::teardown(network, pod)?;
    nft::teardown_reference(network, pod)?;
    iptables::teardown_if_present(network, pod)
}

/// Verifies that `pod` is masqueraded as [`setup`] would have done it; the error says what is missing.
pub fn check(backend: Backend, network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    validate(network, Some(pod))?;
    match backend {
        Backend::Nftables => nft::check(network, exempt, pod),
        Backend::Iptables => iptables::check(network, exempt, pod),
    }
}

/// Removes the nft elements of `network` whose owner is not among `valid`, and likewise the reference
/// plugins' nftables rules and iptables chains of `network`. Returns the (rcni) nft elements removed.
pub fn gc(network: &str, valid: &[Owner]) -> Result<Vec<Element>> {
    validate(network, None)?;
    let removed = nft::gc(network, valid)?;
    nft::gc_reference(network, valid)?;
    iptables::gc_if_present(network, valid)?;
    Ok(removed)
}

/// The nft object names (chain, sets in table `inet rcni`) of `network`.
pub fn nft_names(network: &str) -> NftNames {
    NftNames::new(network)
}

/// The nft elements (pod addresses and owners) of `network`, sorted; empty if the network is not set up.
pub fn list(network: &str) -> Result<Vec<Element>> {
    validate(network, None)?;
    nft::list(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names() {
        assert_eq!(reference_chain_name("brnet", "ctr1"), "CNI-2fbf118d4cafd020f013271b");
        assert_eq!(reference_comment("brnet", "ctr1"), r#"name: "brnet" id: "ctr1""#);
        assert_eq!(go_quote("a\"b\\"), r#""a\"b\\""#);
    }

    #[test]
    fn backend_parse() {
        assert_eq!(Backend::parse(None).unwrap(), Backend::Nftables);
        assert_eq!(Backend::parse(Some("")).unwrap(), Backend::Nftables);
        assert_eq!("iptables".parse::<Backend>().unwrap(), Backend::Iptables);
        let err = Backend::parse(Some("ipvs")).unwrap_err().to_string();
        assert_eq!(err, r#"unknown ipmasq backend "ipvs": allowed values are "nftables", "iptables""#);
    }

    #[test]
    fn owner_tag() {
        assert_eq!(Owner::new("abc", "eth0").tag(), "abc/eth0");
        let long = "x".repeat(200);
        let t = Owner::new(&long, "eth0").tag();
        assert!(t.len() <= MAX_COMMENT, "{t}");
        assert!(t.ends_with("/eth0"));
        assert_ne!(t, Owner::new(&"x".repeat(201), "eth0").tag());
    }
}
