//! What each attachment's ADD wrote, so that DEL removes exactly those elements (one lookup per own
//! element) instead of dumping every map of the node, and a re-ADD with changed mappings takes back the
//! elements it no longer wants.
//!
//! ```text
//! /run/rcni/portmap-<inode of the node's netns>/<network>/<containerID>-<ifname>
//! ```
//! A JSON record of the owner and its elements exactly as the kernel stores them (set, key, key end, data
//! in hex). Directories 0700, files 0600, no symlink followed, root-owned, replaced atomically
//! ([`crate::fs_private`]). `/run` is tmpfs: the records die with the rules at reboot. The netns inode
//! keeps simulated nodes on one machine apart (the maps are per netns, so the records must be too).
//!
//! The ledger is a shortcut, never the only truth: every element it lists is looked up and removed only
//! while its comment still names the owner (a newer owner that took the host port keeps it), and a
//! missing or unreadable record falls back to the dump by owner. The file name joins containerID and
//! ifname with `-`, which two odd pairs could share (`a-b`+`c`, `a`+`b-c`); the record names its owner,
//! and one that names another is treated as missing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Owner;
use super::structure::ELEMENT_SETS;
use crate::fs_private;
use crate::net::nft::FullElem;

/// Where the ledger lives on a real node.
pub const BASE: &str = "/run/rcni";
/// A record is the owner plus its elements; a 65535-port range is about 6 MB, nothing legitimate is larger.
const MAX_RECORD: u64 = 16 * 1024 * 1024;

/// An element of one of the portmap maps or sets, as recorded.
pub type Listed = (String, FullElem);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    set: String,
    key: String,
    #[serde(default, rename = "keyEnd", skip_serializing_if = "Option::is_none")]
    key_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    elements: Vec<Entry>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The ledger of the node this process is in (its network namespace).
pub struct Ledger {
    node: PathBuf,
}

impl Ledger {
    /// The ledger under `base` for the calling thread's network namespace.
    pub fn for_this_node(base: &Path) -> Ledger {
        Ledger { node: crate::fs_private::node_dir(base, "portmap") }
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.node.join(network)
    }

    /// The record's path (exposed for tests and the README's layout).
    pub fn path(&self, owner: &Owner) -> PathBuf {
        self.network_dir(&owner.network).join(format!("{}-{}", owner.container_id, owner.ifname))
    }

