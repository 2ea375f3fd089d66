//! rcni: CNI plugins in Rust.
//!
//! Dependencies point one way: the executables (`plugins/*`, `ipam/*`, `tools/*`) use the plugins'
//! commands ([`bridge`]) and [`pod`], which joins [`cni`] (the protocol, no netlink) and [`net`] (kernel
//! plumbing, no CNI JSON).
//! `cni` and `net` never import each other.

// The test kit shared with the integration tests (`tests/support/netns.rs`) names the crate `rcni`.
#[cfg(test)]
extern crate self as rcni;

pub mod attachment;
pub mod bridge;
pub mod cni;
pub mod fnv;
pub mod fs_private;
pub mod ipam;
pub mod lock;
pub mod net;
pub mod nsfile;
pub mod overlay;
pub mod pod;
pub mod subnet_env;
pub mod validate;
