//! VERSION and the about text, for every plugin binary.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::rcni_bin;

const PLUGINS: [&str; 9] =
    ["bridge", "host-local", "loopback", "vxlan", "flannel", "tuning", "bandwidth", "firewall", "portmap"];
const ALL: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn run(bin: &str, command: Option<&str>, stdin: &str) -> std::process::Output {
    let mut cmd = Command::new(rcni_bin(bin));
    cmd.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(c) = command {
        cmd.env("CNI_COMMAND", c);
    }
    let mut child = cmd.spawn().unwrap();
    // A plugin may reject its env before reading stdin; a broken pipe here is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn every_plugin_lists_all_seven_versions() {
    for bin in PLUGINS {
        let out = run(bin, Some("VERSION"), r#"{"cniVersion":"0.4.0"}"#);
        assert!(out.status.success(), "{bin}: {out:?}");
        assert!(out.stdout.ends_with(b"}\n"), "{bin}: compact JSON with a newline");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0", "{bin} echoes the requested version");
        assert_eq!(v["supportedVersions"], serde_json::json!(ALL), "{bin}");
        let out = run(bin, Some("VERSION"), "");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0", "{bin}: default version");
    }
}

#[test]
fn no_command_prints_about_on_stderr() {
    for bin in PLUGINS {
        let out = run(bin, None, "");
        assert!(out.status.success(), "{bin}");
        assert!(out.stdout.is_empty(), "{bin}: stdout stays clean");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bin) && err.contains("CNI protocol versions supported: 0.1.0"), "{bin}: {err}");
    }
}

#[test]
fn version_flag_prints_the_about_text_like_the_reference() {
    for bin in PLUGINS {
        let out = Command::new(rcni_bin(bin)).arg("--version").env_remove("CNI_COMMAND").output().unwrap();
        assert!(out.status.success(), "{bin}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(&format!("CNI {bin} plugin (rcni {})", env!("CARGO_PKG_VERSION"))), "{bin}: {text}");
        assert!(text.contains("1.1.0"), "{bin}: {text}");
    }
}

#[test]
fn bad_invocations_give_error_json_and_exit_1() {
    for bin in PLUGINS {
        let out = run(bin, Some("ADD"), r#"{"cniVersion":"1.1.0","name":"n","type":"x"}"#);
        assert_eq!(out.status.code(), Some(1), "{bin}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["code"], 4, "{bin}: {v}");
        assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"), "{bin}: {v}");
    }
}
