//! The flannel plugin's own fields, and the delegate config it renders from them and subnet.env — the
//! same config flannel's plugin renders (field for field; see README.md for the few differences).

use std::path::PathBuf;

use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use rcni::subnet_env::SubnetEnv;
use serde_json::{Map, Value, json};

/// flannel's default `dataDir`: where the rendered delegate config of each container is kept for DEL.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

#[derive(Debug, Clone, PartialEq)]
pub struct FlannelConf {
    /// The network name; the delegate's `name`.
    pub name: String,
    /// `cniVersion` as written (None when absent: the delegate then keeps its own).
    pub cni_version: Option<String>,
    /// `subnetFile`: the subnet.env the overlay agent writes.
    pub subnet_file: PathBuf,
    /// `dataDir`: one saved delegate config per container.
    pub data_dir: PathBuf,
    /// `ipam`: the base of the delegate's IPAM section (e.g. its `dataDir`, extra `routes`).
    pub ipam: Map<String, Value>,
    /// `delegate`: merged over the defaults (its own keys win, except `name`, `ipam`, which flannel sets).
    pub delegate: Map<String, Value>,
    /// `runtimeConfig` as the runtime passed it; handed on to the delegate.
    pub runtime_config: Option<Value>,
}

/// A field of the wrong type is a config error (7), as everywhere in rcni: the document decoded, and
/// the operator's fix is in that field (6 is for stdin that is not a JSON object at all).
fn decode_err(field: &str, want: &str, got: &Value) -> CniError {
    CniError::invalid_config(format!("field {field:?} must be {want}, got {got}"))
}

fn path_field(obj: &Map<String, Value>, field: &str, default: &str) -> CniResult<PathBuf> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(PathBuf::from(default)),
        Some(Value::String(s)) if s.is_empty() => Err(CniError::invalid_config(format!("{field:?} is empty"))
            .with_details(format!("leave it out for the default {default}, or name a path"))),
        Some(Value::String(s)) => Ok(PathBuf::from(s)),
        Some(other) => Err(decode_err(field, "a path (string)", other)),
    }
}

fn object_field(obj: &Map<String, Value>, field: &str) -> CniResult<Map<String, Value>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(decode_err(field, "an object", other)),
    }
}

