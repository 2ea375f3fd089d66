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

/// Open the pod's netns, with an error that names the path.
pub fn open_netns(path: &str) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| {
        CniError::internal(format!("failed to open netns {path:?}: {e}"))
            .with_details("CNI_NETNS must be a network namespace file such as /run/netns/<name> or /proc/<pid>/ns/net")
    })
}

/// Open the pod's netns for DEL: an empty or vanished path is not an error (the pod is gone; the host side
/// is cleaned up by name).
pub fn open_netns_for_del(path: &str) -> Result<Option<Netns>, CniError> {
    if path.is_empty() {
        return Ok(None);
    }
    match Netns::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(CniError::internal(format!("failed to open netns {path:?}: {e}"))),
    }
}
