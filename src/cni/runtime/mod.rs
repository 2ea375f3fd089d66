//! The runtime side of CNI (what libcni does for containerd / CRI-O, and what `cnitool` uses):
//! load a network configuration list, run its plugins for ADD / CHECK / DEL / GC / STATUS, keep the
//! result cache.
//!
//! ```no_run
//! use rcni::cni::runtime::{Runtime, RuntimeConf, load_conf_list};
//! let list = load_conf_list("/etc/cni/net.d".as_ref(), "mynet")?;
//! let rt = Runtime::new(vec!["/opt/cni/bin".into()]);
//! let att = RuntimeConf {
//!     container_id: "abc".into(),
//!     netns: "/run/netns/pod".into(),
//!     ifname: "eth0".into(),
//!     ..Default::default()
//! };
//! let result = rt.add_network_list(&list, &att)?;
//! rt.del_network_list(&list, &att)?;
//! # Ok::<(), rcni::cni::error::CniError>(())
//! ```
//!
//! Modules: [`conflist`] (loading), [`invoke`] (finding and executing a plugin), [`cache`] (the result
//! cache file), [`chain`] (the operations, as methods of [`Runtime`]).

pub mod cache;
pub mod chain;
pub mod conflist;
pub mod invoke;

use std::path::PathBuf;

use serde_json::{Map, Value};

pub use cache::{CachedInfo, DEFAULT_CACHE_DIR};
pub use chain::{GcArgs, GcAttachment};
pub use conflist::{NetworkConfigList, PluginConfig, conf_list_from_bytes, conf_list_from_file, load_conf_list};
pub use invoke::PluginInfo;

/// Where plugins are found and where results are cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// Directories searched for plugin binaries (also passed to plugins as `CNI_PATH`).
    pub plugin_path: Vec<PathBuf>,
    /// Cache directory; result files live in `<cache_dir>/results/`. Default `/var/lib/cni`.
    pub cache_dir: PathBuf,
}

impl Runtime {
    /// A runtime with the given plugin search path and the default cache directory.
    pub fn new(plugin_path: Vec<PathBuf>) -> Runtime {
        Runtime { plugin_path, cache_dir: PathBuf::from(DEFAULT_CACHE_DIR) }
    }

    /// Replaces the cache directory.
    pub fn with_cache_dir(mut self, cache_dir: impl Into<PathBuf>) -> Runtime {
        self.cache_dir = cache_dir.into();
        self
    }
}

/// The parameters of one attachment (libcni `RuntimeConf`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the container's network namespace.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability args; each plugin gets those it declares in `capabilities` as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}
