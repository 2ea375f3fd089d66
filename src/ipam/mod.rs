//! IPAM plugins' logic, usable in-process by the plugins that delegate to them.

pub mod host_local;
