//! Deleting a link without waiting for the kernel to finish.
//!
//! Unregistering a network device ends with an RCU barrier in the task that deleted it (the kernel's
//! `netdev_run_todo`): for a veth pair that is 15–30 ms on an idle 2-core VM and more on a busy node —
//! several times everything else a DEL does. The caller makes the pair inert first (pod end down and
//! renamed, so its name is free and no frame passes); after that nothing depends on the kernel's wait, so a
//! forked child sends the delete request and sits out the barrier while the plugin answers at once.
//!
//! The child is detached from the runtime: its own session, and stdin/stdout/stderr on /dev/null, because a
//! runtime reads the plugin's stdout and stderr to end-of-file (Go's `exec.Cmd` does) and would otherwise
//! wait for the child too. When the plugin exits, the child is adopted by the nearest subreaper or by init,
//! which reaps it. A runner that wants to know when the deletion is complete (cnitool, the test harness,
//! the benchmark) becomes a subreaper ([`adopt_helpers`]) and waits for them ([`reap_helpers`]); helpers are
//! told apart from the runner's other children by their name, [`HELPER_NAME`].
//!
//! Some sockets are slow to close for the same reason: closing an nf_tables socket after a commit that
//! deleted something waits for the kernel's deferred destruction of the transaction (an RCU grace period,
//! ~10 ms). Such a socket is handed to [`linger`] instead of closed; the child inherits every open fd at the
//! fork, so it holds the last reference and pays that wait, not the plugin.
//!
//! Apart from those sockets the child keeps nothing: `fork` copies every descriptor and the child never
//! execs, so `O_CLOEXEC` does not apply, and an inherited pod netns fd, pod-side netlink socket or locked
//! host-local lock file would stay pinned for as long as the child lives. It closes every fd except its
//! netlink socket, the ready pipe and the lingering sockets.
//!
//! A watchdog bounds the child: its first act is `alarm(WATCHDOG)` with `SIGALRM` at its default action
//! (terminate) and unblocked, so it ends after [`WATCHDOG`] whatever it is waiting for — a send or receive
//! that never completes, a lingering socket's close, anything in user space. What no signal can bound is a
//! task in uninterruptible sleep (`D` state): the kernel's unregister of a device runs inside the `send` of
//! the delete request (rtnetlink handles a request in the sender's task), and when a device's references
//! never drop ("unregister_netdevice: waiting for vethX to become free") that task sleeps uninterruptibly
//! in `netdev_wait_allrefs` until they do; the alarm is then only delivered when the kernel lets go. The
//! same holds for the exit path (closing the lingering sockets waits for RCU in the kernel). Such a hang
//! would hold the plugin itself just the same with in-line deletion; in the background it holds only the
//! child, which by then pins nothing but its netlink socket (and so the node netns, which outlives it).
//!
//! Reaping. A child outlives the plugin, so when it ends something must reap it: the nearest ancestor that
//! is a subreaper, else PID 1 of the pid namespace. Nobody can read another process's subreaper flag
//! (`PR_GET_CHILD_SUBREAPER` answers for the caller only), so [`helpers_are_reaped`] decides from what is
//! visible, and DEL deletes in-line when it says no (slower, never a zombie):
//! - a runner that adopts and reaps helpers ([`adopt_helpers`] + [`reap_helpers`]: rcni's cnitool, test
//!   harness and benchmark) names itself in [`REAPER_ENV`]; it counts only if it is one of our ancestors;
//!   one that calls the library in-process is a subreaper itself, which the caller can read;
//! - otherwise PID 1 of our pid namespace must be an init known to reap orphans ([`KNOWN_INITS`]: systemd,
//!   sysvinit/busybox/upstart `init`, tini/docker-init, dumb-init, catatonit, s6, runit, openrc-init, the
//!   Kubernetes `pause`). containerd, CRI-O, kubelet, podman and the reference cnitool run on hosts or in
//!   node containers whose PID 1 is one of these, so background deletion stays on for them. A CNI daemon
//!   that is itself PID 1 of a container (Multus thick and similar; Go reaps only the children it started)
//!   or any unknown PID 1 gets in-line deletion; so does a plugin that is PID 1 itself (its children die
//!   with it) or one whose `/proc` belongs to another pid namespace (`/proc/1` would be another init).
//!   Not covered: an intermediate subreaper that does not reap (none of the runtimes above is one).
//!
//! The child only makes async-signal-safe calls (the parent may have other threads, whose locks fork copies
//! in whatever state they were): the request is serialized, the socket opened and the list of fds to keep
//! sorted before the fork.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;

