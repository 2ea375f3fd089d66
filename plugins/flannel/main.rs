//! The flannel plugin: a drop-in for flannel's CNI plugin. It reads the node's subnet.env (written by the
//! overlay agent, rcni-overlay or flanneld), renders a bridge + host-local config from it and the
//! `delegate` section, saves that config per container and hands the pod to the delegate. DEL hands the
//! delegate the saved config, so it works after subnet.env changed or vanished. See README.md.
//!
//! The delegate is exec'd from CNI_PATH, as flannel does — except when it is a `bridge` and the one on
//! CNI_PATH is rcni's own of this build: then the bridge runs in-process (`rcni::bridge`), which saves a
//! process start. `RCNI_DELEGATE_EXEC=1` forces the exec.

#![cfg_attr(not(test), no_main)]

mod config;
mod saved;

use std::path::{Path, PathBuf};

use config::FlannelConf;
use rcni::cni::error::code;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Command, Plugin, Request};
use rcni::cni::{CniError, CniResult, delegate, log};
use rcni::subnet_env::{SubnetEnv, SubnetEnvError};
use serde_json::{Map, Value};

const PLUGIN: &str = "flannel";

/// How the delegate is reached.
enum Runner {
    /// rcni's bridge of this build, in this process.
    OwnBridge,
    Exec(PathBuf),
}

fn runner(req: &Request, plugin_type: &str) -> CniResult<Runner> {
    let bin = delegate::find_plugin(plugin_type, &req.path)?;
    let forced_exec = std::env::var_os("RCNI_DELEGATE_EXEC").is_some_and(|v| v == "1");
    if plugin_type == "bridge" && !forced_exec && rcni::pod::ipam::is_same_build(&bin, rcni::bridge::BUILD_MARKER) {
        return Ok(Runner::OwnBridge);
    }
    Ok(Runner::Exec(bin))
}

/// Run `command` on the delegate `plugin_type` with `conf` as its stdin, in this request's environment.
/// Its error comes back unchanged (the spec: a delegate's error is not wrapped). ADD returns the result.
fn run_delegate(req: &Request, command: Command, plugin_type: &str, conf: Vec<u8>) -> CniResult<Option<AddResult>> {
    match runner(req, plugin_type)? {
        Runner::OwnBridge => {
            log::trace(PLUGIN, "bridge in-process");
            let r = Request { command, ..rcni::bridge::delegate_request(req, conf)? };
            match command {
                Command::Add => {
                    let result = rcni::bridge::add(&r)?;
                    // Through the same version rendering as the executable's output takes.
                    let ver = &r.conf.cni_version;
                    AddResult::from_value(&result.to_value(ver)?, ver).map(Some)
                }
                Command::Del => rcni::bridge::del(&r).map(|_| None),
                Command::Check => rcni::bridge::check(&r).map(|_| None),
                Command::Gc => rcni::bridge::gc(&r, skel::valid_attachments(&r.conf)?.as_deref()).map(|_| None),
                Command::Status => rcni::bridge::status(&r).map(|_| None),
                Command::Version => unreachable!("VERSION is never delegated"),
            }
        }
        Runner::Exec(bin) => {
            let out = delegate::exec(&bin, command, &conf, &req.netns)?;
            if command != Command::Add {
                return Ok(None);
            }
            let ver = serde_json::from_slice::<Value>(&conf)
                .ok()
                .and_then(|c| c.get("cniVersion").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| req.conf.cni_version.clone());
            AddResult::from_slice(&out, &ver)
                .map(Some)
                .map_err(|e| e.context(format!("delegate {plugin_type} returned an unreadable result")))
        }
    }
}

/// A subnet.env problem as a CNI error. `missing_code`: what a missing or incomplete file means for this
/// command (ADD: try again later; STATUS: not available).
fn subnet_env_error(e: SubnetEnvError, missing_code: u32) -> CniError {
    let agent = "the overlay agent writes it once it holds this node's subnet lease: is rcni-overlay \
                 (`rcni-overlay status`) or flanneld running on this node and able to reach its datastore? \
                 (\"subnetFile\" in the flannel config names the file to read)";
    match &e {
        SubnetEnvError::Missing { path } => CniError::new(
            missing_code,
            format!("subnetFile {} does not exist: this node has no pod subnet yet", path.display()),
        )
        .with_details(agent),
        SubnetEnvError::Incomplete { .. } => CniError::new(missing_code, e.to_string()).with_details(agent),
        SubnetEnvError::Invalid { .. } => CniError::new(code::INVALID_CONFIG, e.to_string())
            .with_details("subnet.env is written by the overlay agent (rcni-overlay or flanneld) in flanneld's format"),
        // Something that is not a regular file (a FIFO, a directory) will not become one by retrying: the
        // config points at the wrong thing (7). Any other read failure is an I/O failure (5).
        SubnetEnvError::Unreadable { path, .. } if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            CniError::invalid_config(format!("subnetFile: {e}"))
                .with_details("\"subnetFile\" must name the subnet.env the overlay agent writes (a regular file)")
        }
        SubnetEnvError::Unreadable { .. } => CniError::new(code::IO_FAILURE, format!("subnetFile: {e}")),
    }
}

fn read_subnet_env(path: &Path, missing_code: u32) -> CniResult<SubnetEnv> {
    SubnetEnv::read(path).map_err(|e| subnet_env_error(e, missing_code))
}