    /// The elements recorded for `owner`; `Ok(None)` when there is no record (or one of another owner
    /// under the same name). An unreadable or malformed record is an error: the caller falls back.
    pub fn read(&self, owner: &Owner) -> Result<Option<Vec<Listed>>, String> {
        let p = self.path(owner);
        let Some(bytes) = fs_private::read_private(&p, MAX_RECORD).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let rec: Record =
            serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a portmap record: {e}", p.display()))?;
        if (rec.network.as_str(), rec.container_id.as_str(), rec.ifname.as_str())
            != (owner.network.as_str(), owner.container_id.as_str(), owner.ifname.as_str())
        {
            return Ok(None);
        }
        let bad = |what: &str| format!("{}: {what}", p.display());
        rec.elements
            .iter()
            .map(|e| {
                let base = super::conditions::base_map(&e.set);
                if !ELEMENT_SETS.contains(&base) {
                    return Err(bad(&format!("unknown set {:?}", e.set)));
                }
                let field =
                    |v: &Option<String>| v.as_deref().map(|s| unhex(s).ok_or_else(|| bad("bad hex"))).transpose();
                let key = unhex(&e.key).ok_or_else(|| bad("bad hex"))?;
                Ok((e.set.clone(), FullElem { key, key_end: field(&e.key_end)?, data: field(&e.data)?, comment: None }))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Some)
    }

    /// Records `elements` as `owner`'s (replacing the previous record atomically).
    pub fn write(&self, owner: &Owner, elements: &[Listed]) -> Result<(), String> {
        let dir = self.network_dir(&owner.network);
        fs_private::ensure_dir(&dir).map_err(|e| e.to_string())?;
        let rec = Record {
            network: owner.network.clone(),
            container_id: owner.container_id.clone(),
            ifname: owner.ifname.clone(),
            elements: elements
                .iter()
                .map(|(set, e)| Entry {
                    set: set.to_string(),
                    key: hex(&e.key),
                    key_end: e.key_end.as_deref().map(hex),
                    data: e.data.as_deref().map(hex),
                })
                .collect(),
        };
        let p = self.path(owner);
        let bytes = serde_json::to_vec(&rec).expect("a record serialises");
        fs_private::write_atomic(&p, &bytes, false).map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// Removes `owner`'s record (absent is fine).
    pub fn remove(&self, owner: &Owner) -> Result<(), String> {
        let p = self.path(owner);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", p.display())),
        }
    }

    /// The owners that have a record in `network` (for GC), as (containerID, ifname) read from the records.
    pub fn owners(&self, network: &str) -> Vec<Owner> {
        let Ok(rd) = std::fs::read_dir(self.network_dir(network)) else { return Vec::new() };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let Ok(Some(bytes)) = fs_private::read_private(&ent.path(), MAX_RECORD) else { continue };
            let Ok(rec) = serde_json::from_slice::<Record>(&bytes) else { continue };
            if rec.network == network {
                out.push(Owner::new(&rec.network, &rec.container_id, &rec.ifname));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_one_of_another_owner_is_missing() {
        let base = tempfile::TempDir::with_prefix("rcni-pm-ledger-").unwrap();
        let l = Ledger { node: base.path().join("portmap-1") };
        let a = Owner::new("net", "a-b", "c");
        let b = Owner::new("net", "a", "b-c");
        assert_eq!(l.path(&a), l.path(&b), "the collision the owner check is for");
        let elems = vec![
            (
                "hostport4".to_string(),
                FullElem {
                    key: vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                    key_end: None,
                    data: Some(vec![10, 0, 0, 2, 0, 80, 0, 0]),
                    comment: None,
                },
            ),
            (
                "hairpin4".to_string(),
                FullElem {
                    key: vec![10, 0, 0, 0, 10, 0, 0, 2],
                    key_end: Some(vec![10, 0, 0, 255, 10, 0, 0, 2]),
                    data: None,
                    comment: None,
                },
            ),
        ];
        assert_eq!(l.read(&a).unwrap(), None);
        l.write(&a, &elems).unwrap();
        assert_eq!(l.read(&a).unwrap(), Some(elems));
        assert_eq!(l.read(&b).unwrap(), None);
        assert_eq!(l.owners("net"), vec![a.clone()]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(l.path(&a)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(l.path(&a), b"{\"network\":\"net\",\"containerID\":\"a-b\",\"ifname\":\"c\",\"elements\":[{\"set\":\"x\",\"key\":\"00\"}]}").unwrap();
        assert!(l.read(&a).unwrap_err().contains("unknown set"));
        l.remove(&a).unwrap();
        l.remove(&a).unwrap();
        assert_eq!(l.read(&a).unwrap(), None);
    }

    /// A record that is not ours (owned by another user, e.g. planted where /run/rcni is writable) is never
    /// believed: DEL falls back to the dump by owner tag, and GC does not list its owner.
    #[test]
    fn a_record_owned_by_another_user_is_neither_read_nor_listed() {
        use std::os::unix::ffi::OsStrExt;
        let base = tempfile::TempDir::with_prefix("rcni-pm-ledger-uid-").unwrap();
        let l = Ledger { node: base.path().join("portmap-1") };
        let a = Owner::new("net", "ctr", "eth0");
        l.write(&a, &[]).unwrap();
        assert_eq!(l.owners("net"), vec![a.clone()]);
        let path = std::ffi::CString::new(l.path(&a).as_os_str().as_bytes()).unwrap();
        // SAFETY: chown on a path we made; needs root, as the suite does.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0, "chown needs root");
        assert!(l.read(&a).is_err(), "a record of uid 65534 was read");
        assert_eq!(l.owners("net"), vec![], "a record of uid 65534 was listed");
    }
}
