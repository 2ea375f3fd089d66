//! The portmap config: `runtimeConfig.portMappings` (capability `portMappings`) and the plugin's own
//! fields, validated before anything is written; every error names the field.

use std::net::IpAddr;

use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use rcni::net::portmap::conditions::Conditions;
use rcni::net::portmap::iptables::Mark;
use rcni::net::portmap::{ConflictPolicy, Proto};
use serde_json::Value;

/// One entry of `runtimeConfig.portMappings`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMapping {
    pub proto: Proto,
    pub host_port: u16,
    pub container_port: u16,
    /// `None`: absent or empty. `0.0.0.0` / `::` stay as given: each is a wildcard of its own family only.
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// The host IP this entry is restricted to in `family_v4`'s family: `Ok(None)` = any local address,
    /// `Err(())` = the entry does not apply to this family (a host IP of the other one).
    pub fn host_ip_for(&self, family_v4: bool) -> Result<Option<IpAddr>, ()> {
        match self.host_ip {
            None => Ok(None),
            Some(ip) if ip.is_ipv4() != family_v4 => Err(()),
            Some(ip) if ip.is_unspecified() => Ok(None),
            Some(ip) => Ok(Some(ip)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mappings: Vec<PortMapping>,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_bit: u8,
    pub conflict: ConflictPolicy,
    /// Translated `conditionsV4` / `conditionsV6`, at most one per family (nftables backend).
    pub conditions: Vec<Conditions>,
    pub backend: Backend,
}

/// Where the host ports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// rcni's nftables maps (the default).
    Nftables,
    /// The reference's iptables rules (`backend: "iptables"`, or `externalSetMarkChain`).
    Iptables {
        mark: Mark,
        /// `conditionsV4` and `conditionsV6` as given: iptables arguments appended to the entry rules.
        conditions_v4: Vec<String>,
        conditions_v6: Vec<String>,
    },
}

/// An iptables chain name as iptables takes it (at most 28 bytes, no spaces or quotes).
fn chain_name(field: &str, v: &str) -> CniResult<String> {
    let ok = !v.is_empty() && v.len() <= 28 && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(bad(field, format!("{v:?} is not an iptables chain name (1-28 of A-Z a-z 0-9 _ . -)")));
    }
    Ok(v.to_string())
}

fn bad(field: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("{field}: {msg}"))
}

fn bool_field(conf: &Value, field: &str, default: bool) -> CniResult<bool> {
    match conf.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(CniError::new(code::DECODE, format!("{field} must be true or false, got {v}"))),
    }
}

fn port(entry: &Value, field: &str, name: &str) -> CniResult<u16> {
    match entry.get(name) {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(bad(&format!("{field}.{name}"), format!("{n} is not a port number (1-65535)"))),
        },
        None | Some(Value::Null) => Err(bad(&format!("{field}.{name}"), "missing (a port number 1-65535)")),
        Some(v) => Err(bad(&format!("{field}.{name}"), format!("{v} is not a port number (1-65535)"))),
    }
}

fn mapping(entry: &Value, field: &str) -> CniResult<PortMapping> {
    if !entry.is_object() {
        return Err(bad(field, format!("must be an object with hostPort and containerPort, got {entry}")));
    }
    let host_port = port(entry, field, "hostPort")?;
    let container_port = port(entry, field, "containerPort")?;
    let proto = match entry.get("protocol") {
        None | Some(Value::Null) => Proto::Tcp,
        Some(Value::String(s)) if s.is_empty() => Proto::Tcp,
        Some(Value::String(s)) => Proto::parse(s).ok_or_else(|| {
            bad(&format!("{field}.protocol"), format!("{s:?} is not one of \"tcp\", \"udp\", \"sctp\""))
        })?,
        Some(v) => return Err(bad(&format!("{field}.protocol"), format!("must be a string, got {v}"))),
    };
    let host_ip = match entry.get("hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.parse::<IpAddr>().map_err(|_| {
            bad(
                &format!("{field}.hostIP"),
                format!("{s:?} is not an IP address (leave it out, or give an IPv4 or IPv6 address of the node)"),
            )
        })?),
        Some(v) => return Err(bad(&format!("{field}.hostIP"), format!("must be a string, got {v}"))),
    };
    Ok(PortMapping { proto, host_port, container_port, host_ip })
}

