//! The bridge plugin's configuration: every field of the reference plugin, with its defaults.

use crate::cni::serde_util::{default_true, lenient_bool};
use crate::cni::{CniError, CniResult};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_gateway: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_default_gateway: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub force_address: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub ip_masq: bool,
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    /// 0 = the kernel's default.
    #[serde(default)]
    pub mtu: u32,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub hairpin_mode: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: i64,
    #[serde(default)]
    pub vlan_trunk: Vec<Trunk>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub preserve_default_vlan: bool,
    #[serde(default, rename = "enabledad", deserialize_with = "lenient_bool")]
    pub enable_dad: bool,
    #[serde(default, rename = "macspoofchk", deserialize_with = "lenient_bool")]
    pub mac_spoof_check: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub disable_container_interface: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub port_isolation: bool,
    /// rcni: DEL leaves the kernel's slow unregister of the veth pair to a detached child (see README).
    #[serde(default = "default_true", deserialize_with = "lenient_bool")]
    pub delete_link_in_background: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Trunk {
    #[serde(default, rename = "id")]
    pub id: Option<i64>,
    #[serde(default, rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    pub max_id: Option<i64>,
}

fn default_bridge() -> String {
    "cni0".into()
}

impl BridgeConf {
    /// Parse and validate (ADD, CHECK, STATUS). `has_ipam` tells whether an IPAM plugin is configured.
    pub fn parse(stdin: &[u8], has_ipam: bool) -> CniResult<BridgeConf> {
        let c = Self::from_json(stdin)?;
        c.validate(has_ipam)?;
        Ok(c)
    }

    /// The fields as written, without the checks of `parse` (teardown reads only what it needs).
    pub fn from_json(stdin: &[u8]) -> CniResult<BridgeConf> {
        let mut c: BridgeConf = crate::cni::config::decode(stdin, "failed to load netconf")?;
        if c.is_default_gateway {
            c.is_gateway = true;
        }
        Ok(c)
    }

    fn validate(&self, has_ipam: bool) -> CniResult<()> {
        let c = self;
        crate::cni::config::check_device_name("bridge name", &c.bridge)?;
        if !(0..=4094).contains(&c.vlan) {
            return Err(CniError::invalid_config(format!("invalid VLAN ID {} (must be between 0 and 4094)", c.vlan)));
        }
        c.trunk_vids()?;
        if c.vlan > 1 && c.is_gateway {
            // The reference puts the gateway on a `<bridge>.<vlan>` veth that is a port of that VLAN; the
            // bridge device itself is only in VLAN 1, so a gateway there would be unreachable for the pods.
            return Err(CniError::new(
                crate::cni::error::code::UNSUPPORTED_FIELD,
                format!("\"vlan\": {} together with \"isGateway\"/\"isDefaultGateway\" is not supported yet", c.vlan),
            )
            .with_details("use vlan with an external gateway (isGateway false), or no vlan"));
        }
        if c.hairpin_mode && c.promisc_mode {
            return Err(CniError::invalid_config("cannot set hairpin mode and promiscuous mode at the same time")
                .with_details("set only one of hairpinMode and promiscMode"));
        }
        if c.disable_container_interface && has_ipam {
            return Err(CniError::invalid_config("cannot use IPAM when DisableContainerInterface flag is set")
                .with_details("remove the ipam section or disableContainerInterface"));
        }
        Ok(())
    }

    /// The tagged VLAN IDs of `vlanTrunk`, validated, sorted and without duplicates.
    pub fn trunk_vids(&self) -> CniResult<Vec<u16>> {
        let mut vids = Vec::new();
        let check = |v: i64, what: &str| -> CniResult<u16> {
            if (1..=4094).contains(&v) {
                Ok(v as u16)
            } else {
                Err(CniError::invalid_config(format!("incorrect trunk {what} parameter: {v} is not in 1..4094")))
            }
        };
        for t in &self.vlan_trunk {
            if let Some(id) = t.id {
                vids.push(check(id, "id")?);
            }
            match (t.min_id, t.max_id) {
                (Some(lo), Some(hi)) => {
                    let (lo, hi) = (check(lo, "minID")?, check(hi, "maxID")?);
                    if lo > hi {
                        return Err(CniError::invalid_config("minID is greater than maxID in trunk parameter"));
                    }
                    vids.extend(lo..=hi);
                }
                (None, None) => {}
                _ => {
                    return Err(CniError::invalid_config(
                        "minID and maxID should be configured simultaneously, minID or maxID is missing",
                    ));
                }
            }
        }
        vids.sort_unstable();
        vids.dedup();
        Ok(vids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(js: &str) -> CniResult<BridgeConf> {
        BridgeConf::parse(js.as_bytes(), false)
    }

    #[test]
    fn defaults_match_reference() {
        let c = parse(r#"{"name":"n","type":"bridge"}"#).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin_mode && !c.preserve_default_vlan);
        assert_eq!(c.mtu, 0);
        assert!(parse(r#"{"isDefaultGateway":true}"#).unwrap().is_gateway);
        assert!(parse(r#"{"portIsolation":"true"}"#).unwrap().port_isolation);
    }

    #[test]
    fn trunks() {
        let c = parse(r#"{"vlanTrunk":[{"id":42},{"minID":10,"maxID":12},{"id":11}]}"#).unwrap();
        assert_eq!(c.trunk_vids().unwrap(), vec![10, 11, 12, 42]);
    }

    #[test]
    fn invalid_configs() {
        for (js, needle) in [
            (r#"{"vlan":4095}"#, "invalid VLAN ID 4095"),
            (r#"{"vlanTrunk":[{"minID":5}]}"#, "simultaneously"),
            (r#"{"vlanTrunk":[{"minID":9,"maxID":5}]}"#, "greater"),
            (r#"{"vlanTrunk":[{"id":0}]}"#, "trunk id"),
            (r#"{"hairpinMode":true,"promiscMode":true}"#, "hairpin"),
            (r#"{"bridge":"a-very-long-bridge-name"}"#, "invalid bridge name"),
            (r#"{"mtu":"big"}"#, "failed to load netconf"),
        ] {
            let e = parse(js).unwrap_err();
            assert_eq!(e.code, 7, "{js}");
            assert!(e.msg.contains(needle), "{js}: {e}");
        }
        let e = parse(r#"{"vlan":100,"isGateway":true}"#).unwrap_err();
        assert_eq!(e.code, 2, "unsupported field");
        assert!(e.msg.contains("\"vlan\": 100"), "{e}");
        assert!(parse(r#"{"vlan":100}"#).is_ok());
        let e = BridgeConf::parse(br#"{"disableContainerInterface":true}"#, true).unwrap_err();
        assert!(e.msg.contains("cannot use IPAM"));
    }
}
