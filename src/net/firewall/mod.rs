//! Forwarding accept rules for pod addresses (the `firewall` plugin's kernel side).
//!
//! Works in the network namespace of the calling thread (the node's), like `masq`. Two backends:
//!
//! * [`iptables`]: the reference plugin's layout in table `filter`, rule for rule and comment for comment
//!   (`CNI-FORWARD`, the admin chain, two accept rules per pod address, the `same-bridge` isolation
//!   chains), so that either implementation's DEL removes the other's ADD. Optionally one more rule per
//!   address accepts new connections whose destination was rewritten to the pod (`ctstate DNAT`: host
//!   ports), which the reference's rules leave to the FORWARD policy.
//! * [`nftables`]: rcni's own, for nodes without a forward DROP policy: the isolation drops and the admin
//!   chain in table `inet rcni`, owner-tagged per network; it finds DROP policies it could not lift.
//!
//! [`ledger`] records what each attachment was given, so a DEL without prevResult removes exactly that
//! attachment's rules, and a late DEL of an old pod leaves alone the rules of a newer pod with its address.

pub mod iptables;
pub mod ledger;
pub mod nftables;

use std::fmt;
use std::net::IpAddr;

use crate::net::command::CommandError;

/// One attachment: its owner and its addresses (without prefix: the rules are per host address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
}

impl Pod {
    /// `containerID/ifname`: the owner recorded in the ledger.
    pub fn owner(&self) -> String {
        owner_tag(&self.container_id, &self.ifname)
    }
}

pub fn owner_tag(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// Errors of this module; the messages name the object, what failed and what to do.
#[derive(Debug)]
pub enum Error {
    /// A command (`iptables-save`, `iptables-restore`) could not be run or failed.
    Command { what: String, err: CommandError, hint: String },
    /// The ledger under /run/rcni could not be read or written.
    Ledger(String),
    /// CHECK found the state different from what ADD sets up.
    Check(String),
    /// Invalid input (a name iptables would refuse, ...).
    Invalid(String),
    /// Another firewall invocation held the node's lock for too long.
    Busy(String),
    /// nf_tables could not be read or written.
    Nft(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command { what, err, hint } => write!(f, "{what}: {err}{hint}"),
            Error::Ledger(m) | Error::Check(m) | Error::Invalid(m) | Error::Busy(m) | Error::Nft(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
