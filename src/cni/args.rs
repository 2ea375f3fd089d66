//! CNI_ARGS: `K=V;K2=V2` extra arguments from the runtime.
//!
//! The reference grammar, made lenient where runtimes trip over it: empty pieces (a trailing `;`) are skipped,
//! a value may contain `=` (split on the first one), and `K8S_*` keys — which every Kubernetes runtime sends —
//! always count as known.

use super::error::{CniError, CniResult, code};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(s: &str) -> CniResult<CniArgs> {
        let mut pairs = Vec::new();
        for piece in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = piece.split_once('=') else {
                return Err(CniError::new(code::INVALID_ENV, format!("ARGS: invalid pair {piece:?}"))
                    .with_details("CNI_ARGS must look like KEY=VALUE;KEY2=VALUE2"));
            };
            if k.is_empty() {
                return Err(CniError::new(code::INVALID_ENV, format!("ARGS: empty key in pair {piece:?}")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (exact, case-sensitive, like the reference); the last one wins if repeated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` run through `parse`. A value that does not parse is a bad environment variable
    /// (code 4, the spec's code for it), whatever the parser's own error type: the message names the
    /// key and the value, `hint` says what a good value looks like.
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        key: &str,
        hint: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> CniResult<Option<T>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        parse(v).map(Some).map_err(|e| {
            CniError::new(code::INVALID_ENV, format!("CNI_ARGS {key}={v:?} is not valid: {e}")).with_details(hint)
        })
    }

    /// `IgnoreUnknown` accepts 1/0/true/false in any case, as the reference does.
    fn ignore_unknown(&self) -> CniResult<bool> {
        match self.get("IgnoreUnknown") {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(CniError::new(code::INVALID_ENV, format!("ARGS: IgnoreUnknown={v:?} is not a boolean"))
                    .with_details("use IgnoreUnknown=1 or IgnoreUnknown=true")),
            },
        }
    }

    /// Reference behaviour: keys the plugin does not know are an error unless `IgnoreUnknown` is true.
    /// `K8S_*` keys always count as known.
    pub fn check_known(&self, known: &[&str]) -> CniResult<()> {
        if self.ignore_unknown()? {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "IgnoreUnknown" && !k.starts_with("K8S_") && !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(code::INVALID_ENV, format!("ARGS: unknown args {unknown:?}"))
                .with_details(format!("this plugin knows {known:?}; add IgnoreUnknown=1 to CNI_ARGS to pass others")))
        }
    }

    pub fn to_env_string(&self) -> String {
        self.pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_tolerates_empty_pieces() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5;").unwrap();
        assert_eq!(a.pairs.len(), 3);
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("ip"), None, "keys are case-sensitive");
        assert!(CniArgs::parse("").unwrap().pairs.is_empty());
        assert_eq!(CniArgs::parse("A=b=c").unwrap().get("A"), Some("b=c"));
    }

    #[test]
    fn invalid_pairs_are_env_errors() {
        for bad in ["novalue", "A=1;junk", "=x"] {
            assert_eq!(CniArgs::parse(bad).unwrap_err().code, 4, "{bad}");
        }
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        let a = CniArgs::parse("FOO=1;IP=10.0.0.5").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert!(e.msg.contains("FOO=1"), "{e}");
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=TRUE").unwrap().check_known(&[]).is_ok());
        assert!(CniArgs::parse("K8S_POD_NAMESPACE=default").unwrap().check_known(&[]).is_ok());
        assert_eq!(CniArgs::parse("IgnoreUnknown=maybe").unwrap().check_known(&[]).unwrap_err().code, 4);
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=0").unwrap().check_known(&[]).is_err());
    }

    #[test]
    fn bad_typed_values_are_env_errors() {
        let a = CniArgs::parse("IP=not-an-ip;N=5").unwrap();
        let e = a.parsed("IP", "an IP address", str::parse::<std::net::IpAddr>).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("IP=\"not-an-ip\"") && e.details.contains("an IP address"), "{e}");
        assert_eq!(a.parsed("N", "", str::parse::<u8>).unwrap(), Some(5));
        assert_eq!(a.parsed("MISSING", "", str::parse::<u8>).unwrap(), None);
    }

    #[test]
    fn env_string_round_trips() {
        let s = "IgnoreUnknown=1;IP=10.0.0.5";
        assert_eq!(CniArgs::parse(s).unwrap().to_env_string(), s);
    }
}
