//! Finding and executing a plugin binary, the way libcni's `pkg/invoke` does.
//!
//! * finding the binary: [`crate::cni::lookup::find_plugin`], the one rule shared with delegation;
//! * [`exec_plugin`]: env = this process's environment + `CNI_COMMAND`, `CNI_CONTAINERID`,
//!   `CNI_NETNS`, `CNI_ARGS`, `CNI_IFNAME`, `CNI_PATH` (ours win over inherited ones), stdin = the
//!   config bytes. Exec is retried (up to [`MAX_EXEC_ATTEMPTS`] attempts, 1 s apart) while it fails
//!   with ETXTBSY (the binary is being replaced). On success the plugin's stderr is copied to ours.
//!   On failure: empty stdout → an error built from stderr (`netplugin failed: "<stderr>": exit
//!   status 1`) or `netplugin failed with no error message: exit status 1`; otherwise stdout must be
//!   the error JSON (`code`, `msg`, `details`, passed through unchanged), else `netplugin failed but
//!   error parsing its diagnostic message ...`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cni::error::{CniError, CniResult, code};
use crate::cni::process::{ChildNetns, run_with_netns};
use crate::cni::result::AddResult;

/// How many times exec is attempted while it fails with "text file busy".
pub const MAX_EXEC_ATTEMPTS: usize = 6;

/// The CNI_* parameters of one invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvokeArgs {
    /// `CNI_COMMAND`: ADD, DEL, CHECK, GC, STATUS, VERSION.
    pub command: String,
    pub container_id: String,
    pub netns: String,
    /// `CNI_ARGS` pairs, joined as `K=V;K2=V2`.
    pub args: Vec<(String, String)>,
    pub ifname: String,
    /// `CNI_PATH`, already joined with `:`.
    pub path: String,
    /// `netns` as the runtime opened it for this operation: the plugin gets the open namespace instead of
    /// the path (see [`crate::cni::process`]); None passes the path as it is.
    pub netns_file: Option<OpenNetns>,
}

/// A network namespace opened once for one operation on a list, so every plugin of the list acts on the
/// same namespace however the path changes meanwhile.
#[derive(Debug, Clone)]
pub struct OpenNetns(Arc<File>);

impl OpenNetns {
    /// `path` opened if it is a network namespace file; None otherwise (a missing netns on DEL, a path that
    /// is not a namespace: the plugin sees the path and reports or tolerates it itself).
    pub fn open(path: &str) -> Option<OpenNetns> {
        if path.is_empty() {
            return None;
        }
        crate::nsfile::open(Path::new(path)).ok().map(|f| OpenNetns(Arc::new(f)))
    }
}

impl PartialEq for OpenNetns {
    fn eq(&self, other: &OpenNetns) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl InvokeArgs {
    /// The six CNI_* variables (always all six, empty strings included, like libcni).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", self.command.clone()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_ARGS", stringify_args(&self.args)),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_PATH", self.path.clone()),
        ]
    }
}

/// `K=V;K2=V2`.
pub fn stringify_args(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

/// Joins a search path with `:`.
pub fn join_path(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":")
}

/// Splits a `:`-separated search path; empty elements are dropped (an empty string gives no path).
pub fn split_path(s: &str) -> Vec<PathBuf> {
    s.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

/// What a finished plugin process left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn run_once(plugin: &Path, stdin: &[u8], args: &InvokeArgs) -> std::io::Result<Finished> {
    let mut cmd = Command::new(plugin);
    cmd.envs(args.env()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let netns = args.netns_file.as_ref().map(|f| ChildNetns { file: &f.0, path: &args.netns });
    let out = run_with_netns(&mut cmd, stdin, netns)?;
    Ok(Finished { status: out.status, stdout: out.stdout, stderr: out.stderr })
}

/// Go's wording for a failed process ("exit status 1", "signal: killed").
fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = status.code() {
        format!("exit status {c}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => "killed".to_string(),
            libc::SIGTERM => "terminated".to_string(),
            libc::SIGSEGV => "segmentation fault".to_string(),
            libc::SIGABRT => "aborted".to_string(),
            libc::SIGINT => "interrupt".to_string(),
            other => format!("signal {other}"),
        };
        format!("signal: {name}")
    } else {
        status.to_string()
    }
}

