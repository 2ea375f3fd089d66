//! DEL and GC of a pod on a node bridge: best effort, idempotent, and never dependent on the pod's netns
//! still being there.
//!
//! Order: the masquerade entry and the veth (concurrently), then the IPAM release — an IP is never handed
//! to a new pod while an old rule or interface still holds it. Every step runs even if an earlier one
//! failed; all errors are reported at the end.

use super::ipam::Ipam;
use super::{block_on, collect_errors, open_netns_for_del, veth};
use crate::cni::log;
use crate::cni::skel::{Attachment, Request};
use crate::cni::{CniError, CniResult};
use crate::net::NetHandle;
use crate::net::masq::{self, Owner, PodEntry};

pub fn del(req: &Request, ipam: Option<&Ipam>) -> CniResult<()> {
    let mut errors: Vec<CniError> = Vec::new();
    let pod_ns = open_netns_for_del(&req.netns).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    block_on(async {
        let node = NetHandle::current()?;
        let pod = match &pod_ns {
            Some(ns) => Some(NetHandle::for_netns(ns)?),
            None => None,
        };
        // The masquerade entry goes on its own thread, alongside the veth removal: both are slow in the
        // kernel for reasons of their own (releasing an nf_tables socket after a delete waits for an RCU
        // grace period; unregistering a veth pair waits for its references), and neither needs the other.
        // Both finish before the IP is released.
        let masq_job = ipam.map(|_| {
            // The pod's addresses come from prevResult (the cached ADD result); the masquerade module finds
            // the entries by owner when there is none. Tried whatever ipMasq says now: the config may have
            // changed since ADD, and a missing entry costs one netlink lookup.
            let ips =
                req.conf.prev_result.as_ref().map(|r| r.ips.iter().map(|i| i.address).collect()).unwrap_or_default();
            let entry = PodEntry { container_id: req.container_id.clone(), ifname: req.ifname.clone(), ips };
            let network = req.conf.name.clone();
            // A thread starts in its creator's netns: the node's, where the masquerade state lives.
            std::thread::spawn(move || masq::teardown(&network, &entry))
        });
        if let Err(e) = veth::remove(&node, pod.as_ref(), &req.container_id, &req.ifname).await {
            errors.push(e);
        }
        log::trace(&req.conf.plugin_type, "veth removed");
        if let Some(job) = masq_job {
            match job.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(CniError::internal(format!("failed to remove masquerade: {e}"))),
                Err(_) => errors.push(CniError::internal("masquerade removal panicked")),
            }
            log::trace(&req.conf.plugin_type, "masquerade removed");
        }
        if let Some(ipam) = ipam {
            if let Err(e) = ipam.del(req) {
                errors.push(e);
            }
            log::trace(&req.conf.plugin_type, "IPAM DEL done");
        }
        collect_errors(errors)
    })
}

/// GC: forward to IPAM (the spec's "must"), and drop masquerade entries of attachments not in the valid
/// list. With no list at all, nothing is removed.
pub fn gc(req: &Request, ipam: Option<&Ipam>, valid: Option<&[Attachment]>) -> CniResult<()> {
    let mut errors = Vec::new();
    if let Some(ipam) = ipam {
        if let Err(e) = ipam.gc(req) {
            errors.push(e);
        }
    }
    if let Some(valid) = valid {
        let owners: Vec<Owner> = valid.iter().map(|a| Owner::new(&a.container_id, &a.ifname)).collect();
        if let Err(e) = masq::gc(&req.conf.name, &owners) {
            errors.push(CniError::internal(format!("masquerade GC: {e}")));
        }
    }
    collect_errors(errors)
}
