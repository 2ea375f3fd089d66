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
//! leaves either a complete reservation or none. `last_reserved_ip.<N>`, a hint, is overwritten in place.
//!
//! Who holds what is read through a [`Snapshot`]: from the owner index (`index`, kept outside this
//! directory) while the directory is provably unchanged since the index was saved, else from the files
//! (one directory read, one read per file), after which the index is saved again.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::index::{self, Match, Name, Owner, Records};
use super::reservation::{Holder, name_ip};
use crate::attachment::Attachment;
use crate::lock;

mod write;
pub use write::{Staged, sync_all};

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
    /// Where this network's owner index lives (`None`: it has none).
    index: Option<PathBuf>,
    /// The stamp in the index file as this command last read or wrote it; `None` while not known.
    index_stamp: Cell<Option<Option<index::DirStamp>>>,
    _lock: File,
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

/// The files of the network directory that commands care about, and who holds each: every file named by an
/// address (the reservations) and every other regular file but `lock` and `last_reserved_ip.*` (leftover
/// temp files, which DEL also releases when they name the attachment, as the reference does).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub records: Records,
    /// Taken from the index: a holder found here is read back from its file before anything is done about it.
    pub from_index: bool,
    /// Differs from the saved index: save it at the end of the command.
    changed: bool,
    /// Every holder was read: nothing here is a guess, so it may be saved as the index.
    complete: bool,
}

impl Snapshot {
    /// A reservation this command made (or found made by a writer that ignores the lock: `holder` unknown).
    pub fn insert(&mut self, ip: IpAddr, holder: Option<Holder>) {
        self.changed = true;
        let h = holder.unwrap_or_else(|| {
            self.complete = false;
            Holder { container_id: "(unknown)".into(), ifname: None }
        });
        self.records.insert(Name::Ip(ip), &h);
    }

    fn remove(&mut self, name: &Name) {
        self.changed = true;
        self.records.remove(name);
    }

    /// The files DEL of `(id, ifname)` removes: those of exactly this attachment, else (none) the legacy
    /// ID-only files of the container, as the reference does.
    fn victims(&self, id: &str, ifname: &str) -> Vec<(Name, Holder)> {
        let owner = Owner::new(id, ifname);
        let exact = self.records.select(&owner, Match::Exactly);
        if exact.is_empty() { self.records.select(&owner, Match::LegacyOf) } else { exact }
    }
}

