//! flannel's network config (`<prefix>/config`) and its lease keys and values.

use ipnetwork::Ipv4Network;
use rcni::net::Mac;
use rcni::overlay::Peer;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub network: Ipv4Network,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub vni: u32,
    pub port: u16,
    pub direct_routing: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    network: Option<String>,
    subnet_len: Option<u8>,
    subnet_min: Option<Ipv4Addr>,
    subnet_max: Option<Ipv4Addr>,
    #[serde(default)]
    backend: RawBackend,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawBackend {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "VNI")]
    vni: Option<u32>,
    port: Option<u16>,
    #[serde(default)]
    direct_routing: bool,
}

/// The etcdctl command that writes a working config (for error messages).
pub fn fix_hint(prefix: &str) -> String {
    format!("etcdctl put {prefix}/config '{{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}'")
}

impl NetConfig {
    /// Parse and complete with flannel's defaults: SubnetLen 24 (network length + 2 for networks smaller
    /// than /22), SubnetMin the second subnet, SubnetMax the last one, VNI 1, port 8472.
    pub fn parse(bytes: &[u8]) -> Result<NetConfig, String> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let network: Ipv4Network = raw
            .network
            .ok_or("\"Network\" is missing (rcni-overlay carries IPv4 pod networks)")?
            .parse()
            .map_err(|e| format!("\"Network\": {e}"))?;
        if network.ip() != network.network() {
            return Err(format!("\"Network\" {network} has host bits set"));
        }
        let default_len = if network.prefix() <= 22 { 24 } else { network.prefix() + 2 };
        let subnet_len = raw.subnet_len.unwrap_or(default_len);
        if subnet_len <= network.prefix() || subnet_len > 30 {
            return Err(format!(
                "\"SubnetLen\" {subnet_len} must be longer than the network's /{} and at most 30",
                network.prefix()
            ));
        }
        let size = 1u32 << (32 - subnet_len);
        let base = u32::from(network.network());
        let last = base + ((1u64 << (32 - network.prefix())) as u32).wrapping_sub(size);
        let subnet_min = raw.subnet_min.unwrap_or(Ipv4Addr::from(base + size));
        let subnet_max = raw.subnet_max.unwrap_or(Ipv4Addr::from(last));
        for (what, a) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(a) || (u32::from(a) - base) % size != 0 {
                return Err(format!("\"{what}\" {a} is not the start of a /{subnet_len} inside {network}"));
            }
        }
        if subnet_min > subnet_max {
            return Err(format!("\"SubnetMin\" {subnet_min} is above \"SubnetMax\" {subnet_max}"));
        }
        match raw.backend.kind.as_deref() {
            Some("vxlan") => {}
            other => {
                return Err(format!(
                    "\"Backend\": {{\"Type\": {other:?}}} is not supported; rcni-overlay is a vxlan backend"
                ));
            }
        }
        let vni = raw.backend.vni.unwrap_or(1);
        if vni == 0 || vni >= 1 << 24 {
            return Err(format!("\"Backend.VNI\" {vni} is out of range (1..16777215)"));
        }
        let port = raw.backend.port.filter(|p| *p != 0).unwrap_or(8472);
        Ok(NetConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            vni,
            port,
            direct_routing: raw.backend.direct_routing,
        })
    }

    /// Every subnet a node may lease, in order.
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let size = 1u32 << (32 - self.subnet_len);
        let (lo, hi) = (u32::from(self.subnet_min), u32::from(self.subnet_max));
        (0..=(hi - lo) / size).map(move |i| Ipv4Network::new(Ipv4Addr::from(lo + i * size), self.subnet_len).unwrap())
    }

    /// May `s` be leased under this config?
    pub fn fits(&self, s: &Ipv4Network) -> bool {
        s.prefix() == self.subnet_len && s.network() >= self.subnet_min && s.network() <= self.subnet_max
    }
}

/// `10.244.5.0-24` (flannel's key for a subnet).
pub fn subnet_key(s: &Ipv4Network) -> String {
    format!("{}-{}", s.network(), s.prefix())
}

/// The subnet of a key below `<prefix>/subnets/` (dual-stack keys `v4&v6` carry the v4 part first).
pub fn parse_subnet_key(k: &str) -> Option<Ipv4Network> {
    let v4 = k.split('&').next()?;
    let (ip, len) = v4.split_once('-')?;
    let n = Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (n.ip() == n.network()).then_some(n)
}

/// A lease's value, flannel's `LeaseAttrs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: IpAddr,
    #[serde(default)]
    pub backend_type: String,
    #[serde(default)]
    pub backend_data: Option<BackendData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    #[serde(rename = "VtepMAC", default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

impl LeaseAttrs {
    pub fn ours(public_ip: IpAddr, vni: u32, mac: Mac) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData { vni, vtep_mac: Some(mac.to_string()) }),
        }
    }

    /// The peer this lease describes, or why it cannot be used.
    pub fn peer(&self, subnet: Ipv4Network) -> Result<Peer, String> {
        if self.backend_type != "vxlan" {
            return Err(format!("backend {:?}, not vxlan", self.backend_type));
        }
        let mac = match self.backend_data.as_ref().and_then(|d| d.vtep_mac.as_deref()).filter(|m| !m.is_empty()) {
            Some(m) => Some(m.parse::<Mac>().map_err(|e| format!("VtepMAC {m:?}: {e}"))?),
            None => None,
        };
        Ok(Peer { underlay: self.public_ip, subnets: vec![subnet.into()], mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_defaults() {
        let c = NetConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!((c.subnet_len, c.vni, c.port), (24, 1, 8472));
        assert_eq!(c.subnet_min.to_string(), "10.244.1.0");
        assert_eq!(c.subnet_max.to_string(), "10.244.255.0");
        assert_eq!(c.candidates().count(), 255);
        let c = NetConfig::parse(br#"{"Network":"10.10.0.0/24","Backend":{"Type":"vxlan","VNI":4}}"#).unwrap();
        assert_eq!(c.subnet_len, 26);
        assert!(NetConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#).is_err());
        assert!(NetConfig::parse(b"{}").unwrap_err().contains("Network"));
    }

    #[test]
    fn keys_and_values() {
        let s: Ipv4Network = "10.244.5.0/24".parse().unwrap();
        assert_eq!(subnet_key(&s), "10.244.5.0-24");
        assert_eq!(parse_subnet_key("10.244.5.0-24&fd00::-64"), Some(s));
        assert_eq!(parse_subnet_key("10.244.5.1-24"), None);
        let v: LeaseAttrs = serde_json::from_str(
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        )
        .unwrap();
        let p = v.peer(s).unwrap();
        assert_eq!(p.mac.unwrap().to_string(), "c6:d2:32:6f:8f:44");
        let ours = serde_json::to_string(&LeaseAttrs::ours(
            "198.18.0.1".parse().unwrap(),
            1,
            Mac::from_ip("198.18.0.1".parse().unwrap()),
        ))
        .unwrap();
        assert_eq!(
            ours,
            r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:72:c6:12:00:01"}}"#
        );
    }
}
