//! The firewall config as the reference reads it: `backend`, `iptablesAdminChainName`, `firewalldZone`,
//! `ingressPolicy`; plus rcni's `acceptDnat`.

use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use rcni::net::firewall::iptables::{self, DEFAULT_ADMIN_CHAIN};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `""`: what the reference picks when firewalld is not running.
    Iptables,
    /// rcni's native backend (table `inet rcni`), only for nodes without a forward DROP policy.
    Nftables,
    /// Asked for explicitly, or `""` while firewalld runs: not implemented by rcni.
    Firewalld { explicit: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    Open,
    SameBridge,
    /// reference 1.7: `same-bridge`, and pods of the same bridge cannot reach each other either.
    Isolated,
}

#[derive(Debug, Clone)]
pub struct Firewall {
    pub backend: Backend,
    pub admin_chain: String,
    pub ingress: IngressPolicy,
    pub accept_dnat: bool,
}

fn string_field<'a>(conf: &'a Value, field: &str) -> CniResult<&'a str> {
    match conf.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(CniError::invalid_config(format!("{field} must be a string, got {other}"))),
    }
}

/// Whether firewalld runs on this node, as the reference decides for `backend: ""` (its D-Bus name is
/// owned). Asked through `firewall-cmd --state` (exit 0 = running); no firewall-cmd means no firewalld.
fn firewalld_running() -> bool {
    rcni::net::command::Command::new("firewall-cmd")
        .arg("--state")
        .timeout(std::time::Duration::from_secs(5))
        .run()
        .is_ok()
}

impl Firewall {
    pub fn parse(conf: &Value) -> CniResult<Firewall> {
        let backend = match string_field(conf, "backend")? {
            "" if firewalld_running() => Backend::Firewalld { explicit: false },
            "" | "iptables" => Backend::Iptables,
            "firewalld" => Backend::Firewalld { explicit: true },
            "nftables" => Backend::Nftables,
            other => {
                return Err(CniError::invalid_config(format!("backend {other:?} is unknown")).with_details(
                    "allowed values: \"iptables\", \"nftables\", \"firewalld\" or \"\" (firewalld if it runs, else iptables)",
                ));
            }
        };
        let admin_chain = match string_field(conf, "iptablesAdminChainName")? {
            "" => DEFAULT_ADMIN_CHAIN.to_string(),
            name => {
                iptables::check_chain_name("iptablesAdminChainName", name).map_err(|e| {
                    CniError::invalid_config(e.to_string()).with_details("give a valid iptables chain name")
                })?;
                name.to_string()
            }
        };
        string_field(conf, "firewalldZone")?;
        let ingress = match string_field(conf, "ingressPolicy")? {
            "" | "open" => IngressPolicy::Open,
            "same-bridge" => IngressPolicy::SameBridge,
            "isolated" => IngressPolicy::Isolated,
            other => {
                return Err(CniError::invalid_config(format!("ingressPolicy {other:?} is unknown"))
                    .with_details("allowed values: \"open\" (the default), \"same-bridge\" and \"isolated\""));
            }
        };
        let accept_dnat = match conf.get("acceptDnat") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(CniError::invalid_config(format!("acceptDnat must be true or false, got {other}")));
            }
        };
        Ok(Firewall { backend, admin_chain, ingress, accept_dnat })
    }

    /// The error for `backend: "nftables"` on a node with a forward DROP policy. Code 2 (unsupported
    /// field, the spec's "key and value" in the message): the config is valid (not 7), and retrying does
    /// not help until the operator changes the node or the backend (not 11, "try again later").
    pub fn refuse_nftables(found: &[String]) -> CniError {
        CniError::new(
            code::UNSUPPORTED_FIELD,
            format!(
                "backend \"nftables\" cannot accept pod traffic on this node: {} drops forwarded traffic, and an \
                 accept in table inet rcni ends only its own chain",
                found.join(", ")
            ),
        )
        .with_details(
            "use \"backend\": \"iptables\" (rules in the chain that holds the DROP policy; acceptDnat for host \
             ports), or remove the DROP policy",
        )
    }

    /// The error for a firewalld backend (ADD and CHECK; DEL has nothing of firewalld's to remove).
    pub fn refuse_firewalld(explicit: bool) -> CniError {
        let msg = if explicit {
            "backend \"firewalld\" is not supported by rcni's firewall plugin".to_string()
        } else {
            "backend is \"\" and firewalld runs on this node, so the reference would use firewalld, which rcni's \
             firewall plugin does not support"
                .to_string()
        };
        CniError::new(code::UNSUPPORTED_FIELD, msg).with_details(
            "set \"backend\": \"iptables\" (the reference's rules, chain CNI-FORWARD), or keep the reference \
             firewall binary for firewalld zones",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_their_errors() {
        let f = Firewall::parse(&json!({"backend": "iptables", "ingressPolicy": "same-bridge"})).unwrap();
        assert_eq!(
            (f.backend, f.ingress, f.admin_chain.as_str(), f.accept_dnat),
            (Backend::Iptables, IngressPolicy::SameBridge, "CNI-ADMIN", false)
        );
        assert_eq!(Firewall::parse(&json!({"ingressPolicy": "isolated"})).unwrap().ingress, IngressPolicy::Isolated);
        assert_eq!(Firewall::parse(&json!({"backend": "nftables"})).unwrap().backend, Backend::Nftables);
        assert_eq!(
            Firewall::parse(&json!({"backend": "firewalld"})).unwrap().backend,
            Backend::Firewalld { explicit: true }
        );
        for (conf, field) in [
            (json!({"backend": "ipfw"}), "backend"),
            (json!({"backend": "nft"}), "backend"),
            (json!({"backend": 1}), "backend"),
            (json!({"ingressPolicy": "isolate"}), "ingressPolicy"),
            (json!({"iptablesAdminChainName": "has space"}), "iptablesAdminChainName"),
            (json!({"acceptDnat": "yes"}), "acceptDnat"),
        ] {
            let e = Firewall::parse(&conf).unwrap_err();
            assert!(e.msg.contains(field), "{conf}: {e:?}");
            assert_eq!(e.code, code::INVALID_CONFIG);
        }
    }
}
