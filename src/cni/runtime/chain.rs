//! Running a configuration list: ADD / CHECK / DEL / GC / STATUS with libcni's semantics.
//!
//! * Each plugin's stdin is its plugin object with `name` and `cniVersion` of the list injected,
//!   `prevResult` (ADD: the previous plugin's result; DEL/CHECK: the cached final result converted to
//!   the list's version) and `runtimeConfig` = the plugin's `capabilities` (those set to true) ∩ the
//!   capability args, only if that is non-empty. Keys come out sorted and compact, as from libcni.
//! * ADD runs the plugins in order; the first error aborts (no automatic DEL: the caller must DEL).
//!   The final result is cached (see [`super::cache`]).
//! * DEL runs them in reverse; from 0.4.0 on, with the cached result as prevResult (an unreadable cache
//!   is removed and DEL goes on without prevResult). On success the cache file is removed (libcni
//!   keeps it for lists below 0.4.0, which leaks files; we don't).
//! * CHECK needs 0.4.0, does nothing when `disableCheck`, passes the cached result to every plugin.
//! * Every plugin error keeps its code and details; its message is prefixed with which plugin failed in
//!   which command (`plugin type="bridge" failed (add): ...`, libcni's wording; libcni does not prefix
//!   CHECK and STATUS errors, we do, so an operator sees which plugin of the list failed).
//! * GC does nothing when `disableGC`. It DELs every cached attachment of this network that is not
//!   valid, then (from 1.1.0) sends GC with `cni.dev/valid-attachments` (and the older key
//!   `cni.dev/attachments`) to every plugin; errors are collected, not fatal.
//! * STATUS does nothing below 1.1.0, else STATUS to every plugin, the first error is returned.
//! * ADD and DEL open the netns once and hand every plugin that open namespace (`/proc/<pid>/fd/<n>`, see
//!   [`crate::cni::process`]), so all plugins of the list act on one namespace. CHECK passes the path:
//!   it changes nothing, and plugins compare prevResult's `sandbox` with CNI_NETNS as a string.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cache::{self, CACHE_KIND, CachedInfo};
use super::conflist::{NetworkConfigList, PluginConfig};
use super::invoke::{self, InvokeArgs, OpenNetns, PluginInfo};
use super::{Runtime, RuntimeConf};
use crate::cni::config::check_network_name;
use crate::cni::error::{CniError, CniResult, code};
use crate::cni::result::AddResult;
use crate::cni::skel::{check_container_id, check_ifname};
use crate::cni::version;

/// Reserved stdin key carrying the valid attachments on GC (spec 1.1.0 after cni#1103).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The key the spec-v1.1.0 tag used; libcni sends both.
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// One attachment in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Arguments of a GC: the attachments that are still in use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GcArgs {
    pub valid_attachments: Vec<GcAttachment>,
}

/// `runtimeConfig` for a plugin: the capability args whose key the plugin declares `true` in
/// `capabilities`.
pub fn runtime_config(plugin: &PluginConfig, capability_args: &Map<String, Value>) -> Map<String, Value> {
    plugin
        .capabilities
        .iter()
        .filter(|(_, enabled)| **enabled)
        .filter_map(|(k, _)| capability_args.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// The stdin of one plugin for ADD/DEL/CHECK (libcni `buildOneConfig`).
pub fn build_plugin_stdin(
    list_name: &str,
    cni_version: &str,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut obj = plugin.raw.clone();
    obj.insert("name".into(), Value::String(list_name.to_string()));
    obj.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    let rc = runtime_config(plugin, capability_args);
    if !rc.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&Value::Object(obj)).expect("serializing JSON cannot fail")
}

/// The stdin of one plugin for GC. `valid = None` sends no attachment keys (plugins then must not
/// remove anything).
pub fn build_gc_stdin(
    list_name: &str,
    cni_version: &str,
    plugin: &PluginConfig,
    valid: Option<&[GcAttachment]>,
) -> Vec<u8> {
    let mut obj = plugin.raw.clone();
    obj.insert("name".into(), Value::String(list_name.to_string()));
    obj.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    if let Some(valid) = valid {
        let v = serde_json::to_value(valid).expect("serializing JSON cannot fail");
        obj.insert(VALID_ATTACHMENTS_KEY.into(), v.clone());
        obj.insert(ATTACHMENTS_KEY.into(), v);
    }
    serde_json::to_vec(&Value::Object(obj)).expect("serializing JSON cannot fail")
}

/// The stdin of one plugin for STATUS.
pub fn build_status_stdin(list_name: &str, cni_version: &str, plugin: &PluginConfig) -> Vec<u8> {
    build_gc_stdin(list_name, cni_version, plugin, None)
}

/// libcni's container ID rule: required, then the spec's pattern.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    if id.is_empty() {
        return Err(CniError::new(code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    check_container_id(id)
}

/// libcni's `type="bridge" name="x"` (the plugin object's own name, usually absent).
fn plugin_description(p: &PluginConfig) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("type={:?} name={n:?}", p.plugin_type),
        _ => format!("type={:?}", p.plugin_type),
    }
}

