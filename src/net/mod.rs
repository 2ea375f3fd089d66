//! Kernel plumbing over netlink: network namespaces, links, addresses, routes, neighbours, sysctls.
pub mod masq;
