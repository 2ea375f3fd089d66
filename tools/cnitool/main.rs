//! cnitool: run a network configuration list against a network namespace, like upstream cnitool.
//!
//! ```text
//! cnitool add    <net> <netns>
//! cnitool check  <net> <netns>
//! cnitool del    <net> <netns>
//! cnitool gc     <net> [<netns>]
//! cnitool status <net> [<netns>]
//! ```
//!
//! Environment:
//! * `NETCONFPATH`: directory of the configurations (default `/etc/cni/net.d`); `<net>` is looked up by
//!   `name` like libcni does (`*.conflist`, then `*.conf`/`*.json`).
//! * `CNI_PATH`: `:`-separated plugin search path.
//! * `CNI_IFNAME`: interface name in the container (default `eth0`).
//! * `CNI_ARGS`: `K=V;K2=V2`, passed to the plugins.
//! * `CAP_ARGS`: JSON object of capability args (e.g. `{"portMappings":[...]}`); each plugin receives the
//!   keys it declares in `capabilities` as `runtimeConfig`.
//! * `CNI_CONTAINERID`: container ID; default `cnitool-` + the first 20 hex digits of the SHA-512 of the
//!   absolute netns path (what upstream cnitool always uses).
//! * `CNI_CACHE_DIR`: result cache directory (default `/var/lib/cni`).
//! * `CNI_VALID_ATTACHMENTS` (gc only): JSON list `[{"containerID":"..","ifname":".."}, ...]` of the
//!   attachments still in use. Cached attachments of this network not in it are deleted (a DEL with
//!   their cached parameters) and the plugins are asked to GC everything else; `[]` means nothing is
//!   in use. When unset, every attachment in the result cache of this network counts as in use: no
//!   cached attachment is deleted, and the plugins garbage-collect only what the cache does not know
//!   (e.g. IPs leaked by a failed ADD). (Upstream cnitool instead deletes every cached attachment of
//!   the network; set `CNI_VALID_ATTACHMENTS=[]` for that.)
//!
//! `add` prints the result JSON on stdout. Errors go to stderr, exit code 1.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use rcni::cni::args::CniArgs;
use rcni::cni::error::{CniError, CniResult, code};
use rcni::cni::result::to_pretty;
use rcni::cni::runtime::{self, GcArgs, GcAttachment, Runtime, RuntimeConf};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

const DEFAULT_NET_DIR: &str = "/etc/cni/net.d";

fn usage(exe: &str) -> ExitCode {
    eprintln!("{exe}: Add, check, remove, gc or status network interfaces from a network namespace");
    eprintln!("  {exe} add    <net> <netns>");
    eprintln!("  {exe} check  <net> <netns>");
    eprintln!("  {exe} del    <net> <netns>");
    eprintln!("  {exe} gc     <net> [<netns>]");
    eprintln!("  {exe} status <net> [<netns>]");
    eprintln!("env: NETCONFPATH (default {DEFAULT_NET_DIR}), CNI_PATH, CNI_IFNAME (default eth0), CNI_ARGS, CAP_ARGS,");
    eprintln!("     CNI_CONTAINERID, CNI_CACHE_DIR (default /var/lib/cni), CNI_VALID_ATTACHMENTS (gc)");
    ExitCode::FAILURE
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn env_nonempty(name: &str) -> Option<String> {
    env(name).filter(|s| !s.is_empty())
}

/// `filepath.Abs`: joined with the working directory and cleaned lexically (symlinks untouched).
fn absolute(p: &str) -> CniResult<String> {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("cannot get working directory: {e}")))?
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out.to_string_lossy().into_owned())
}

/// Upstream cnitool's container ID: `cnitool-` + hex of the first 10 bytes of SHA-512(netns path).
fn container_id_for(netns: &str) -> String {
    let digest = Sha512::digest(netns.as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

fn capability_args() -> CniResult<Map<String, Value>> {
    let Some(raw) = env_nonempty("CAP_ARGS") else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniError::new(code::DECODE, "CAP_ARGS must be a JSON object")),
        Err(e) => Err(CniError::new(code::DECODE, format!("CAP_ARGS is not valid JSON: {e}"))),
    }
}

