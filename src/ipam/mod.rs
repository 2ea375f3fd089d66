//! IPAM plugins' logic, usable in-process by the plugins that delegate to them. Callers see only the
//! [`InProcessIpam`] trait and [`in_process`]; which plugin implements it is this module's business.

pub mod host_local;

use std::net::IpAddr;

use crate::cni::CniResult;
use crate::cni::result::AddResult;
use crate::cni::skel::{Attachment, Plugin, Request};

/// What one ADD reserved: exactly what undoing that ADD releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    pub ips: Vec<IpAddr>,
}

/// An IPAM plugin whose logic can run inside the plugin that delegates to it (same code, same files, same
/// lock as its executable).
pub trait InProcessIpam: Plugin + Sync {
    /// ADD, also saying what this call reserved.
    fn add_reserving(&self, req: &Request) -> CniResult<(AddResult, Reserved)>;

    /// Undo one ADD: release what it reserved, where still held by this attachment, and nothing else. Never
    /// a release by owner: the attachment may be live and hold other addresses, which stay its own.
    fn undo_add(&self, req: &Request, reserved: &Reserved) -> CniResult<()>;

    /// A string found only in this plugin's executable of this very build.
    fn build_marker(&self) -> &'static str;

    /// The attachments holding reservations of the request's network, read from the plugin's state (also
    /// when another build of the plugin wrote it): GC removes what else a stale one left. `None` when the
    /// plugin cannot tell.
    fn holders(&self, _req: &Request) -> CniResult<Option<Vec<Attachment>>> {
        Ok(None)
    }
}

/// The in-process implementation of IPAM type `plugin_type`, if rcni has one.
pub fn in_process(plugin_type: &str) -> Option<&'static dyn InProcessIpam> {
    match plugin_type {
        "host-local" => Some(&host_local::HostLocal),
        _ => None,
    }
}
