//! What each attachment was given, per node and network, so that DEL needs no prevResult and never
//! removes a newer attachment's rules.
//!
//! Layout (all through `fs_private`: 0700 directories, 0600 files, no symlink followed, atomic writes):
//! ```text
//! <base>/firewall-<inode of the node's netns>/lock              flock held for a whole ADD / DEL / CHECK / GC
//! <base>/firewall-<ino>/<h16(network)>/a-<h32(containerID/ifname)>   the attachment's record (JSON)
//! <base>/firewall-<ino>/<h16(network)>/ip-<address>             the owner of the address's rules
//! ```
//! The netns inode keeps simulated nodes on one machine apart (a real node has one). The per-address
//! owner file is written by every ADD (the newest owner wins) and consulted by every DEL: the reference's
//! rules carry no owner, and a pod that got a deleted pod's address must keep its accept rules when the
//! old pod's DEL comes late.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Error, Result, owner_tag};
use crate::fs_private;
use crate::net::masq::sha512_hex;

/// Where the ledger lives on a real node.
pub const BASE: &str = "/run/rcni";
/// How long an invocation waits for another one on the same node.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// No record is larger than this (a few addresses and names).
const MAX_RECORD: u64 = 64 * 1024;

/// One attachment's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
    /// Whether the DNAT (host port) accept rule was added for the addresses.
    #[serde(default)]
    pub dnat: bool,
}

impl Record {
    pub fn owner(&self) -> String {
        owner_tag(&self.container_id, &self.ifname)
    }
}

/// The ledger of one network on this node, locked while it is held.
pub struct Ledger {
    dir: PathBuf,
    _lock: std::fs::File,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| {
        Error::Ledger(format!(
            "firewall ledger: {what}: {e} (the directory must be owned by root, mode 0700; removing it loses only \
             what DEL without prevResult would have used)"
        ))
    }
}

/// The node directory: `<base>/firewall-<netns inode>` of the calling thread's network namespace.
pub fn node_dir(base: &Path) -> PathBuf {
    fs_private::node_dir(base, "firewall")
}

fn lock(path: &Path) -> Result<std::fs::File> {
    let f = fs_private::open_private(path, false).map_err(io(format!("opening lock {}", path.display())))?;
    crate::lock::lock_exclusive(f, LOCK_TIMEOUT).map_err(io(format!("locking {}", path.display())))?.ok_or_else(|| {
        Error::Busy(format!(
            "firewall: another firewall invocation held {} for {} s; retry",
            path.display(),
            LOCK_TIMEOUT.as_secs()
        ))
    })
}

impl Ledger {
    /// Opens (creating) the ledger of `network` under `base` and takes the node's lock.
    pub fn open(base: &Path, network: &str) -> Result<Ledger> {
        let node = node_dir(base);
        fs_private::ensure_dir(&node).map_err(io(format!("creating {}", node.display())))?;
        let lock = lock(&node.join("lock"))?;
        let dir = node.join(&sha512_hex(network)[..16]);
        fs_private::ensure_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Ledger { dir, _lock: lock })
    }

    fn attachment_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("a-{}", &sha512_hex(&owner_tag(container_id, ifname))[..32]))
    }

    fn ip_path(&self, ip: &IpAddr) -> PathBuf {
        self.dir.join(format!("ip-{ip}"))
    }

    /// Records the attachment and makes it the owner of its addresses.
    pub fn record(&self, rec: &Record) -> Result<()> {
        for ip in &rec.ips {
            let p = self.ip_path(ip);
            fs_private::write_atomic(&p, rec.owner().as_bytes(), false)
                .map_err(io(format!("writing {}", p.display())))?;
        }
        let p = self.attachment_path(&rec.container_id, &rec.ifname);
        let bytes = serde_json::to_vec(rec).expect("a record serialises");
        fs_private::write_atomic(&p, &bytes, false).map_err(io(format!("writing {}", p.display())))
    }

    fn read_record(&self, path: &Path) -> Result<Option<Record>> {
        let Some(bytes) =
            fs_private::read_private(path, MAX_RECORD).map_err(io(format!("reading {}", path.display())))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Ledger(format!("firewall ledger: {} is not a record ({e}); delete it", path.display())))
    }

    pub fn get(&self, container_id: &str, ifname: &str) -> Result<Option<Record>> {
        self.read_record(&self.attachment_path(container_id, ifname))
    }

    /// The owner (`containerID/ifname`) of the rules of `ip`, if any attachment recorded it.
    pub fn owner_of(&self, ip: &IpAddr) -> Result<Option<String>> {
        let p = self.ip_path(ip);
        Ok(fs_private::read_private(&p, MAX_RECORD)
            .map_err(io(format!("reading {}", p.display())))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Whether `ip`'s rules may be removed for `owner`: it owns them, or nobody recorded an owner (rules a
    /// reference ADD made).
    pub fn may_remove(&self, ip: &IpAddr, owner: &str) -> Result<bool> {
        Ok(self.owner_of(ip)?.is_none_or(|o| o == owner))
    }

    /// Removes the attachment's record and the address owner files that still name it.
    pub fn remove(&self, container_id: &str, ifname: &str, ips: &[IpAddr]) -> Result<()> {
        let owner = owner_tag(container_id, ifname);
        for ip in ips {
            if self.owner_of(ip)?.as_deref() == Some(owner.as_str()) {
                remove_file(&self.ip_path(ip))?;
            }
        }
        remove_file(&self.attachment_path(container_id, ifname))
    }

    /// Every record of the network.
    pub fn all(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io(format!("listing {}", self.dir.display())))?;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("a-") {
                out.extend(self.read_record(&e.path())?);
            }
        }
        out.sort_by_key(Record::owner);
        Ok(out)
    }

    /// Removes the network's directory when no record is left in it (the lock stays with the node).
    pub fn remove_if_empty(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", p.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_owner_wins_and_old_owner_removes_nothing_of_it() {
        let base = tempfile::TempDir::with_prefix("rcni-fw-ledger-").unwrap();
        let l = Ledger::open(base.path(), "net").unwrap();
        let ip: IpAddr = "10.88.0.2".parse().unwrap();
        let old = Record {
            network: "net".into(),
            container_id: "old".into(),
            ifname: "eth0".into(),
            ips: vec![ip],
            dnat: false,
        };
        let new = Record { container_id: "new".into(), ..old.clone() };
        l.record(&old).unwrap();
        l.record(&new).unwrap();
        assert!(!l.may_remove(&ip, &old.owner()).unwrap());
        l.remove("old", "eth0", &[ip]).unwrap();
        assert_eq!(l.owner_of(&ip).unwrap().as_deref(), Some("new/eth0"));
        assert_eq!(l.all().unwrap(), vec![new.clone()]);
        l.remove("new", "eth0", &[ip]).unwrap();
        assert!(l.may_remove(&ip, "anyone/eth0").unwrap());
        assert!(l.all().unwrap().is_empty());
        drop(l);
    }
}
