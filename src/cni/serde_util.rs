//! Lenient decoding shared by plugin configs: the reference's docs show booleans written as strings
//! (`"portIsolation": "true"`), which Go rejects; we accept both forms.

use serde::{Deserialize, Deserializer, de::Error};

/// A bool written as `true` / `false` or as the strings "true" / "false" (any case). Absent = false.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
        Null(()),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Null(()) => Ok(false),
        B::Str(s) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            _ => Err(D::Error::custom(format!("expected true or false, got {s:?}"))),
        },
    }
}

/// `#[serde(default = "rcni::cni::serde_util::default_true")]` for options that are on unless turned off.
pub fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "lenient_bool")]
        b: bool,
    }

    #[test]
    fn accepts_bools_and_strings() {
        for (js, want) in
            [(r#"{"b":true}"#, true), (r#"{"b":"TRUE"}"#, true), (r#"{"b":"false"}"#, false), ("{}", false)]
        {
            assert_eq!(serde_json::from_str::<T>(js).unwrap().b, want, "{js}");
        }
        assert!(serde_json::from_str::<T>(r#"{"b":"yes"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"b":1}"#).is_err());
    }
}
