//! The vxlan plugin's configuration. See plugins/vxlan/README.md for the user-facing description.

use ipnetwork::IpNetwork;
use rcni::cni::serde_util::{default_true, lenient_bool};
use rcni::cni::{CniError, CniResult};
use serde::{Deserialize, Deserializer};
use std::net::IpAddr;
use std::path::PathBuf;

/// IANA's VXLAN port, which NICs offload (the Linux default, 8472, predates the assignment).
pub const DEFAULT_PORT: u16 = 4789;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VxlanConf {
    /// The cluster's pod network(s): traffic to them goes over the overlay and is never masqueraded.
    #[serde(deserialize_with = "one_or_many")]
    pub network: Vec<IpNetwork>,
    /// This node's pod subnet(s), when `ipam` is not given: host-local ranges are generated from them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub subnet: Vec<IpNetwork>,
    #[serde(default)]
    pub vxlan: DeviceConf,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub ip_masq: bool,
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub hairpin_mode: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub peers_file: Option<PathBuf>,
    /// host-local's dataDir when the IPAM config is generated from `subnet`.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// DEL leaves the kernel's slow unregister of the veth pair to a detached child (as bridge).
    #[serde(default = "default_true", deserialize_with = "lenient_bool")]
    pub delete_link_in_background: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConf {
    /// Device name; default `rcni.<vni>`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vni: Option<u32>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Underlay interface name; default: the device of the default route.
    #[serde(default)]
    pub underlay: Option<String>,
    /// Local underlay address; default: the first global address of the underlay device.
    #[serde(default)]
    pub local: Option<IpAddr>,
    /// Default: underlay MTU − 50 (IPv4 underlay) or − 70 (IPv6).
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub learning: bool,
}

/// One node of the overlay: its underlay address and its pod subnets.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Peer {
    pub underlay: IpAddr,
    #[serde(deserialize_with = "one_or_many")]
    pub subnets: Vec<IpNetwork>,
}

fn default_bridge() -> String {
    "cni0".into()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNetwork>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(IpNetwork),
        Many(Vec<IpNetwork>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => vec![n],
        OneOrMany::Many(v) => v,
    })
}

fn is_network_address(n: &IpNetwork) -> bool {
    n.ip() == n.network()
}

