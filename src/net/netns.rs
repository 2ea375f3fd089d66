//! Network namespaces: open by path, compare identities, run a closure inside one.
//!
//! The rule everything here follows: a network namespace belongs to a *thread*, and whatever the thread
//! creates (sockets, opened `/proc/sys/net` files) stays bound to the namespace it was in at that moment.
//! So work in another namespace happens on an OS thread that `setns`es: a throw-away one that exits
//! afterwards ([`run_in_netns`]), or one that stays for several jobs ([`NetnsThread`]); the calling thread
//! (the tokio runtime thread) never changes namespace.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};

use super::error::{NetError, Result};

/// The namespace of the calling thread. `/proc/self` would be the thread-group leader (main thread),
/// which is wrong on any other thread; `/proc/thread-self` is always the caller.
pub const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// Identity of a namespace: (device, inode) of its nsfs file. Two paths (a bind mount under /run/netns
/// and /proc/<pid>/ns/net) name the same namespace iff their identities are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    fn of(file: &File) -> std::io::Result<NsId> {
        let m = file.metadata()?;
        Ok(NsId { dev: m.dev(), ino: m.ino() })
    }
}

/// The identity of the calling thread's network namespace.
pub fn current_thread_netns_id() -> Result<NsId> {
    let m = std::fs::metadata(THREAD_SELF_NETNS).map_err(|e| NetError::io(format!("stat {THREAD_SELF_NETNS}"), e))?;
    Ok(NsId { dev: m.dev(), ino: m.ino() })
}

/// An open network namespace. Cheap to clone (the file is shared); the fd stays open as long as any
/// clone lives, so it can be handed to the kernel as `IFLA_NET_NS_FD` safely.
#[derive(Clone, Debug)]
pub struct Netns {
    file: Arc<File>,
    path: PathBuf,
    id: NsId,
}

impl Netns {
    /// Open a namespace by path (`/var/run/netns/x`, `/proc/<pid>/ns/net`, a CNI_NETNS path).
    /// Fails with a not-found error when the path does not exist, and with EINVAL when it is not a
    /// namespace file (a plain file would otherwise only fail later, at setns time).
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let ctx = || format!("open netns {}", path.display());
        let file = crate::nsfile::open(path).map_err(|e| {
            if crate::nsfile::is_not_netns(&e) {
                NetError::from_errno(format!("{}: not a network namespace file", ctx()), libc::EINVAL)
            } else {
                NetError::io(ctx(), e)
            }
        })?;
        Netns::from_file(file, path)
    }

    /// A namespace file opened (and checked) elsewhere — by `crate::nsfile::open`, as skel does for
    /// CNI_NETNS — used as it is, so every step works on the namespace that was checked, not on whatever
    /// `path` names by then. `path` is kept for messages only.
    pub fn from_file(file: File, path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let id = NsId::of(&file).map_err(|e| NetError::io(format!("stat netns {}", path.display()), e))?;
        Ok(Netns { file: Arc::new(file), path: path.to_path_buf(), id })
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<Netns> {
        Netns::open(THREAD_SELF_NETNS)
    }

    pub fn id(&self) -> NsId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Same namespace (by identity, not by path)?
    pub fn is_same(&self, other: &Netns) -> bool {
        self.id == other.id
    }

    /// Is this the calling thread's namespace?
    pub fn is_current(&self) -> Result<bool> {
        Ok(current_thread_netns_id()? == self.id)
    }

    /// The raw fd, e.g. for `IFLA_NET_NS_FD`. Valid while `self` (or a clone) is alive.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Run `f` on a new OS thread that has joined this namespace; returns its result.
    /// See [`run_in_netns`].
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        run_in_netns(self, f)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Move the calling thread into `ns` (only ever a thread made for it).
fn enter(ns: &Netns) -> Result<()> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::from_errno(format!("setns into {}", ns.path.display()), e as i32))
}

