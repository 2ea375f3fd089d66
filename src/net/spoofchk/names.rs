//! The nft names of one attachment, as the reference plugins spell them, and the input checks.

use super::{Error, Result};
use crate::net::masq::sha512_hex;

/// The shared table (family `bridge`).
pub const TABLE: &str = "nat";
/// The shared base chain in [`TABLE`].
pub const BASE_CHAIN: &str = "PREROUTING";
/// Priority of [`BASE_CHAIN`] (`dstnat` in the bridge family).
pub const BASE_PRIORITY: i32 = -300;
/// Hook number of `prerouting` in the bridge family (NF_BR_PRE_ROUTING).
pub const HOOK_PREROUTING: u32 = 0;
/// Prefix of the per-attachment chains.
pub const CHAIN_PREFIX: &str = "cni-br-iface-";
/// Prefix of the rule comments.
pub const COMMENT_PREFIX: &str = "macspoofchk-";

/// Kernel limit for chain names (NFT_NAME_MAXLEN, including the terminating NUL).
const MAX_NAME: usize = 255;
/// Kernel limit for rule user data (NFT_USERDATA_MAXLEN): the comment and owner TLVs together.
const MAX_USERDATA: usize = 256;
/// Network names up to this length are the owner tag as they are; longer ones are shortened.
const MAX_PLAIN_TAG: usize = 64;

/// The nft names of one attachment (containerID, ifname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `<containerID>-<ifname>`.
    pub ref_id: String,
    /// `cni-br-iface-<containerID>-<ifname>`.
    pub iface_chain: String,
    /// `cni-br-iface-<containerID>-<ifname>-mac`.
    pub mac_chain: String,
    /// `macspoofchk-<containerID>-<ifname>`, on every rule.
    pub comment: String,
}

impl Names {
    pub fn new(container_id: &str, ifname: &str) -> Names {
        Names::from_ref_id(&format!("{container_id}-{ifname}"))
    }

    pub(super) fn from_ref_id(ref_id: &str) -> Names {
        let iface_chain = format!("{CHAIN_PREFIX}{ref_id}");
        Names {
            ref_id: ref_id.to_string(),
            mac_chain: format!("{iface_chain}-mac"),
            iface_chain,
            comment: format!("{COMMENT_PREFIX}{ref_id}"),
        }
    }

    /// For messages.
    pub(super) fn label(&self) -> String {
        format!("macspoofchk of attachment {:?}", self.ref_id)
    }
}

/// The owner tag of `network` on the rules it makes: the name itself, or for a long name a prefix
/// and a hash of the whole (so that two networks never share a tag).
pub fn owner_tag(network: &str) -> String {
    if network.len() <= MAX_PLAIN_TAG {
        return network.to_string();
    }
    let prefix: String = network.chars().take(40).collect();
    format!("{prefix}~{}", &sha512_hex(network)[..16])
}

pub(super) fn validate(container_id: &str, ifname: &str) -> Result<Names> {
    let what = format!("macspoofchk for container {container_id:?} interface {ifname:?}");
    if container_id.is_empty() {
        return Err(Error::Invalid(format!("{what}: the container ID is empty")));
    }
    if ifname.is_empty() {
        return Err(Error::Invalid(format!("{what}: the interface name is empty")));
    }
    if container_id.contains('\0') || ifname.contains('\0') {
        return Err(Error::Invalid(format!("{what}: NUL character in the container ID or interface name")));
    }
    let n = Names::new(container_id, ifname);
    // Room for the comment TLV (type, length, text, NUL) and the longest owner TLV.
    if n.mac_chain.len() > MAX_NAME || n.comment.len() + 3 + 2 + MAX_PLAIN_TAG + 17 > MAX_USERDATA {
        return Err(Error::Invalid(format!(
            "{what}: chain name {:?} is longer than nftables allows; use a shorter container ID",
            n.mac_chain
        )));
    }
    Ok(n)
}

pub(super) fn validate_network(n: &Names, network: &str) -> Result<()> {
    if network.is_empty() || network.contains('\0') {
        return Err(Error::Invalid(format!("{}: invalid network name {network:?}", n.label())));
    }
    Ok(())
}

pub(super) fn validate_veth(n: &Names, host_veth: &str) -> Result<()> {
    if host_veth.is_empty() || host_veth.len() > 15 || host_veth.contains('\0') {
        return Err(Error::Invalid(format!("{}: invalid host interface name {host_veth:?}", n.label())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        let n = Names::new("ctr-abc123", "eth0");
        assert_eq!(n.ref_id, "ctr-abc123-eth0");
        assert_eq!(n.iface_chain, "cni-br-iface-ctr-abc123-eth0");
        assert_eq!(n.mac_chain, "cni-br-iface-ctr-abc123-eth0-mac");
        assert_eq!(n.comment, "macspoofchk-ctr-abc123-eth0");
    }

    #[test]
    fn validation() {
        assert!(validate("", "eth0").unwrap_err().to_string().contains("container ID is empty"));
        assert!(validate("c", "").unwrap_err().to_string().contains("interface name is empty"));
        assert!(validate(&"x".repeat(300), "eth0").unwrap_err().to_string().contains("longer than nftables allows"));
        let n = validate("9abc", "eth0").unwrap();
        assert!(validate_veth(&n, "").is_err());
        assert!(validate_veth(&n, "a-very-long-name-x").is_err());
        validate_veth(&n, "veth1234abcd").unwrap();
        assert!(validate_network(&n, "").is_err());
    }

    #[test]
    fn owner_tags_are_short_and_distinct() {
        assert_eq!(owner_tag("brnet"), "brnet");
        let (a, b) = (format!("{}a", "n".repeat(80)), format!("{}b", "n".repeat(80)));
        assert_ne!(owner_tag(&a), owner_tag(&b));
        assert!(owner_tag(&a).len() <= MAX_PLAIN_TAG + 17);
    }
}
