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
//! The child only makes async-signal-safe calls (the parent may have other threads, whose locks fork copies
//! in whatever state they were): the request is serialized and the socket opened before the fork.

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

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
        // The child says when it carries HELPER_NAME and its own session: from then on a runner that looks
        // at its children can tell it apart (before, it would look like the plugin itself).
        let mut ready = [0i32; 2];
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = io::Error::last_os_error();
            libc::close(sock);
            return Err(NetError::io(what(), e));
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::close(ready[0]);
            run_child(sock, ready[1], &request);
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

/// The child: detach, send, wait for the kernel's answer (that is the slow part), exit (closing the inherited
/// lingering sockets: the other slow part). Errors have no one
/// to go to: the pair is inert already, and a later DEL or ADD of the attachment removes it by name.
unsafe fn run_child(sock: i32, ready: i32, request: &[u8]) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, HELPER_NAME.as_ptr());
        libc::setsid();
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
