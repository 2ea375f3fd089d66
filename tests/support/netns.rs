//! The test kit's one network-namespace guard. Integration tests use it through `support::NetNs`; the
//! library's unit tests (`src/net/tests/harness.rs`) and the benchmark (`bench/ns.rs`) include this file
//! with `#[path]`, as they cannot `mod support`. Only std, libc and `rcni::fs_private`.

// Each of the three users takes a different part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A named network namespace (`ip netns add`), removed on drop with everything in it: the plugins'
/// node state kept for it in `/run/rcni`, the processes still running inside, the namespace itself.
pub struct NsGuard {
    name: String,
    path: PathBuf,
}

impl NsGuard {
    /// Creates `name`; panics, naming it, when `ip netns add` fails.
    pub fn add(name: String) -> NsGuard {
        let out =
            Command::new("ip").args(["netns", "add", &name]).stdin(Stdio::null()).output().expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        let path = PathBuf::from("/run/netns").join(&name);
        NsGuard { name, path }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if delete(&self.name) {
            return;
        }
        let msg = format!("cannot delete netns {}", self.name);
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// Removes the namespace `name` (if there) as [`NsGuard`]'s drop does; false if it is still there.
pub fn delete(name: &str) -> bool {
    let path = Path::new("/run/netns").join(name);
    // vxlan, portmap and firewall keep node state in /run/rcni/<plugin>-<netns inode>: a simulated
    // node's goes with it, before the kernel can reuse the inode.
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::MetadataExt;
        rcni::fs_private::remove_node_dirs(Path::new("/run/rcni"), meta.ino());
    }
    // Processes left running inside (servers, agents, stuck plugins).
    let pids = quiet(&["netns", "pids", name]).1;
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // SAFETY: plain kill(2) of a process living in a namespace the caller owns.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    for _ in 0..40 {
        if quiet(&["netns", "del", name]).0 || !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The network namespaces whose name starts with `prefix` (`ip netns list`).
pub fn list(prefix: &str) -> Vec<String> {
    quiet(&["netns", "list"])
        .1
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// `ip <args>`: (success, stdout).
fn quiet(args: &[&str]) -> (bool, String) {
    match Command::new("ip").args(args).stdin(Stdio::null()).stderr(Stdio::null()).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(_) => (false, String::new()),
    }
}
