//! Writing reservations whole-or-nothing: staged into a file that is not in place yet (O_TMPFILE, or a
//! named `.rcni-tmp.*` file where the filesystem lacks it), synced, then put in place by link(2) (which
//! fails with EEXIST if the address is taken). `last_reserved_ip.<N>`, only a hint, is overwritten in place.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{LAST_RESERVED_PREFIX, SResult, Store, StoreError, TMP_PREFIX};
use crate::ipam::host_local::reservation::name_ip;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Give an O_TMPFILE its name: linkat of /proc/self/fd/N (works without CAP_DAC_READ_SEARCH, unlike
/// AT_EMPTY_PATH). EEXIST when the name is taken.
fn link_unnamed(file: &File, target: &Path) -> io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let dst = cstr(target)?;
    let r =
        unsafe { libc::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A file written but not yet in place. `sync_all` makes it durable, then `link_reservation` puts it in
/// place; dropped before that, it leaves nothing behind.
pub struct Staged {
    pub(super) file: File,
    /// The named temp file (`None`: an O_TMPFILE, which vanishes with its descriptor).
    pub(super) tmp: Option<PathBuf>,
    pub(super) target: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            let _ = fs::remove_file(t);
        }
    }
}

/// fdatasync every staged file. Writeback of all of them is started first (sync_file_range WRITE, which
/// waits for nothing), so their blocks are allocated together and the first fdatasync's journal commit
/// covers them all: the later ones find little left to wait for (measurements: ipam/host-local/README.md).
pub fn sync_all(files: &[Staged]) -> SResult<()> {
    if files.len() > 1 {
        for s in files {
            // Only a head start: errors show in the fdatasync below.
            unsafe { libc::sync_file_range(s.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
    files.iter().try_for_each(|s| s.file.sync_data().map_err(|e| StoreError::io("cannot write", &s.target, e)))
}

impl Store {
    /// Create `<dir>/<ip>` holding `id` CRLF `ifname`, atomically. `Ok(false)`: already taken.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> SResult<bool> {
        let staged = self.stage_reservation(ip, id, ifname)?;
        sync_all(std::slice::from_ref(&staged))?;
        self.link_reservation(staged)
    }

    /// Write the reservation of `ip` for `(id, ifname)` into a file that is not in place yet: an unnamed one
    /// (O_TMPFILE), or a named `.rcni-tmp.*` one where the filesystem lacks that.
    pub fn stage_reservation(&self, ip: IpAddr, id: &str, ifname: &str) -> SResult<Staged> {
        let target = self.ip_path(ip);
        let content = format!("{}\r\n{}", id.trim(), ifname);
        let res = match self.open_unnamed() {
            Ok(Some(file)) => Ok(Staged { file, tmp: None, target: target.clone() }),
            Ok(None) => self.create_named(ip, &target),
            Err(e) => Err(e),
        };
        let mut staged = res.map_err(|e| StoreError::io("cannot reserve", &target, e))?;
        staged.file.write_all(content.as_bytes()).map_err(|e| StoreError::io("cannot reserve", &target, e))?;
        Ok(staged)
    }

    /// An O_TMPFILE in the directory; `None` when the filesystem does not support it.
    fn open_unnamed(&self) -> io::Result<Option<File>> {
        // Readable too: without /proc it is copied into a named file (`relink_named`).
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC);
        match opts.open(&self.dir) {
            Ok(f) => Ok(Some(f)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_named(&self, ip: IpAddr, target: &Path) -> io::Result<Staged> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{ip}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        Ok(Staged { file, tmp: Some(tmp), target: target.to_path_buf() })
    }

    /// Put a synced reservation in place. `Ok(false)`: the address is taken (link(2) never replaces a file).
    pub fn link_reservation(&self, staged: Staged) -> SResult<bool> {
        let res = match &staged.tmp {
            Some(tmp) => fs::hard_link(tmp, &staged.target),
            None => match link_unnamed(&staged.file, &staged.target) {
                // No /proc to name the unnamed file by: copy it into a named one.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EACCES | libc::EPERM))
                        && fs::metadata("/proc/self/fd").is_err() =>
                {
                    return self.relink_named(&staged);
                }
                r => r,
            },
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io("cannot reserve", &staged.target, e)),
        }
    }

    fn relink_named(&self, unnamed: &Staged) -> SResult<bool> {
        let target = &unnamed.target;
        let err = |e| StoreError::io("cannot reserve", target, e);
        let len = unnamed.file.metadata().map_err(err)?.len() as usize;
        let mut content = vec![0u8; len];
        unnamed.file.read_exact_at(&mut content, 0).map_err(err)?;
        let ip = target.file_name().and_then(name_ip).expect("reservation names are addresses");
        let mut named = self.create_named(ip, target).map_err(err)?;
        named.file.write_all(&content).map_err(err)?;
        sync_all(std::slice::from_ref(&named))?;
        self.link_reservation(named)
    }

    /// Overwrite `last_reserved_ip.<set>` with `ip`, in place and unsynced, as the reference does. It only
    /// says where the next search starts: a write lost or torn by a crash makes that start elsewhere, never
    /// hands out a taken address (the reservations decide that). In place rather than temp file + rename:
    /// a rename frees the old file's inode and block on every ADD, and ext4 then discards the block and
    /// makes each later inode allocation step over the recently freed inodes (`find_inode_bit`, without a
    /// journal), so every ADD of a busy node got slower than the one before. Never through a symlink or
    /// into anything but a regular file.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> SResult<()> {
        let target = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        let err = |e| StoreError::io("cannot write", &target, e);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target)
            .map_err(err)?;
        if !file.metadata().map_err(err)?.is_file() {
            return Err(err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let text = ip.to_string();
        file.write_all_at(text.as_bytes(), 0).map_err(err)?;
        file.set_len(text.len() as u64).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::host_local::store::tests::{T, TempDir, ip, names};

    #[test]
    fn named_fallback_leaves_no_temp() {
        let t = TempDir::new("named");
        let s = Store::open(&t.net, T).unwrap();
        let named = |id: &str| {
            let target = t.net.join("10.0.0.3");
            let mut st = s.create_named(ip("10.0.0.3"), &target).unwrap();
            st.file.write_all(format!("{id}\r\neth0").as_bytes()).unwrap();
            sync_all(std::slice::from_ref(&st)).unwrap();
            s.link_reservation(st).unwrap()
        };
        assert!(named("c"));
        assert!(!named("d"));
        assert_eq!(names(&t.net), ["10.0.0.3", "lock"]);
        assert_eq!(fs::read(t.net.join("10.0.0.3")).unwrap(), b"c\r\neth0");
    }
}