/// The error JSON a plugin prints on failure.
#[derive(Deserialize)]
struct ErrorJson {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Turns a failed run into the error libcni would report.
fn plugin_error(f: &Finished) -> CniError {
    let how = describe_status(f.status);
    if f.stdout.is_empty() {
        if f.stderr.is_empty() {
            return CniError::internal(format!("netplugin failed with no error message: {how}"));
        }
        let stderr = String::from_utf8_lossy(&f.stderr);
        return CniError::internal(format!("netplugin failed: {stderr:?}: {how}"));
    }
    match serde_json::from_slice::<ErrorJson>(&f.stdout) {
        Ok(e) => CniError { code: e.code, msg: e.msg, details: e.details },
        Err(perr) => {
            let stdout = String::from_utf8_lossy(&f.stdout);
            CniError::internal(format!("netplugin failed but error parsing its diagnostic message {stdout:?}: {perr}"))
        }
    }
}

/// Runs `plugin` and returns its stdout on success (exit 0); see the module docs for errors.
pub fn exec_plugin(plugin: &Path, stdin: &[u8], args: &InvokeArgs) -> CniResult<Vec<u8>> {
    let mut attempt = 0;
    let finished = loop {
        attempt += 1;
        match run_once(plugin, stdin, args) {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < MAX_EXEC_ATTEMPTS => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(CniError::internal(format!("failed to execute plugin {}: {e}", plugin.display())));
            }
        }
    };
    if !finished.status.success() {
        if !finished.stdout.is_empty() && !finished.stderr.is_empty() {
            // The error is taken from stdout; keep the plugin's log visible too.
            let _ = std::io::stderr().write_all(&finished.stderr);
        }
        return Err(plugin_error(&finished));
    }
    if !finished.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&finished.stderr);
    }
    Ok(finished.stdout)
}

/// The `cniVersion` of a config's bytes ("0.1.0" when absent or empty).
pub fn config_version(stdin: &[u8]) -> CniResult<String> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODE, format!("decoding version from network config: {e}")))?;
    Ok(match v.get("cniVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "0.1.0".to_string(),
    })
}

/// Parses an ADD result printed by a plugin. A result without `cniVersion` is taken to be in the
/// config's version (libcni does this for compatibility, cni#895).
pub fn parse_result(stdout: &[u8], config_version: &str) -> CniResult<AddResult> {
    let v: Value = serde_json::from_slice(stdout).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("failed to unmarshal raw result: {e} result {:?}", String::from_utf8_lossy(stdout)),
        )
    })?;
    let mut obj = match v {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(CniError::new(
                code::DECODE,
                format!("failed to unmarshal raw result: not a JSON object: {other}"),
            ));
        }
    };
    let has_version = matches!(obj.get("cniVersion"), Some(Value::String(s)) if !s.is_empty());
    if !has_version {
        obj.insert("cniVersion".into(), Value::String(config_version.to_string()));
    }
    AddResult::from_value(&Value::Object(obj), config_version)
}

/// Runs a command that prints a result (ADD) and parses it.
pub fn exec_with_result(plugin: &Path, stdin: &[u8], args: &InvokeArgs) -> CniResult<AddResult> {
    let out = exec_plugin(plugin, stdin, args)?;
    parse_result(&out, &config_version(stdin)?)
}

/// Runs a command that prints nothing on success (DEL, CHECK, GC, STATUS); stdout is ignored.
pub fn exec_without_result(plugin: &Path, stdin: &[u8], args: &InvokeArgs) -> CniResult<()> {
    exec_plugin(plugin, stdin, args).map(|_| ())
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

/// Decodes VERSION output like libcni's PluginDecoder.
pub fn decode_version_info(bytes: &[u8]) -> CniResult<PluginInfo> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "cniVersion", default)]
        cni_version: String,
        #[serde(rename = "supportedVersions", default)]
        supported_versions: Option<Vec<String>>,
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| CniError::new(code::DECODE, format!("decoding version info: {e}")))?;
    if raw.cni_version.is_empty() {
        return Err(CniError::new(code::DECODE, "decoding version info: missing field cniVersion"));
    }
    let supported = raw.supported_versions.unwrap_or_default();
    if supported.is_empty() {
        if raw.cni_version == "0.2.0" {
            return Ok(PluginInfo {
                cni_version: raw.cni_version,
                supported_versions: vec!["0.1.0".into(), "0.2.0".into()],
            });
        }
        return Err(CniError::new(code::DECODE, "decoding version info: missing field supportedVersions"));
    }
    Ok(PluginInfo { cni_version: raw.cni_version, supported_versions: supported })
}

