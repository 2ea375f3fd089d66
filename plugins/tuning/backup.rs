//! The originals of the link attributes tuning changes, kept until DEL puts them back.
//!
//! Same file and format as the reference, so either implementation restores the other's backup:
//! `<dataDir>/<containerID>_<ifname>.json`, mode 0600, holding only the attributes that were changed,
//! `{"mac": "..", "promisc": bool, "mtu": int, "allmulti": bool, "txQLen": int}`, indented by one space.

use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    /// 0 = not saved (the reference's encoding).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Backup {
    /// Keep what `self` already saved, take from `newer` only what `self` lacks: after a repeated ADD the
    /// file must still hold the values from before the *first* ADD, not the ones that ADD set.
    pub fn merge_missing(&mut self, newer: Backup) {
        if self.mac.is_empty() {
            self.mac = newer.mac;
        }
        self.promisc = self.promisc.or(newer.promisc);
        if self.mtu == 0 {
            self.mtu = newer.mtu;
        }
        self.allmulti = self.allmulti.or(newer.allmulti);
        self.txqlen = self.txqlen.or(newer.txqlen);
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b" "));
        self.serialize(&mut ser).expect("a struct of strings and numbers always serializes");
        out
    }
}

pub fn path(data_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

fn io_err(what: String, e: std::io::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
}

/// The saved backup, `None` when there is none. A file that cannot be parsed is an error the caller may
/// choose to tolerate.
pub fn read(file: &Path) -> CniResult<Option<Backup>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CniError::new(code::DECODE, format!("tuning backup {} is not valid: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("read tuning backup {}", file.display()), e)),
    }
}

/// Write by rename (a reader never sees half a file), creating the directory 0700 if needed.
pub fn write(file: &Path, backup: &Backup) -> CniResult<()> {
    let dir = file.parent().expect("a backup path always has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(format!("create tuning backup directory {}", dir.display()), e))?;
    let tmp = file.with_extension(format!("json.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // No fsync: the file describes a network namespace that a reboot destroys anyway; the rename is
        // what keeps readers from seeing half a file.
        f.write_all(&backup.to_json())?;
        std::fs::rename(&tmp, file)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(format!("write tuning backup {}", file.display()), e)
    })
}

pub fn remove(file: &Path) -> CniResult<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format!("remove tuning backup {}", file.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_the_reference() {
        let b = Backup {
            mac: "02:00:00:00:00:01".into(),
            promisc: Some(false),
            mtu: 1500,
            allmulti: None,
            txqlen: Some(1000),
        };
        let text = String::from_utf8(b.to_json()).unwrap();
        assert_eq!(
            text,
            "{\n \"mac\": \"02:00:00:00:00:01\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"txQLen\": 1000\n}"
        );
        assert_eq!(serde_json::from_str::<Backup>(&text).unwrap(), b);
        assert_eq!(String::from_utf8(Backup::default().to_json()).unwrap(), "{}");
    }

    use proptest::prelude::*;

    fn backup() -> impl Strategy<Value = Backup> {
        (any::<String>(), any::<Option<bool>>(), any::<u32>(), any::<Option<bool>>(), any::<Option<u32>>())
            .prop_map(|(mac, promisc, mtu, allmulti, txqlen)| Backup { mac, promisc, mtu, allmulti, txqlen })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// What `write` puts in the file, `read` gives back (through the real file).
        #[test]
        fn written_backups_read_back(b in backup()) {
            let dir = tempfile::TempDir::with_prefix("rcni-tuning-prop-").unwrap();
            let file = path(&dir.path().join("d"), "c1", "eth0");
            write(&file, &b).unwrap();
            prop_assert_eq!(read(&file).unwrap(), Some(b));
        }

        /// Any file content is a backup or a decode error (code 1) naming the file: never a panic.
        #[test]
        fn any_file_content_is_a_backup_or_an_error(bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            (backup(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(b, at, byte)| {
                let mut v = b.to_json();
                let i = at.index(v.len());
                v[i] = byte;
                v
            }),
        ]) {
            let dir = tempfile::TempDir::with_prefix("rcni-tuning-prop-").unwrap();
            let file = dir.path().join("c1_eth0.json");
            std::fs::write(&file, &bytes).unwrap();
            if let Err(e) = read(&file) {
                prop_assert_eq!(e.code, code::DECODE);
                prop_assert!(e.msg.contains("c1_eth0.json"), "{}", e);
            }
        }
    }

    #[test]
    fn merge_keeps_the_first_originals() {
        let mut first = Backup { mtu: 1500, ..Default::default() };
        first.merge_missing(Backup { mtu: 9000, promisc: Some(false), ..Default::default() });
        assert_eq!(first, Backup { mtu: 1500, promisc: Some(false), ..Default::default() });
    }
}