fn holder_of(content: &[u8]) -> Holder {
    Holder::parse(&String::from_utf8_lossy(content))
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
        let f = match lock::lock_exclusive(f, timeout) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(StoreError::LockTimeout { path, waited: timeout }),
            Err(e) => return Err(StoreError::io("cannot lock", &path, e)),
        };
        let dirfd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| StoreError::io("cannot open", dir, e))?;
        Ok(Store { dir: dir.to_path_buf(), dirfd, index: index::path_for(dir), index_stamp: Cell::new(None), _lock: f })
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

    /// Who holds what: from the index when it provably describes the directory, else from the files.
    pub fn snapshot(&self) -> SResult<Snapshot> {
        match self.load_index() {
            Some(s) => Ok(s),
            None => self.snapshot_from_files(),
        }
    }

    fn load_index(&self) -> Option<Snapshot> {
        let path = self.index.as_ref()?;
        let Some((stamp, records)) = index::load(path).and_then(index::decode) else {
            // Absent or not intact (never believed): a stamp in it is still one to differ from.
            self.index_stamp.set(Some(index::stamp_on_disk(path)));
            return None;
        };
        self.index_stamp.set(Some(Some(stamp)));
        let fresh = index::DirStamp::of(&self.dirfd).ok()? == stamp;
        fresh.then_some(Snapshot { records, from_index: true, changed: false, complete: true })
    }

    /// Read every file: one directory read, then openat+read+close per file.
    pub fn snapshot_from_files(&self) -> SResult<Snapshot> {
        let mut snap = Snapshot { changed: true, complete: true, ..Snapshot::default() };
        let rd = fs::read_dir(&self.dir).map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("cannot read", &self.dir, e))?;
            let name = ent.file_name();
            let nb = name.as_bytes();
            if nb == LOCK_FILE.as_bytes() || nb.starts_with(LAST_RESERVED_PREFIX.as_bytes()) {
                continue;
            }
            let ip = name_ip(&name);
            // An address is taken whatever its entry is; other names matter only as regular files.
            if ip.is_none() && ent.file_type().map(|t| !t.is_file()).unwrap_or(true) {
                continue;
            }
            let holder = match self.read_entry(&name) {
                Ok(b) => holder_of(&b),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    snap.complete = false;
                    match ip {
                        Some(_) => Holder { container_id: format!("(unreadable: {e})"), ifname: None },
                        None => continue,
                    }
                }
            };
            snap.records.insert(Name::of(&name), &holder);
        }
        Ok(snap)
    }

    /// The holder of one file as it is now; `None` if it does not exist.
    pub fn read_holder(&self, name: &OsStr) -> SResult<Option<Holder>> {
        match self.read_entry(name) {
            Ok(b) => Ok(Some(holder_of(&b))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::io("cannot read", &self.dir.join(name), e)),
        }
    }

    /// Save `snap` as the index if it changed, stamped with the directory as it is now: call it after the
    /// command's last change to the directory, with the lock still held. Never fails the command: an
    /// index not saved only costs the next command a full read.
    pub fn save_index(&self, snap: &mut Snapshot) {
        let Some(path) = &self.index else { return };
        if !snap.changed {
            return;
        }
        if !snap.complete {
            index::remove(path);
            return;
        }
        let on_disk = self.index_stamp.get().unwrap_or_else(|| index::stamp_on_disk(path));
        let res = index::mark(&self.dirfd, on_disk.as_ref()).and_then(|stamp| match stamp {
            Some(stamp) => {
                index::save(path, &stamp, &snap.records)?;
                self.index_stamp.set(Some(Some(stamp)));
                Ok(())
            }
            None => {
                index::remove(path);
                Ok(())
            }
        });
        match res {
            Ok(()) => snap.changed = false,
            Err(e) => crate::cni::log::warn("host-local", format!("cannot save index {}: {e}", path.display())),
        }
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

    /// Release every reservation of `(id, ifname)`; files of very old versions holding only the container
    /// ID are released when no exact match exists (as the reference does). Files the index names are read
    /// back before they are removed; if one does not say what the index says, the files decide.
    pub fn release(&self, id: &str, ifname: &str) -> SResult<Released> {
        let mut snap = self.snapshot()?;
        let mut victims = snap.victims(id, ifname);
        if snap.from_index && !self.all_still_held(&victims)? {
            snap = self.snapshot_from_files()?;
            victims = snap.victims(id, ifname);
        }
        let mut out = Released::default();
        for (name, _) in victims {
            let path = self.dir.join(name.file_name());
            match fs::remove_file(&path) {
                Ok(()) => out.ips.extend(match name {
                    Name::Ip(ip) => Some(ip),
                    Name::Other(_) => None,
                }),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    out.errors.push(format!("cannot remove {}: {e}", path.display()));
                    continue;
                }
            }
            snap.remove(&name);
        }
        self.save_index(&mut snap);
        Ok(out)
    }

    /// Each file still holds what the snapshot said (an unreadable one does not: the full read skips it).
    fn all_still_held(&self, victims: &[(Name, Holder)]) -> SResult<bool> {
        Ok(victims.iter().all(|(name, h)| matches!(self.read_holder(&name.file_name()), Ok(Some(now)) if now == *h)))
    }

    /// Remove every reservation whose holder is not a valid attachment; also stale temp files.
    /// A legacy file (container ID only) stays if any valid attachment has that container ID.
    /// Continues on errors and returns them all.
    pub fn gc(&self, valid: &HashSet<Attachment>) -> SResult<Released> {
        let valid_ids: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
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
                    Some(ifname) => valid.contains(&Attachment::new(&h.container_id, ifname)),
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
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `net` is a network directory (not created) inside a throwaway data directory (which also gets the
    /// index), removed with `_data`.
    pub(crate) struct TempDir {
        pub(crate) net: PathBuf,
        _data: tempfile::TempDir,
    }
    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let data = tempfile::TempDir::with_prefix(format!("rcni-hl-store-{tag}-")).unwrap();
            TempDir { net: data.path().join("net"), _data: data }
        }
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) const T: Duration = Duration::from_secs(5);

    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// `last_reserved_ip` is overwritten in place: the same inode (nothing freed per ADD), a shorter address
    /// leaves no tail of the longer one, and a symlink or FIFO in its place is refused, its target untouched.
    #[test]
    fn last_reserved_is_overwritten_in_place_and_never_through_a_link() {
        use std::os::unix::fs::MetadataExt;
        let t = TempDir::new("lastres");
        let s = Store::open(&t.net, T).unwrap();
        let file = t.net.join("last_reserved_ip.0");
        s.set_last_reserved(0, ip("10.0.0.100")).unwrap();
        let inode = fs::metadata(&file).unwrap().ino();
        s.set_last_reserved(0, ip("10.0.0.2")).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"10.0.0.2");
        assert_eq!(fs::metadata(&file).unwrap().ino(), inode, "overwritten, not replaced");
        assert_eq!(s.last_reserved(0), Some(ip("10.0.0.2")));

        let victim = t.net.join("notes.txt");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, t.net.join("last_reserved_ip.1")).unwrap();
        assert!(s.set_last_reserved(1, ip("10.0.0.3")).is_err(), "a symlink is not followed");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        nix::unistd::mkfifo(&t.net.join("last_reserved_ip.2"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(s.set_last_reserved(2, ip("10.0.0.3")).is_err(), "a FIFO is refused without blocking");
    }

    #[test]
    fn layout_and_modes() {
        let t = TempDir::new("layout");
        let dir = t.net.join("data").join("net1");
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
        assert_eq!(fs::metadata(t.net.join("data")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(s.last_reserved(0), Some(ip("10.0.0.2")));
        assert_eq!(s.last_reserved(7), None);
        // Taken: EEXIST semantics.
        assert!(!s.reserve(ip("10.0.0.2"), "c2", "eth0").unwrap());
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        let snap = s.snapshot_from_files().unwrap();
        assert_eq!(snap.records.len(), 2);
        assert!(snap.records.holder_of(&Name::Ip(ip("fd00::2"))).unwrap().is("c1", "eth0"));
        assert_eq!(s.scan_names().unwrap().len(), 2);
    }

    #[test]
    fn release_by_owner_and_legacy() {
        let t = TempDir::new("release");
        let s = Store::open(&t.net, T).unwrap();
        s.reserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        s.reserve(ip("fd00::2"), "c1", "eth0").unwrap();
        s.reserve(ip("10.0.0.3"), "c1", "eth1").unwrap();
        s.reserve(ip("10.0.0.4"), "c2", "eth0").unwrap();
        fs::write(t.net.join("10.0.0.5"), "c1").unwrap(); // legacy file of c1
        s.set_last_reserved(0, ip("10.0.0.4")).unwrap();
        let mut r = s.release("c1", "eth0").unwrap();
        r.ips.sort();
        assert_eq!(r.ips, [ip("10.0.0.2"), ip("fd00::2")]);
        assert!(r.errors.is_empty());
        // Legacy file stays while an exact match existed; goes on the next DEL (reference behaviour).
        assert!(t.net.join("10.0.0.5").exists());
        assert_eq!(s.release("c1", "eth0").unwrap().ips, [ip("10.0.0.5")]);
        // Idempotent.
        assert!(s.release("c1", "eth0").unwrap().ips.is_empty());
        assert!(s.release("never", "eth0").unwrap().ips.is_empty());
        assert_eq!(names(&t.net), ["10.0.0.3", "10.0.0.4", "last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn unreserve_checks_owner() {
        let t = TempDir::new("unreserve");
        let s = Store::open(&t.net, T).unwrap();
        s.reserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        s.unreserve(ip("10.0.0.2"), "c2", "eth0").unwrap();
        assert!(t.net.join("10.0.0.2").exists());
        s.unreserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
        assert!(!t.net.join("10.0.0.2").exists());
        s.unreserve(ip("10.0.0.2"), "c1", "eth0").unwrap();
    }

    #[test]
    fn gc_removes_only_stale() {
        let t = TempDir::new("gc");
        let s = Store::open(&t.net, T).unwrap();
        s.reserve(ip("10.0.0.2"), "live", "eth0").unwrap();
        s.reserve(ip("10.0.0.3"), "live", "eth1").unwrap();
        s.reserve(ip("10.0.0.4"), "dead", "eth0").unwrap();
        s.reserve(ip("fd00::4"), "dead", "eth0").unwrap();
        fs::write(t.net.join("10.0.0.5"), "live").unwrap(); // legacy, container still valid
        fs::write(t.net.join("10.0.0.6"), "gone\n").unwrap(); // legacy, container gone
        fs::write(t.net.join("10.0.0.7"), "").unwrap(); // empty (crashed old writer)
        fs::write(t.net.join(".rcni-tmp.10.0.0.8.1234"), "x\r\neth0").unwrap();
        fs::write(t.net.join("notes.txt"), "dead\r\neth0").unwrap(); // not ours: untouched
        s.set_last_reserved(0, ip("10.0.0.4")).unwrap();
        let valid: HashSet<Attachment> = [Attachment::new("live", "eth0")].into();
        let mut r = s.gc(&valid).unwrap();
        r.ips.sort();
        assert_eq!(r.ips, [ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.6"), ip("10.0.0.7"), ip("fd00::4")]);
        assert!(r.errors.is_empty());
        assert_eq!(names(&t.net), ["10.0.0.2", "10.0.0.5", "last_reserved_ip.0", "lock", "notes.txt"]);
        // Empty list: every reservation goes.
        s.gc(&HashSet::new()).unwrap();
        assert_eq!(names(&t.net), ["last_reserved_ip.0", "lock", "notes.txt"]);
    }

    #[test]
    fn open_existing_creates_nothing() {
        let t = TempDir::new("existing");
        assert!(Store::open_existing(&t.net.join("nope"), T).unwrap().is_none());
        assert!(!t.net.exists());
    }

    #[test]
    fn lock_excludes_and_times_out() {
        let t = TempDir::new("lock");
        let _s = Store::open(&t.net, T).unwrap();
        // A second open file description on the same lock: flock excludes it even in-process.
        let e = Store::open(&t.net, Duration::from_millis(200)).err().unwrap();
        assert!(matches!(e, StoreError::LockTimeout { .. }), "{e}");
        assert!(e.to_string().contains("try again"));
    }

    /// Audit finding 19: a command that gave up waiting must not get the lock later and keep it.
    #[test]
    fn a_timed_out_waiter_never_keeps_the_lock() {
        let t = TempDir::new("locklate");
        let holder = Store::open(&t.net, T).unwrap();
        assert!(matches!(Store::open(&t.net, Duration::from_millis(100)), Err(StoreError::LockTimeout { .. })));
        drop(holder);
        // Time for the timed-out waiter to get the lock (which it must let go of at once).
        std::thread::sleep(Duration::from_millis(200));
        let again = Store::open(&t.net, Duration::from_secs(10));
        assert!(again.is_ok(), "the lock is still held by the timed-out waiter");
    }

    #[test]
    fn lock_waiter_gets_it_after_release() {
        let t = TempDir::new("lockwait");
        let s = Store::open(&t.net, T).unwrap();
        let d = t.net.clone();
        let h = std::thread::spawn(move || Store::open(&d, T).map(|_| ()).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        assert!(h.join().unwrap());
    }
}
