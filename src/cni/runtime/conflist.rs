//! Loading network configuration lists the way libcni does.
//!
//! * `*.conflist` files in a directory, lexical order, the first whose `name` matches wins; unless
//!   `loadOnlyInlinedPlugins` is true, plugin objects from `<dir>/<name>/*.conf` are appended.
//! * Fallback (deprecated format): single-plugin `*.conf` / `*.json` files, lexical order, matched on
//!   `name`, up-converted into a one-plugin list.
//! * The effective `cniVersion` is the highest of `cniVersions[]` ∪ {`cniVersion`} not above
//!   [`MAX_VERSION`]; a list without either is version `0.1.0` (the spec's default).
//! * `disableCheck`, `disableGC`, `loadOnlyInlinedPlugins` accept JSON booleans or the strings
//!   "true"/"false" (any case).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::cni::error::{CniError, CniResult, code};
use crate::cni::version;

/// The highest spec version this runtime speaks.
pub const MAX_VERSION: &str = version::CURRENT;

/// The version a configuration without `cniVersion` has (spec: missing means 0.1.0).
pub const DEFAULT_VERSION: &str = "0.1.0";

/// One plugin object of a list, as it appears in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `type`: the binary name looked up on the plugin search path.
    pub plugin_type: String,
    /// The plugin object's own `name`, if it has one (used only in error messages, like libcni).
    pub name: Option<String>,
    /// `capabilities`: only keys set to `true` receive capability args as `runtimeConfig`.
    pub capabilities: BTreeMap<String, bool>,
    /// The whole plugin object; the runtime injects into a copy of it.
    pub raw: Map<String, Value>,
}

/// A parsed network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// The effective version, injected into every plugin's stdin.
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
    /// The bytes the list was parsed from (the file for a `.conflist`; the synthesized list for an
    /// up-converted `.conf`). Stored base64-encoded in the result cache, like libcni.
    pub bytes: Vec<u8>,
    /// The file the list came from, if any.
    pub source: Option<PathBuf>,
}

fn parse_err(what: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("error parsing configuration list: {what}"))
}

/// JSON type name, for error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses one plugin object (the bytes of a `.conf` file or of one element of `plugins`).
pub fn plugin_conf_from_bytes(bytes: &[u8]) -> CniResult<PluginConfig> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::new(code::DECODE, format!("error parsing configuration: {e}")))?;
    plugin_conf_from_value(&v)
}

/// Parses one plugin object from a JSON value.
pub fn plugin_conf_from_value(v: &Value) -> CniResult<PluginConfig> {
    let raw = match v {
        Value::Object(m) => m.clone(),
        other => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration: expected an object, got {}",
                type_name(other)
            )));
        }
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(CniError::invalid_config("error parsing configuration: missing 'type'"));
        }
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration: 'type' must be a string, got {}",
                type_name(other)
            )));
        }
    };
    let name = match raw.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration: 'name' must be a string, got {}",
                type_name(other)
            )));
        }
    };
    match raw.get("cniVersion") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration: 'cniVersion' must be a string, got {}",
                type_name(other)
            )));
        }
    }
    let mut capabilities = BTreeMap::new();
    match raw.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(caps)) => {
            for (k, val) in caps {
                match val {
                    Value::Bool(b) => {
                        capabilities.insert(k.clone(), *b);
                    }
                    other => {
                        return Err(CniError::invalid_config(format!(
                            "error parsing configuration: capability {k:?} of plugin {plugin_type:?} must be true or false, got {}",
                            type_name(other)
                        )));
                    }
                }
            }
        }
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration: 'capabilities' of plugin {plugin_type:?} must be an object, got {}",
                type_name(other)
            )));
        }
    }
    Ok(PluginConfig { plugin_type, name, capabilities, raw })
}

/// Reads one of the list's boolean flags: JSON bool or "true"/"false" in any case; absent = false.
fn read_bool(obj: &Map<String, Value>, key: &str) -> CniResult<bool> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(parse_err(format!("invalid value {s:?} for {key} (want true or false)"))),
        },
        Some(other) => Err(parse_err(format!("invalid type {} for {key} (want a boolean)", type_name(other)))),
    }
}

fn greater_than_max(v: &str, what: &str) -> CniResult<bool> {
    let ord = version::compare(v, MAX_VERSION).map_err(|e| parse_err(format!("invalid {what} {v:?}: {}", e.msg)))?;
    Ok(ord == Ordering::Greater)
}

