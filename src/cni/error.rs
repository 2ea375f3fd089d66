//! The CNI error object and the spec's well-known codes.
//!
//! Every failure a plugin reports becomes one `CniError`, printed as JSON on stdout with a non-zero exit.
//! Messages say what was wrong, where (field, device, file) and what the operator can do about it.

use std::fmt;

/// Error codes from the CNI spec 1.1.0 table (0–99 are reserved for these), plus the Go library's
/// 999 "internal", which the reference plugins return for every plugin-level failure.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// Go-only (not in the spec table): CNI_NETNS is the plugin's own network namespace.
    pub const INVALID_NETNS: u32 = 8;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type CniResult<T> = std::result::Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A failure inside the plugin (code 999, as the reference plugins use).
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// The network configuration is invalid (code 7).
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// A name or ID that breaks a rule of [`crate::validate`]; `what` names the field or variable it came from.
    pub fn bad_name(code: u32, what: &str, value: &str, why: crate::validate::NameError) -> Self {
        Self::new(code, format!("invalid {what} {value:?}: {why}")).with_details(why.kind.rule())
    }

    /// Errors collected by a best-effort command (DEL, GC) as one, or Ok if there were none. The code is
    /// the one they share (a runtime may act on it: 11 means try again), else 999; every message is kept.
    pub fn join(mut errors: Vec<CniError>) -> CniResult<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let first = errors[0].code;
                let code = if errors.iter().all(|e| e.code == first) { first } else { code::INTERNAL };
                Err(CniError::new(code, errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))
            }
        }
    }

    /// Prefix the message with what was being attempted, keeping code and details.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// The error object as the spec defines it. `cniVersion` is included (spec-correct; libcni ignores it).
    pub fn to_value(&self, cni_version: &str) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("cniVersion".into(), cni_version.into());
        obj.insert("code".into(), self.code.into());
        obj.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            obj.insert("details".into(), self.details.clone().into());
        }
        serde_json::Value::Object(obj)
    }

    /// Parse an error object printed by another plugin (e.g. a delegated IPAM plugin).
    pub fn from_value(v: &serde_json::Value) -> Option<Self> {
        let code = v.get("code")?.as_u64()?;
        Some(CniError {
            code: code as u32,
            msg: v.get("msg").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
            details: v.get("details").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields_and_omits_empty_details() {
        let e = CniError::new(code::INVALID_ENV, "required env variables [CNI_NETNS] missing");
        let v = e.to_value("1.1.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v.get("details").is_none());
        let e = e.with_details("x");
        assert_eq!(e.to_value("1.0.0")["details"], "x");
    }

    #[test]
    fn parses_foreign_error_object() {
        let v = serde_json::json!({"code": 999, "msg": "no IP addresses available"});
        let e = CniError::from_value(&v).unwrap();
        assert_eq!(e.code, 999);
        assert_eq!(e.msg, "no IP addresses available");
        assert!(CniError::from_value(&serde_json::json!({"msg": "x"})).is_none());
    }

    #[test]
    fn join_keeps_a_shared_code_and_every_message() {
        assert!(CniError::join(vec![]).is_ok());
        let e = CniError::join(vec![CniError::new(5, "a"), CniError::new(5, "b").with_details("d")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (5, "a; b (d)"));
        let e = CniError::join(vec![CniError::new(5, "a"), CniError::new(6, "b")]).unwrap_err();
        assert_eq!(e.code, 999);
        let one = CniError::new(11, "busy").with_details("x");
        assert_eq!(CniError::join(vec![one.clone()]).unwrap_err(), one);
    }

    #[test]
    fn context_keeps_code() {
        let e = CniError::new(code::TRY_AGAIN, "locked").context("host-local");
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "host-local: locked");
    }
}
