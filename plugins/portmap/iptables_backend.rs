//! `backend: "iptables"` (or `externalSetMarkChain`): the attachment's reference-style iptables rules per
//! family ([`rcni::net::portmap::iptables`]); DEL needs nothing of its own (the migration removal in
//! `main.rs` removes them).

use rcni::cni::log::warn;
use rcni::cni::result::AddResult;
use rcni::cni::skel::Request;
use rcni::cni::{CniError, CniResult};
use rcni::net::IpFamily;
use rcni::net::nft::Nfnl;
use rcni::net::portmap::iptables::{self as ipt, Layout, Mark};
use rcni::net::portmap::ledger::{self, Ledger};
use rcni::net::portmap::{self, Structure, elements};
use std::path::Path;

use crate::config::Config;
use crate::{PLUGIN, flush_after_add, localnet_iface, open_nfnl, plan, pm_err, pod_addresses, route_localnet_key};

/// The iptables backend's rules of this attachment, one layout per family with a pod address and a
/// mapping for it.
fn layouts(req: &Request, cfg: &Config, prev: &AddResult, mark: &Mark, cond: [&[String]; 2]) -> Vec<Layout> {
    let (v4, v6) = pod_addresses(prev, &req.ifname);
    let mut out = Vec::new();
    for pod in [v4, v6].into_iter().flatten() {
        let is_v4 = pod.is_ipv4();
        let mappings = crate::mappings_to(cfg, &pod);
        if mappings.is_empty() {
            continue;
        }
        out.push(Layout {
            network: req.conf.name.clone(),
            container_id: req.container_id.clone(),
            fam: if is_v4 { IpFamily::V4 } else { IpFamily::V6 },
            pod,
            entry_ports: cfg.mappings.iter().map(|m| (m.proto, m.host_port)).collect(),
            mappings,
            snat: cfg.snat,
            masq_all: cfg.masq_all,
            mark: mark.clone(),
            conditions: cond[usize::from(!is_v4)].to_vec(),
        });
    }
    out
}

/// ADD with `backend: "iptables"`: the reference's rules, one iptables-restore per family; the guard of
/// the nftables structure where route_localnet is set; the attachment's nftables elements of an earlier ADD
/// with the other backend removed. A failed first ADD removes what it wrote.
pub fn add(req: &Request, cfg: &Config, prev: &AddResult, mark: &Mark, cond: [&[String]; 2]) -> CniResult<()> {
    let (elements, localnet) = plan(cfg, prev, &req.ifname)?;
    let layouts = layouts(req, cfg, prev, mark, cond);
    if layouts.is_empty() {
        return Ok(());
    }
    let iface = localnet.as_ref().map(localnet_iface).transpose()?;
    let mut nl = open_nfnl()?;
    if iface.is_some() {
        Structure { mark_bit: cfg.mark_bit }.ensure_guard(&mut nl).map_err(pm_err)?;
    }
    let mut existed = false;
    let undo = |nl: &mut Nfnl, existed: bool| {
        if existed {
            return;
        }
        if let Err(e) = portmap::reference::remove_leftovers(nl, &req.conf.name, &req.container_id) {
            warn(PLUGIN, format!("undo: {e}"));
        }
    };
    for l in &layouts {
        match ipt::apply(l) {
            Ok(e) => existed |= e,
            Err(e) => {
                undo(&mut nl, existed);
                return Err(pm_err(e));
            }
        }
    }
    if let Some(iface) = iface {
        if let Err(e) = rcni::net::sysctl::write(&route_localnet_key(&iface), "1") {
            undo(&mut nl, existed);
            return Err(CniError::internal(format!(
                "enabling localhost access to the pod's host ports on {iface}: {e}"
            ))
            .with_details("set snat to false to skip localhost access"));
        }
    }
    // The same attachment added before with the nftables backend: its map elements would go on DNATing
    // first. Its ledger record lists them (one file lookup when there is none).
    let owner = crate::owner(req);
    let ledger = Ledger::for_this_node(Path::new(ledger::BASE));
    if let Some(listed) = crate::recorded(&ledger, &owner) {
        match elements::remove_listed(&mut nl, &owner, &listed) {
            Ok(_) => {
                if let Err(e) = ledger.remove(&owner) {
                    warn(PLUGIN, format!("ledger: {e}"));
                }
            }
            Err(e) => warn(PLUGIN, format!("{owner}: its nftables elements from an earlier ADD stay: {e}")),
        }
    }
    flush_after_add(&elements);
    Ok(())
}

/// CHECK with `backend: "iptables"`: the container's chain rule for rule, its entry rules, the shared rules.
pub fn check(req: &Request, cfg: &Config, prev: &AddResult, mark: &Mark, cond: [&[String]; 2]) -> CniResult<()> {
    for l in layouts(req, cfg, prev, mark, cond) {
        let save = ipt::save(l.fam).map_err(pm_err)?;
        let diff = l.differences(&save);
        if !diff.is_empty() {
            return Err(CniError::internal(format!(
                "portmap: the {} rules of {} differ from what ADD writes: {}",
                l.fam.iptables(),
                req.container_id,
                diff.join("; ")
            )));
        }
    }
    Ok(())
}
