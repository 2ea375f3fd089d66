//! DEL and GC of a pod on a node bridge: best effort, idempotent, and never dependent on the pod's netns
//! still being there.
//!
//! Order: the masquerade entry and the veth (concurrently), then the IPAM release — an IP is never handed
//! to a new pod while an old interface still holds it: if the veth could not be removed (a real error;
//! "absent" is fine) the address stays reserved and DEL fails, so the runtime's retry releases it. Every
//! other step runs even if an earlier one failed; all errors are reported at the end. With `background_unlink` the veth pair is only made inert
//! before the release, and a detached child waits for the kernel to delete it (`veth::retire`).

use super::attach::AttachSpec;
use super::ipam::Ipam;
use super::{block_on, open_netns_for_del, veth};
use crate::cni::log;
use crate::cni::skel::{Attachment, Request};
use crate::cni::{CniError, CniResult};
use crate::net::masq::{self, Owner, PodEntry};
use crate::net::spoofchk;
use crate::net::{NetHandle, detached};

/// DEL of the attachment `spec` describes: with `mac_spoof_check` its rules are removed too; with
/// `background_unlink` the veth pair is made inert here and deleted by a detached child (see `veth::retire`).
pub fn del(req: &Request, spec: &AttachSpec, ipam: Option<&Ipam>) -> CniResult<()> {
    // Only where something will reap the detached child (see net::detached): else in-line, never a zombie.
    let background_unlink = spec.background_unlink && detached::helpers_are_reaped();
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
        // The masquerade entry goes on its own thread, alongside the veth: neither needs the other, and both
        // finish before the IP is released.
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
        // Whatever the config says now: it may have been switched off since ADD (one netlink read when
        // there is nothing to remove). A failure only counts when the config asks for the rules.
        if let Err(e) = spoofchk::teardown(&req.container_id, &req.ifname) {
            let e = CniError::internal(format!("failed to remove macspoofchk rules: {e}"));
            if spec.mac_spoof_check {
                errors.push(e);
            } else {
                log::warn(&req.conf.plugin_type, &e);
            }
        }
        let retired = veth::retire(&node, pod.as_ref(), &req.container_id, &req.ifname, background_unlink).await;
        // A veth that may still hold the address (a real error, not "absent") keeps it reserved: the runtime
        // retries DEL, and the retry releases it once the interface is gone.
        let veth_gone = retired.is_ok();
        let unlink = retired.unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        log::trace(&req.conf.plugin_type, "veth removed or made inert");
        if let Some(job) = masq_job {
            match job.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(CniError::internal(format!("failed to remove masquerade: {e}"))),
                Err(_) => errors.push(CniError::internal("masquerade removal panicked")),
            }
            log::trace(&req.conf.plugin_type, "masquerade removed");
        }
        match ipam {
            Some(ipam) if veth_gone => {
                if let Err(e) = ipam.del(req) {
                    errors.push(e);
                }
                log::trace(&req.conf.plugin_type, "IPAM DEL done");
            }
            Some(_) => log::warn(&req.conf.plugin_type, "the veth may still hold the address: not released yet"),
            None => {}
        }
        // Last, so the child also takes over every socket whose release is slow (see net::detached).
        if unlink.is_some() || (background_unlink && detached::has_lingering()) {
            if let Err(e) = detached::delete_link(unlink) {
                log::warn(&req.conf.plugin_type, format!("{e}; deleting in-line"));
                if let Err(e) = veth::remove(&node, pod.as_ref(), &req.container_id, &req.ifname).await {
                    errors.push(e);
                }
            }
        }
        CniError::join(errors)
    })
}

/// GC of the attachments not in `valid` (with no list at all, nothing is removed):
/// - the veth pairs of this network's stale attachments — the holders of its IPAM reservations that are not
///   valid, their host ends found by derived name on `bridge` — before their addresses are released (an
///   orphaned netns would otherwise keep answering for an address handed to the next pod); never "every
///   unknown port": another network's pods may share the bridge;
/// - retired pairs a background DEL left (`veth::sweep_retired`);
/// - IPAM GC (the spec's "must"), masquerade entries, and, with macspoofchk, its rules whose host
///   veth is gone (the rules carry no network name, so one whose veth still exists may be another
///   network's live pod's, and is never collected).
pub fn gc(req: &Request, spec: &AttachSpec, ipam: Option<&Ipam>, valid: Option<&[Attachment]>) -> CniResult<()> {
    let mut errors = Vec::new();
    if let (Some(valid), Some(ipam)) = (valid, ipam) {
        match ipam.holders(req) {
            Ok(Some(holders)) => {
                let stale: Vec<Attachment> = holders.into_iter().filter(|h| !valid.contains(h)).collect();
                match block_on(async { veth::remove_stale(&NetHandle::current()?, &spec.bridge.name, &stale).await }) {
                    Ok(gone) if !gone.is_empty() => {
                        log::warn(&req.conf.plugin_type, format!("gc: deleted stale veths {}", gone.join(" ")))
                    }
                    Ok(_) => {}
                    // The addresses stay reserved while an interface may still hold them.
                    Err(e) => return Err(e.context("gc: cannot delete stale veth pairs")),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if valid.is_some() {
        match block_on(async { veth::sweep_retired(&NetHandle::current()?).await }) {
            Ok(gone) if !gone.is_empty() => {
                log::warn(&req.conf.plugin_type, format!("gc: deleted retired veths {}", gone.join(" ")))
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
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
        // Also when the config no longer asks for macspoofchk (only this network's stale checks go).
        if let Err(e) = gc_spoof_checks(&req.conf.name, valid) {
            if spec.mac_spoof_check {
                errors.push(e);
            } else {
                log::warn(&req.conf.plugin_type, &e);
            }
        }
    }
    CniError::join(errors)
}

fn gc_spoof_checks(network: &str, valid: &[Attachment]) -> CniResult<()> {
    let links = block_on(async { NetHandle::current()?.links().await })?;
    let veth_gone = |a: &spoofchk::Attachment| a.host_veth.as_ref().is_none_or(|v| !links.iter().any(|l| &l.name == v));
    spoofchk::gc(network, valid, veth_gone).map(|_| ()).map_err(|e| CniError::internal(format!("macspoofchk GC: {e}")))
}
