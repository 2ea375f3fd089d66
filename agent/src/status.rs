//! What `rcni-overlay status` shows: written by the running agent to `<state-dir>/status.json` on every
//! change, read back by the `status` command.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub subnet: Option<String>,
    pub public_ip: Option<String>,
    pub lease_id: i64,
    /// The etcd revision the applied peer set reflects.
    pub revision: i64,
    pub etcd_reachable: bool,
    /// Since when etcd is unreachable (unix seconds), if it is.
    pub etcd_unreachable_since: Option<u64>,
    pub last_error: Option<String>,
    pub peers: usize,
    pub peer_list: Vec<String>,
    /// Peers a suspect snapshot would remove, kept until the grace period ends.
    pub pending_removals: usize,
    pub pending_removals_until: Option<u64>,
    /// This node's subnet is held by another node in etcd: the agent keeps its kernel state, never
    /// touches the other key, and retries until the operator resolves it.
    pub conflict: Option<String>,
    pub pid: u32,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}