/// The effective version of a list: the highest of `cniVersions` ∪ {`cniVersion`} that is not above
/// [`MAX_VERSION`]. Without `cniVersions`, `cniVersion` is taken as is (a plugin will reject an unknown
/// one with code 1); without either, [`DEFAULT_VERSION`].
pub fn select_version(cni_version: Option<&str>, cni_versions: Option<&[String]>) -> CniResult<String> {
    let cni_version = cni_version.filter(|s| !s.is_empty());
    let Some(list) = cni_versions else {
        return Ok(cni_version.unwrap_or(DEFAULT_VERSION).to_string());
    };
    let mut candidates: Vec<&str> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        if !greater_than_max(v, &format!("cniVersions entry at index {i}"))? {
            candidates.push(v);
        }
    }
    if let Some(v) = cni_version {
        if !greater_than_max(v, "cniVersion")? {
            candidates.push(v);
        }
    }
    let mut best: Option<&str> = None;
    for c in candidates {
        best = match best {
            Some(b) if version::compare(c, b)? != Ordering::Greater => Some(b),
            _ => Some(c),
        };
    }
    match best {
        Some(b) => Ok(b.to_string()),
        None if list.is_empty() => Ok(DEFAULT_VERSION.to_string()),
        None => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "error parsing configuration list: none of cniVersions {list:?} is supported by this runtime (highest: {MAX_VERSION})"
            ),
        )),
    }
}

/// Parses a configuration list from bytes (libcni `NetworkConfFromBytes`): plugins from the
/// `plugins` key only. A list without `plugins` is returned with no plugins (the file loader adds
/// those of `<dir>/<name>/*.conf`).
pub fn conf_list_from_bytes(bytes: &[u8]) -> CniResult<NetworkConfigList> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::new(code::DECODE, format!("error parsing configuration list: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(parse_err(format!("expected a JSON object, got {}", type_name(&v))));
    };
    let name = match obj.get("name") {
        None => return Err(parse_err("no name")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(parse_err(format!("invalid name type {}", type_name(other)))),
    };
    let cni_version = match obj.get("cniVersion") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(parse_err(format!("invalid cniVersion type {}", type_name(other))));
        }
    };
    let cni_versions = match obj.get("cniVersions") {
        None => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(parse_err(format!("invalid type for cniVersions index {i}: {}", type_name(other))));
                    }
                }
            }
            Some(out)
        }
        Some(other) => {
            return Err(parse_err(format!("invalid type for cniVersions: {}", type_name(other))));
        }
    };
    let cni_version = select_version(cni_version, cni_versions.as_deref())?;
    let disable_check = read_bool(&obj, "disableCheck")?;
    let disable_gc = read_bool(&obj, "disableGC")?;
    let load_only_inlined_plugins = read_bool(&obj, "loadOnlyInlinedPlugins")?;

    let mut list = NetworkConfigList {
        name,
        cni_version,
        disable_check,
        disable_gc,
        load_only_inlined_plugins,
        plugins: Vec::new(),
        bytes: bytes.to_vec(),
        source: None,
    };
    match obj.get("plugins") {
        None if load_only_inlined_plugins => {
            return Err(parse_err("`loadOnlyInlinedPlugins` is true, and no 'plugins' key"));
        }
        None => {}
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(parse_err("no plugins in list"));
            }
            for (i, item) in items.iter().enumerate() {
                let p = plugin_conf_from_value(item)
                    .map_err(|e| CniError::new(e.code, format!("failed to parse plugin config {i}: {}", e.msg)))?;
                list.plugins.push(p);
            }
        }
        Some(other) => {
            return Err(parse_err(format!("invalid 'plugins' type {}", type_name(other))));
        }
    }
    Ok(list)
}

/// Largest configuration or cache file read (libcni sets no bound; a conflist is a few KiB).
const MAX_FILE: u64 = 16 << 20;

/// A config or cache file, read as libcni reads it, except that a FIFO or device under the name fails at
/// once instead of blocking cnitool forever (non-blocking open, regular files only), and size is bounded.
pub(crate) fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::fs_private::read_regular(path, MAX_FILE)
}