fn valid_attachments(rt: &Runtime, network: &str) -> CniResult<GcArgs> {
    if let Some(raw) = env("CNI_VALID_ATTACHMENTS") {
        let list: Vec<GcAttachment> = serde_json::from_str(&raw).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("CNI_VALID_ATTACHMENTS must be a JSON list of {{\"containerID\":..,\"ifname\":..}}: {e}"),
            )
        })?;
        return Ok(GcArgs { valid_attachments: list });
    }
    let cached = rt.cached_attachments(None)?;
    Ok(GcArgs {
        valid_attachments: cached
            .into_iter()
            .filter(|a| a.network_name == network)
            .map(|a| GcAttachment { container_id: a.container_id, ifname: a.ifname })
            .collect(),
    })
}

fn run(cmd: &str, net: &str, netns: Option<&str>) -> CniResult<()> {
    let net_dir = env_nonempty("NETCONFPATH").unwrap_or_else(|| DEFAULT_NET_DIR.to_string());
    let list = runtime::load_conf_list(Path::new(&net_dir), net)?;
    let cap_args = capability_args()?;
    let args = match env_nonempty("CNI_ARGS") {
        Some(s) => CniArgs::parse(&s)?.pairs,
        None => Vec::new(),
    };
    let ifname = env("CNI_IFNAME").unwrap_or_else(|| "eth0".to_string());
    let netns = netns.map(absolute).transpose()?.unwrap_or_default();
    let container_id = match env_nonempty("CNI_CONTAINERID") {
        Some(id) => id,
        None if !netns.is_empty() => container_id_for(&netns),
        None => String::new(),
    };
    let plugin_path = runtime::invoke::split_path(&env("CNI_PATH").unwrap_or_default());
    let mut rt = Runtime::new(plugin_path);
    if let Some(dir) = env_nonempty("CNI_CACHE_DIR") {
        rt = rt.with_cache_dir(dir);
    }
    let att = RuntimeConf { container_id, netns, ifname, args, capability_args: cap_args };

    match cmd {
        "add" => {
            let result = rt.add_network_list(&list, &att)?;
            let v = result.to_value(&result.cni_version)?;
            println!("{}", to_pretty(&v));
            Ok(())
        }
        "check" => rt.check_network_list(&list, &att),
        "del" => rt.del_network_list(&list, &att),
        "gc" => {
            let gc = valid_attachments(&rt, &list.name)?;
            rt.gc_network_list(&list, Some(&gc))
        }
        "status" => rt.status_network_list(&list),
        _ => unreachable!("checked by main"),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let exe = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cnitool".into());
    let Some(cmd) = argv.get(1).map(String::as_str) else {
        return usage(&exe);
    };
    let needs_netns = match cmd {
        "add" | "check" | "del" => true,
        "gc" | "status" => false,
        _ => return usage(&exe),
    };
    let (Some(net), netns) = (argv.get(2), argv.get(3)) else {
        return usage(&exe);
    };
    if (needs_netns && netns.is_none()) || argv.len() > 4 {
        return usage(&exe);
    }
    // Plugins may leave background work (rcni's DEL deletes the veth pair in a detached child): adopt it and
    // wait for it, so that when cnitool returns, the kernel state is final.
    if rcni::net::detached::adopt_helpers().is_ok() {
        // The plugins inherit it: they leave the unregister to a helper only when something reaps it.
        let (reaper_k, reaper_v) = rcni::net::detached::reaper_env();
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var(reaper_k, reaper_v) };
    }
    let outcome = run(cmd, net, netns.map(String::as_str));
    rcni::net::detached::reap_helpers(true);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_upstream_shape() {
        let id = container_id_for("/run/netns/x");
        assert!(id.starts_with("cnitool-"));
        assert_eq!(id.len(), "cnitool-".len() + 20);
        assert!(id["cnitool-".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        // printf /run/netns/x | sha512sum | cut -c1-20
        assert_eq!(id, "cnitool-55e2cecc95014b0f7fc4");
        assert_ne!(id, container_id_for("/run/netns/y"));
    }

    #[test]
    fn absolute_cleans() {
        assert_eq!(absolute("/run/netns/../netns/./x").unwrap(), "/run/netns/x");
        assert_eq!(absolute("/").unwrap(), "/");
        assert!(absolute("rel").unwrap().ends_with("/rel"));
    }
}