impl FlannelConf {
    /// The flannel fields of the plugin's stdin config. `name` and `cniVersion` were checked by the skel.
    pub fn parse(raw: &Value) -> CniResult<FlannelConf> {
        let obj = raw.as_object().ok_or_else(|| CniError::new(code::DECODE, "network config must be an object"))?;
        let delegate = object_field(obj, "delegate")?;
        if delegate.get("type").is_some_and(|t| !t.is_string()) {
            return Err(CniError::invalid_config("\"delegate\" field \"type\" must be a string")
                .with_details("name the plugin to hand the pod to, e.g. \"bridge\" (the default)"));
        }
        if delegate.contains_key("name") {
            return Err(CniError::invalid_config("\"delegate\" must not have a \"name\" field")
                .with_details("flannel sets it to the network's name; remove delegate.name"));
        }
        if delegate.contains_key("ipam") {
            return Err(CniError::invalid_config("\"delegate\" must not have an \"ipam\" field").with_details(
                "flannel builds it from subnet.env; put IPAM settings (dataDir, routes) in the flannel config's \"ipam\"",
            ));
        }
        let ipam = object_field(obj, "ipam")?;
        if let Some(routes) = ipam.get("routes") {
            check_routes(routes)?;
        }
        Ok(FlannelConf {
            name: obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            cni_version: obj.get("cniVersion").and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string),
            subnet_file: path_field(obj, "subnetFile", rcni::subnet_env::DEFAULT_PATH)?,
            data_dir: path_field(obj, "dataDir", DEFAULT_DATA_DIR)?,
            ipam,
            delegate,
            runtime_config: obj.get("runtimeConfig").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// Just `dataDir`: DEL and CHECK need nothing else, and must not fail on fields only ADD uses.
    pub fn data_dir_of(raw: &Value) -> CniResult<PathBuf> {
        let obj = raw.as_object().ok_or_else(|| CniError::new(code::DECODE, "network config must be an object"))?;
        path_field(obj, "dataDir", DEFAULT_DATA_DIR)
    }

    /// The delegate's config for a node whose subnet.env is `env`, rendered as flannel's plugin does:
    /// `delegate` with `name`, `runtimeConfig`, `cniVersion` set from this config and `type` (bridge),
    /// `ipMasq` (not FLANNEL_IPMASQ), `mtu` (FLANNEL_MTU) and, for a bridge, `isGateway` (true) defaulted;
    /// `ipam` is this config's `ipam` with `type` defaulted to host-local, `ranges` from the subnets and
    /// the cluster networks appended to its `routes`.
    pub fn delegate_config(&self, env: &SubnetEnv) -> Map<String, Value> {
        let mut d = self.delegate.clone();
        d.insert("name".into(), self.name.clone().into());
        if let Some(rc) = &self.runtime_config {
            d.insert("runtimeConfig".into(), rc.clone());
        }
        d.entry("type").or_insert_with(|| "bridge".into());
        // The agent masquerades itself with FLANNEL_IPMASQ=true; otherwise the bridge must.
        d.entry("ipMasq").or_insert_with(|| (!env.ipmasq).into());
        d.entry("mtu").or_insert_with(|| env.mtu.into());
        if d.get("type").and_then(Value::as_str) == Some("bridge") {
            d.entry("isGateway").or_insert(Value::Bool(true));
        }
        if let Some(v) = &self.cni_version {
            d.insert("cniVersion".into(), v.clone().into());
        }
        d.insert("ipam".into(), Value::Object(self.delegate_ipam(env)));
        d
    }

    fn delegate_ipam(&self, env: &SubnetEnv) -> Map<String, Value> {
        let mut ipam = self.ipam.clone();
        ipam.entry("type").or_insert_with(|| "host-local".into());
        let mut ranges = Vec::new();
        if let Some(sn) = env.subnet_network() {
            ranges.push(json!([{"subnet": sn.to_string()}]));
        }
        if let Some(sn) = env.ipv6_subnet_network() {
            ranges.push(json!([{"subnet": sn.to_string()}]));
        }
        ipam.insert("ranges".into(), Value::Array(ranges));
        let mut routes = match ipam.remove("routes") {
            Some(Value::Array(r)) => r,
            _ => Vec::new(),
        };
        let (v4, v6) = env.network_routes();
        routes.extend(v4.iter().map(|n| json!({"dst": n.to_string()})));
        routes.extend(v6.iter().map(|n| json!({"dst": n.to_string()})));
        ipam.insert("routes".into(), Value::Array(routes));
        ipam
    }
}

/// `ipam.routes` must be a list of routes (`{"dst": "<cidr>", ...}`), as flannel requires when it reads them.
fn check_routes(routes: &Value) -> CniResult<()> {
    let bad = |what: String| {
        CniError::invalid_config(format!("\"ipam\" field \"routes\": {what}"))
            .with_details("routes are a list like [{\"dst\": \"0.0.0.0/0\"}]")
    };
    let list = routes.as_array().ok_or_else(|| bad(format!("must be a list, got {routes}")))?;
    for r in list {
        let dst = r.get("dst").and_then(Value::as_str).ok_or_else(|| bad(format!("{r} has no \"dst\"")))?;
        dst.parse::<ipnetwork::IpNetwork>().map_err(|_| bad(format!("\"dst\" {dst:?} is not an address/prefix")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(text: &str) -> SubnetEnv {
        SubnetEnv::parse(text, Path::new("/run/flannel/subnet.env")).unwrap()
    }

    const ENV_V4: &str =
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn parse(v: Value) -> CniResult<FlannelConf> {
        FlannelConf::parse(&v)
    }

    /// What flannel's plugin sends for the kube-flannel conflist's flannel entry (its README's rendering
    /// rules applied by hand: defaults under the delegate's own keys, ranges from the masked subnet,
    /// routes to the network, cniVersion and name from the conf).
    #[test]
    fn kube_flannel_entry_renders_like_flannel() {
        let c = parse(json!({"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
                             "delegate": {"hairpinMode": true, "isDefaultGateway": true}}))
        .unwrap();
        assert_eq!(c.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(c.data_dir, Path::new("/var/lib/cni/flannel"));
        let d = Value::Object(c.delegate_config(&env(ENV_V4)));
        assert_eq!(
            d,
            json!({
                "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge",
                "hairpinMode": true, "isDefaultGateway": true, "isGateway": true,
                "ipMasq": false, "mtu": 1450,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.5.0/24"}]],
                         "routes": [{"dst": "10.244.0.0/16"}]}
            })
        );
        // Keys sorted, compact: the bytes Go's json.Marshal of the same map gives.
        let bytes = serde_json::to_string(&d).unwrap();
        assert!(bytes.starts_with(r#"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges""#));
    }

    #[test]
    fn delegate_keys_win_over_defaults_and_ipam_base_is_kept() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "flannel",
            "ipam": {"dataDir": "/x", "routes": [{"dst": "192.168.0.0/16", "gw": "10.244.5.254"}], "ranges": "ignored"},
            "runtimeConfig": {"portMappings": []},
            "delegate": {"type": "bridge", "bridge": "kube-bridge", "ipMasq": true, "mtu": 1400, "isGateway": false,
                         "cniVersion": "0.4.0", "runtimeConfig": {"x": 1}}}))
        .unwrap();
        let e = env("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_NETWORK=fd00:10::/56\n\
                     FLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let d = Value::Object(c.delegate_config(&e));
        assert_eq!(d["ipMasq"], true);
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["isGateway"], false);
        assert_eq!(d["bridge"], "kube-bridge");
        assert_eq!(d["cniVersion"], "1.0.0", "the conf's cniVersion overrides the delegate's");
        assert_eq!(d["runtimeConfig"], json!({"portMappings": []}), "the runtime's runtimeConfig wins");
        assert_eq!(
            d["ipam"],
            json!({"type": "host-local", "dataDir": "/x",
                   "ranges": [[{"subnet": "10.244.5.0/24"}], [{"subnet": "fd00:10:0:5::/64"}]],
                   "routes": [{"dst": "192.168.0.0/16", "gw": "10.244.5.254"}, {"dst": "10.244.0.0/16"},
                              {"dst": "fd00:10::/56"}]})
        );
    }

    #[test]
    fn non_bridge_delegate_gets_no_is_gateway_and_ipmasq_follows_the_agent() {
        let c = parse(json!({"name": "n", "type": "flannel", "delegate": {"type": "ptp"}})).unwrap();
        let e =
            env("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n");
        let d = c.delegate_config(&e);
        assert!(!d.contains_key("isGateway"));
        assert!(!d.contains_key("cniVersion"), "no cniVersion in the conf: the delegate keeps its own (none)");
        assert_eq!(d["ipMasq"], true);
        assert_eq!(d["mtu"], 1472);
    }

    #[test]
    fn refuses_what_flannel_refuses_naming_the_field() {
        let cases = [
            (json!({"name": "n", "delegate": {"name": "x"}}), 7, "\"name\""),
            (json!({"name": "n", "delegate": {"ipam": {}}}), 7, "\"ipam\""),
            (json!({"name": "n", "delegate": {"type": 5}}), 7, "\"type\""),
            // A value of the wrong type is invalid config (7), as everywhere (cni::decode); 6 is for input that
            // is not JSON at all.
            (json!({"name": "n", "delegate": "bridge"}), 7, "delegate"),
            (json!({"name": "n", "ipam": []}), 7, "ipam"),
            (json!({"name": "n", "ipam": {"routes": {"dst": "0.0.0.0/0"}}}), 7, "routes"),
            (json!({"name": "n", "ipam": {"routes": [{"dst": "nope"}]}}), 7, "routes"),
            (json!({"name": "n", "subnetFile": ""}), 7, "subnetFile"),
            (json!({"name": "n", "dataDir": 3}), 7, "dataDir"),
        ];
        for (v, want, field) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code, want, "{v}: {e}");
            assert!(e.msg.contains(field), "{v}: {e}");
        }
    }
}