use super::error::{NetError, Result};

/// The process name (comm) of a deleting child, so a runner can find its own among its children.
pub const HELPER_NAME: &CStr = c"rcni-unlink";

/// Sockets kept open until the process exits (see the module comment).
static LINGERING: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Keep `fd` open for the rest of the process instead of closing it now: its release is slow, and a helper
/// forked later (by [`delete_link`]) takes over the last reference. Without a helper it is closed at exit,
/// which costs what closing it now would have.
pub fn linger(fd: OwnedFd) {
    let mut list = LINGERING.lock().unwrap_or_else(|p| p.into_inner());
    // A bound for long-lived users of the library: past it, sockets are closed as usual.
    if list.len() < MAX_LINGERING {
        list.push(fd);
    }
}

const MAX_LINGERING: usize = 64;

/// How long the child may live before its watchdog ends it (releasing the lingering sockets): long past any
/// normal unregister (tens of ms), short enough not to pin them forever. See the module comment for what it
/// cannot bound.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// Unit tests only: a shorter watchdog, and a socket the child sends to instead of the kernel.
#[cfg(test)]
static TEST_WATCHDOG_SECS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
#[cfg(test)]
static TEST_TARGET: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

fn watchdog_secs() -> u32 {
    #[cfg(test)]
    {
        let s = TEST_WATCHDOG_SECS.load(std::sync::atomic::Ordering::Relaxed);
        if s > 0 {
            return s;
        }
    }
    WATCHDOG.as_secs() as u32
}

/// Is there a lingering socket a helper could take over? (DEL forks one for this alone.)
pub fn has_lingering() -> bool {
    !LINGERING.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
}

/// Delete link `index` (if any) of the calling thread's network namespace in a detached child process, which
/// also takes over the [`linger`]ing sockets; returns as soon as the child exists. `Err` if no child could be
/// started (the caller should delete in-line).
pub fn delete_link(index: Option<u32>) -> Result<()> {
    let what = || match index {
        Some(i) => format!("delete link #{i} in the background"),
        None => "close sockets in the background".to_string(),
    };
    let request = index.map(delete_request).unwrap_or_default();
    // Held across the fork: no other thread pushes while the child is made (it copies the list as is).
    let _lingering = LINGERING.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: plain syscalls on fds we own; the child branch below only makes async-signal-safe calls.
    unsafe {
        let sock = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if sock < 0 {
            return Err(NetError::io(what(), io::Error::last_os_error()));
        }
        #[cfg(test)]
        let sock = match TEST_TARGET.load(std::sync::atomic::Ordering::Relaxed) {
            t if t >= 0 => {
                libc::close(sock);
                libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 0)
            }
            _ => sock,
        };
        let watchdog = watchdog_secs();
        // The child says when it carries HELPER_NAME and its own session: from then on a runner that looks
        // at its children can tell it apart (before, it would look like the plugin itself).
        let mut ready = [0i32; 2];
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = io::Error::last_os_error();
            libc::close(sock);
            return Err(NetError::io(what(), e));
        }
        let keep = fds_to_keep(&[sock, ready[1]], _lingering.iter().map(AsRawFd::as_raw_fd));
        let pid = libc::fork();
        if pid == 0 {
            run_child(sock, ready[1], &request, &keep, watchdog);
        }
        libc::close(sock);
        libc::close(ready[1]);
        if pid < 0 {
            let e = io::Error::last_os_error();
            libc::close(ready[0]);
            return Err(NetError::io(what(), e));
        }
        let mut byte = 0u8;
        while libc::read(ready[0], (&mut byte as *mut u8).cast(), 1) < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        libc::close(ready[0]);
    }
    Ok(())
}

/// The start of every helper, in the forked child: arm the watchdog (first, so that everything after it
/// is bounded), take [`HELPER_NAME`] and a session of its own, keep only `keep` (sorted) and stdio on
/// /dev/null, then tell the parent through `ready`. Async-signal-safe calls only.
unsafe fn detach_self(ready: i32, keep: &[i32], watchdog: u32) {
    unsafe {
        // The parent may have a handler for SIGALRM or block it (both are inherited); the default action
        // ends the child.
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        let mut alarm_set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut alarm_set);
        libc::sigaddset(&mut alarm_set, libc::SIGALRM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &alarm_set, std::ptr::null_mut());
        libc::alarm(watchdog);
        libc::prctl(libc::PR_SET_NAME, HELPER_NAME.as_ptr());
        libc::setsid();
        close_all_but(keep);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
        libc::write(ready, [1u8].as_ptr().cast(), 1);
        libc::close(ready);
    }
}

