//! The bandwidth config: rates in bit/s and bursts in bits, top-level or in `runtimeConfig.bandwidth`
//! (capability `bandwidth`); any top-level field wins over runtimeConfig, as in the reference.

use rcni::cni::{CniError, CniResult};
use serde_json::Value;

const FIELDS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

/// One direction's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// bit/s
    pub rate: u64,
    /// bits
    pub burst: u64,
}

/// What to shape. `None` for a direction means "not limited".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// Towards the pod: a tbf on the host end of its veth.
    pub ingress: Option<Limit>,
    /// From the pod: redirected to an ifb and shaped there.
    pub egress: Option<Limit>,
}

impl Bandwidth {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    pub fn parse(conf: &Value) -> CniResult<Bandwidth> {
        for gone in ["shapedSubnets", "unshapedSubnets"] {
            if conf.get(gone).is_some() || conf.pointer(&format!("/runtimeConfig/bandwidth/{gone}")).is_some() {
                rcni::cni::log::warn(
                    "bandwidth",
                    format!("{gone} is ignored: it existed only in reference v1.5.x and every packet is shaped"),
                );
            }
        }
        let top_level = FIELDS.iter().any(|f| conf.get(f).is_some_and(|v| !v.is_null()));
        let (entry, prefix) = if top_level {
            (conf, "")
        } else {
            match conf.pointer("/runtimeConfig/bandwidth") {
                Some(Value::Null) | None => return Ok(Bandwidth::default()),
                Some(b @ Value::Object(_)) => (b, "runtimeConfig.bandwidth."),
                Some(other) => {
                    return Err(CniError::invalid_config(format!(
                        "runtimeConfig.bandwidth must be an object, got {other}"
                    )));
                }
            }
        };
        let num = |f: &str| -> CniResult<u64> {
            match entry.get(f) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_u64().ok_or_else(|| {
                    CniError::invalid_config(format!("{prefix}{f} must be a non-negative integer, got {v}"))
                        .with_details("rates are in bit/s and bursts in bits")
                }),
            }
        };
        let limit = |dir: &str| -> CniResult<Option<Limit>> {
            let (rf, bf) = (format!("{dir}Rate"), format!("{dir}Burst"));
            let (rate, burst) = (num(&rf)?, num(&bf)?);
            let (rf, bf) = (format!("{prefix}{rf}"), format!("{prefix}{bf}"));
            match (rate, burst) {
                (0, 0) => Ok(None),
                (_, 0) => Err(CniError::invalid_config(format!("{rf} is set, so {bf} must be set too"))),
                (0, _) => Err(CniError::invalid_config(format!("{bf} is set, so {rf} must be set too"))),
                (r, _) if r < 8 => {
                    Err(CniError::invalid_config(format!("{rf} {r} is below 8 bit/s (one byte a second)")))
                }
                (_, b) if b / 8 >= u32::MAX as u64 => {
                    Err(CniError::invalid_config(format!("{bf} {b} is too large: burst cannot be more than 4GB")))
                }
                (rate, burst) => Ok(Some(Limit { rate, burst })),
            }
        };
        Ok(Bandwidth { ingress: limit("ingress")?, egress: limit("egress")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_wins_over_runtime_config() {
        let rc = json!({"bandwidth": {"ingressRate": 8000, "ingressBurst": 16000}});
        let b = Bandwidth::parse(&json!({"runtimeConfig": rc})).unwrap();
        assert_eq!(b.ingress, Some(Limit { rate: 8000, burst: 16000 }));
        assert_eq!(b.egress, None);
        let b = Bandwidth::parse(&json!({"egressRate": 100, "egressBurst": 200, "runtimeConfig": rc})).unwrap();
        assert_eq!(b, Bandwidth { ingress: None, egress: Some(Limit { rate: 100, burst: 200 }) });
        // A top-level zero still counts as "given at top level" (and means: nothing to shape).
        assert!(Bandwidth::parse(&json!({"ingressRate": 0, "runtimeConfig": rc})).unwrap().is_empty());
        assert!(Bandwidth::parse(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (json!({"ingressRate": 1000}), "ingressRate is set, so ingressBurst"),
            (json!({"egressBurst": 1000}), "egressBurst is set, so egressRate"),
            (json!({"egressRate": -1, "egressBurst": 1}), "egressRate must be a non-negative"),
            (
                json!({"runtimeConfig": {"bandwidth": {"ingressRate": "1M", "ingressBurst": 1}}}),
                "runtimeConfig.bandwidth.ingressRate",
            ),
            (json!({"ingressRate": 1000, "ingressBurst": 40_000_000_000u64}), "4GB"),
        ];
        for (c, needle) in cases {
            let e = Bandwidth::parse(&c).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains(needle), "{needle:?} not in {e}");
        }
    }
}
