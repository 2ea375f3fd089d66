//! Steps several plugins share where a CNI result meets the kernel: attach a pod to a bridge with a veth,
//! apply an IPAM result to an interface, tear an attachment down by (containerID, ifname).

pub mod names;
pub mod plan;
