//! The on-disk store, byte-compatible with the reference host-local:
//!
//! ```text
//! <dataDir>/<network>/          directory (we create it 0700)
//!   lock                        empty; flock(LOCK_EX) around every command (Go binary uses the same)
//!   <ip>                        "<containerID>\r\n<ifname>", no trailing newline, 0600
//!   last_reserved_ip.<N>        "<ip>", no newline, 0600
//! ```
//!
//! Writes are whole-or-nothing. A reservation is written into an unnamed file (O_TMPFILE; a named
//! `.rcni-tmp.*` file where the filesystem lacks it), synced, then linked into place: link(2) fails with
//! EEXIST if the address is taken, so a reader never sees a partial reservation and a crash at any point
//! leaves either a complete reservation or none. `last_reserved_ip.<N>` is replaced by rename.
//! Every command reads the directory at most once.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::allocator::{Holder, Taken};

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TMP_PREFIX: &str = ".rcni-tmp.";

#[derive(Debug)]
pub enum StoreError {
    Io { what: String, path: PathBuf, err: io::Error },
    LockTimeout { path: PathBuf, waited: Duration },
}

impl StoreError {
    fn io(what: &str, path: &Path, err: io::Error) -> StoreError {
        StoreError::Io { what: what.to_string(), path: path.to_path_buf(), err }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { what, path, err } => {
                write!(f, "host-local: {what} {}: {err}", path.display())
            }
            StoreError::LockTimeout { path, waited } => write!(
                f,
                "host-local: could not lock {} within {:.1}s: another process holds it (a stuck host-local?); try again",
                path.display(),
                waited.as_secs_f64()
            ),
        }
    }
}

pub type SResult<T> = Result<T, StoreError>;

/// A locked network directory. The lock is released when the `Store` is dropped (or the process exits).
pub struct Store {
    dir: PathBuf,
    /// The directory, for openat(2) of its entries (no path walk per file).
    dirfd: File,
    _lock: File,
}

