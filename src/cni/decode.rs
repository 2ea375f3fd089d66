//! Typed decoding of a plugin's config whose errors name the JSON path of the field that is wrong
//! (`ipam.ranges[0][0].subnet: invalid type: integer `5`, expected a string`). serde_json's own errors
//! name only a line and column of the stdin bytes, which an operator who wrote a conflist cannot map
//! back to a field.
//!
//! The document is parsed into a `Value` first (syntax errors stay the caller's: code 6), then decoded
//! through [`At`], a deserializer over that value that knows where it is. An error raised anywhere
//! below a field — by serde for a type mismatch, by a `Deserialize` impl or a `deserialize_with`
//! function for a bad value — is tagged with the innermost path it passes on the way up.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A decoding error and the path of the value it is about (empty: the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub path: Option<String>,
    pub msg: String,
}

impl PathError {
    /// Tag with `path` unless a deeper value already did.
    fn at(mut self, path: &str) -> PathError {
        if self.path.is_none() && !path.is_empty() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p}: {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError { path: None, msg: msg.to_string() }
    }
}

/// Decode `value` as a `T`, naming the path of the first field that does not fit.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, PathError> {
    T::deserialize(At { v: value, path: String::new() })
}

fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// A value of the document and where it sits in it.
struct At<'de> {
    v: &'de Value,
    path: String,
}

impl<'de> de::Deserializer<'de> for At<'de> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let r = match self.v {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = Seq { items: items.iter().enumerate(), path: &self.path };
                let out = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(out),
                    _ => Err(de::Error::invalid_length(items.len(), &"fewer elements in the list")),
                }
            }
            Value::Object(map) => visitor.visit_map(Map { entries: map.iter(), value: None, path: &self.path }),
        };
        r.map_err(|e| e.at(&self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.v {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        // Enums decode as serde_json decodes them; their errors carry this value's path.
        match self.v {
            Value::String(s) => {
                visitor.visit_enum(s.as_str().into_deserializer()).map_err(|e: PathError| e.at(&self.path))
            }
            other => de::Deserializer::deserialize_enum(other, name, variants, visitor)
                .map_err(|e| <PathError as de::Error>::custom(e).at(&self.path)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct Seq<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = PathError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, PathError> {
        let Some((i, v)) = self.items.next() else { return Ok(None) };
        let path = format!("{}[{i}]", self.path);
        // Errors a Deserialize impl raises after its value was read (a bad address) name this element too.
        seed.deserialize(At { v, path: path.clone() }).map(Some).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de, 'p> {
    entries: serde_json::map::Iter<'de>,
    value: Option<(&'de str, &'de Value)>,
    path: &'p str,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, PathError> {
        let Some((k, v)) = self.entries.next() else { return Ok(None) };
        self.value = Some((k.as_str(), v));
        let key: de::value::BorrowedStrDeserializer<'de, PathError> = de::value::BorrowedStrDeserializer::new(k);
        seed.deserialize(key).map(Some).map_err(|e| e.at(&key_path(self.path, k)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let (k, v) = self.value.take().ok_or_else(|| <PathError as de::Error>::custom("a value without a key"))?;
        let path = key_path(self.path, k);
        seed.deserialize(At { v, path: path.clone() }).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::net::IpAddr;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Range {
        subnet: String,
        #[serde(default)]
        gateway: Option<IpAddr>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Ipam {
        #[serde(default)]
        ranges: Vec<Vec<Range>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    enum Mode {
        Bridge,
        Routed,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Conf {
        name: String,
        #[serde(default)]
        mtu: u32,
        #[serde(default)]
        ipam: Option<Ipam>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default, deserialize_with = "crate::cni::serde_util::lenient_bool")]
        flag: bool,
    }

    fn err(v: Value) -> String {
        from_value::<Conf>(&v).unwrap_err().to_string()
    }

    #[test]
    fn decodes_what_serde_json_decodes() {
        let v = json!({"name": "n", "mtu": 1400, "flag": "true", "mode": "routed",
                       "ipam": {"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}]]}, "extra": [1, {}]});
        assert_eq!(from_value::<Conf>(&v).unwrap(), serde_json::from_value::<Conf>(v.clone()).unwrap());
        let minimal = json!({"name": "n"});
        assert_eq!(from_value::<Conf>(&minimal).unwrap(), serde_json::from_value::<Conf>(minimal).unwrap());
    }

    #[test]
    fn every_error_names_its_path() {
        let cases = [
            (json!({"name": 5}), "name: invalid type: integer `5`, expected a string"),
            (json!({"name": "n", "mtu": "big"}), "mtu: invalid type: string \"big\", expected u32"),
            (json!({"name": "n", "mtu": -1}), "mtu: invalid value: integer `-1`, expected u32"),
            (json!({"name": "n", "ipam": {"ranges": [[{"subnet": 5}]]}}), "ipam.ranges[0][0].subnet: invalid type"),
            (json!({"name": "n", "ipam": {"ranges": [[{}]]}}), "ipam.ranges[0][0]: missing field `subnet`"),
            (
                json!({"name": "n", "ipam": {"ranges": [[{"subnet": "x", "gateway": "nope"}]]}}),
                "ipam.ranges[0][0].gateway: invalid IP address syntax",
            ),
            (
                json!({"name": "n", "ipam": {"ranges": "x"}}),
                "ipam.ranges: invalid type: string \"x\", expected a sequence",
            ),
            (json!({"name": "n", "mode": "flat"}), "mode: unknown variant `flat`"),
            (json!({"name": "n", "mode": 3}), "mode: "),
            (json!({"name": "n", "flag": "maybe"}), "flag: expected true or false, got \"maybe\""),
            (json!({}), "missing field `name`"),
            (json!("x"), "invalid type: string \"x\", expected struct Conf"),
        ];
        for (v, want) in cases {
            let got = err(v.clone());
            assert!(got.starts_with(want), "{v}: {got:?} does not start with {want:?}");
        }
    }
}
