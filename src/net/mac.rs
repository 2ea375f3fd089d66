//! Ethernet MAC addresses: parse, format, derive.
//!
//! Derived MACs are a contract between nodes (a peer computes our VTEP MAC from our underlay IP), so
//! the algorithms below must never change once released.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

/// Prefix of MACs derived from an IPv4 address: locally administered, unicast, and spelling "rc"
/// (0x72 = 'r' keeps it distinct from Docker's 02:42 and OVN's 0a:58).
const V4_PREFIX: [u8; 2] = [0x02, 0x72];

impl Mac {
    pub const ZERO: Mac = Mac([0; 6]);

    /// From a kernel attribute; `None` unless exactly 6 bytes (e.g. loopback on some kinds, tunnels).
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// Force "locally administered, unicast" on arbitrary bytes (set bit 1, clear bit 0 of octet 0).
    pub fn local_unicast(mut bytes: [u8; 6]) -> Mac {
        bytes[0] = (bytes[0] | 0x02) & !0x01;
        Mac(bytes)
    }

    /// Deterministic MAC for an IP address, used for the VTEP MAC derived from the underlay IP.
    ///
    /// * IPv4 `a.b.c.d` -> `02:72:a:b:c:d` (readable, collision-free among IPv4 addresses).
    /// * IPv6 -> [`Mac::from_hash`] of the 16 octets, prefixed with `"ip6:"` so it cannot collide with
    ///   the hash of a string that happens to have the same bytes.
    pub fn from_ip(ip: IpAddr) -> Mac {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Mac([V4_PREFIX[0], V4_PREFIX[1], o[0], o[1], o[2], o[3]])
            }
            IpAddr::V6(v6) => {
                let mut buf = b"ip6:".to_vec();
                buf.extend_from_slice(&v6.octets());
                Mac::from_hash(&buf)
            }
        }
    }

    /// Deterministic locally-administered unicast MAC from arbitrary bytes (e.g. a bridge name, to pin
    /// the bridge MAC), by `crate::fnv`.
    pub fn from_hash(data: &[u8]) -> Mac {
        let h = crate::fnv::fnv1a64(data).to_be_bytes();
        Mac::local_unicast([h[0], h[1], h[2], h[3], h[4], h[5]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// Why a MAC string did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacParseError(String);

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MAC address {:?}: want six hex octets like aa:bb:cc:dd:ee:ff", self.0)
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, either case; one- or two-digit octets
    /// like the Go reference (`net.ParseMAC` needs two digits, iproute2 accepts one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn parse_and_format() {
        let m: Mac = "AA:bb:0c:dd:ee:ff".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:ff");
        assert_eq!("aa-bb-c-dd-ee-ff".parse::<Mac>().unwrap().0[2], 0x0c);
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "aabb.ccdd.eeff",
            "aa::cc:dd:ee:ff",
            "aaa:bb:cc:dd:ee:f",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
        assert_eq!(Mac::from_slice(&[1, 2, 3, 4, 5, 6]), Some(Mac([1, 2, 3, 4, 5, 6])));
    }

    #[test]
    fn serde_roundtrip() {
        let m = Mac([2, 0, 0, 0, 0, 1]);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"02:00:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
    }

    #[test]
    fn derived_from_ipv4_is_stable() {
        let m = Mac::from_ip(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7)));
        assert_eq!(m.to_string(), "02:72:c6:12:00:07");
        assert!(m.is_locally_administered() && !m.is_multicast());
    }

    #[test]
    fn derived_from_ipv6_and_hash_are_local_unicast_and_stable() {
        let a = Mac::from_ip(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()));
        let b = Mac::from_ip(IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().unwrap()));
        assert_ne!(a, b);
        for m in [a, b, Mac::from_hash(b"cni0"), Mac::from_hash(b"")] {
            assert!(m.is_locally_administered(), "{m}");
            assert!(!m.is_multicast(), "{m}");
        }
        // Pinned value: changing the algorithm breaks peers that computed our MAC.
        assert_eq!(Mac::from_hash(b"a").to_string(), "ae:63:dc:4c:86:01");
    }

    #[test]
    fn local_unicast_bits() {
        assert_eq!(Mac::local_unicast([0xff; 6]).0[0], 0xfe);
        assert_eq!(Mac::local_unicast([0; 6]).0[0], 0x02);
    }
}
