//! The one file lock of the library: flock(LOCK_EX) with a deadline. host-local takes it on
//! `<dataDir>/<network>/lock` as the reference does (which waits forever; rcni's `ipam.lockTimeout` bounds
//! it), the vxlan node state on its `lock` file. A command that cannot get the lock in time fails with
//! "try again later" instead of hanging the runtime.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

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

/// flock(LOCK_EX) on `file` within `timeout`: the file back, holding the lock, or `None` when the time ran
/// out. Uncontended: one syscall. Contended: a helper thread blocks in flock (fair, no polling) on the file
/// it owns, and hands it back; we wait for that with a timeout. After a timeout nobody takes the file back:
/// the helper's send fails (or the file is dropped with the channel), so a lock it obtains late is released
/// at once instead of held until the process exits.
pub fn lock_exclusive(file: File, timeout: Duration) -> io::Result<Option<File>> {
    let fd = file.as_raw_fd();
    loop {
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => break,
            _ => return Err(e),
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let locked = flock_blocking(file.as_raw_fd()).map(|()| file);
        let _ = tx.send(locked);
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}