/// Run `f` on a throw-away OS thread that `setns`'d into `ns`, and return what it returns.
///
/// The thread exits afterwards, so its namespace change dies with it; the caller's thread is never
/// touched. Use it for things bound to the *thread's* namespace at creation or open time: sockets and
/// `/proc/sys/net` files. A panic in `f` is propagated to the caller. Costs one thread spawn
/// (tens of microseconds).
pub fn run_in_netns<T, F>(ns: &Netns, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let before = if cfg!(debug_assertions) { Some(current_thread_netns_id()?) } else { None };
    let out = std::thread::scope(|s| {
        let joined = std::thread::Builder::new()
            .name("rcni-netns".into())
            .spawn_scoped(s, || -> Result<T> {
                enter(ns)?;
                Ok(f())
            })
            .map_err(|e| NetError::io("spawn netns thread", e))?
            .join();
        match joined {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    if let Some(before) = before {
        debug_assert_eq!(
            Some(before),
            current_thread_netns_id().ok(),
            "run_in_netns changed the calling thread's netns"
        );
    }
    out
}

/// A thread that stays inside one namespace and runs jobs there until dropped: for a caller that needs
/// several things bound to that namespace over its life (the netlink sockets of a pod's handle, then the
/// pod interface's `/proc/sys/net` files), one thread instead of a [`run_in_netns`] spawn and exit each. A
/// job runs while the caller waits for its result, as with `run_in_netns`.
pub struct NetnsThread {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

type Job = Box<dyn FnOnce() + Send>;

impl NetnsThread {
    /// Start the thread and wait until it has joined `ns`.
    pub fn start(ns: &Netns) -> Result<NetnsThread> {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let (joined_tx, joined) = std::sync::mpsc::sync_channel(1);
        let target = ns.clone();
        let thread = std::thread::Builder::new()
            .name("rcni-netns".into())
            .spawn(move || {
                let r = enter(&target);
                let ok = r.is_ok();
                let _ = joined_tx.send(r);
                drop(target);
                if ok {
                    while let Ok(job) = inbox.recv() {
                        job();
                    }
                }
            })
            .map_err(|e| NetError::io("spawn netns thread", e))?;
        let me = NetnsThread { jobs: Some(jobs), thread: Some(thread), path: ns.path.clone() };
        match joined.recv() {
            Ok(r) => r.map(|()| me),
            Err(_) => Err(NetError::other(format!("setns into {}", ns.path.display()), "the netns thread ended")),
        }
    }

    /// Run `f` on the thread and return what it returns.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ended = || NetError::other(format!("run in netns {}", self.path.display()), "the netns thread ended");
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.jobs.as_ref().ok_or_else(ended)?.send(job).map_err(|_| ended())?;
        result.recv().map_err(|_| ended())
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for NetnsThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsThread").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_rejects_non_netns_files() {
        let e = Netns::open("/proc/self/status").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        // A namespace, but not a network one.
        let e = Netns::open("/proc/self/ns/uts").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        let e = Netns::open("/nonexistent/netns").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // A FIFO without a writer: refused at once instead of blocking the open forever.
        let dir = tempfile::TempDir::with_prefix("rcni-netns-fifo-").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = Netns::open(&fifo).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    }

    #[test]
    fn current_matches_thread_self_and_run_keeps_caller() {
        let cur = Netns::current().unwrap();
        assert!(cur.is_current().unwrap());
        let same = Netns::open("/proc/self/ns/net").unwrap();
        // The test thread was spawned from the main thread and has not moved, so both agree.
        assert!(cur.is_same(&same));
        let inner = cur.run(|| current_thread_netns_id().unwrap()).unwrap();
        assert_eq!(inner, cur.id());
    }

    #[test]
    fn run_propagates_panics() {
        let cur = Netns::current().unwrap();
        let r = std::panic::catch_unwind(|| cur.run(|| panic!("boom")));
        assert!(r.is_err());
    }
}
