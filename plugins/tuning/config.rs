//! The tuning config as the reference reads it, merged into one set of wanted changes.
//!
//! Sources, low to high: the plugin's own fields; `CNI_ARGS` `MAC=`; `runtimeConfig.mac` (capability
//! `mac`); `args.cni.{sysctl,mac,promisc,mtu,allmulti,txQLen}`. An empty MAC string at any level means
//! "not given".

use rcni::cni::error::code;
use rcni::cni::skel::Request;
use rcni::cni::{CniError, CniResult};
use rcni::net::Mac;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::path::PathBuf;

/// Where the reference keeps its backups of changed link attributes (its `dataDir` default).
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

/// What this invocation asks for.
#[derive(Debug, Default)]
pub struct Tuning {
    /// In the order written (config first, then keys `args.cni.sysctl` adds; a key it repeats keeps its
    /// place and takes the new value).
    pub sysctls: Vec<(String, String)>,
    pub mac: Option<Mac>,
    /// Only `true` changes anything: `false` leaves the mode as it is (the reference's rule).
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
    pub data_dir: PathBuf,
}

impl Tuning {
    /// Does it change any link attribute (and so need a backup)?
    pub fn changes_link(&self) -> bool {
        self.mac.is_some() || self.promisc || self.mtu.is_some() || self.allmulti.is_some() || self.txqlen.is_some()
    }
}