fn flock_blocking(fd: i32) -> io::Result<()> {
    loop {
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// flock(LOCK_EX) with a deadline. Uncontended: one syscall. Contended: a helper thread blocks in flock
/// (fair, no polling) while we wait for it with a timeout.
fn lock_with_timeout(file: File, path: &Path, timeout: Duration) -> SResult<File> {
    let fd = file.as_raw_fd();
    loop {
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => break,
            _ => return Err(StoreError::io("cannot lock", path, e)),
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(flock_blocking(fd));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(file),
        Ok(Err(e)) => Err(StoreError::io("cannot lock", path, e)),
        Err(_) => {
            // The helper still uses the fd: keep it open until the process exits.
            std::mem::forget(file);
            Err(StoreError::LockTimeout { path: path.to_path_buf(), waited: timeout })
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Names that are addresses (reservation files). Rejects `lock`, `last_reserved_ip.*`, temp files.
pub fn name_ip(name: &std::ffi::OsStr) -> Option<IpAddr> {
    let s = name.to_str()?;
    s.parse::<IpAddr>().ok().filter(|ip| ip.to_string() == s)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Result of DEL.
#[derive(Debug, Default)]
pub struct Released {
    pub ips: Vec<IpAddr>,
    pub errors: Vec<String>,
}

impl Store {
    /// Create `dir` (0700, with parents) if needed, then lock it.
    pub fn open(dir: &Path, timeout: Duration) -> SResult<Store> {
        if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            return Err(StoreError::io("cannot create state directory", dir, e));
        }
        Self::lock(dir, timeout)
    }

    /// Lock `dir` only if it exists (DEL, CHECK, GC, STATUS create nothing). `None`: nothing stored.
    pub fn open_existing(dir: &Path, timeout: Duration) -> SResult<Option<Store>> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Self::lock(dir, timeout).map(Some),
            Ok(_) => Err(StoreError::io(
                "state path is not a directory:",
                dir,
                io::Error::from(io::ErrorKind::NotADirectory),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::io("cannot access", dir, e)),
        }
    }

    fn lock(dir: &Path, timeout: Duration) -> SResult<Store> {
        let path = dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true) // O_CREAT needs a write mode in std; flock does not care
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| StoreError::io("cannot open lock file", &path, e))?;
        let f = lock_with_timeout(f, &path, timeout)?;
        let dirfd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| StoreError::io("cannot open", dir, e))?;
        Ok(Store { dir: dir.to_path_buf(), dirfd, _lock: f })
    }

    /// Read a small file of the directory: openat + read + close (std's fs::read also stats it).
    /// Does not follow symlinks and never blocks on a FIFO someone left there.
    fn read_entry(&self, name: &std::ffi::OsStr) -> io::Result<Vec<u8>> {
        let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = unsafe {
            libc::openat(
                self.dirfd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            out.extend_from_slice(&buf[..n]);
            // A short read of a regular file means end of file; owner files are ~80 bytes.
            if n < buf.len() || out.len() > 64 * 1024 {
                return Ok(out);
            }
        }
    }

    /// All reservations (files named by an address) and their holders, in one directory read.
    pub fn scan(&self) -> SResult<Taken> {
        let mut taken = Taken::new();
        let rd = fs::read_dir(&self.dir).map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
            let Some(ip) = name_ip(&ent.file_name()) else {
                continue;
            };
            let holder = match self.read_entry(&ent.file_name()) {
                Ok(b) => Holder::parse(&String::from_utf8_lossy(&b)),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => Holder { container_id: format!("(unreadable: {e})"), ifname: None },
            };
            taken.insert(ip, holder);
        }
        Ok(taken)
    }

    /// Reserved addresses without reading the files (STATUS).
    pub fn scan_names(&self) -> SResult<HashSet<IpAddr>> {
        let rd = fs::read_dir(&self.dir).map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
        let mut out = HashSet::new();
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
            if let Some(ip) = name_ip(&ent.file_name()) {
                out.insert(ip);
            }
        }
        Ok(out)
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Create `<dir>/<ip>` holding `id` CRLF `ifname`, atomically. `Ok(false)`: already taken.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> SResult<bool> {
        let target = self.ip_path(ip);
        let content = format!("{}\r\n{}", id.trim(), ifname);
        match self.reserve_unnamed(&target, content.as_bytes()) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => self.reserve_named(ip, &target, content.as_bytes()),
            Err(e) => Err(StoreError::io("cannot reserve", &target, e)),
        }
    }

    /// O_TMPFILE + linkat. `Ok(None)` when the filesystem (or /proc) does not support it.
    fn reserve_unnamed(&self, target: &Path, content: &[u8]) -> io::Result<Option<bool>> {
        let mut f = match OpenOptions::new()
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(&self.dir)
        {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        f.write_all(content)?;
        f.sync_data()?;
        let src = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("no NUL");
        let dst = cstr(target)?;
        let r = unsafe {
            libc::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        };
        if r == 0 {
            return Ok(Some(true));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Ok(Some(false)),
            // No /proc (or no permission to use it): fall back to a named temp file.
            Some(libc::ENOENT | libc::EACCES | libc::EPERM) if fs::metadata("/proc/self/fd").is_err() => Ok(None),
            _ => Err(e),
        }
    }

    fn reserve_named(&self, ip: IpAddr, target: &Path, content: &[u8]) -> SResult<bool> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{ip}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let res = (|| -> io::Result<bool> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(content)?;
            f.sync_data()?;
            drop(f);
            match fs::hard_link(&tmp, target) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        let _ = fs::remove_file(&tmp);
        res.map_err(|e| StoreError::io("cannot reserve", target, e))
    }

    /// Remove `<dir>/<ip>` if it still belongs to exactly `(id, ifname)` (roll back a failed ADD).
    pub fn unreserve(&self, ip: IpAddr, id: &str, ifname: &str) -> SResult<()> {
        let p = self.ip_path(ip);
        match fs::read(&p) {
            Ok(b) if Holder::parse(&String::from_utf8_lossy(&b)).is(id, ifname) => {
                fs::remove_file(&p).or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
            }
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|e| StoreError::io("cannot release", &p, e))
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let s = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))).ok()?;
        s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }

    /// Replace `last_reserved_ip.<set>` with `ip` (temp file + rename).
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> SResult<()> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        let tmp = self.dir.join(format!(".{LAST_RESERVED_PREFIX}{set}.tmp"));
        (|| -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(ip.to_string().as_bytes())?;
            f.sync_data()?;
            drop(f);
            fs::rename(&tmp, &path)
        })()
        .map_err(|e| StoreError::io("cannot write", &path, e))
    }

    /// Release every reservation of `(id, ifname)`; files of very old versions holding only the container
    /// ID are released when no exact match exists (as the reference does). One directory read.
    pub fn release(&self, id: &str, ifname: &str) -> SResult<Released> {
        let rd = fs::read_dir(&self.dir).map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
        let mut out = Released::default();
        let mut legacy = Vec::new();
        let mut exact = Vec::new();
        for ent in rd {
            let Ok(ent) = ent else { continue };
            let name = ent.file_name();
            let nb = name.as_bytes();
            if nb == LOCK_FILE.as_bytes() || nb.starts_with(LAST_RESERVED_PREFIX.as_bytes()) {
                continue;
            }
            if ent.file_type().map(|t| !t.is_file()).unwrap_or(true) {
                continue;
            }
            let Ok(b) = self.read_entry(&name) else { continue };
            let path = ent.path();
            let h = Holder::parse(&String::from_utf8_lossy(&b));
            if h.is(id, ifname) {
                exact.push(path);
            } else if h.ifname.is_none() && h.container_id == id.trim() {
                legacy.push(path);
            }
        }
        let victims = if exact.is_empty() { legacy } else { exact };
        for p in victims {
            match fs::remove_file(&p) {
                Ok(()) => {
                    if let Some(ip) = p.file_name().and_then(name_ip) {
                        out.ips.push(ip);
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => out.errors.push(format!("cannot remove {}: {e}", p.display())),
            }
        }
        Ok(out)
    }

    /// Remove every reservation whose holder is not a valid attachment; also stale temp files.
    /// A legacy file (container ID only) stays if any valid attachment has that container ID.
    /// Continues on errors and returns them all.
    pub fn gc(&self, valid: &HashSet<(String, String)>) -> SResult<Released> {
        let valid_ids: HashSet<&str> = valid.iter().map(|(id, _)| id.as_str()).collect();
        let rd = fs::read_dir(&self.dir).map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
        let mut out = Released::default();
        for ent in rd {
            let ent = match ent {
                Ok(e) => e,
                Err(e) => {
                    out.errors.push(format!("cannot read {}: {e}", self.dir.display()));
                    continue;
                }
            };
            let name = ent.file_name();
            let path = ent.path();
            let stale_tmp = name.as_bytes().starts_with(TMP_PREFIX.as_bytes())
                || (name.as_bytes().starts_with(b".last_reserved_ip.") && name.as_bytes().ends_with(b".tmp"));
            let ip = name_ip(&name);
            if ip.is_none() && !stale_tmp {
                continue;
            }
            if ip.is_some() {
                let b = match self.read_entry(&name) {
                    Ok(b) => b,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        out.errors.push(format!("cannot read {}: {e}", path.display()));
                        continue;
                    }
                };
                let h = Holder::parse(&String::from_utf8_lossy(&b));
                let keep = match &h.ifname {
                    Some(ifname) => valid.contains(&(h.container_id.clone(), ifname.clone())),
                    None => valid_ids.contains(h.container_id.as_str()),
                };
                if keep {
                    continue;
                }
            }
            match fs::remove_file(&path) {
                Ok(()) => out.ips.extend(ip),
                Err(e) if is_not_found(&e) => {}
                Err(e) => out.errors.push(format!("cannot remove {}: {e}", path.display())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "rcni-hl-store-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            ));
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn layout_and_modes() {
        let t = TempDir::new("layout");
        let dir = t.0.join("data").join("net1");
        let s = Store::open(&dir, T).unwrap();
        assert!(s.reserve(ip("10.0.0.2"), " c1 ", "eth0").unwrap());
        assert!(s.reserve(ip("fd00::2"), "c1", "eth0").unwrap());
        s.set_last_reserved(0, ip("10.0.0.2")).unwrap();
        s.set_last_reserved(1, ip("fd00::2")).unwrap();
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(dir.join("fd00::2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.0.0.2");
        assert_eq!(fs::read(dir.join("last_reserved_ip.1")).unwrap(), b"fd00::2");
        assert_eq!(names(&dir), ["10.0.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
        for n in ["10.0.0.2", "last_reserved_ip.0", "lock"] {
            assert_eq!(fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777, 0o600, "{n}");
        }
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(t.0.join("data")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(s.last_reserved(0), Some(ip("10.0.0.2")));
        assert_eq!(s.last_reserved(7), None);
        // Taken: EEXIST semantics.
        assert!(!s.reserve(ip("10.0.0.2"), "c2", "eth0").unwrap());
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        let taken = s.scan().unwrap();
        assert_eq!(taken.len(), 2);
        assert!(taken[&ip("fd00::2")].is("c1", "eth0"));
        assert_eq!(s.scan_names().unwrap().len(), 2);
    }

    #[test]
    fn named_fallback_leaves_no_temp() {
        let t = TempDir::new("named");
        let s = Store::open(&t.0, T).unwrap();
        assert!(s.reserve_named(ip("10.0.0.3"), &t.0.join("10.0.0.3"), b"c\r\neth0").unwrap());
        assert!(!s.reserve_named(ip("10.0.0.3"), &t.0.join("10.0.0.3"), b"d\r\neth0").unwrap());
        assert_eq!(names(&t.0), ["10.0.0.3", "lock"]);
        assert_eq!(fs::read(t.0.join("10.0.0.3")).unwrap(), b"c\r\neth0");
    }

    #[test]
    fn release_by_owner_and_legacy() {
        let t = TempDir::new("release");
        let s = Store::open(&t.0, T).unwrap();
        s.reserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        s.reserve(ip("fd00::2"), "c1", "eth0").unwrap();
        s.reserve(ip("10.0.0.3"), "c1", "eth1").unwrap();
        s.reserve(ip("10.0.0.4"), "c2", "eth0").unwrap();
        fs::write(t.0.join("10.0.0.5"), "c1").unwrap(); // legacy file of c1
        s.set_last_reserved(0, ip("10.0.0.4")).unwrap();
        let mut r = s.release("c1", "eth0").unwrap();
        r.ips.sort();
        assert_eq!(r.ips, [ip("10.0.0.2"), ip("fd00::2")]);
        assert!(r.errors.is_empty());
        // Legacy file stays while an exact match existed; goes on the next DEL (reference behaviour).
        assert!(t.0.join("10.0.0.5").exists());
        assert_eq!(s.release("c1", "eth0").unwrap().ips, [ip("10.0.0.5")]);
        // Idempotent.
        assert!(s.release("c1", "eth0").unwrap().ips.is_empty());
        assert!(s.release("never", "eth0").unwrap().ips.is_empty());
        assert_eq!(names(&t.0), ["10.0.0.3", "10.0.0.4", "last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn unreserve_checks_owner() {
        let t = TempDir::new("unreserve");
        let s = Store::open(&t.0, T).unwrap();
        s.reserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        s.unreserve(ip("10.0.0.2"), "c2", "eth0").unwrap();
        assert!(t.0.join("10.0.0.2").exists());
        s.unreserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        assert!(!t.0.join("10.0.0.2").exists());
        s.unreserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
    }

    #[test]
    fn gc_removes_only_stale() {
        let t = TempDir::new("gc");
        let s = Store::open(&t.0, T).unwrap();
        s.reserve(ip("10.0.0.2"), "live", "eth0").unwrap();
        s.reserve(ip("10.0.0.3"), "live", "eth1").unwrap();
        s.reserve(ip("10.0.0.4"), "dead", "eth0").unwrap();
        s.reserve(ip("fd00::4"), "dead", "eth0").unwrap();
        fs::write(t.0.join("10.0.0.5"), "live").unwrap(); // legacy, container still valid
        fs::write(t.0.join("10.0.0.6"), "gone\n").unwrap(); // legacy, container gone
        fs::write(t.0.join("10.0.0.7"), "").unwrap(); // empty (crashed old writer)
        fs::write(t.0.join(".rcni-tmp.10.0.0.8.1234"), "x\r\neth0").unwrap();
        fs::write(t.0.join("notes.txt"), "dead\r\neth0").unwrap(); // not ours: untouched
        s.set_last_reserved(0, ip("10.0.0.4")).unwrap();
        let valid: HashSet<(String, String)> = [("live".to_string(), "eth0".to_string())].into();
        let mut r = s.gc(&valid).unwrap();
        r.ips.sort();
        assert_eq!(r.ips, [ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.6"), ip("10.0.0.7"), ip("fd00::4")]);
        assert!(r.errors.is_empty());
        assert_eq!(names(&t.0), ["10.0.0.2", "10.0.0.5", "last_reserved_ip.0", "lock", "notes.txt"]);
        // Empty list: every reservation goes.
        s.gc(&HashSet::new()).unwrap();
        assert_eq!(names(&t.0), ["last_reserved_ip.0", "lock", "notes.txt"]);
    }

    #[test]
    fn open_existing_creates_nothing() {
        let t = TempDir::new("existing");
        assert!(Store::open_existing(&t.0.join("nope"), T).unwrap().is_none());
        assert!(!t.0.exists());
    }

    #[test]
    fn lock_excludes_and_times_out() {
        let t = TempDir::new("lock");
        let _s = Store::open(&t.0, T).unwrap();
        // A second open file description on the same lock: flock excludes it even in-process.
        // (The timed-out helper keeps waiting on its fd; in the plugin the process exits right away.)
        let e = Store::open(&t.0, Duration::from_millis(200)).err().unwrap();
        assert!(matches!(e, StoreError::LockTimeout { .. }), "{e}");
        assert!(e.to_string().contains("try again"));
    }

    #[test]
    fn lock_waiter_gets_it_after_release() {
        let t = TempDir::new("lockwait");
        let s = Store::open(&t.0, T).unwrap();
        let d = t.0.clone();
        let h = std::thread::spawn(move || Store::open(&d, T).map(|_| ()).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        assert!(h.join().unwrap());
    }
}
