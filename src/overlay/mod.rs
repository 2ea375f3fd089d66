//! The VXLAN overlay between nodes, shared by the `vxlan` plugin, `vxlan sync` and the `rcni-overlay`
//! agent (one implementation of every kernel step):
//! - [`peer`]: the peer model (underlay address, pod subnets, optional VTEP MAC) and the peers file;
//! - [`plan`]: which neighbour, FDB and route entries a peer set needs, and the diff to what exists;
//! - [`vtep`]: finding the underlay and making the VTEP device exist as configured;
//! - [`reconcile`]: applying a peer set to the kernel as a diff (and CHECK's read-only comparison);
//! - [`node_state`]: the per-node records (lock, which network owns which device, last good peer set).

pub mod node_state;
pub mod peer;
pub mod plan;
pub mod reconcile;
pub mod vtep;

pub use node_state::NodeState;
pub use peer::Peer;
pub use reconcile::{Overlay, check_peers, reconcile_peers};
pub use vtep::{Underlay, UnderlayChoice, VtepConf, check_vtep, ensure_vtep, find_underlay, vtep_mac};
