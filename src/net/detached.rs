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
//! netlink socket, the ready pipe and the lingering sockets, and its wait for the kernel's answer is bounded.
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

/// How long the child waits for the kernel's answer to its delete request before it gives up and exits
/// (releasing the lingering sockets): long past any normal unregister, short enough not to pin them forever.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

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
        let timeout = libc::timeval { tv_sec: ACK_TIMEOUT.as_secs() as libc::time_t, tv_usec: 0 };
        let set = libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        if set != 0 {
            let e = io::Error::last_os_error();
            libc::close(sock);
            return Err(NetError::io(what(), e));
        }
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
            run_child(sock, ready[1], &request, &keep);
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

/// Start a detached helper that runs `job` and exits: the same detachment as [`delete_link`]'s (its own
/// session, stdin/stdout/stderr on /dev/null, every fd closed but those in `keep`, named [`HELPER_NAME`]
/// before this returns, so a runner that adopts helpers waits for it too). For background work other than
/// a link deletion (`net::garp`). `job` runs in the forked child: async-signal-safe calls only, no
/// allocation, no locks.
pub fn spawn(keep: &[i32], job: &dyn Fn()) -> io::Result<()> {
    // SAFETY: plain syscalls on fds we own; the child branch only makes async-signal-safe calls.
    unsafe {
        let mut ready = [0i32; 2];
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        let keep = fds_to_keep(&[ready[1]], keep.iter().copied());
        let pid = libc::fork();
        if pid == 0 {
            libc::prctl(libc::PR_SET_NAME, HELPER_NAME.as_ptr());
            libc::setsid();
            close_all_but(&keep);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                if null > 2 {
                    libc::close(null);
                }
            }
            libc::write(ready[1], [1u8].as_ptr().cast(), 1);
            libc::close(ready[1]);
            job();
            libc::_exit(0);
        }
        let e = io::Error::last_os_error();
        libc::close(ready[1]);
        if pid > 0 {
            let mut byte = 0u8;
            while libc::read(ready[0], (&mut byte as *mut u8).cast(), 1) < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
        libc::close(ready[0]);
        if pid < 0 {
            return Err(e);
        }
    }
    Ok(())
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

/// The child: detach, send, wait for the kernel's answer (that is the slow part), exit (closing the inherited
/// lingering sockets: the other slow part). Errors have no one
/// to go to: the pair is inert already, and a later DEL or ADD of the attachment removes it by name.
unsafe fn run_child(sock: i32, ready: i32, request: &[u8], keep: &[i32]) -> ! {
    unsafe {
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
}
