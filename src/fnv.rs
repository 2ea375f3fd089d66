//! 64-bit FNV-1a, the one hash of names and MACs that must not change: tiny, dependency-free and stable
//! across Rust releases and platforms (unlike `std`'s `DefaultHasher`, whose output is unspecified).
//! Names in the kernel and on disk, and pinned MACs, depend on its values.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The hash of `parts` joined by NUL bytes, so ("ab", "c") and ("a", "bc") differ.
pub fn fnv1a64_parts(parts: &[&str]) -> u64 {
    parts.iter().enumerate().fold(OFFSET, |h, (i, p)| {
        let h = if i > 0 { h.wrapping_mul(PRIME) } else { h };
        p.bytes().fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_parts_are_the_nul_joined_bytes() {
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b""), OFFSET);
        for parts in [&["ctr1", "eth0"][..], &["a"], &["", ""], &["ab", "c"]] {
            assert_eq!(fnv1a64_parts(parts), fnv1a64(parts.join("\0").as_bytes()), "{parts:?}");
        }
        assert_ne!(fnv1a64_parts(&["ab", "c"]), fnv1a64_parts(&["a", "bc"]));
    }
}