/// Parses a configuration list file (libcni `NetworkConfFromFile`), including plugins from
/// `<dir>/<name>/*.conf` unless `loadOnlyInlinedPlugins`. Zero plugins is an error.
pub fn conf_list_from_file(path: &Path) -> CniResult<NetworkConfigList> {
    let bytes = read_file(path)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading {}: {e}", path.display())))?;
    let mut list = conf_list_from_bytes(&bytes).map_err(|e| in_file(e, path))?;
    list.source = Some(path.to_path_buf());
    if !list.load_only_inlined_plugins {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        list.plugins.extend(plugin_confs_from_dir(dir, &list.name)?);
    }
    if list.plugins.is_empty() {
        return Err(CniError::invalid_config(format!("no plugin configs found in {}", path.display())));
    }
    Ok(list)
}

fn in_file(e: CniError, path: &Path) -> CniError {
    CniError { msg: format!("{}: {}", path.display(), e.msg), ..e }
}

/// Plugin objects from `<conf_dir>/<network>/*.conf`, lexical order (none if the directory is absent).
pub fn plugin_confs_from_dir(conf_dir: &Path, network: &str) -> CniResult<Vec<PluginConfig>> {
    let dir = conf_dir.join(network);
    let files = conf_files(&dir, &["conf"]).map_err(|e| {
        CniError::new(e.code, format!("failed to read plugin config files in {}: {}", dir.display(), e.msg))
    })?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let bytes = read_file(&f)
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading {}: {e}", f.display())))?;
        out.push(plugin_conf_from_bytes(&bytes).map_err(|e| in_file(e, &f))?);
    }
    Ok(out)
}

/// Files (not directories) in `dir` whose extension is one of `extensions` (without the dot), sorted
/// by name. A missing directory gives an empty list.
pub fn conf_files(dir: &Path, extensions: &[&str]) -> CniResult<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::new(code::IO_FAILURE, format!("cannot read {}: {e}", dir.display())));
        }
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| CniError::new(code::IO_FAILURE, format!("cannot read {}: {e}", dir.display())))?;
        let path = entry.path();
        // Like Go's DirEntry.IsDir: a symlink to a directory is not skipped here, it fails on read.
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extensions.contains(&ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Up-converts a single-plugin configuration into a one-element list (libcni `ConfListFromConf`).
pub fn conf_list_from_conf(plugin: &PluginConfig) -> CniResult<NetworkConfigList> {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(plugin.name.clone().unwrap_or_default()));
    let v = plugin.raw.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    obj.insert("cniVersion".into(), Value::String(v.to_string()));
    obj.insert("plugins".into(), Value::Array(vec![Value::Object(plugin.raw.clone())]));
    let bytes = serde_json::to_vec(&Value::Object(obj)).expect("serializing JSON cannot fail");
    conf_list_from_bytes(&bytes)
}

/// Finds network `name` in `dir` like libcni `LoadNetworkConf`: `.conflist` files first, then the
/// deprecated single-plugin `.conf`/`.json` files. A file that cannot be parsed is an error (it names
/// the file), even if a later file would match.
pub fn load_conf_list(dir: &Path, name: &str) -> CniResult<NetworkConfigList> {
    let lists = conf_files(dir, &["conflist"])?;
    for f in &lists {
        let list = conf_list_from_file(f)?;
        if list.name == name {
            return Ok(list);
        }
    }
    let singles = conf_files(dir, &["conf", "json"])?;
    if singles.is_empty() {
        if lists.is_empty() {
            return Err(CniError::invalid_config(format!("no net configurations found in {}", dir.display())));
        }
        return Err(not_found(dir, name));
    }
    for f in &singles {
        let bytes =
            read_file(f).map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading {}: {e}", f.display())))?;
        let plugin = plugin_conf_from_bytes(&bytes).map_err(|e| in_file(e, f))?;
        if plugin.name.as_deref() == Some(name) {
            let mut list = conf_list_from_conf(&plugin).map_err(|e| in_file(e, f))?;
            list.source = Some(f.clone());
            return Ok(list);
        }
    }
    Err(not_found(dir, name))
}