impl VxlanConf {
    pub fn parse(stdin: &[u8]) -> CniResult<VxlanConf> {
        let c: VxlanConf = serde_json::from_slice(stdin)
            .map_err(|e| CniError::invalid_config(format!("failed to load vxlan netconf: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> CniResult<()> {
        if self.network.is_empty() {
            return Err(CniError::invalid_config("\"network\" is empty")
                .with_details("set network to the cluster pod CIDR(s), e.g. \"10.244.0.0/16\""));
        }
        for n in self.network.iter().chain(&self.subnet) {
            if !is_network_address(n) {
                return Err(CniError::invalid_config(format!("{n} has host bits set")).with_details(format!(
                    "write it as {}/{}",
                    n.network(),
                    n.prefix()
                )));
            }
        }
        for s in &self.subnet {
            if !self
                .network
                .iter()
                .any(|n| n.is_ipv4() == s.is_ipv4() && n.contains(s.network()) && n.prefix() <= s.prefix())
            {
                return Err(CniError::invalid_config(format!("subnet {s} is not inside the cluster network"))
                    .with_details(format!(
                        "network is {:?}",
                        self.network.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                    )));
            }
        }
        if let Some(vni) = self.vxlan.vni {
            if vni == 0 || vni >= 1 << 24 {
                return Err(CniError::invalid_config(format!("vxlan.vni {vni} is out of range (1..16777215)")));
            }
        }
        if self.vxlan.port == Some(0) {
            return Err(CniError::invalid_config("vxlan.port 0 is not a port"));
        }
        rcni::cni::config::check_device_name("vxlan.name", &self.device_name())?;
        rcni::cni::config::check_device_name("bridge name", &self.bridge)?;
        self.vxlan.underlay.as_deref().map_or(Ok(()), |u| rcni::cni::config::check_device_name("vxlan.underlay", u))?;
        for p in &self.peers {
            validate_peer(p, &self.network)?;
        }
        Ok(())
    }

    pub fn vni(&self) -> u32 {
        self.vxlan.vni.unwrap_or(1)
    }

    pub fn port(&self) -> u16 {
        self.vxlan.port.unwrap_or(DEFAULT_PORT)
    }

    pub fn device_name(&self) -> String {
        self.vxlan.name.clone().unwrap_or_else(|| format!("rcni.{}", self.vni()))
    }
}

pub fn validate_peer(p: &Peer, network: &[IpNetwork]) -> CniResult<()> {
    for s in &p.subnets {
        if !is_network_address(s) {
            return Err(CniError::invalid_config(format!("peer {}: subnet {s} has host bits set", p.underlay)));
        }
        if !network.iter().any(|n| n.is_ipv4() == s.is_ipv4() && n.contains(s.network()) && n.prefix() <= s.prefix()) {
            return Err(CniError::invalid_config(format!(
                "peer {}: subnet {s} is not inside the cluster network",
                p.underlay
            )));
        }
    }
    Ok(())
}

/// Read a peers file: a JSON list of `{ "underlay": IP, "subnets": [CIDR…] }` (or `{ "peers": [...] }`).
pub fn read_peers_file(path: &std::path::Path, network: &[IpNetwork]) -> CniResult<Vec<Peer>> {
    let bytes = std::fs::read(path).map_err(|e| {
        CniError::new(rcni::cni::error::code::IO_FAILURE, format!("cannot read peersFile {}: {e}", path.display()))
            .with_details("create the file (a JSON list of {\"underlay\", \"subnets\"}) or fix peersFile")
    })?;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<Peer>),
        Wrapped { peers: Vec<Peer> },
    }
    let peers = match serde_json::from_slice::<File>(&bytes) {
        Ok(File::List(p)) | Ok(File::Wrapped { peers: p }) => p,
        Err(e) => {
            return Err(CniError::invalid_config(format!("peersFile {} is not valid: {e}", path.display()))
                .with_details("expected a JSON list of {\"underlay\": IP, \"subnets\": [CIDR, ...]}"));
        }
    };
    for p in &peers {
        validate_peer(p, network)?;
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_shorthands() {
        let c = VxlanConf::parse(br#"{"network":"10.244.0.0/16","subnet":"10.244.1.0/24"}"#).unwrap();
        assert_eq!((c.vni(), c.port(), c.device_name()), (1, 4789, "rcni.1".to_string()));
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.subnet.len(), 1);
        let c = VxlanConf::parse(
            br#"{"network":["10.244.0.0/16","fd00:244::/48"],"vxlan":{"vni":42,"port":8472},
                 "peers":[{"underlay":"198.18.0.2","subnets":["10.244.2.0/24","fd00:244:0:2::/64"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.device_name(), "rcni.42");
        assert_eq!(c.peers[0].subnets.len(), 2);
    }

    #[test]
    fn invalid() {
        for (js, needle) in [
            (r#"{"network":[]}"#, "empty"),
            (r#"{"network":"10.244.0.1/16"}"#, "host bits"),
            (r#"{"network":"10.244.0.0/16","subnet":"10.245.1.0/24"}"#, "not inside"),
            (r#"{"network":"10.244.0.0/16","vxlan":{"vni":16777216}}"#, "vni"),
            (r#"{"network":"10.244.0.0/16","vxlan":{"name":"a-very-long-vxlan-name"}}"#, "vxlan.name"),
            (
                r#"{"network":"10.244.0.0/16","peers":[{"underlay":"198.18.0.2","subnets":["10.9.0.0/24"]}]}"#,
                "not inside",
            ),
            (r#"{}"#, "failed to load"),
        ] {
            let e = VxlanConf::parse(js.as_bytes()).unwrap_err();
            assert_eq!(e.code, 7, "{js}");
            assert!(e.msg.contains(needle), "{js}: {e}");
        }
    }

    #[test]
    fn peers_file_forms() {
        let dir = std::env::temp_dir().join(format!("rcni-vxlan-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let net: Vec<IpNetwork> = vec!["10.244.0.0/16".parse().unwrap()];
        let f = dir.join("p.json");
        std::fs::write(&f, r#"[{"underlay":"198.18.0.3","subnets":"10.244.3.0/24"}]"#).unwrap();
        assert_eq!(read_peers_file(&f, &net).unwrap()[0].subnets[0].to_string(), "10.244.3.0/24");
        std::fs::write(&f, r#"{"peers":[{"underlay":"198.18.0.3","subnets":["10.244.3.0/24"]}]}"#).unwrap();
        assert_eq!(read_peers_file(&f, &net).unwrap().len(), 1);
        std::fs::write(&f, "nope").unwrap();
        assert_eq!(read_peers_file(&f, &net).unwrap_err().code, 7);
        assert_eq!(read_peers_file(&dir.join("missing"), &net).unwrap_err().code, 5);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
