//! The delegate config each container was added with, kept at `<dataDir>/<containerID>` (flannel's
//! layout, so either plugin can DEL the other's pods): DEL hands the delegate exactly what ADD handed it,
//! whatever subnet.env says by then, or if it is gone.
//!
//! The directory is 0700 and the files 0600 (they are root's state); a file is replaced atomically and
//! synced, so a crash leaves the old config or the new one, never a torn one DEL cannot parse.

use std::path::{Path, PathBuf};

use rcni::cni::error::code;
use rcni::cni::{CniError, CniResult};
use rcni::fs_private;

/// A delegate config is a few hundred bytes; far more is not one of ours.
const MAX_LEN: u64 = 1024 * 1024;

/// `<dataDir>/<containerID>`. The container ID was checked by the skel (no `/`, no leading `.`).
pub fn path(data_dir: &Path, container_id: &str) -> PathBuf {
    data_dir.join(container_id)
}

fn io_err(what: &str, e: std::io::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
        .with_details("the flannel plugin keeps each container's delegate config in its dataDir")
}

/// The saved config, None if there is none.
pub fn read(data_dir: &Path, container_id: &str) -> CniResult<Option<Vec<u8>>> {
    let p = path(data_dir, container_id);
    fs_private::read_private(&p, MAX_LEN).map_err(|e| io_err(&format!("cannot read {}", p.display()), e))
}

/// Save (or replace) the config of `container_id`.
pub fn write(data_dir: &Path, container_id: &str, bytes: &[u8]) -> CniResult<()> {
    fs_private::ensure_dir(data_dir).map_err(|e| io_err("cannot use the flannel dataDir", e))?;
    let p = path(data_dir, container_id);
    fs_private::write_atomic(&p, bytes, true).map_err(|e| io_err(&format!("cannot write {}", p.display()), e))
}

/// Forget the config of `container_id`; nothing to forget is fine.
pub fn remove(data_dir: &Path, container_id: &str) -> CniResult<()> {
    let p = path(data_dir, container_id);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&format!("cannot remove {}", p.display()), e)),
        _ => Ok(()),
    }
}

/// Put back what was there before a failed ADD: the previous config, or nothing.
pub fn restore(data_dir: &Path, container_id: &str, previous: Option<&[u8]>) -> CniResult<()> {
    match previous {
        Some(bytes) => write(data_dir, container_id, bytes),
        None => remove(data_dir, container_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_read_restore_remove() {
        let d = tempfile::TempDir::with_prefix("rcni-flannel-saved-").unwrap();
        let data = d.path().join("flannel");
        assert_eq!(read(&data, "c1").unwrap(), None);
        write(&data, "c1", b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(path(&data, "c1")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&data, "c1").unwrap().unwrap(), b"{\"a\":1}");
        write(&data, "c1", b"{\"a\":2}").unwrap();
        restore(&data, "c1", Some(b"{\"a\":1}")).unwrap();
        assert_eq!(read(&data, "c1").unwrap().unwrap(), b"{\"a\":1}");
        restore(&data, "c1", None).unwrap();
        assert_eq!(read(&data, "c1").unwrap(), None);
        remove(&data, "c1").unwrap();
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "no temp file left");
    }
}