/// Asks a plugin which versions it supports (CNI_COMMAND=VERSION).
pub fn version_info(plugin: &Path) -> CniResult<PluginInfo> {
    let args = InvokeArgs {
        command: "VERSION".into(),
        // Dummies for plugins built against very old skels, like libcni.
        netns: "dummy".into(),
        ifname: "dummy".into(),
        path: "dummy".into(),
        ..Default::default()
    };
    let stdin = format!(r#"{{"cniVersion":"{}"}}"#, super::conflist::MAX_VERSION);
    match exec_plugin(plugin, stdin.as_bytes(), &args) {
        Ok(out) => decode_version_info(&out),
        Err(e) if e.msg == "unknown CNI_COMMAND: VERSION" && e.details.is_empty() => {
            Ok(PluginInfo { cni_version: "0.1.0".into(), supported_versions: vec!["0.1.0".into()] })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(tempfile::TempDir);
    impl Dir {
        fn new(tag: &str) -> Dir {
            Dir(tempfile::TempDir::with_prefix(format!("rcni-unit-invoke-{tag}-")).unwrap())
        }
        fn script(&self, name: &str, body: &str) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        }
    }

    #[test]
    fn env_and_stdin_reach_the_plugin() {
        let d = Dir::new("env");
        let p = d.script(
            "echoer",
            r#"in=$(cat); printf '{"cniVersion":"1.0.0","dns":{"domain":"%s|%s|%s|%s|%s|%s|%s"}}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_ARGS" "$CNI_IFNAME" "$CNI_PATH" "$in""#,
        );
        let args = InvokeArgs {
            command: "ADD".into(),
            container_id: "cid".into(),
            netns: "/run/netns/x".into(),
            args: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            ifname: "eth0".into(),
            path: "/a:/b".into(),
            netns_file: None,
        };
        let out = exec_plugin(&p, b"hello", &args).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["dns"]["domain"], "ADD|cid|/run/netns/x|A=1;B=2|eth0|/a:/b|hello");
    }

    #[test]
    fn errors_like_raw_exec() {
        let d = Dir::new("err");
        let a = InvokeArgs::default();
        let p = d.script("jsonerr", r#"echo 'some log' >&2; echo '{"code":7,"msg":"bad","details":"d"}'; exit 1"#);
        let e = exec_plugin(&p, b"{}", &a).unwrap_err();
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (7, "bad", "d"));
        let p = d.script("stderronly", "echo oops >&2; exit 3");
        let e = exec_plugin(&p, b"{}", &a).unwrap_err();
        assert_eq!(e.msg, "netplugin failed: \"oops\\n\": exit status 3");
        let p = d.script("silent", "exit 1");
        let e = exec_plugin(&p, b"{}", &a).unwrap_err();
        assert_eq!(e.msg, "netplugin failed with no error message: exit status 1");
        let p = d.script("garbage", "echo notjson; exit 1");
        let e = exec_plugin(&p, b"{}", &a).unwrap_err();
        assert!(e.msg.starts_with("netplugin failed but error parsing its diagnostic message \"notjson\\n\""), "{e}");
        let p = d.script("killed", "kill -9 $$");
        let e = exec_plugin(&p, b"{}", &a).unwrap_err();
        assert!(e.msg.ends_with("signal: killed"), "{e}");
        // Does not read stdin at all, large stdin: no deadlock, no error.
        let p = d.script("noread", "echo '{}'");
        let big = vec![b' '; 1 << 20];
        assert_eq!(exec_plugin(&p, &big, &a).unwrap(), b"{}\n");
    }

    #[test]
    fn result_parsing() {
        let r = parse_result(br#"{"ips":[]}"#, "1.0.0").unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        let r = parse_result(br#"{"cniVersion":"0.4.0","ips":[]}"#, "1.0.0").unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        let r = parse_result(b"null", "1.1.0").unwrap();
        assert_eq!(r.cni_version, "1.1.0");
        let e = parse_result(b"", "1.0.0").unwrap_err();
        assert!(e.msg.contains("failed to unmarshal raw result"), "{e}");
        assert_eq!(config_version(br#"{"name":"x"}"#).unwrap(), "0.1.0");
        assert_eq!(config_version(br#"{"cniVersion":"1.0.0"}"#).unwrap(), "1.0.0");
    }

    #[test]
    fn version_decoding() {
        let i = decode_version_info(br#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}"#).unwrap();
        assert_eq!(i.supported_versions, ["0.4.0", "1.0.0"]);
        let i = decode_version_info(br#"{"cniVersion":"0.2.0"}"#).unwrap();
        assert_eq!(i.supported_versions, ["0.1.0", "0.2.0"]);
        assert!(decode_version_info(br#"{"cniVersion":"0.3.0"}"#).is_err());
        assert!(decode_version_info(br#"{"supportedVersions":["1.0.0"]}"#).is_err());
        let d = Dir::new("ver");
        let p = d.script("old", r#"echo '{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}'; exit 1"#);
        assert_eq!(version_info(&p).unwrap().supported_versions, ["0.1.0"]);
        let p = d.script(
            "new",
            r#"[ "$CNI_COMMAND" = VERSION ] && [ "$CNI_NETNS" = dummy ] && echo '{"cniVersion":"1.1.0","supportedVersions":["1.1.0"]}'"#,
        );
        assert_eq!(version_info(&p).unwrap().cni_version, "1.1.0");
    }

    #[test]
    fn paths() {
        assert!(split_path("").is_empty());
        assert_eq!(split_path("/a::/b"), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(join_path(&[PathBuf::from("/a"), PathBuf::from("/b")]), "/a:/b");
        assert_eq!(stringify_args(&[]), "");
    }
}