/// `sysctl` as an ordered list; the same key twice is an error (in JSON a later duplicate would silently
/// win, hiding a mistake).
#[derive(Debug, Default)]
struct Sysctls(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sysctls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of sysctl keys to string values")
            }
            fn visit_unit<E>(self) -> Result<Sysctls, E> {
                Ok(Sysctls::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Sysctls, A::Error> {
                use serde::de::Error;
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    let v: serde_json::Value = m.next_value()?;
                    let serde_json::Value::String(v) = v else {
                        return Err(A::Error::custom(format!(
                            "sysctl {k:?}: the value must be a string (write \"{}\")",
                            v.to_string().trim_matches('"')
                        )));
                    };
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(A::Error::custom(format!("duplicated sysctl key {k:?}: give each key once")));
                    }
                    out.push((k, v));
                }
                Ok(Sysctls(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Only the two sysctl maps, read from the raw bytes: a parsed `Value` would already have dropped
/// duplicate keys and the order.
#[derive(Deserialize, Default)]
struct RawSysctls {
    #[serde(default)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniSysctls>,
}

#[derive(Deserialize, Default)]
struct RawCniSysctls {
    #[serde(default)]
    sysctl: Option<Sysctls>,
}

/// The field at `path` in the config, decoded; absent or null is `None`. Errors name the field.
fn field<T: DeserializeOwned>(conf: &Value, path: &[&str]) -> CniResult<Option<T>> {
    let mut v = conf;
    for key in path {
        match v.get(key) {
            Some(next) if !next.is_null() => v = next,
            _ => return Ok(None),
        }
    }
    T::deserialize(v).map(Some).map_err(|e| CniError::invalid_config(format!("{}: {e}", path.join("."))))
}

fn parse_mac(s: &str, field: &str) -> CniResult<Mac> {
    let mac: Mac = s.parse().map_err(|_| {
        CniError::invalid_config(format!("{field}: invalid MAC address {s:?}"))
            .with_details("write it as six hex bytes, e.g. 02:42:ac:11:00:02")
    })?;
    if mac.is_multicast() || mac.is_zero() {
        return Err(CniError::invalid_config(format!("{field}: {s} is not a unicast MAC address"))
            .with_details("a link address must have the lowest bit of the first byte clear and not be all zeros"));
    }
    Ok(mac)
}

fn non_negative(n: i64, field: &str) -> CniResult<u32> {
    u32::try_from(n).map_err(|_| CniError::invalid_config(format!("{field} {n} is out of range: give 0 to 4294967295")))
}

impl Tuning {
    pub fn from_request(req: &Request) -> CniResult<Tuning> {
        req.args.check_known(&["MAC"])?;
        let raw: RawSysctls = serde_json::from_slice(&req.stdin).map_err(|e| {
            let c = if e.is_syntax() || e.is_eof() { code::DECODE } else { code::INVALID_CONFIG };
            CniError::new(c, format!("tuning config: {e}"))
        })?;
        let mut sysctls = raw.sysctl.unwrap_or_default().0;
        for (k, v) in raw.args.and_then(|a| a.cni).and_then(|c| c.sysctl).unwrap_or_default().0 {
            match sysctls.iter_mut().find(|(seen, _)| *seen == k) {
                Some(slot) => slot.1 = v,
                None => sysctls.push((k, v)),
            }
        }

        let conf = &req.conf.raw;
        // The first of `paths` that is present wins: list them from high to low precedence.
        fn first<T: DeserializeOwned>(conf: &Value, paths: &[&[&str]]) -> CniResult<Option<(T, String)>> {
            for p in paths {
                if let Some(v) = field::<T>(conf, p)? {
                    return Ok(Some((v, p.join("."))));
                }
            }
            Ok(None)
        }

        // MAC, high to low: args.cni.mac, runtimeConfig.mac, CNI_ARGS MAC, the config's mac.
        let mut macs: Vec<(String, String)> = Vec::new();
        for p in [&["args", "cni", "mac"][..], &["runtimeConfig", "mac"]] {
            if let Some(m) = field::<String>(conf, p)? {
                macs.push((m, p.join(".")));
            }
        }
        if let Some(m) = req.args.get("MAC") {
            macs.push((m.to_string(), "CNI_ARGS MAC".into()));
        }
        if let Some(m) = field::<String>(conf, &["mac"])? {
            macs.push((m, "mac".into()));
        }
        let mac = macs.into_iter().find(|(m, _)| !m.is_empty()).map(|(m, f)| parse_mac(&m, &f)).transpose()?;

        let mtu = first::<i64>(conf, &[&["args", "cni", "mtu"], &["mtu"]])?;
        // 0 means "not set", as in the reference.
        let mtu = mtu.map(|(m, f)| non_negative(m, &f)).transpose()?.filter(|m| *m != 0);
        let txqlen = first::<i64>(conf, &[&["args", "cni", "txQLen"], &["txQLen"]])?;
        let promisc = first::<bool>(conf, &[&["args", "cni", "promisc"], &["promisc"]])?;
        let allmulti = first::<bool>(conf, &[&["args", "cni", "allmulti"], &["allmulti"]])?;
        Ok(Tuning {
            sysctls,
            mac,
            promisc: promisc.is_some_and(|(p, _)| p),
            mtu,
            allmulti: allmulti.map(|(a, _)| a),
            txqlen: txqlen.map(|(q, f)| non_negative(q, &f)).transpose()?,
            data_dir: data_dir(conf)?,
        })
    }
}

/// `dataDir`, or the reference's default. DEL needs only this, so it reads it alone.
pub fn data_dir(conf: &Value) -> CniResult<PathBuf> {
    let dir = field::<String>(conf, &["dataDir"])?.filter(|d| !d.is_empty());
    Ok(PathBuf::from(dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcni::cni::skel::{Invocation, parse_invocation};

    fn req(conf: &str, cni_args: &str) -> Request {
        let env = |k: &str| {
            let v = match k {
                "CNI_COMMAND" => "ADD",
                "CNI_CONTAINERID" => "c1",
                "CNI_NETNS" => "/run/netns/x",
                "CNI_IFNAME" => "eth0",
                "CNI_ARGS" => cni_args,
                _ => return None,
            };
            Some(v.to_string())
        };
        match parse_invocation(&env, &mut conf.as_bytes()).unwrap() {
            Invocation::Request(r) => *r,
            _ => panic!(),
        }
    }

    fn tuning(conf: &str, cni_args: &str) -> CniResult<Tuning> {
        Tuning::from_request(&req(conf, cni_args))
    }

    #[test]
    fn mac_precedence_config_env_runtime_args() {
        let base = r#""cniVersion":"1.0.0","name":"n","type":"tuning""#;
        let m = |c: &str, env: &str| tuning(&format!("{{{base}{c}}}"), env).unwrap().mac.map(|m| m.to_string());
        assert_eq!(m(r#","mac":"02:00:00:00:00:01""#, ""), Some("02:00:00:00:00:01".into()));
        assert_eq!(m(r#","mac":"02:00:00:00:00:01""#, "MAC=02:00:00:00:00:02"), Some("02:00:00:00:00:02".into()));
        let rt = r#","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:03"}"#;
        assert_eq!(m(rt, "MAC=02:00:00:00:00:02"), Some("02:00:00:00:00:03".into()));
        let all = format!(r#"{rt},"args":{{"cni":{{"mac":"02:00:00:00:00:04"}}}}"#);
        assert_eq!(m(&all, "MAC=02:00:00:00:00:02"), Some("02:00:00:00:00:04".into()));
        assert_eq!(m(r#","runtimeConfig":{"mac":""}"#, "MAC=02:00:00:00:00:02"), Some("02:00:00:00:00:02".into()));
    }

    #[test]
    fn args_sysctl_merges_without_config_sysctl_and_keeps_order() {
        let t =
            tuning(r#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"sysctl":{"net.core.somaxconn":"600"}}}}"#, "")
                .unwrap();
        assert_eq!(t.sysctls, vec![("net.core.somaxconn".to_string(), "600".to_string())]);
        let t = tuning(
            r#"{"cniVersion":"1.0.0","name":"n","sysctl":{"b":"1","a":"2"},"args":{"cni":{"sysctl":{"c":"3","b":"9"}}}}"#,
            "",
        )
        .unwrap();
        let keys: Vec<_> = t.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, ["b=9", "a=2", "c=3"]);
    }

    #[test]
    fn bad_input_has_codes_and_names_the_field() {
        let cases = [
            (r#"{"cniVersion":"1.0.0","name":"n","sysctl":{"a":"1","a":"2"}}"#, "", 7, "duplicated sysctl key \"a\""),
            (r#"{"cniVersion":"1.0.0","name":"n","sysctl":{"a":5}}"#, "", 7, "\"a\""),
            (r#"{"cniVersion":"1.0.0","name":"n","mac":"zz"}"#, "", 7, "mac: invalid MAC"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "MAC=01:00:00:00:00:01", 7, "CNI_ARGS MAC"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":-1}"#, "", 7, "mtu -1"),
            (r#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"txQLen":-5}}}"#, "", 7, "args.cni.txQLen"),
            (r#"{"cniVersion":"1.0.0","name":"n","promisc":"yes"}"#, "", 7, "promisc"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "FOO=1", 4, "FOO"),
        ];
        for (conf, env, want, needle) in cases {
            let e = tuning(conf, env).unwrap_err();
            assert_eq!(e.code, want, "{conf}: {e}");
            assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn defaults() {
        let t = tuning(r#"{"cniVersion":"1.0.0","name":"n","mtu":0,"promisc":false}"#, "").unwrap();
        assert!(!t.changes_link());
        assert_eq!(t.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let t = tuning(r#"{"cniVersion":"1.0.0","name":"n","txQLen":0,"dataDir":"/tmp/x"}"#, "").unwrap();
        assert_eq!(t.txqlen, Some(0), "txQLen 0 is a value, unlike mtu 0");
        assert_eq!(t.data_dir, PathBuf::from("/tmp/x"));
    }
}