fn version_at_least(v: &str, min: &str) -> CniResult<bool> {
    Ok(version::compare(v, min)? != std::cmp::Ordering::Less)
}

impl Runtime {
    /// `netns`: the namespace opened once for the whole list operation (every plugin gets that one).
    fn args(&self, command: &str, rt: &RuntimeConf, netns: Option<&OpenNetns>) -> InvokeArgs {
        InvokeArgs {
            command: command.into(),
            container_id: rt.container_id.clone(),
            netns: rt.netns.clone(),
            args: rt.args.clone(),
            ifname: rt.ifname.clone(),
            path: invoke::join_path(&self.plugin_path),
            netns_file: netns.cloned(),
        }
    }

    /// Path of a plugin binary on the search path.
    pub fn find_plugin(&self, plugin_type: &str) -> CniResult<PathBuf> {
        crate::cni::lookup::find_plugin(plugin_type, &self.plugin_path)
    }

    /// The cache file of an attachment of `list`.
    pub fn cache_file(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> CniResult<PathBuf> {
        cache::cache_file_path(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname)
    }

    /// The cached result JSON in the list's version (what DEL/CHECK pass as prevResult).
    fn cached_result_value(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> CniResult<Option<Value>> {
        let path = self.cache_file(list, rt)?;
        let Some(raw) = cache::read_result(&path)? else {
            return Ok(None);
        };
        let parsed = AddResult::from_value(&raw, "0.1.0")
            .map_err(|e| e.context(format!("cannot parse cached result {}", path.display())))?;
        let converted = parsed.to_value(&list.cni_version).map_err(|e| {
            e.context(format!("failed to convert cached result to config version {:?}", list.cni_version))
        })?;
        Ok(Some(converted))
    }

    /// The conflist bytes and runtime parameters an attachment was added with (libcni
    /// `GetNetworkListCachedConfig`): `rt` with `args` and `capability_args` taken from the cache.
    pub fn cached_config(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> CniResult<Option<(Vec<u8>, RuntimeConf)>> {
        let path = self.cache_file(list, rt)?;
        Ok(cache::read_info(&path)?.map(|info| {
            let mut new_rt = rt.clone();
            if !info.cni_args.is_empty() {
                new_rt.args = info.cni_args;
            }
            new_rt.capability_args = info.capability_args;
            (info.config, new_rt)
        }))
    }

    /// Cached attachments of every network (or of one container), in file name order.
    pub fn cached_attachments(&self, container_id: Option<&str>) -> CniResult<Vec<CachedInfo>> {
        cache::list_attachments(&self.cache_dir, container_id)
    }

    /// ADD: runs the plugins in order, caches and returns the final result (in the version the last
    /// plugin printed).
    pub fn add_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> CniResult<AddResult> {
        let mut prev: Option<AddResult> = None;
        let netns = OpenNetns::open(&rt.netns);
        for plugin in &list.plugins {
            let r = self
                .add_one(list, plugin, prev.as_ref(), rt, netns.as_ref())
                .map_err(|e| e.context(format!("plugin {} failed (add)", plugin_description(plugin))))?;
            prev = Some(r);
        }
        let result = prev.ok_or_else(|| CniError::invalid_config(format!("network {:?} has no plugins", list.name)))?;
        let info = CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            ifname: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.to_value(&result.cni_version)?),
        };
        cache::write(&self.cache_dir, &info)
            .map_err(|e| e.context(format!("failed to set network {:?} cached result", list.name)))?;
        Ok(result)
    }

    fn add_one(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConfig,
        prev: Option<&AddResult>,
        rt: &RuntimeConf,
        netns: Option<&OpenNetns>,
    ) -> CniResult<AddResult> {
        let path = self.find_plugin(&plugin.plugin_type)?;
        validate_container_id(&rt.container_id)?;
        check_network_name(&list.name)?;
        check_ifname(&rt.ifname)?;
        let prev_value = prev.map(|r| r.to_value(&r.cni_version)).transpose()?;
        let stdin = build_plugin_stdin(&list.name, &list.cni_version, plugin, prev_value.as_ref(), &rt.capability_args);
        invoke::exec_with_result(&path, &stdin, &self.args("ADD", rt, netns))
    }

    /// CHECK: every plugin in order with the cached result as prevResult.
    pub fn check_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> CniResult<()> {
        if !version_at_least(&list.cni_version, "0.4.0")? {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("configuration version {:?} does not support the CHECK command", list.cni_version),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result_value(list, rt)
            .map_err(|e| e.context(format!("failed to get network {:?} cached result", list.name)))?;
        for plugin in &list.plugins {
            let describe = || format!("plugin {} failed (check)", plugin_description(plugin));
            let path = self.find_plugin(&plugin.plugin_type).map_err(|e| e.context(describe()))?;
            let stdin = build_plugin_stdin(&list.name, &list.cni_version, plugin, cached.as_ref(), &rt.capability_args);
            invoke::exec_without_result(&path, &stdin, &self.args("CHECK", rt, None))
                .map_err(|e| e.context(describe()))?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order; from 0.4.0 on with the cached result as prevResult.
    pub fn del_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> CniResult<()> {
        let cache_path = self.cache_file(list, rt).ok();
        let mut cached = None;
        if version_at_least(&list.cni_version, "0.4.0")? {
            match self.cached_result_value(list, rt) {
                Ok(v) => cached = v,
                Err(_) => {
                    // Like libcni: an unusable cache is dropped and DEL goes on without prevResult.
                    if let Some(p) = &cache_path {
                        let _ = cache::remove(p);
                    }
                }
            }
        }
        let netns = OpenNetns::open(&rt.netns);
        for plugin in list.plugins.iter().rev() {
            let describe = || format!("plugin {} failed (delete)", plugin_description(plugin));
            let path = self.find_plugin(&plugin.plugin_type).map_err(|e| e.context(describe()))?;
            let stdin = build_plugin_stdin(&list.name, &list.cni_version, plugin, cached.as_ref(), &rt.capability_args);
            invoke::exec_without_result(&path, &stdin, &self.args("DEL", rt, netns.as_ref()))
                .map_err(|e| e.context(describe()))?;
        }
        if let Some(p) = &cache_path {
            let _ = cache::remove(p);
        }
        Ok(())
    }

    /// GC: DEL of every cached attachment of this network not in `args` (all of them when `args` is
    /// `None`, like libcni), then (from 1.1.0) GC to every plugin. Errors are collected.
    pub fn gc_network_list(&self, list: &NetworkConfigList, args: Option<&GcArgs>) -> CniResult<()> {
        if list.disable_gc {
            return Ok(());
        }
        cache::remove_stale_temps(&self.cache_dir);
        let mut errs = Vec::new();
        let valid: BTreeSet<&GcAttachment> = args.map(|a| a.valid_attachments.iter().collect()).unwrap_or_default();
        match self.cached_attachments(None) {
            Ok(cached) => {
                for att in cached.into_iter().filter(|a| a.network_name == list.name) {
                    let key = GcAttachment { container_id: att.container_id.clone(), ifname: att.ifname.clone() };
                    if valid.contains(&key) {
                        continue;
                    }
                    let rt = RuntimeConf {
                        container_id: att.container_id,
                        netns: att.netns,
                        ifname: att.ifname,
                        args: att.cni_args,
                        capability_args: att.capability_args,
                    };
                    if let Err(e) = self.del_network_list(list, &rt) {
                        errs.push(
                            e.context(format!("failed to delete stale attachment {} {}", rt.container_id, rt.ifname)),
                        );
                    }
                }
            }
            Err(e) => errs.push(e.context("cannot list cached attachments")),
        }
        if version_at_least(&list.cni_version, "1.1.0")? {
            let valid = args.map(|a| a.valid_attachments.as_slice());
            for plugin in &list.plugins {
                let stdin = build_gc_stdin(&list.name, &list.cni_version, plugin, valid);
                let res = self.find_plugin(&plugin.plugin_type).and_then(|path| {
                    invoke::exec_without_result(&path, &stdin, &self.args("GC", &RuntimeConf::default(), None))
                });
                if let Err(e) = res {
                    errs.push(e.context(format!("failed to GC plugin {}", plugin.plugin_type)));
                }
            }
        }
        CniError::join(errs)
    }

    /// STATUS: every plugin in order (lists below 1.1.0: nothing to ask, success).
    pub fn status_network_list(&self, list: &NetworkConfigList) -> CniResult<()> {
        if !version_at_least(&list.cni_version, "1.1.0")? {
            return Ok(());
        }
        for plugin in &list.plugins {
            let describe = || format!("plugin {} failed (status)", plugin_description(plugin));
            let path = self.find_plugin(&plugin.plugin_type).map_err(|e| e.context(describe()))?;
            let stdin = build_status_stdin(&list.name, &list.cni_version, plugin);
            invoke::exec_without_result(&path, &stdin, &self.args("STATUS", &RuntimeConf::default(), None))
                .map_err(|e| e.context(describe()))?;
        }
        Ok(())
    }

    /// VERSION of one plugin.
    pub fn version_info(&self, plugin_type: &str) -> CniResult<PluginInfo> {
        invoke::version_info(&self.find_plugin(plugin_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::runtime::conflist::conf_list_from_bytes;
    use serde_json::json;

    fn plugin(v: Value) -> PluginConfig {
        crate::cni::runtime::conflist::plugin_conf_from_value(&v).unwrap()
    }

    fn caps(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn capabilities_intersection() {
        let p = plugin(json!({"type": "x", "capabilities": {"portMappings": true, "mac": false, "ips": true}}));
        let rc = runtime_config(&p, &caps(json!({"portMappings": [{"hostPort": 80}], "mac": "aa", "bandwidth": {}})));
        assert_eq!(Value::Object(rc), json!({"portMappings": [{"hostPort": 80}]}));
        let none = plugin(json!({"type": "x"}));
        assert!(runtime_config(&none, &caps(json!({"mac": "aa"}))).is_empty());
    }

    #[test]
    fn stdin_injection() {
        let p = plugin(json!({
            "type": "bridge", "name": "ignored", "cniVersion": "0.3.1", "bridge": "cni0",
            "capabilities": {"mac": true}, "runtimeConfig": {"old": 1}
        }));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let out = build_plugin_stdin("net", "1.0.0", &p, Some(&prev), &caps(json!({"mac": "m"})));
        let s = String::from_utf8(out).unwrap();
        // Sorted, compact, like libcni's re-marshalled map.
        assert_eq!(
            s,
            r#"{"bridge":"cni0","capabilities":{"mac":true},"cniVersion":"1.0.0","name":"net","prevResult":{"cniVersion":"1.0.0","ips":[]},"runtimeConfig":{"mac":"m"},"type":"bridge"}"#
        );
        // Without a matching capability the configured runtimeConfig stays; no prevResult key.
        let out = build_plugin_stdin("net", "1.0.0", &p, None, &Map::new());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["runtimeConfig"], json!({"old": 1}));
        assert!(v.get("prevResult").is_none());
    }

    #[test]
    fn gc_and_status_stdin() {
        let p = plugin(json!({"type": "host-local", "capabilities": {"ips": true}}));
        let valid = [GcAttachment { container_id: "c1".into(), ifname: "eth0".into() }];
        let v: Value = serde_json::from_slice(&build_gc_stdin("n", "1.1.0", &p, Some(&valid))).unwrap();
        let want = json!([{"containerID": "c1", "ifname": "eth0"}]);
        assert_eq!(v[VALID_ATTACHMENTS_KEY], want);
        assert_eq!(v[ATTACHMENTS_KEY], want);
        assert_eq!(v["name"], "n");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v.get("runtimeConfig").is_none());
        let v: Value = serde_json::from_slice(&build_gc_stdin("n", "1.1.0", &p, Some(&[]))).unwrap();
        assert_eq!(v[VALID_ATTACHMENTS_KEY], json!([]));
        let v: Value = serde_json::from_slice(&build_status_stdin("n", "1.1.0", &p)).unwrap();
        assert!(v.get(VALID_ATTACHMENTS_KEY).is_none());
        assert_eq!(v["type"], "host-local");
    }

    #[test]
    fn validation() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert_eq!(validate_container_id("").unwrap_err().code, 3);
        let e = validate_container_id("-x").unwrap_err();
        assert_eq!((e.code, e.details.as_str()), (4, "-x"));
        assert!(validate_container_id("a/b").is_err());
        assert!(check_network_name("my-net.1").is_ok());
        assert_eq!(check_network_name("").unwrap_err().code, 7);
        assert_eq!(check_network_name("a b").unwrap_err().code, 7);
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("123456789012345").is_ok());
        assert!(check_ifname("1234567890123456").is_err());
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert_eq!(check_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }

    #[test]
    fn errors_keep_code_and_details() {
        let e = CniError::new(11, "busy").with_details("d").context("plugin type=\"x\" failed (add)");
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "plugin type=\"x\" failed (add): busy");
        assert_eq!(e.details, "d");
        assert!(CniError::join(vec![]).is_ok());
        let e = CniError::join(vec![CniError::new(5, "a"), CniError::new(5, "b")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (5, "a; b"));
        let e = CniError::join(vec![CniError::new(5, "a"), CniError::new(6, "b")]).unwrap_err();
        assert_eq!(e.code, 999);
    }

    // ---- whole chains against shell-script plugins ------------------------------------------

    struct Env {
        dir: tempfile::TempDir,
        rt: Runtime,
    }
    impl Env {
        fn new(tag: &str) -> Env {
            let dir = tempfile::TempDir::with_prefix(format!("rcni-unit-chain-{tag}-")).unwrap();
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            let rt = Runtime::new(vec![dir.path().join("bin")]).with_cache_dir(dir.path().join("cache"));
            Env { dir, rt }
        }
        /// A plugin that logs `COMMAND <stdin>` to log/<name> and prints `out` (ADD only).
        fn plugin(&self, name: &str, add_out: &str) {
            use std::os::unix::fs::PermissionsExt;
            let log = self.dir.path().join("log");
            let p = self.dir.path().join("bin").join(name);
            let body = format!(
                "#!/bin/sh\nin=$(cat)\nprintf '%s %s %s %s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_IFNAME\" \"$in\" >> {log}\n\
                 [ -e \"{dir}/fail-{name}-$CNI_COMMAND\" ] && {{ echo '{{\"code\":11,\"msg\":\"{name} failed\"}}'; exit 1; }}\n\
                 [ \"$CNI_COMMAND\" = ADD ] && printf '%s' '{add_out}'\nexit 0\n",
                log = log.display(),
                dir = self.dir.path().display(),
            );
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        fn fail(&self, name: &str, cmd: &str, on: bool) {
            let p = self.dir.path().join(format!("fail-{name}-{cmd}"));
            if on {
                std::fs::write(p, "").unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
        fn log(&self) -> Vec<(String, String, String, Value)> {
            let s = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            std::fs::remove_file(self.dir.path().join("log")).ok();
            s.lines()
                .map(|l| {
                    let mut it = l.splitn(4, ' ');
                    let cmd = it.next().unwrap().to_string();
                    let cid = it.next().unwrap().to_string();
                    let ifn = it.next().unwrap().to_string();
                    (cmd, cid, ifn, serde_json::from_str(it.next().unwrap()).unwrap())
                })
                .collect()
        }
    }

    fn rtconf(cid: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: cid.into(),
            netns: "/run/netns/none".into(),
            ifname: "eth0".into(),
            args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: caps(json!({"mac": "c2:00:00:00:00:01"})),
        }
    }

    #[test]
    fn add_check_del_chain() {
        let env = Env::new("acd");
        env.plugin("first", r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}"#);
        env.plugin("second", r#"{"ips":[{"address":"10.0.0.3/24"}]}"#);
        let list = conf_list_from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"first","capabilities":{"mac":true}},{"type":"second"}]}"#,
        )
        .unwrap();
        let rt = rtconf("c1");
        let res = env.rt.add_network_list(&list, &rt).unwrap();
        assert_eq!(res.cni_version, "1.0.0");
        let log = env.log();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].0.as_str(), log[0].1.as_str(), log[0].2.as_str()), ("ADD", "c1", "eth0"));
        assert_eq!(log[0].3["runtimeConfig"], json!({"mac": "c2:00:00:00:00:01"}));
        assert!(log[0].3.get("prevResult").is_none());
        assert_eq!(log[1].3["prevResult"]["ips"][0]["address"], "10.0.0.2/24");
        assert!(log[1].3.get("runtimeConfig").is_none());

        // Cache file.
        let path = env.rt.cache_file(&list, &rt).unwrap();
        let info = cache::read_info(&path).unwrap().unwrap();
        assert_eq!(info.config, list.bytes);
        assert_eq!(info.netns, "/run/netns/none");
        assert_eq!(info.cni_args, rt.args);
        assert_eq!(info.result.as_ref().unwrap()["ips"][0]["address"], "10.0.0.3/24");
        assert_eq!(info.result.as_ref().unwrap()["cniVersion"], "1.0.0");
        let (cfg, crt) = env.rt.cached_config(&list, &rt).unwrap().unwrap();
        assert_eq!(cfg, list.bytes);
        assert_eq!(crt.capability_args, rt.capability_args);

        env.rt.check_network_list(&list, &rt).unwrap();
        let log = env.log();
        assert_eq!(log.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["CHECK", "CHECK"]);
        for l in &log {
            assert_eq!(l.3["prevResult"]["ips"][0]["address"], "10.0.0.3/24");
        }

        env.rt.del_network_list(&list, &rt).unwrap();
        let log = env.log();
        let order: Vec<_> = log.iter().map(|l| l.3["type"].as_str().unwrap()).collect();
        assert_eq!(order, ["second", "first"]);
        assert_eq!(log[0].3["prevResult"]["ips"][0]["address"], "10.0.0.3/24");
        assert!(!path.exists());
        // Second DEL: no cache, no prevResult, still fine.
        env.rt.del_network_list(&list, &rt).unwrap();
        assert!(env.log().iter().all(|l| l.3.get("prevResult").is_none()));
    }

    #[test]
    fn add_failure_and_versions() {
        let env = Env::new("fail");
        env.plugin("first", r#"{"cniVersion":"0.3.1"}"#);
        env.plugin("second", r#"{"cniVersion":"0.3.1"}"#);
        let list = conf_list_from_bytes(
            br#"{"cniVersion":"0.3.1","name":"net","plugins":[{"type":"first"},{"type":"second","name":"sec"}]}"#,
        )
        .unwrap();
        let rt = rtconf("c2");
        env.fail("second", "ADD", true);
        let e = env.rt.add_network_list(&list, &rt).unwrap_err();
        env.fail("second", "ADD", false);
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "plugin type=\"second\" name=\"sec\" failed (add): second failed");
        assert!(!env.rt.cache_file(&list, &rt).unwrap().exists());
        // CHECK is not allowed below 0.4.0.
        assert_eq!(env.rt.check_network_list(&list, &rt).unwrap_err().code, 1);
        // 0.3.1: DEL gets no prevResult even with a cache, but the cache is removed.
        env.rt.add_network_list(&list, &rt).unwrap();
        env.log();
        env.rt.del_network_list(&list, &rt).unwrap();
        assert!(env.log().iter().all(|l| l.3.get("prevResult").is_none()));
        assert!(!env.rt.cache_file(&list, &rt).unwrap().exists());
        // STATUS below 1.1.0 is a no-op; GC below 1.1.0 only DELs stale cached attachments.
        env.rt.status_network_list(&list).unwrap();
        assert!(env.log().is_empty());
        // Missing plugin.
        let bad = conf_list_from_bytes(br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"nope"}]}"#).unwrap();
        let e = env.rt.add_network_list(&bad, &rt).unwrap_err();
        assert!(e.msg.contains("failed to find plugin \"nope\""), "{e}");
        // Invalid ifname is caught before exec.
        let mut r2 = rtconf("c2");
        r2.ifname = "bad name".into();
        assert_eq!(env.rt.add_network_list(&list, &r2).unwrap_err().code, 4);
        assert!(env.log().is_empty());
    }