fn not_found(dir: &Path, name: &str) -> CniError {
    CniError::invalid_config(format!("no net configuration with name \"{name}\" in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Tmp(tempfile::TempDir);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            Tmp(tempfile::TempDir::with_prefix(format!("rcni-unit-conflist-{tag}-")).unwrap())
        }
        fn write(&self, rel: &str, content: &str) {
            let p = self.0.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
    }

    fn list(v: Value) -> CniResult<NetworkConfigList> {
        conf_list_from_bytes(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn version_selection() {
        let s = |v: Option<&str>, vs: Option<&[&str]>| {
            let owned: Option<Vec<String>> = vs.map(|x| x.iter().map(|s| s.to_string()).collect());
            select_version(v, owned.as_deref())
        };
        assert_eq!(s(Some("0.4.0"), None).unwrap(), "0.4.0");
        assert_eq!(s(None, None).unwrap(), "0.1.0");
        assert_eq!(s(Some(""), None).unwrap(), "0.1.0");
        // Without cniVersions, cniVersion is taken as is, even if too new (plugins reject it).
        assert_eq!(s(Some("1.2.0"), None).unwrap(), "1.2.0");
        assert_eq!(s(Some("0.3.1"), Some(&["1.0.0", "1.1.0", "2.0.0"])).unwrap(), "1.1.0");
        assert_eq!(s(Some("1.0.0"), Some(&["0.4.0"])).unwrap(), "1.0.0");
        assert_eq!(s(Some("9.9.9"), Some(&["0.4.0", "0.3.1"])).unwrap(), "0.4.0");
        assert_eq!(s(None, Some(&["0.3.0", "0.10.0", "0.4.0"])).unwrap(), "0.10.0");
        assert_eq!(s(None, Some(&[])).unwrap(), "0.1.0");
        let e = s(None, Some(&["1.2.0"])).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(s(None, Some(&["1.x"])).is_err());
        assert!(s(None, Some(&["1.0.0.0"])).is_err());
    }

    #[test]
    fn parse_list_basic() {
        let l = list(json!({
            "cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.1.0"], "name": "net",
            "disableCheck": "TRUE", "disableGC": true,
            "plugins": [
                {"type": "bridge", "capabilities": {"portMappings": true, "mac": false}},
                {"type": "portmap", "name": "pm"}
            ]
        }))
        .unwrap();
        assert_eq!(l.name, "net");
        assert_eq!(l.cni_version, "1.1.0");
        assert!(l.disable_check && l.disable_gc && !l.load_only_inlined_plugins);
        assert_eq!(l.plugins.len(), 2);
        assert_eq!(l.plugins[0].plugin_type, "bridge");
        assert_eq!(l.plugins[0].capabilities.get("portMappings"), Some(&true));
        assert_eq!(l.plugins[0].capabilities.get("mac"), Some(&false));
        assert_eq!(l.plugins[1].name.as_deref(), Some("pm"));
    }

    #[test]
    fn parse_list_bools() {
        for (v, want) in [(json!(true), true), (json!(false), false), (json!("true"), true), (json!("False"), false)] {
            let l = list(json!({"name": "n", "disableCheck": v, "plugins": [{"type": "x"}]})).unwrap();
            assert_eq!(l.disable_check, want);
        }
        let e = list(json!({"name": "n", "disableGC": "yes", "plugins": [{"type": "x"}]})).unwrap_err();
        assert!(e.msg.contains("disableGC"), "{e}");
        let e = list(json!({"name": "n", "disableCheck": 1, "plugins": [{"type": "x"}]})).unwrap_err();
        assert!(e.msg.contains("disableCheck"), "{e}");
    }

    #[test]
    fn parse_list_errors() {
        assert!(list(json!({"plugins": [{"type": "x"}]})).unwrap_err().msg.contains("no name"));
        assert!(list(json!({"name": 3})).unwrap_err().msg.contains("invalid name type"));
        assert!(list(json!({"name": "n", "cniVersion": 1})).unwrap_err().msg.contains("cniVersion"));
        assert!(list(json!({"name": "n", "plugins": []})).unwrap_err().msg.contains("no plugins in list"));
        assert!(list(json!({"name": "n", "plugins": {}})).unwrap_err().msg.contains("invalid 'plugins' type"));
        assert!(
            list(json!({"name": "n", "loadOnlyInlinedPlugins": true}))
                .unwrap_err()
                .msg
                .contains("loadOnlyInlinedPlugins")
        );
        let e = list(json!({"name": "n", "plugins": [{"type": "a"}, {"ipam": {}}]})).unwrap_err();
        assert!(e.msg.contains("plugin config 1") && e.msg.contains("missing 'type'"), "{e}");
        let e = list(json!({"name": "n", "plugins": [{"type": "a", "capabilities": {"x": 1}}]})).unwrap_err();
        assert!(e.msg.contains("capability \"x\""), "{e}");
        assert_eq!(conf_list_from_bytes(b"{nope").unwrap_err().code, code::DECODE);
        // No plugins key and not inline-only: fine at the bytes level (the file loader decides).
        assert!(list(json!({"name": "n"})).unwrap().plugins.is_empty());
    }

    #[test]
    fn load_from_dir_lexical_and_by_name() {
        let t = Tmp::new("lex");
        t.write("20-b.conflist", r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"second"}]}"#);
        t.write("10-a.conflist", r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"first"}]}"#);
        t.write("30-c.conflist", r#"{"cniVersion":"0.4.0","name":"c","plugins":[{"type":"third"}]}"#);
        t.write("ignored.txt", "not json");
        let l = load_conf_list(t.0.path(), "b").unwrap();
        assert_eq!(l.plugins[0].plugin_type, "first");
        assert_eq!(l.source.as_deref(), Some(t.0.path().join("10-a.conflist").as_path()));
        assert_eq!(l.bytes, br#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"first"}]}"#);
        let l = load_conf_list(t.0.path(), "c").unwrap();
        assert_eq!(l.cni_version, "0.4.0");
        let e = load_conf_list(t.0.path(), "zzz").unwrap_err();
        assert!(e.msg.contains("no net configuration with name \"zzz\""), "{e}");
    }

    #[test]
    fn load_plugins_from_subdir() {
        let t = Tmp::new("subdir");
        t.write("10.conflist", r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"inline"}]}"#);
        t.write("n/20-y.conf", r#"{"type":"y"}"#);
        t.write("n/10-x.conf", r#"{"type":"x"}"#);
        t.write("n/30-z.json", r#"{"type":"not-loaded"}"#);
        let l = load_conf_list(t.0.path(), "n").unwrap();
        let types: Vec<_> = l.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["inline", "x", "y"]);

        t.write(
            "10.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","loadOnlyInlinedPlugins":"true","plugins":[{"type":"inline"}]}"#,
        );
        let l = load_conf_list(t.0.path(), "n").unwrap();
        assert_eq!(l.plugins.len(), 1);

        // No plugins key at all: only the subdirectory's.
        t.write("10.conflist", r#"{"cniVersion":"1.0.0","name":"n"}"#);
        let l = load_conf_list(t.0.path(), "n").unwrap();
        assert_eq!(l.plugins.len(), 2);

        t.write("10.conflist", r#"{"cniVersion":"1.0.0","name":"m"}"#);
        let e = load_conf_list(t.0.path(), "m").unwrap_err();
        assert!(e.msg.contains("no plugin configs found"), "{e}");
    }

    #[test]
    fn load_single_conf_upconverted() {
        let t = Tmp::new("single");
        t.write("10-lo.conf", r#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#);
        t.write("20-x.json", r#"{"cniVersion":"1.0.0","name":"x","type":"bridge","bridge":"cni0"}"#);
        let l = load_conf_list(t.0.path(), "lo").unwrap();
        assert_eq!(l.name, "lo");
        assert_eq!(l.cni_version, "0.3.1");
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].plugin_type, "loopback");
        let l = load_conf_list(t.0.path(), "x").unwrap();
        assert_eq!(l.plugins[0].raw["bridge"], "cni0");
        let bytes: Value = serde_json::from_slice(&l.bytes).unwrap();
        assert_eq!(bytes["plugins"][0]["type"], "bridge");
        assert_eq!(bytes["name"], "x");
        let e = load_conf_list(t.0.path(), "nope").unwrap_err();
        assert!(e.msg.contains("no net configuration with name"), "{e}");
    }

    #[test]
    fn load_empty_dir_and_broken_file() {
        let t = Tmp::new("empty");
        let e = load_conf_list(t.0.path(), "x").unwrap_err();
        assert!(e.msg.contains("no net configurations found"), "{e}");
        let e = load_conf_list(&t.0.path().join("missing"), "x").unwrap_err();
        assert!(e.msg.contains("no net configurations found"), "{e}");
        t.write("00-broken.conflist", "{");
        t.write("10.conflist", r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"inline"}]}"#);
        let e = load_conf_list(t.0.path(), "n").unwrap_err();
        assert!(e.msg.contains("00-broken.conflist"), "{e}");
    }
}
