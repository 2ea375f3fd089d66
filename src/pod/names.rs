//! Names derived from an attachment, so DEL and CHECK find what ADD made even when the pod's netns is gone.

use crate::fnv::fnv1a64_parts;

/// The host end of a pod's veth: `veth` + 11 hex digits of a hash of (containerID, ifname) — 15 bytes, the
/// kernel's limit. 44 bits make a collision among a node's pods practically impossible, and a collision is
/// still detected (the name exists and is not ours) rather than silently shared.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:011x}", fnv1a64_parts(&[container_id, ifname]) >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_and_short() {
        let a = host_veth_name("c1", "eth0");
        // The name live pods' veths have: it must never change across versions.
        assert_eq!(a, "vethf53f02b3bfe");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_ne!(a, host_veth_name("c1", "eth1"));
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
    }
}
