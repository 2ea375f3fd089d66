//! Steps several plugins share where a CNI result meets the kernel: ensure a bridge and its gateway
//! addresses, attach a pod to it with a veth, apply an IPAM result to the pod's interface, and tear an
//! attachment down by (containerID, ifname). bridge and vxlan both stand on these.

pub mod attach;
pub mod bridge;
pub mod check;
pub mod detach;
pub mod iface;
pub mod ipam;
pub mod names;
pub mod plan;
pub mod veth;

use crate::cni::CniError;
use crate::net::{NetError, Netns};

/// Run a plugin's async work on a current-thread runtime: no worker pool to start, and the only thread
/// that drives netlink never changes namespace.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can be missing")
        .block_on(f)
}

/// Kernel failures reach the runtime as plugin errors (code 999, like the reference); the message carries
/// the operation, the device and the kernel's reason.
impl From<NetError> for CniError {
    fn from(e: NetError) -> CniError {
        CniError::internal(e.to_string())
    }
}

/// The pod's netns: the fd skel opened and checked for this command when there is one (so every step
/// works on the namespace that was checked, never on whatever the path names by now), else opened here.
pub fn open_netns(path: &str) -> Result<Netns, CniError> {
    let opened = match crate::cni::skel::opened_netns(path) {
        Some(Some(file)) => Netns::from_file(file, path),
        Some(None) => Err(NetError::from_errno(format!("open netns {path}"), libc::ENOENT)),
        None => Netns::open(path),
    };
    opened.map_err(|e| {
        CniError::new(crate::cni::error::code::INVALID_ENV, format!("failed to open netns {path:?}: {e}"))
            .with_details("CNI_NETNS must be a network namespace file such as /run/netns/<name> or /proc/<pid>/ns/net")
    })
}

/// Open the pod's netns for DEL: an empty or vanished path is not an error (the pod is gone; the host side
/// is cleaned up by name). Skel's fd when it opened one; a path it found absent stays absent.
pub fn open_netns_for_del(path: &str) -> Result<Option<Netns>, CniError> {
    if path.is_empty() {
        return Ok(None);
    }
    let opened = match crate::cni::skel::opened_netns(path) {
        Some(Some(file)) => Netns::from_file(file, path),
        Some(None) => return Ok(None),
        None => Netns::open(path),
    };
    match opened {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(CniError::internal(format!("failed to open netns {path:?}: {e}"))),
    }
}