fn delegate_type(conf: &Map<String, Value>) -> String {
    conf.get("type").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn to_bytes(conf: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(conf).expect("a JSON map serializes")
}

/// The saved delegate config of this container as an object, and its `type`.
fn parse_saved(bytes: &[u8]) -> Option<(Map<String, Value>, String)> {
    let obj = serde_json::from_slice::<Value>(bytes).ok()?.as_object()?.clone();
    let plugin_type = obj.get("type")?.as_str()?.to_string();
    Some((obj, plugin_type))
}

struct Flannel;

impl Plugin for Flannel {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let conf = FlannelConf::parse(&req.conf.raw)?;
        let env = read_subnet_env(&conf.subnet_file, code::TRY_AGAIN)?;
        let delegate = conf.delegate_config(&env);
        let plugin_type = delegate_type(&delegate);
        let bytes = to_bytes(&delegate);
        log::trace(PLUGIN, &format!("delegate config: {}", String::from_utf8_lossy(&bytes)));
        // Saved before the delegate runs: if this process dies mid-ADD, the runtime's DEL finds what to undo.
        let previous = saved::read(&conf.data_dir, &req.container_id)?;
        let dir_was_there = conf.data_dir.exists();
        saved::write(&conf.data_dir, &req.container_id, &bytes)?;
        match run_delegate(req, Command::Add, &plugin_type, bytes) {
            Ok(result) => result.ok_or_else(|| CniError::internal("delegate ADD gave no result")),
            Err(e) => {
                // The delegate undid its own work; undo ours: the saved config as it was before this ADD.
                if let Err(undo) = saved::restore(&conf.data_dir, &req.container_id, previous.as_deref()) {
                    log::warn(PLUGIN, format!("after the failed ADD: {undo}"));
                }
                if !dir_was_there {
                    // This ADD made the dataDir: a failed ADD leaves none (it stays if anything else is in it).
                    let _ = std::fs::remove_dir(&conf.data_dir);
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // Only dataDir matters: DEL must work with whatever config the runtime still has.
        let data_dir = FlannelConf::data_dir_of(&req.conf.raw)?;
        let Some(bytes) = saved::read(&data_dir, &req.container_id)? else {
            return Ok(()); // never added, or already deleted
        };
        let Some((_, plugin_type)) = parse_saved(&bytes) else {
            log::warn(
                PLUGIN,
                format!(
                    "{} is not a delegate config; removing it",
                    saved::path(&data_dir, &req.container_id).display()
                ),
            );
            return saved::remove(&data_dir, &req.container_id);
        };
        run_delegate(req, Command::Del, &plugin_type, bytes)?;
        saved::remove(&data_dir, &req.container_id)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let data_dir = FlannelConf::data_dir_of(&req.conf.raw)?;
        let path = saved::path(&data_dir, &req.container_id);
        let bytes = saved::read(&data_dir, &req.container_id)?.ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("no delegate config saved for container {} ({} is missing)", req.container_id, path.display()),
            )
            .with_details(format!("the container was not added to network {:?}, or was deleted", req.conf.name))
        })?;
        let (mut saved_conf, plugin_type) = parse_saved(&bytes)
            .ok_or_else(|| CniError::internal(format!("{} is not a delegate config", path.display())))?;
        if let Some(prev) = req.conf.raw.get("prevResult") {
            saved_conf.insert("prevResult".into(), prev.clone());
        }
        run_delegate(req, Command::Check, &plugin_type, to_bytes(&saved_conf)).map(|_| ())
    }

    fn gc(&self, req: &Request, _valid: Option<&[Attachment]>) -> CniResult<()> {
        let conf = FlannelConf::parse(&req.conf.raw)?;
        let env = read_subnet_env(&conf.subnet_file, code::TRY_AGAIN)?;
        let mut delegate = conf.delegate_config(&env);
        // The delegate decides what is stale from the same list (its IPAM releases the rest).
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let Some(v) = req.conf.raw.get(key) {
                delegate.insert(key.into(), v.clone());
            }
        }
        run_delegate(req, Command::Gc, &delegate_type(&delegate), to_bytes(&delegate)).map(|_| ())
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = FlannelConf::parse(&req.conf.raw)?;
        // No usable subnet.env: the node cannot add pods, which STATUS reports as "not available".
        let env = SubnetEnv::read(&conf.subnet_file).map_err(|e| {
            let e = subnet_env_error(e, code::NOT_AVAILABLE);
            CniError { code: code::NOT_AVAILABLE, ..e }
        })?;
        let delegate = conf.delegate_config(&env);
        run_delegate(req, Command::Status, &delegate_type(&delegate), to_bytes(&delegate)).map(|_| ())
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI flannel plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Flannel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The saved delegate config (`<dataDir>/<containerID>`, read back by DEL, CHECK, GC) as any bytes:
        /// a config with its type or nothing, never a panic.
        #[test]
        fn any_saved_bytes_give_a_config_or_none(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            if let Some((conf, plugin_type)) = parse_saved(&bytes) {
                prop_assert_eq!(conf.get("type").and_then(Value::as_str), Some(plugin_type.as_str()));
            }
        }

        /// What ADD saves (`to_bytes` of the rendered delegate) reads back as the same config and type.
        #[test]
        fn saved_configs_round_trip(
            plugin_type in "[a-z][a-z0-9-]{0,12}",
            keys in prop::collection::btree_map("[a-zA-Z]{1,8}", any::<String>(), 0..6),
        ) {
            let mut conf: Map<String, Value> = keys.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            conf.insert("type".into(), Value::String(plugin_type.clone()));
            prop_assert_eq!(parse_saved(&to_bytes(&conf)), Some((conf, plugin_type)));
        }
    }
}