fn delete_request(index: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// The fds the child keeps, sorted and without duplicates (so [`close_all_but`] can close the gaps).
fn fds_to_keep(own: &[i32], lingering: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut keep: Vec<i32> = own.iter().copied().chain(lingering).collect();
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// Close every fd from 3 up except those in `keep` (sorted). Async-signal-safe: syscalls only, no allocation.
unsafe fn close_all_but(keep: &[i32]) {
    let mut first: u32 = 3;
    for &fd in keep {
        if fd < 0 || (fd as u32) < first {
            continue;
        }
        if fd as u32 > first {
            unsafe { close_range(first, fd as u32 - 1) };
        }
        first = fd as u32 + 1;
    }
    unsafe { close_range(first, u32::MAX) };
}

/// `close_range(2)` (Linux 5.9); on older kernels, one `close` per fd up to the fd limit.
unsafe fn close_range(first: u32, last: u32) {
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0u32) == 0 {
            return;
        }
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let end = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(u64::from(last) + 1).min(1 << 20) as u32
        } else {
            last.min(65535) + 1
        };
        for fd in first..end {
            libc::close(fd as i32);
        }
    }
}

/// Unit tests only: the child waits for a signal before exiting, so a test can look at what it holds.
#[cfg(test)]
static PAUSE_BEFORE_EXIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The child: arm the watchdog, detach, send, wait for the kernel's answer (that is the slow part), exit
/// (closing the inherited lingering sockets: the other slow part). Errors have no one to go to: the pair is
/// inert already, and a later DEL or ADD of the attachment removes it by name.
unsafe fn run_child(sock: i32, ready: i32, request: &[u8], keep: &[i32], watchdog: u32) -> ! {
    unsafe {
        detach_self(ready, keep, watchdog);
        if !request.is_empty() && libc::send(sock, request.as_ptr().cast(), request.len(), 0) >= 0 {
            let mut ack = [0u8; 512];
            libc::recv(sock, ack.as_mut_ptr().cast(), ack.len(), 0);
        }
        #[cfg(test)]
        if PAUSE_BEFORE_EXIT.load(std::sync::atomic::Ordering::Relaxed) {
            libc::pause();
        }
        libc::_exit(0)
    }
}

/// Make the calling process a subreaper: helpers started by plugins it runs become its children when the
/// plugin exits, so [`reap_helpers`] can wait for them. For runners (cnitool, tests, benchmark).
pub fn adopt_helpers() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reap the helpers among this process's children; with `wait`, also wait for those still running (their
/// deletions are then complete). Other children are left alone: their owners wait for them by pid.
/// Returns how many were reaped.
pub fn reap_helpers(wait: bool) -> usize {
    let mut reaped = 0;
    for pid in helper_children() {
        let flags = if wait { 0 } else { libc::WNOHANG };
        let mut status = 0;
        // SAFETY: waitpid on a pid that is our child.
        if unsafe { libc::waitpid(pid, &mut status, flags) } == pid {
            reaped += 1;
        }
    }
    reaped
}

/// Set by a runner that adopts and reaps helpers ([`adopt_helpers`], [`reap_helpers`]) for the plugins it
/// runs, to its pid: see [`helpers_are_reaped`].
pub const REAPER_ENV: &str = "RCNI_HELPER_REAPER";

/// The environment entry a reaping runner passes to the plugins it starts.
pub fn reaper_env() -> (&'static str, String) {
    (REAPER_ENV, std::process::id().to_string())
}

/// Names (comm) of PID 1 programs that reap every orphan they inherit.
pub const KNOWN_INITS: &[&str] =
    &["systemd", "init", "tini", "docker-init", "dumb-init", "catatonit", "s6-svscan", "runit", "openrc-init", "pause"];

