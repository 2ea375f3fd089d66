//! The node's kernel side: the VTEP and the peer entries, through the shared `rcni::overlay` code.

use crate::netconf::NetConfig;
use ipnetwork::{IpNetwork, Ipv4Network};
use rcni::net::NetHandle;
use rcni::net::masq;
use rcni::overlay::{self, NodeState, Overlay, Peer, Underlay, VtepConf};

/// The owner name of the agent's VTEP in the node state.
pub const OWNER: &str = "rcni-overlay";

pub struct Kernel {
    pub node: NetHandle,
    pub vtep: VtepConf,
    pub underlay: Underlay,
    pub own: Ipv4Network,
    pub conf: NetConfig,
    /// With --ip-masq: the owner name of the cluster masquerade rule (see [`masq_owner`]).
    pub masq: Option<String>,
}

/// The owner name of the agent's masquerade rule: one per etcd prefix (one cluster network).
pub fn masq_owner(prefix: &str) -> String {
    format!("rcni-overlay {prefix}")
}

impl Kernel {
    /// Bring the VTEP and the peer entries to `peers` (a diff: unchanged entries are not touched).
    pub async fn apply(&self, state: &NodeState, peers: &[Peer]) -> Result<Vec<String>, String> {
        let _lock = state.lock().map_err(|e| e.to_string())?;
        state.claim_device(OWNER, &self.vtep.name).map_err(|e| e.to_string())?;
        let own: Vec<IpNetwork> = vec![self.own.into()];
        let (link, mut changes) =
            overlay::ensure_vtep(&self.node, &self.vtep, &self.underlay, &own).await.map_err(|e| e.to_string())?;
        let o = Overlay {
            vtep: link,
            underlay: self.underlay.clone(),
            own,
            network: vec![self.conf.network.into()],
            direct_routing: self.conf.direct_routing,
        };
        changes.extend(overlay::reconcile_peers(&self.node, &o, peers).await.map_err(|e| e.to_string())?);
        if let Some(owner) = &self.masq {
            let network: IpNetwork = self.conf.network.into();
            if masq::cluster::ensure(owner, &[network]).map_err(|e| e.to_string())? {
                changes.push(format!("masquerading traffic from {network} that leaves it (--ip-masq)"));
            }
        }
        Ok(changes)
    }
}
