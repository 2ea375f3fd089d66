//! The parts of a plugin's stdin configuration every plugin shares.
//!
//! Each plugin deserializes its own fields from the same bytes (`Request::stdin`); this module handles the
//! common keys: cniVersion, name, type, ipam.type, dns, prevResult, runtimeConfig, args.

use super::error::{CniError, CniResult, code};
use super::result::{AddResult, Dns};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// "0.1.0" when absent (the spec's rule for configs that predate the field).
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// None when there is no `ipam` or its `type` is empty (L2-only).
    pub ipam: Option<IpamRef>,
    pub dns: Option<Dns>,
    pub prev_result: Option<AddResult>,
    pub runtime_config: Map<String, Value>,
    pub args: Option<Value>,
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamRef {
    pub plugin_type: String,
}

/// The network name (code 7): it becomes a directory and file name (host-local, the result cache).
pub fn check_network_name(name: &str) -> CniResult<()> {
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name").with_details("set \"name\" in the config"));
    }
    crate::validate::network_name(name).map_err(|e| {
        CniError::invalid_config(format!("invalid characters found in network name {name:?}: {e}"))
            .with_details(format!("a network name must {}", e.kind.rule()))
    })
}

/// An interface name from a config field (code 7); `field` names it for the operator (`"vxlan.name"`).
pub fn check_device_name(field: &str, value: &str) -> CniResult<()> {
    crate::validate::device_name(value).map_err(|e| CniError::bad_name(code::INVALID_CONFIG, field, value, e))
}

fn field_str(obj: &Map<String, Value>, key: &str) -> CniResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // 7, not 6: the document decoded; one of its fields is wrong, and the fix is in that field (6 is for
        // content that does not decode at all, the spec's "failed to unmarshal network config from bytes").
        Some(other) => Err(CniError::invalid_config(format!("field {key:?} must be a string, got {other}"))),
    }
}

/// A plugin's own view of its stdin config: bytes that are not JSON are code 6 (skel has normally refused
/// them already); a field of the wrong type or value is code 7 with the field's JSON path in the message
/// (`what: mtu: invalid type: string "big", expected u32`), so the operator knows which key to fix.
pub fn decode<T: serde::de::DeserializeOwned>(stdin: &[u8], what: &str) -> CniResult<T> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODE, format!("{what}: error parsing network config: {e}")))?;
    decode_value(&v, what)
}

/// [`decode`] of a config already parsed.
pub fn decode_value<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> CniResult<T> {
    super::decode::from_value(v).map_err(|e| {
        CniError::invalid_config(format!("{what}: {e}"))
            .with_details("fix the field named before the colon: its type or value is not one the plugin reads")
    })
}

impl NetConf {
    pub fn from_slice(bytes: &[u8]) -> CniResult<NetConf> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(code::DECODE, format!("error parsing network config from stdin: {e}")))?;
        Self::from_value(raw)
    }

    pub fn from_value(raw: Value) -> CniResult<NetConf> {
        let obj = raw
            .as_object()
            .ok_or_else(|| CniError::new(code::DECODE, "network config on stdin must be a JSON object"))?;
        let cni_version = field_str(obj, "cniVersion")?.filter(|v| !v.is_empty()).unwrap_or_else(|| "0.1.0".into());
        let name = field_str(obj, "name")?.unwrap_or_default();
        check_network_name(&name)?;
        let plugin_type = field_str(obj, "type")?.unwrap_or_default();
        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(i)) => {
                field_str(i, "type")?.filter(|t| !t.is_empty()).map(|t| IpamRef { plugin_type: t })
            }
            Some(other) => return Err(CniError::invalid_config(format!("\"ipam\" must be an object, got {other}"))),
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(d) => Some(Dns::from_value(d).map_err(|e| CniError::invalid_config(e.msg))?),
        };
        let runtime_config = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(CniError::invalid_config(format!("\"runtimeConfig\" must be an object, got {other}")));
            }
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p) => {
                Some(AddResult::from_value(p, &cni_version).map_err(|e| e.context("could not parse prevResult"))?)
            }
        };
        let args = obj.get("args").filter(|a| !a.is_null()).cloned();
        Ok(NetConf { cni_version, name, plugin_type, ipam, dns, prev_result, runtime_config, args, raw })
    }

    /// `args.cni.<key>` (the CONVENTIONS location for structured runtime arguments).
    pub fn cni_arg(&self, key: &str) -> Option<&Value> {
        self.args.as_ref()?.get("cni")?.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CniResult<NetConf> {
        NetConf::from_value(v)
    }

    #[test]
    fn parses_common_fields() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
            "runtimeConfig": {"mac": "02:00:00:00:00:01"},
            "args": {"cni": {"ips": ["10.1.0.9"]}},
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.9/24"}]}
        }))
        .unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.ipam.as_ref().unwrap().plugin_type, "host-local");
        assert_eq!(c.runtime_config["mac"], "02:00:00:00:00:01");
        assert_eq!(c.cni_arg("ips").unwrap()[0], "10.1.0.9");
        assert_eq!(c.prev_result.as_ref().unwrap().ips.len(), 1);
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"name": "n", "type": "loopback", "ipam": {}})).unwrap();
        assert_eq!(c.cni_version, "0.1.0");
        assert!(c.ipam.is_none(), "ipam without type means L2 only");
        assert!(c.runtime_config.is_empty());
    }

    #[test]
    fn errors_have_codes() {
        let cases: Vec<(Value, u32)> = vec![
            (json!({"type": "bridge"}), 7),
            (json!({"name": "", "type": "bridge"}), 7),
            (json!({"name": "../etc", "type": "bridge"}), 7),
            (json!({"name": "a/b", "type": "bridge"}), 7),
            (json!({"name": 5}), 7),
            (json!({"name": "n", "ipam": "host-local"}), 7),
            (json!({"name": "n", "runtimeConfig": []}), 7),
            (json!({"name": "n", "cniVersion": "1.0.0", "prevResult": {"ips": [{"address": "x"}]}}), 6),
            (json!([]), 6),
        ];
        for (v, want) in cases {
            assert_eq!(parse(v.clone()).unwrap_err().code, want, "{v}");
        }
        assert_eq!(NetConf::from_slice(b"{not json").unwrap_err().code, 6);
    }

    #[test]
    fn name_pattern() {
        for ok in ["cbr0", "k8s-pod-network", "net_1.a"] {
            assert!(check_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", "n\0x"] {
            assert_eq!(check_network_name(bad).unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn device_names_from_config_name_the_field() {
        let e = check_device_name("vxlan.underlay", "eth0\0x").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("vxlan.underlay") && e.msg.contains("NUL"), "{e}");
        assert!(check_device_name("bridge name", "cni0").is_ok());
    }
}
