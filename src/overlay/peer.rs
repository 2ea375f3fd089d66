//! One node of the overlay as its peers see it, and the peers file format.

use crate::cni::error::code;
use crate::cni::{CniError, CniResult};
use crate::net::Mac;
use ipnetwork::IpNetwork;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::net::IpAddr;
use std::path::Path;

/// Largest peers file read (a 10 000-node list is about 1 MB).
pub const MAX_PEERS_FILE: u64 = 16 << 20;

/// A peer node: its underlay address, its pod subnets, and its VTEP MAC when it publishes one (flanneld
/// nodes use random MACs). Without `mac` the MAC is derived from the underlay address ([`crate::overlay::vtep_mac`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub underlay: IpAddr,
    #[serde(deserialize_with = "one_or_many")]
    pub subnets: Vec<IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

impl Peer {
    /// The MAC of the peer's VTEP: published, or derived from its underlay address.
    pub fn vtep_mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| super::vtep_mac(self.underlay))
    }
}

/// A CIDR or a list of CIDRs. Errors say that, and which CIDR did not parse (an untagged enum would only
/// say that the value matched no variant).
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNetwork>, D::Error> {
    d.deserialize_any(CidrOrList)
}

const EXPECTED: &str = "a CIDR such as \"10.0.0.0/8\" or a list of CIDRs";

struct CidrOrList;

impl<'de> Visitor<'de> for CidrOrList {
    type Value = Vec<IpNetwork>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        parse_cidr(s).map(|n| vec![n])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Cidr(n)) = seq.next_element()? {
            out.push(n);
        }
        Ok(out)
    }
}

/// One element of a list of CIDRs.
struct Cidr(IpNetwork);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        struct One;
        impl Visitor<'_> for One {
            type Value = Cidr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Cidr, E> {
                parse_cidr(s).map(Cidr)
            }
        }
        d.deserialize_str(One)
    }
}

fn parse_cidr<E: de::Error>(s: &str) -> Result<IpNetwork, E> {
    s.parse().map_err(|e| E::custom(format!("{s:?} is not a CIDR ({e}); expected {EXPECTED}")))
}

pub fn is_network_address(n: &IpNetwork) -> bool {
    n.ip() == n.network()
}

/// Is `s` a subnet of one of the cluster networks (same family, inside, not larger)?
pub fn inside_network(s: &IpNetwork, network: &[IpNetwork]) -> bool {
    network.iter().any(|n| n.is_ipv4() == s.is_ipv4() && n.contains(s.network()) && n.prefix() <= s.prefix())
}

pub fn validate_peer(p: &Peer, network: &[IpNetwork]) -> CniResult<()> {
    for s in &p.subnets {
        if !is_network_address(s) {
            return Err(CniError::invalid_config(format!("peer {}: subnet {s} has host bits set", p.underlay)));
        }
        if !inside_network(s, network) {
            return Err(CniError::invalid_config(format!(
                "peer {}: subnet {s} is not inside the cluster network",
                p.underlay
            )));
        }
    }
    if let Some(m) = p.mac.filter(|m| m.is_zero() || m.is_multicast()) {
        return Err(CniError::invalid_config(format!("peer {}: mac {m} is not a unicast address", p.underlay)));
    }
    Ok(())
}

/// Parse a peers list: a JSON list of `{ "underlay": IP, "subnets": [CIDR…], "mac"?: MAC }`, or
/// `{ "peers": [...] }`. `what` names the source in messages.
pub fn parse_peers(bytes: &[u8], what: &str, network: &[IpNetwork]) -> CniResult<Vec<Peer>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<Peer>),
        Wrapped { peers: Vec<Peer> },
    }
    let peers = match serde_json::from_slice::<File>(bytes) {
        Ok(File::List(p)) | Ok(File::Wrapped { peers: p }) => p,
        Err(e) => {
            return Err(CniError::invalid_config(format!("{what} is not valid: {e}"))
                .with_details("expected a JSON list of {\"underlay\": IP, \"subnets\": [CIDR, ...]}"));
        }
    };
    for p in &peers {
        validate_peer(p, network)?;
    }
    Ok(peers)
}

/// Read a peers file maintained by someone else: bounded, never blocking on a FIFO.
pub fn read_peers_file(path: &Path, network: &[IpNetwork]) -> CniResult<Vec<Peer>> {
    let bytes = crate::fs_private::read_regular(path, MAX_PEERS_FILE).map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("cannot read peersFile {}: {e}", path.display()))
            .with_details("create the file (a JSON list of {\"underlay\", \"subnets\"}) or fix peersFile")
    })?;
    parse_peers(&bytes, &format!("peersFile {}", path.display()), network)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the field holds when it is not a CIDR or a list of them: the message says what is expected and
    /// which value is wrong, never serde's "did not match any variant of untagged enum".
    #[test]
    fn one_or_many_says_what_is_expected() {
        #[derive(Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "one_or_many")]
            #[allow(dead_code)]
            network: Vec<IpNetwork>,
        }
        let ok: T = serde_json::from_str(r#"{"network": "10.0.0.0/8"}"#).unwrap();
        assert_eq!(ok.network, vec!["10.0.0.0/8".parse::<IpNetwork>().unwrap()]);
        let ok: T = serde_json::from_str(r#"{"network": ["10.0.0.0/8", "fd00::/48"]}"#).unwrap();
        assert_eq!(ok.network.len(), 2);
        for (raw, wrong) in [
            (r#""ten/8""#, r#""ten/8""#),
            (r#"["10.0.0.0/8", "ten/8"]"#, r#""ten/8""#),
            ("8", "integer `8`"),
            ("[8]", "integer `8`"),
            (r#"{"a": 1}"#, "map"),
            ("null", "null"),
        ] {
            let e = serde_json::from_str::<T>(&format!(r#"{{"network": {raw}}}"#)).unwrap_err().to_string();
            assert!(e.contains(EXPECTED) && e.contains(wrong), "{raw}: {e}");
            assert!(!e.contains("untagged"), "{raw}: {e}");
        }
    }

    #[test]
    fn peers_file_forms_and_mac() {
        let net: Vec<IpNetwork> = vec!["10.244.0.0/16".parse().unwrap()];
        let p = parse_peers(br#"[{"underlay":"198.18.0.3","subnets":"10.244.3.0/24"}]"#, "x", &net).unwrap();
        assert_eq!(p[0].subnets[0].to_string(), "10.244.3.0/24");
        assert_eq!(p[0].vtep_mac().to_string(), "02:72:c6:12:00:03");
        let p = parse_peers(
            br#"{"peers":[{"underlay":"198.18.0.3","subnets":["10.244.3.0/24"],"mac":"c6:d2:32:6f:8f:44"}]}"#,
            "x",
            &net,
        )
        .unwrap();
        assert_eq!(p[0].vtep_mac().to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!(parse_peers(b"nope", "x", &net).unwrap_err().code, 7);
        let e = parse_peers(
            br#"[{"underlay":"198.18.0.3","subnets":"10.244.3.0/24","mac":"01:00:5e:00:00:01"}]"#,
            "x",
            &net,
        )
        .unwrap_err();
        assert!(e.msg.contains("unicast"), "{e}");
        let e = read_peers_file(Path::new("/nonexistent/rcni-peers"), &net).unwrap_err();
        assert_eq!(e.code, 5);
    }
}
