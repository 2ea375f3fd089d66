//! Kernel plumbing over netlink: network namespaces, links, addresses, routes, neighbours, sysctls.
//!
//! Knows nothing of CNI. Entry points: open a [`Netns`], get a [`NetHandle`] for it (or for the
//! current namespace), then call the typed operations defined across the submodules as methods on
//! [`NetHandle`] (`link_by_name`, `create_veth`, `add_address`, `add_route`, `set_neighbour`, ...).
//! Errors are [`NetError`], classified by errno.
//!
//! Threading rule: handles are created and used on the tokio runtime thread (a current-thread runtime
//! with time enabled); nothing here ever moves that thread to another namespace. Work that depends
//! on the *thread's* namespace (socket creation, `/proc/sys/net`) runs on throw-away threads.

pub mod addr;
pub mod command;
pub mod conntrack;
pub mod detached;
pub mod error;
pub mod firewall;
pub mod garp;
pub mod handle;
pub mod link;
pub mod mac;
pub mod masq;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod portmap;
pub mod route;
pub mod spoofchk;
pub mod sysctl;
pub mod tc;

pub use addr::{AddrOptions, Address, IpFamily};
pub use error::{NetError, Result};
pub use handle::NetHandle;
pub use link::{
    BridgeInfo, BridgePortFlags, BridgePortInfo, BridgeSpec, BridgeVlan, Link, OperState, VethEnd, VethSpec, VxlanInfo,
    VxlanSpec,
};
pub use mac::Mac;
pub use neigh::{FdbEntry, Neighbour};
pub use netns::{Netns, NsId, current_thread_netns_id, run_in_netns};
pub use route::{Route, RouteFilter, RouteSpec, TABLE_MAIN};

#[cfg(test)]
mod tests;
