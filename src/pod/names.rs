//! Names derived from an attachment, so DEL and CHECK find what ADD made even when the pod's netns is gone.

/// 64-bit FNV-1a: tiny, stable across releases and platforms (names on disk and in the kernel depend on it).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0; // separator byte, so ("ab","c") and ("a","bc") differ
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The host end of a pod's veth: `veth` + 11 hex digits of a hash of (containerID, ifname) — 15 bytes, the
/// kernel's limit. 44 bits make a collision among a node's pods practically impossible, and a collision is
/// still detected (the name exists and is not ours) rather than silently shared.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:011x}", fnv1a(&[container_id, ifname]) >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_and_short() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_ne!(a, host_veth_name("c1", "eth1"));
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
    }
}
