//! The key of an attachment: (containerID, ifname), the pair every piece of per-pod state is found by —
//! IPAM reservations, the host veth's name, spoof-check rules, masquerade and host-port owners, and GC's
//! list of valid attachments.

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    pub fn new(container_id: &str, ifname: &str) -> Attachment {
        Attachment { container_id: container_id.to_string(), ifname: ifname.to_string() }
    }
}