/// Would a helper forked now be reaped once this process exits? The rule and its reasons are in the module
/// comment; when in doubt the answer is no (DEL then deletes in-line).
pub fn helpers_are_reaped() -> bool {
    let init = std::fs::read("/proc/1/comm").unwrap_or_default();
    let mut subreaper: libc::c_int = 0;
    // SAFETY: prctl writing an int we own.
    let subreaper =
        unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut subreaper as *mut libc::c_int) } == 0 && subreaper != 0;
    let seen = Seen {
        subreaper,
        me: std::process::id() as i32,
        proc_self: stat("self"),
        runner: std::env::var(REAPER_ENV).ok().and_then(|v| v.parse().ok()),
        init_comm: init.strip_suffix(b"\n").unwrap_or(&init),
    };
    seen.reaped(|pid| stat(&pid.to_string()).map(|(_, ppid)| ppid))
}

/// What [`helpers_are_reaped`] looks at.
struct Seen<'a> {
    /// We are a subreaper ourselves ([`adopt_helpers`]: a runner using this library in-process).
    subreaper: bool,
    /// Our pid (getpid: in our own pid namespace).
    me: i32,
    /// (pid, ppid) by `/proc/self`: in the pid namespace `/proc` was mounted for.
    proc_self: Option<(i32, i32)>,
    /// The pid in [`REAPER_ENV`].
    runner: Option<i32>,
    /// PID 1's name by `/proc/1/comm`.
    init_comm: &'a [u8],
}

impl Seen<'_> {
    fn reaped(&self, parent_of: impl Fn(i32) -> Option<i32>) -> bool {
        if self.subreaper {
            return true;
        }
        // /proc must be our own pid namespace's, or "/proc/1" and the parent chain are someone else's; as
        // PID 1 ourselves, our children die with us.
        let Some((own, mut up)) = self.proc_self else { return false };
        if own != self.me || self.me == 1 {
            return false;
        }
        if let Some(runner) = self.runner.filter(|&p| p > 1) {
            // Bounded: a pid chain is short, and it ends at 1 (or at 0 above our namespace's init).
            for _ in 0..64 {
                if up == runner {
                    return true;
                }
                match parent_of(up).filter(|_| up > 1) {
                    Some(next) => up = next,
                    None => break,
                }
            }
        }
        KNOWN_INITS.iter().any(|init| init.as_bytes() == self.init_comm)
    }
}

/// (pid, ppid) from `/proc/<which>/stat`; the name field may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn stat(which: &str) -> Option<(i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((pid, ppid))
}

/// Children of every thread of this process whose name is HELPER_NAME (orphans are adopted by any thread
/// of a subreaper, so all threads' lists are read).
fn helper_children() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else { continue };
        for pid in list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.strip_suffix(b"\n").unwrap_or(&comm) == HELPER_NAME.to_bytes() {
                out.push(pid);
            }
        }
    }
    out
}