    #[test]
    fn disable_check_and_gc() {
        let env = Env::new("disable");
        env.plugin("p", r#"{"cniVersion":"1.1.0"}"#);
        let list = conf_list_from_bytes(
            br#"{"cniVersion":"1.1.0","name":"net","disableCheck":true,"disableGC":"true","plugins":[{"type":"p"}]}"#,
        )
        .unwrap();
        let rt = rtconf("c3");
        env.rt.add_network_list(&list, &rt).unwrap();
        env.log();
        env.rt.check_network_list(&list, &rt).unwrap();
        env.rt.gc_network_list(&list, None).unwrap();
        assert!(env.log().is_empty());
        assert!(env.rt.cache_file(&list, &rt).unwrap().exists());
        env.rt.status_network_list(&list).unwrap();
        assert_eq!(env.log()[0].0, "STATUS");
    }

    #[test]
    fn gc_dels_stale_and_calls_plugins() {
        let env = Env::new("gc");
        env.plugin("p", r#"{"cniVersion":"1.1.0"}"#);
        let list = conf_list_from_bytes(br#"{"cniVersion":"1.1.0","name":"net","plugins":[{"type":"p"}]}"#).unwrap();
        let other = conf_list_from_bytes(br#"{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"p"}]}"#).unwrap();
        for cid in ["keep", "stale"] {
            env.rt.add_network_list(&list, &rtconf(cid)).unwrap();
        }
        env.rt.add_network_list(&other, &rtconf("stale")).unwrap();
        env.log();
        let args =
            GcArgs { valid_attachments: vec![GcAttachment { container_id: "keep".into(), ifname: "eth0".into() }] };
        env.rt.gc_network_list(&list, Some(&args)).unwrap();
        let log = env.log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!((log[0].0.as_str(), log[0].1.as_str()), ("DEL", "stale"));
        assert_eq!(log[0].3["prevResult"]["cniVersion"], "1.1.0");
        assert_eq!(log[1].0, "GC");
        assert_eq!(log[1].1, "");
        assert_eq!(log[1].3[VALID_ATTACHMENTS_KEY], json!([{"containerID": "keep", "ifname": "eth0"}]));
        let left: Vec<_> = env
            .rt
            .cached_attachments(None)
            .unwrap()
            .into_iter()
            .map(|a| format!("{}/{}", a.network_name, a.container_id))
            .collect();
        assert_eq!(left, ["net/keep", "other/stale"]);

        // GC errors are collected: the stale DEL fails, GC still runs.
        env.fail("p", "DEL", true);
        let res = env.rt.gc_network_list(&list, None);
        env.fail("p", "DEL", false);
        let e = res.unwrap_err();
        assert!(e.msg.contains("failed to delete stale attachment keep eth0"), "{e}");
        let log = env.log();
        assert_eq!(log.last().unwrap().0, "GC");
        assert!(log.last().unwrap().3.get(VALID_ATTACHMENTS_KEY).is_none());
    }
}
