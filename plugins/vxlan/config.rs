//! The vxlan plugin's configuration. See plugins/vxlan/README.md for the user-facing description.

use ipnetwork::IpNetwork;
use rcni::cni::serde_util::{default_true, lenient_bool};
use rcni::cni::{CniError, CniResult};
use rcni::overlay::peer::{Peer, inside_network, is_network_address, one_or_many, validate_peer};
use rcni::overlay::{UnderlayChoice, VtepConf};
use serde::Deserialize;
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

fn default_bridge() -> String {
    "cni0".into()
}

impl VxlanConf {
    pub fn parse(stdin: &[u8]) -> CniResult<VxlanConf> {
        let c = Self::decode(stdin)?;
        c.validate()?;
        Ok(c)
    }

    /// The fields as written, without the checks of `parse` (teardown reads only what it needs).
    pub fn decode(stdin: &[u8]) -> CniResult<VxlanConf> {
        rcni::cni::config::decode(stdin, "failed to load vxlan netconf")
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
            if !inside_network(s, &self.network) {
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

    pub fn vtep(&self) -> VtepConf {
        VtepConf { name: self.device_name(), vni: self.vni(), port: self.port(), learning: self.vxlan.learning }
    }

    pub fn underlay_choice(&self) -> UnderlayChoice {
        UnderlayChoice { device: self.vxlan.underlay.clone(), local: self.vxlan.local, mtu: self.vxlan.mtu }
    }
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
}