/// Unit tests that fork helpers hold this: they look at this process's helper children and reap them
/// ([`reap_helpers`] takes every helper, so a test running beside another would take its helper away), and
/// they share the test hooks.
#[cfg(test)]
pub(crate) static HELPER_TESTS: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn keeps_sorted_unique_fds() {
        assert_eq!(fds_to_keep(&[9, 4], [12, 4, 7].into_iter()), vec![4, 7, 9, 12]);
    }

    fn fd_targets(pid: i32) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.display().to_string())
            .collect()
    }

    /// The helper holds its lingering socket and nothing else of the plugin's: no netns fd, no lock file.
    #[test]
    fn helper_inherits_only_what_it_needs() {
        let _serial = HELPER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let lock_dir = tempfile::TempDir::with_prefix("rcni-detached-lock-").unwrap();
        let lock_path = lock_dir.path().join("lock");
        let lock = std::fs::File::create(&lock_path).unwrap();
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let (kept, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let kept_target = std::fs::read_link(format!("/proc/self/fd/{}", kept.as_raw_fd())).unwrap();
        linger(OwnedFd::from(kept));

        PAUSE_BEFORE_EXIT.store(true, Ordering::Relaxed);
        let started = delete_link(None);
        PAUSE_BEFORE_EXIT.store(false, Ordering::Relaxed);
        started.unwrap();
        // Ours: the plugin's copy of the lingering socket is not needed any more.
        LINGERING.lock().unwrap().clear();
        let helpers = helper_children();
        let held: Vec<Vec<String>> = helpers.iter().map(|&pid| fd_targets(pid)).collect();
        drop(lock);
        let relock = std::fs::File::open(&lock_path).unwrap();
        // SAFETY: flock on an fd we own.
        let relocked = unsafe { libc::flock(relock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        for &pid in &helpers {
            // SAFETY: signalling and reaping our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        drop(netns);
        std::fs::remove_file(&lock_path).unwrap();

        assert_eq!(helpers.len(), 1, "exactly one helper child");
        let held = &held[0];
        assert!(held.iter().all(|t| !t.starts_with("net:[")), "helper holds a netns fd: {held:?}");
        let lock_shown = lock_path.display().to_string();
        assert!(!held.contains(&lock_shown), "helper holds the lock file: {held:?}");
        assert!(held.contains(&kept_target.display().to_string()), "lingering socket not kept: {held:?}");
        assert!(relocked, "the lock is still held by the helper");
    }

    /// A helper whose request is never taken (its send blocks: the peer's buffer is full and nobody reads)
    /// is ended by its watchdog, not left waiting forever.
    #[test]
    fn watchdog_ends_a_helper_that_never_gets_an_answer() {
        let _serial = HELPER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let chunk = [0u8; 4096];
        // SAFETY: send on a socket we own; MSG_DONTWAIT leaves the socket itself blocking for the helper.
        while unsafe { libc::send(ours.as_raw_fd(), chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) } > 0 {}
        TEST_WATCHDOG_SECS.store(1, Ordering::Relaxed);
        TEST_TARGET.store(ours.as_raw_fd(), Ordering::Relaxed);
        let started = delete_link(Some(1));
        TEST_TARGET.store(-1, Ordering::Relaxed);
        TEST_WATCHDOG_SECS.store(0, Ordering::Relaxed);
        started.unwrap();
        let helpers = helper_children();
        assert_eq!(helpers.len(), 1, "exactly one helper child");
        let pid = helpers[0];
        let t0 = std::time::Instant::now();
        let mut status = 0;
        let ended = loop {
            // SAFETY: reaping our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break true;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !ended {
            // SAFETY: ending and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        assert!(ended, "the helper still runs after {:?}", t0.elapsed());
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM,
            "the helper ended otherwise (status {status:#x})"
        );
    }

    #[test]
    fn stat_reads_pid_and_parent() {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        assert_eq!(stat("self"), Some((std::process::id() as i32, ppid)));
    }

    /// The rule of the module comment: a reaping runner among our ancestors, else a known init as PID 1.
    #[test]
    fn helpers_are_reaped_only_by_a_named_ancestor_or_a_known_init() {
        // Chain: 40 -> 30 -> 20 -> 1.
        let parent_of = |pid: i32| match pid {
            30 => Some(20),
            20 => Some(1),
            1 => Some(0),
            _ => None,
        };
        let seen = |me: i32, proc_self: Option<(i32, i32)>, runner: Option<i32>, init: &'static [u8]| Seen {
            subreaper: false,
            me,
            proc_self,
            runner,
            init_comm: init,
        };
        let cases: &[(Seen, bool, &str)] = &[
            (seen(40, Some((40, 30)), None, b"systemd"), true, "systemd as PID 1"),
            (seen(40, Some((40, 30)), None, b"tini"), true, "tini as PID 1"),
            (seen(40, Some((40, 30)), None, b"multus-daemon"), false, "a daemon as PID 1"),
            (seen(40, Some((40, 1)), None, b"process_api"), false, "run by an unknown PID 1"),
            (seen(40, Some((40, 30)), Some(20), b"multus-daemon"), true, "a named runner two levels up"),
            (seen(40, Some((40, 30)), Some(30), b"bash"), true, "a named runner as parent"),
            (seen(40, Some((40, 30)), Some(77), b"bash"), false, "a named pid that is no ancestor"),
            (seen(40, Some((40, 30)), Some(1), b"bash"), false, "PID 1 named: only its name counts"),
            (seen(1, Some((1, 0)), Some(30), b"systemd"), false, "we are PID 1"),
            (seen(40, Some((9040, 9030)), None, b"systemd"), false, "/proc of another pid namespace"),
            (seen(40, None, None, b"systemd"), false, "no /proc"),
        ];
        for (s, want, what) in cases {
            assert_eq!(s.reaped(parent_of), *want, "{what}");
        }
        let runner_itself = Seen { subreaper: true, ..seen(40, Some((40, 1)), None, b"process_api") };
        assert!(runner_itself.reaped(parent_of), "a subreaper reaps its own helpers");
    }
}