/// `runtimeConfig.portMappings`: entries validated, exact repeats dropped, the same host port given two
/// different targets refused.
fn mappings(conf: &Value) -> CniResult<Vec<PortMapping>> {
    let list = match conf.pointer("/runtimeConfig/portMappings") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(bad("runtimeConfig.portMappings", format!("must be a list, got {v}")));
        }
    };
    let mut out: Vec<PortMapping> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let field = format!("runtimeConfig.portMappings[{i}]");
        let m = mapping(e, &field)?;
        if out.contains(&m) {
            continue;
        }
        if let Some(j) =
            out.iter().position(|o| o.proto == m.proto && o.host_port == m.host_port && o.host_ip == m.host_ip)
        {
            return Err(bad(
                &field,
                format!(
                    "host port {} {} is also mapped by an earlier entry to container port {}: one host port can \
                     forward to one place only",
                    m.proto.as_str(),
                    m.host_port,
                    out[j].container_port
                ),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

impl Config {
    pub fn parse(conf: &Value) -> CniResult<Config> {
        let mappings = mappings(conf)?;
        let snat = bool_field(conf, "snat", true)?;
        let masq_all = bool_field(conf, "masqAll", false)?;
        let mark_given = conf.get("markMasqBit").is_some_and(|v| !v.is_null());
        let mark_bit = match conf.get("markMasqBit") {
            None | Some(Value::Null) => 13,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(b @ 0..=31) => b as u8,
                _ => return Err(bad("markMasqBit", format!("{n} is not a bit number (0-31)"))),
            },
            Some(v) => return Err(bad("markMasqBit", format!("must be a number 0-31, got {v}"))),
        };
        let external = conf.get("externalSetMarkChain").and_then(Value::as_str).filter(|s| !s.is_empty());
        if external.is_some() && mark_given {
            return Err(CniError::invalid_config("Cannot specify externalSetMarkChain and markMasqBit"));
        }
        let external = external.map(|c| chain_name("externalSetMarkChain", c)).transpose()?;
        let iptables = match conf.get("backend") {
            None | Some(Value::Null) => external.is_some(),
            Some(Value::String(s)) if s.is_empty() => external.is_some(),
            Some(Value::String(s)) if s == "nftables" => {
                if external.is_some() {
                    return Err(bad(
                        "externalSetMarkChain",
                        "nftables backend was requested but configuration contains iptables-specific options: an \
                         external mark chain is an iptables chain; remove the field or set backend to \"iptables\"",
                    ));
                }
                false
            }
            Some(Value::String(s)) if s == "iptables" => true,
            Some(v) => return Err(bad("backend", format!("{v} is not one of \"nftables\", \"iptables\""))),
        };
        let mut conditions = Vec::new();
        let mut raw_conditions = [Vec::new(), Vec::new()];
        for (f, v4) in [("conditionsV4", true), ("conditionsV6", false)] {
            let tokens: Vec<String> = match conf.get(f) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| t.as_str().map(str::to_string).ok_or_else(|| bad(f, format!("{t} is not a string"))))
                    .collect::<CniResult<_>>()?,
                Some(v) => return Err(bad(f, format!("must be a list of iptables match arguments, got {v}"))),
            };
            if tokens.is_empty() {
                continue;
            }
            if iptables {
                if let Some(t) = tokens.iter().find(|t| t.is_empty() || t.contains(['"', '\n', '\r', '\0'])) {
                    return Err(bad(
                        f,
                        format!("{t:?} cannot be passed to iptables-restore (empty, or a quote or line break)"),
                    ));
                }
                if !tokens[0].starts_with('-') && tokens[0] != "!" {
                    return Err(bad(f, "backend \"iptables\" takes iptables match arguments (starting with - or !)"));
                }
                raw_conditions[usize::from(!v4)] = tokens;
                continue;
            }
            if !tokens[0].starts_with('-') && tokens[0] != "!" {
                return Err(bad(
                    f,
                    format!(
                        "{:?}: nftables-syntax conditions are not supported by rcni's portmap; give them as iptables \
                         match arguments (-s, -d, -i, -o, -p, each optionally negated with \"!\")",
                        tokens.join(" ")
                    ),
                ));
            }
            conditions.push(Conditions::parse(f, v4, &tokens).map_err(CniError::invalid_config)?);
        }
        let conflict = match conf.get("hostPortConflict") {
            None | Some(Value::Null) => ConflictPolicy::Replace,
            Some(Value::String(s)) if s == "replace" => ConflictPolicy::Replace,
            Some(Value::String(s)) if s == "error" => ConflictPolicy::Error,
            Some(v) => {
                return Err(bad(
                    "hostPortConflict",
                    format!("{v} is not one of \"replace\" (the newer mapping wins, default), \"error\""),
                ));
            }
        };
        let backend = if iptables {
            let [conditions_v4, conditions_v6] = raw_conditions;
            let mark = match external {
                Some(chain) => Mark::Chain(chain),
                None => Mark::Bit(mark_bit),
            };
            Backend::Iptables { mark, conditions_v4, conditions_v6 }
        } else {
            Backend::Nftables
        };
        Ok(Config { mappings, snat, masq_all, mark_bit, conflict, conditions, backend })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rc(pm: Value) -> Value {
        json!({"runtimeConfig": {"portMappings": pm}})
    }

    #[test]
    fn mappings_are_validated_folded_and_deduplicated() {
        let c = Config::parse(&rc(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 5353, "protocol": "Udp", "hostIP": "198.18.0.1"},
            {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": ""}
        ])))
        .unwrap();
        assert_eq!(c.mappings.len(), 3, "{:?}", c.mappings);
        assert_eq!(c.mappings[0].proto, Proto::Tcp);
        assert_eq!(c.mappings[1].host_ip, Some("198.18.0.1".parse().unwrap()));
        assert!(c.snat && !c.masq_all && c.mark_bit == 13 && c.conflict == ConflictPolicy::Replace);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (rc(json!([{"hostPort": 0, "containerPort": 80}])), "portMappings[0].hostPort"),
            (rc(json!([{"hostPort": 70000, "containerPort": 80}])), "portMappings[0].hostPort"),
            (rc(json!([{"hostPort": 80, "containerPort": -1}])), "portMappings[0].containerPort"),
            (rc(json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}])), "portMappings[0].protocol"),
            (rc(json!([{"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}])), "portMappings[0].hostIP"),
            (
                rc(json!([{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}])),
                "portMappings[1]",
            ),
            (json!({"markMasqBit": 32}), "markMasqBit"),
            (json!({"hostPortConflict": "first"}), "hostPortConflict"),
            (json!({"backend": "iptables", "conditionsV4": ["ip", "saddr", "1.2.3.4"]}), "conditionsV4"),
            (json!({"backend": "iptables", "conditionsV4": ["-s", "a\"b"]}), "conditionsV4"),
            (json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}), "externalSetMarkChain"),
            (json!({"externalSetMarkChain": "KUBE MARK"}), "externalSetMarkChain"),
            (json!({"backend": "ebpf"}), "backend"),
            (json!({"conditionsV4": ["-m", "set", "--match-set", "x", "src"]}), "conditionsV4: \"-m\""),
            (json!({"conditionsV6": ["ip6", "saddr", "fd00::1"]}), "conditionsV6"),
            (json!({"conditionsV4": "-s 1.2.3.4"}), "conditionsV4"),
            (json!({"externalSetMarkChain": "KUBE-MARK-MASQ", "markMasqBit": 14}), "externalSetMarkChain"),
        ];
        for (c, needle) in cases {
            let e = Config::parse(&c).unwrap_err();
            assert_eq!(e.code, 7, "{e}");
            assert!(e.msg.contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn the_backend_follows_backend_and_external_set_mark_chain() {
        assert_eq!(Config::parse(&json!({})).unwrap().backend, Backend::Nftables);
        let ipt =
            Config::parse(&json!({"backend": "iptables", "markMasqBit": 5, "conditionsV6": ["-m", "set"]})).unwrap();
        assert_eq!(
            ipt.backend,
            Backend::Iptables {
                mark: Mark::Bit(5),
                conditions_v4: vec![],
                conditions_v6: vec!["-m".into(), "set".into()]
            }
        );
        assert!(ipt.conditions.is_empty(), "iptables conditions are passed to iptables, not translated");
        let ext = Config::parse(&json!({"externalSetMarkChain": "KUBE-MARK-MASQ"})).unwrap();
        assert!(matches!(ext.backend, Backend::Iptables { mark: Mark::Chain(c), .. } if c == "KUBE-MARK-MASQ"));
    }

    #[test]
    fn host_ip_families() {
        let m = |ip: &str| PortMapping {
            proto: Proto::Tcp,
            host_port: 1,
            container_port: 1,
            host_ip: Some(ip.parse().unwrap()),
        };
        assert_eq!(m("0.0.0.0").host_ip_for(true), Ok(None));
        assert_eq!(m("0.0.0.0").host_ip_for(false), Err(()));
        assert_eq!(m("::").host_ip_for(false), Ok(None));
        assert_eq!(m("198.18.0.1").host_ip_for(false), Err(()));
        assert_eq!(m("198.18.0.1").host_ip_for(true), Ok(Some("198.18.0.1".parse().unwrap())));
    }
}
