//! Private state files of root-run tools: directories only the owner can write, files created 0600
//! without following symlinks, reads that refuse files someone else planted, and writes that replace a
//! file atomically (temp file + rename in the same directory).
//!
//! Why: state under `/run/rcni` decides what the plugins delete and program. If that directory or a
//! record in it could be written or pre-created (as a symlink) by another user, root would write
//! through the link or act on a record it did not write. The owner that is trusted is the effective
//! user (root in production; the tests run as root too).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of directories this module creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files this module creates.
pub const FILE_MODE: u32 = 0o600;

/// The plugins that keep node state (vxlan's VTEP records, portmap's and firewall's ledgers), each in
/// [`node_dir`] under one base (`/run/rcni`).
pub const NODE_STATE_PLUGINS: [&str; 3] = ["vxlan", "portmap", "firewall"];

/// `<base>/<plugin>-<inode of the calling thread's network namespace>`: a plugin's directory for this node,
/// per network namespace so that simulated nodes on one machine stay apart.
pub fn node_dir(base: &Path, plugin: &str) -> PathBuf {
    let ino = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0);
    base.join(format!("{plugin}-{ino}"))
}

/// For whoever deletes a simulated node's namespace (tests, the benchmark): remove every plugin's
/// [`node_dir`] of the namespace with inode `ino`. The kernel reuses the inode of a deleted namespace, and a
/// later one would find the old node's records.
pub fn remove_node_dirs(base: &Path, ino: u64) {
    for plugin in NODE_STATE_PLUGINS {
        let _ = std::fs::remove_dir_all(base.join(format!("{plugin}-{ino}")));
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

/// Can `md` (of a directory or file at `path`) be trusted: owned by us and not writable by group or others?
fn check_trusted(path: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    if md.uid() != euid() {
        return Err(refuse(format!(
            "{} is owned by uid {}, not by uid {}: refusing to use it",
            path.display(),
            md.uid(),
            euid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "{} is writable by group or others (mode {:o}): refusing to use it",
            path.display(),
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Create `dir` (and missing parents) with mode 0700, then check that `dir` itself is a real directory
/// (not a symlink) owned by us and not writable by group or others. An existing directory is not
/// re-moded: a wrong one is refused with a message naming it.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))),
    }
    let md = std::fs::symlink_metadata(dir)?;
    if !md.file_type().is_dir() {
        return Err(refuse(format!("{} is not a directory (a symlink?): refusing to use it", dir.display())));
    }
    check_trusted(dir, &md)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} contains a NUL byte", path.display())))
}

fn open_raw(path: &Path, flags: libc::c_int) -> io::Result<File> {
    let c = cpath(path)?;
    // SAFETY: a valid NUL-terminated path; the descriptor is owned by the File from here on.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, FILE_MODE as libc::c_uint) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let what = if e.raw_os_error() == Some(libc::ELOOP) { " (a symlink: refused)" } else { "" };
        return Err(io::Error::new(e.kind(), format!("cannot open {}{what}: {e}", path.display())));
    }
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Check an opened file: a regular file, owned by us, not writable by group or others.
fn check_file(path: &Path, f: &File) -> io::Result<std::fs::Metadata> {
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(refuse(format!("{} is not a regular file: refusing to use it", path.display())));
    }
    check_trusted(path, &md)?;
    Ok(md)
}

/// Open (creating with 0600 if missing) a file for locking or appending, never through a symlink, and
/// refuse one that is not ours (non-blocking, so a FIFO fails instead of hanging). `append` opens for appending (a log), else for writing without
/// truncating (a lock file).
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let mode = if append { libc::O_APPEND } else { 0 };
    let f = open_raw(path, libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK | mode)?;
    check_file(path, &f)?;
    Ok(f)
}

/// Read a private file of at most `max` bytes. `Ok(None)` if it does not exist. Refused: a symlink, a
/// non-regular file (a FIFO would block: it is opened non-blocking and refused), a file not owned by us or
/// writable by others, a file larger than `max`.
pub fn read_private(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut f = match open_raw(path, libc::O_RDONLY | libc::O_NONBLOCK) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    check_file(path, &f)?;
    read_bounded(path, &mut f, max).map(Some)
}

/// Read a file someone else maintains (a peers list, a config): never a FIFO or device (non-blocking open,
/// regular files only), at most `max` bytes. Ownership is not checked.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let c = cpath(path)?;
    // SAFETY: as in open_raw; symlinks are followed here on purpose (admins link config files).
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())));
    }
    // SAFETY: fd was just returned by open.
    let mut f = unsafe { File::from_raw_fd(fd) };
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    read_bounded(path, &mut f, max)
}

fn read_bounded(path: &Path, f: &mut File, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes: refusing to read it", path.display()),
        ));
    }
    Ok(out)
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no file name", path.display())))?;
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// Replace `path` with `bytes` atomically: readers see the old or the new content, never a mix or an
/// empty file. The temp file is created exclusively (0600, no symlink) beside `path`; `durable` also
/// syncs it before the rename (state that must survive a crash, not just a restart).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = open_raw(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
        // The creation mode is masked by the umask; private files are 0600 whatever it is.
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot rename into {}: {e}", path.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> tempfile::TempDir {
        tempfile::TempDir::with_prefix(format!("rcni-fsprivate-{tag}-")).unwrap()
    }

    #[test]
    fn dir_is_created_private_and_a_loose_one_is_refused() {
        let t = scratch("dir");
        let d = t.path();
        let inner = d.join("a/b");
        ensure_dir(&inner).unwrap();
        assert_eq!(std::fs::metadata(&inner).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure_dir(&inner).unwrap_err().to_string().contains("writable by group or others"));
        let link = d.join("link");
        symlink(&inner, &link).unwrap();
        assert!(ensure_dir(&link).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn atomic_write_is_0600_and_replaces_a_symlink_instead_of_following_it() {
        let t = scratch("write");
        let d = t.path();
        ensure_dir(d).unwrap();
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let rec = d.join("rec");
        symlink(&victim, &rec).unwrap();
        write_atomic(&rec, b"new", false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "the link's target is untouched");
        assert!(std::fs::symlink_metadata(&rec).unwrap().file_type().is_file());
        assert_eq!(std::fs::metadata(&rec).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_private(&rec, 10).unwrap().unwrap(), b"new");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 2, "no temp file left");
    }

    #[test]
    fn reads_refuse_symlinks_loose_files_fifos_and_oversize() {
        let t = scratch("read");
        let d = t.path();
        ensure_dir(d).unwrap();
        assert!(read_private(&d.join("missing"), 10).unwrap().is_none());
        let f = d.join("f");
        std::fs::write(&f, "0123456789").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private(&f, 9).unwrap_err().to_string().contains("larger than 9"));
        let link = d.join("l");
        symlink(&f, &link).unwrap();
        assert!(read_private(&link, 100).unwrap_err().to_string().contains("symlink"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_private(&f, 100).is_err());
        let fifo = d.join("fifo");
        let c = cpath(&fifo).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_private(&fifo, 100).unwrap_err().to_string().contains("not a regular file"));
        assert!(read_regular(&fifo, 100).unwrap_err().to_string().contains("not a regular file"));
        let lock = open_private(&d.join("lock"), false).unwrap();
        assert_eq!(lock.metadata().unwrap().mode() & 0o777, 0o600);
        assert!(open_private(&link, true).is_err(), "no open through a symlink");
    }
}
