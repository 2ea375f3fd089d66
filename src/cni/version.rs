//! CNI spec versions: which exist, how they compare, and which operations each allows.

use super::error::{CniError, CniResult, code};
use std::cmp::Ordering;

/// Every spec version there is; rcni speaks all of them.
pub const SUPPORTED: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used where none is given for VERSION and for our own output.
pub const CURRENT: &str = "1.1.0";

pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

fn parse(v: &str) -> CniResult<[u64; 3]> {
    let bad = || CniError::new(code::DECODE, format!("invalid version {v:?}: expected major.minor.patch"));
    let mut out = [0u64; 3];
    let parts: Vec<&str> = v.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(bad());
    }
    for (slot, part) in out.iter_mut().zip(&parts) {
        *slot = part.parse().map_err(|_| bad())?;
    }
    Ok(out)
}

/// Numeric comparison of "major.minor.patch" (missing parts are 0, as libcni does).
pub fn compare(a: &str, b: &str) -> CniResult<Ordering> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

/// True if `v` is a valid version and at least `min`.
pub fn at_least(v: &str, min: &str) -> bool {
    matches!(compare(v, min), Ok(Ordering::Greater | Ordering::Equal))
}

/// The result-format family a version belongs to; conversions happen between families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0, 0.2.0: `ip4` / `ip6` objects.
    V02,
    /// 0.3.0, 0.3.1, 0.4.0: `interfaces`, `ips[].version`.
    V04,
    /// 1.0.0, 1.1.0: no `version` in ips.
    V1,
}

pub fn family(v: &str) -> CniResult<Family> {
    match v {
        "0.1.0" | "0.2.0" => Ok(Family::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Ok(Family::V04),
        "1.0.0" | "1.1.0" => Ok(Family::V1),
        _ => Err(incompatible(v)),
    }
}

/// The error for a config whose version this plugin does not speak, worded like the reference.
pub fn incompatible(v: &str) -> CniError {
    let list = SUPPORTED.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions")
        .with_details(format!("config is {v:?}, plugin supports [{list}]: set cniVersion to one of these"))
}

/// The VERSION answer: the request's version echoed (if we know it) and all supported versions.
pub fn version_info(requested: Option<&str>) -> serde_json::Value {
    let v = requested.filter(|v| is_supported(v)).unwrap_or(CURRENT);
    serde_json::json!({ "cniVersion": v, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numerically() {
        assert_eq!(compare("0.10.0", "0.4.0").unwrap(), Ordering::Greater);
        assert_eq!(compare("1.0.0", "1.0").unwrap(), Ordering::Equal);
        assert!(compare("1.a.0", "1.0.0").is_err());
        assert!(compare("1.0.0.0", "1.0.0").is_err());
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("garbage", "0.1.0"));
    }

    #[test]
    fn families() {
        assert_eq!(family("0.2.0").unwrap(), Family::V02);
        assert_eq!(family("0.3.1").unwrap(), Family::V04);
        assert_eq!(family("1.1.0").unwrap(), Family::V1);
        assert_eq!(family("1.2.0").unwrap_err().code, 1);
    }

    #[test]
    fn version_echoes_known_and_lists_all_seven() {
        let v = version_info(Some("0.4.0"));
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
        assert_eq!(version_info(Some("9.9.9"))["cniVersion"], "1.1.0");
        assert_eq!(version_info(None)["cniVersion"], "1.1.0");
    }

    #[test]
    fn incompatible_names_config_and_supported() {
        let e = incompatible("1.2.0");
        assert_eq!(e.code, 1);
        assert!(e.details.contains("config is \"1.2.0\""));
        assert!(e.details.contains("\"1.1.0\""));
    }
}
