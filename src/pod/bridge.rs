//! The node's bridge: created on first use (race-safe), MAC pinned, gateway addresses, forwarding.

use crate::cni::{CniError, CniResult};
use crate::net::{AddrOptions, BridgeSpec, IpFamily, Link, Mac, NetHandle, sysctl};
use ipnetwork::IpNetwork;

#[derive(Debug, Clone, Default)]
pub struct BridgeSettings {
    pub name: String,
    /// Applied when the bridge is created (an existing bridge keeps its MTU, as in the reference).
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
    pub promisc: bool,
}

/// A MAC for a new bridge. Pinning one explicitly stops the kernel from giving the bridge the lowest MAC of
/// its ports, which changes as pods come and go and breaks neighbours' ARP caches. Random per creation, so
/// two nodes' bridges never share one even if an operator joins them to one L2 segment.
fn new_bridge_mac(name: &str) -> Mac {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{name}/{}/{nanos}", std::process::id());
    let mut bytes: Vec<u8> = seed.into_bytes();
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let mut r = [0u8; 8];
        if std::io::Read::read_exact(&mut f, &mut r).is_ok() {
            bytes.extend_from_slice(&r);
        }
    }
    Mac::from_hash(&bytes)
}

/// Find or create the bridge and bring it up. Many ADDs may race to create it: EEXIST means another one
/// won, and we use what it made.
pub async fn ensure_bridge(node: &NetHandle, s: &BridgeSettings) -> CniResult<Link> {
    ensure_found_bridge(node, s, node.link_by_name(&s.name).await?).await
}

/// [`ensure_bridge`] with the link under the bridge's name already looked up (`found`).
pub async fn ensure_found_bridge(node: &NetHandle, s: &BridgeSettings, found: Option<Link>) -> CniResult<Link> {
    let link = match found {
        Some(l) => l,
        None => {
            let spec = BridgeSpec {
                name: s.name.clone(),
                mtu: s.mtu,
                vlan_filtering: s.vlan_filtering,
                mac: Some(new_bridge_mac(&s.name)),
                up: false,
            };
            match node.create_bridge(&spec).await {
                Ok(l) => {
                    // Before the first up: no router advertisements on the bridge, and no duplicate address
                    // detection — its link-local address would stay tentative for a second or two, and
                    // neighbour discovery towards the pods (NS to a new pod) waits for it. Hosts without
                    // IPv6 have no such keys.
                    for key in ["accept_ra", "accept_dad"] {
                        let _ = sysctl::write(&format!("net/ipv6/conf/{}/{key}", s.name), "0");
                    }
                    l
                }
                Err(e) if e.is_exists() => node.require_link(&s.name).await?,
                Err(e) => {
                    return Err(CniError::internal(format!("failed to create bridge {:?}: {e}", s.name)));
                }
            }
        }
    };
    if !link.is_kind("bridge") {
        return Err(CniError::internal(format!("{:?} already exists but is not a bridge", s.name)).with_details(
            format!(
                "choose another \"bridge\" name or remove the {} device",
                link.kind.as_deref().unwrap_or("existing")
            ),
        ));
    }
    if !link.admin_up {
        node.set_up(link.index).await?;
    }
    if s.promisc && !link.promisc {
        node.set_promisc(link.index, true).await?;
    }
    Ok(link)
}

/// Would `existing` (on the bridge) conflict with the gateway `want`? For IPv4 any other global address does
/// (the reference's rule); for IPv6 only another address whose prefix overlaps.
fn conflicts(existing: IpNetwork, want: IpNetwork) -> bool {
    if existing.is_ipv4() != want.is_ipv4() || existing == want {
        return false;
    }
    if existing.is_ipv4() {
        return true;
    }
    existing.contains(want.ip()) || want.contains(existing.ip())
}

/// Put each gateway address on the bridge. A different address of the same family already there is the
/// classic "cni0 already has an IP address different from …" failure: say which, and the two ways out.
///
/// The address is added first: when it is already there (EEXIST, every ADD after the network's first), an
/// earlier ADD has checked the bridge and nothing else is read. Only a new gateway address is followed by a
/// look at the bridge's other addresses — a dump that would otherwise cost every ADD time in proportion to
/// the node's addresses.
pub async fn ensure_gateways(node: &NetHandle, bridge: &Link, gateways: &[IpNetwork], force: bool) -> CniResult<()> {
    for gw in gateways {
        let opts = AddrOptions { nodad: gw.is_ipv6(), exists_ok: false };
        match node.add_address(bridge.index, *gw, opts).await {
            Err(e) if e.is_exists() => continue,
            Err(e) => return Err(CniError::internal(format!("failed to add IP addr {gw} to {:?}: {e}", bridge.name))),
            Ok(()) => {}
        }
        let others: Vec<IpNetwork> = node
            .addresses(Some(bridge.index), None)
            .await?
            .into_iter()
            .filter(|a| !a.is_link_local() && conflicts(a.net, *gw))
            .map(|a| a.net)
            .collect();
        for old in others {
            if !force {
                // Leave the bridge as it was.
                let _ = node.del_address(bridge.index, *gw).await;
                return Err(CniError::internal(format!(
                    "failed to set bridge addr: {:?} already has an IP address different from {gw}",
                    bridge.name
                ))
                .with_details(format!(
                    "bridge {} has {old}, the config wants {gw}: delete the bridge (ip link del {}) or set \"forceAddress\": true",
                    bridge.name, bridge.name
                )));
            }
            match node.del_address(bridge.index, old).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Turn on IP forwarding in the node for the families in use (a write only when it is off).
pub fn enable_forwarding(families: &[IpFamily]) -> CniResult<()> {
    for f in families {
        let key = match f {
            IpFamily::V4 => "net/ipv4/ip_forward",
            IpFamily::V6 => "net/ipv6/conf/all/forwarding",
        };
        match sysctl::read(key) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => sysctl::write(key, "1")?,
            Err(e) if e.is_not_found() => {} // IPv6 disabled on this node
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_rules() {
        let n = |s: &str| -> IpNetwork { s.parse().unwrap() };
        assert!(conflicts(n("10.1.0.1/24"), n("10.2.0.1/24")), "any other IPv4 address conflicts");
        assert!(!conflicts(n("10.1.0.1/24"), n("10.1.0.1/24")));
        assert!(!conflicts(n("fd00:1::1/64"), n("10.1.0.1/24")));
        assert!(!conflicts(n("fd00:1::1/64"), n("fd00:2::1/64")), "IPv6 only when prefixes overlap");
        assert!(conflicts(n("fd00:1::1/64"), n("fd00:1::2/64")));
    }

    #[test]
    fn bridge_macs_are_local_unicast_and_differ() {
        let a = new_bridge_mac("cni0");
        let b = new_bridge_mac("cni0");
        assert!(a.is_locally_administered() && !a.is_multicast());
        assert_ne!(a, b);
    }
}
