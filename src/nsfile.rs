//! Opening a file that must be a network namespace (CNI_NETNS): one non-blocking open, then checks on the
//! fd itself, so what was checked is what is used. A leaf: the protocol side (`cni::skel`, which opens
//! CNI_NETNS once before any plugin code runs) and the kernel side (`net::Netns`) both stand on it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// `_IO(0xb7, 0x3)` from linux/nsfs.h: returns the `CLONE_NEW*` type of a namespace fd.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Open `path` and check it is a network namespace file. A path that is not one fails with `EINVAL`
/// (a plain file would otherwise only fail later, at setns time); a missing path with `ENOENT`.
pub fn open(path: &Path) -> io::Result<File> {
    // Non-blocking: a FIFO must fail the nsfs check below, not hang the open until a writer comes.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    let fs = fstatfs(&file).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    // Namespace files (a bind mount under /run/netns, or /proc/<pid>/ns/net) live on nsfs.
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // nsfs also holds mount, pid, user... namespaces: ask which type this one is (Linux >= 4.11).
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype >= 0 && nstype != libc::CLONE_NEWNET {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(file)
}

/// Is `e` (from [`open`]) "this is not a network namespace file"?
pub fn is_not_netns(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}
