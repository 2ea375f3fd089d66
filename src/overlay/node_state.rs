//! Per-node records of the overlay, in a private directory (see [`crate::fs_private`]):
//! - `lock`: serializes VTEP and peer changes of every network of the node;
//! - `device.<dev>.owner`: the network that owns VTEP `<dev>`. A device owned by another network is never
//!   adopted, reconciled or deleted: two networks sharing one VTEP would undo each other's peers;
//! - `network.<net>.device`: the VTEP a network used last (removed after a VNI change renames it);
//! - `network.<net>.peers.json`: the network's last good peer set.

use super::Peer;
use crate::cni::error::code;
use crate::cni::{CniError, CniResult};
use crate::fs_private;
use std::path::{Path, PathBuf};

/// Largest record read back (device names and network names are short; peer sets are bounded).
const MAX_RECORD: u64 = super::peer::MAX_PEERS_FILE;
/// The node lock is held for one command's VTEP setup (milliseconds); waiting longer means a stuck command.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct NodeState {
    dir: PathBuf,
}

/// Held while a network changes node-level overlay state.
pub struct NodeLock {
    _file: std::fs::File,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| {
        CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
            .with_details("the overlay state directory must be a directory owned by root, mode 0700")
    }
}

impl NodeState {
    /// The state of the node whose network namespace this thread is in, under `base`:
    /// `<base>/vxlan-<netns inode>` (so simulated nodes on one machine stay apart).
    pub fn for_this_node(base: &Path) -> CniResult<NodeState> {
        NodeState::open(&fs_private::node_dir(base, "vxlan"))
    }

    pub fn open(dir: &Path) -> CniResult<NodeState> {
        fs_private::ensure_dir(dir).map_err(io_err("overlay state".into()))?;
        Ok(NodeState { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lock(&self) -> CniResult<NodeLock> {
        let path = self.dir.join("lock");
        let f =
            fs_private::open_private(&path, false).map_err(io_err(format!("cannot open lock {}", path.display())))?;
        match crate::lock::lock_exclusive(f, LOCK_TIMEOUT) {
            Ok(Some(f)) => Ok(NodeLock { _file: f }),
            Ok(None) => Err(CniError::new(
                code::TRY_AGAIN,
                format!(
                    "{} is still locked after {}s by another vxlan command",
                    path.display(),
                    LOCK_TIMEOUT.as_secs()
                ),
            )),
            Err(e) => Err(CniError::new(code::TRY_AGAIN, format!("cannot lock {}: {e}", path.display()))),
        }
    }

    fn read(&self, name: &str) -> CniResult<Option<String>> {
        let path = self.dir.join(name);
        let bytes =
            fs_private::read_private(&path, MAX_RECORD).map_err(io_err(format!("cannot read {}", path.display())))?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).trim().to_string()).filter(|s| !s.is_empty()))
    }

    fn write(&self, name: &str, content: &[u8]) -> CniResult<()> {
        let path = self.dir.join(name);
        fs_private::write_atomic(&path, content, false).map_err(io_err(format!("cannot write {}", path.display())))
    }

    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// The network owning VTEP `device`, if recorded.
    pub fn device_owner(&self, device: &str) -> CniResult<Option<String>> {
        self.read(&format!("device.{device}.owner"))
    }

    /// Claim `device` for `network` (under the lock): refused if another network owns it.
    pub fn claim_device(&self, network: &str, device: &str) -> CniResult<()> {
        match self.device_owner(device)? {
            Some(owner) if owner != network => Err(CniError::invalid_config(format!(
                "vxlan device {device} belongs to network {owner:?} on this node; network {network:?} cannot share it"
            ))
            .with_details(
                "give each network its own vxlan.vni (and vxlan.name): one VTEP carries one network's peers",
            )),
            Some(_) => Ok(()),
            None => self.write(&format!("device.{device}.owner"), network.as_bytes()),
        }
    }

    /// Give up `device` (after it was removed), if `network` owns it.
    pub fn release_device(&self, network: &str, device: &str) -> CniResult<()> {
        if self.device_owner(device)?.as_deref() == Some(network) {
            self.remove(&format!("device.{device}.owner"));
        }
        Ok(())
    }

    /// The VTEP `network` used last.
    pub fn network_device(&self, network: &str) -> CniResult<Option<String>> {
        self.read(&format!("network.{network}.device"))
    }

    pub fn set_network_device(&self, network: &str, device: &str) -> CniResult<()> {
        self.write(&format!("network.{network}.device"), device.as_bytes())
    }

    /// The last peer set applied for `network` (`None` if none was saved or the record is unreadable).
    pub fn last_peers(&self, network: &str) -> Option<Vec<Peer>> {
        let text = self.read(&format!("network.{network}.peers.json")).ok().flatten()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save_peers(&self, network: &str, peers: &[Peer]) -> CniResult<()> {
        let bytes = serde_json::to_vec(peers).expect("peers serialize");
        self.write(&format!("network.{network}.peers.json"), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_has_one_owning_network() {
        let dir = tempfile::TempDir::with_prefix("rcni-nodestate-").unwrap();
        let s = NodeState::open(dir.path()).unwrap();
        let _l = s.lock().unwrap();
        s.claim_device("a", "rcni.1").unwrap();
        s.claim_device("a", "rcni.1").unwrap();
        let e = s.claim_device("b", "rcni.1").unwrap_err();
        assert!(e.msg.contains("belongs to network \"a\""), "{e}");
        s.release_device("b", "rcni.1").unwrap();
        assert_eq!(s.device_owner("rcni.1").unwrap().as_deref(), Some("a"), "b cannot release a's device");
        s.release_device("a", "rcni.1").unwrap();
        s.claim_device("b", "rcni.1").unwrap();
        assert!(s.last_peers("b").is_none());
        let p: Peer = serde_json::from_str(r#"{"underlay":"198.18.0.2","subnets":["10.244.2.0/24"]}"#).unwrap();
        s.save_peers("b", std::slice::from_ref(&p)).unwrap();
        assert_eq!(s.last_peers("b").unwrap(), vec![p]);
    }
}
