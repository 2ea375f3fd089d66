//! The portmap plugin: forwards host ports to a pod, chained after the plugin that gave it its
//! addresses. Drop-in for the reference `portmap` (same `type`, capability `portMappings`, fields), built
//! on nftables maps: one element per mapping, owned by `network/containerID/ifname`, so ADD, DEL and the
//! first packet's lookup cost the same with 1 or 10,000 mappings on the node. See
//! plugins/portmap/README.md for every field and where we differ from the reference.
//!
//! ADD validates everything, writes the node's portmap structure once (if missing), then this
//! attachment's elements in one batch, then `route_localnet` for localhost access; a failure takes back
//! the elements. DEL removes the attachment's elements by owner: it needs neither runtimeConfig nor
//! prevResult nor the netns. The result is prevResult, unchanged.

#![cfg_attr(not(test), no_main)]

mod config;
mod iptables_backend;

use std::path::Path;

use config::{Backend, Config};
use ipnetwork::IpNetwork;
use rcni::cni::error::code;
use rcni::cni::log::warn;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::nft::{Nfnl, absent};
use rcni::net::portmap::iptables as ipt;
use rcni::net::portmap::ledger::{self, Ledger, Listed};
use rcni::net::portmap::{self, Element, Hairpin, Mapping, Owner, Structure, elements};
use rcni::net::route::RouteFilter;
use rcni::net::{IpFamily, NetHandle, TABLE_MAIN};
use rcni::pod::block_on;

const PLUGIN: &str = "portmap";

fn pm_err(e: portmap::Error) -> CniError {
    match e {
        portmap::Error::Conflict { .. } | portmap::Error::MarkBit { .. } => CniError::invalid_config(e.to_string()),
        other => CniError::internal(other.to_string()),
    }
}

fn prev_result(req: &Request) -> CniResult<AddResult> {
    req.conf.prev_result.clone().ok_or_else(|| {
        CniError::invalid_config("Required prevResult missing")
            .with_details("portmap is a chained plugin: list it after the plugin that gives the pod its addresses")
    })
}

fn owner(req: &Request) -> Owner {
    Owner::new(&req.conf.name, &req.container_id, &req.ifname)
}

/// The first IPv4 and the first IPv6 address of the pod's interface in prevResult: entries whose
/// `interface` names CNI_IFNAME inside a sandbox, or that name no interface (as the reference takes them).
fn pod_addresses(prev: &AddResult, ifname: &str) -> (Option<IpNetwork>, Option<IpNetwork>) {
    let ours = |i: &Option<usize>| match i {
        None => true,
        Some(i) => prev.interfaces.get(*i).is_some_and(|itf| itf.name == ifname && !itf.sandbox.is_empty()),
    };
    let mut v4 = None;
    let mut v6 = None;
    for ip in prev.ips.iter().filter(|ip| ours(&ip.interface)) {
        match ip.address {
            IpNetwork::V4(_) if v4.is_none() => v4 = Some(ip.address),
            IpNetwork::V6(_) if v6.is_none() => v6 = Some(ip.address),
            _ => {}
        }
    }
    (v4, v6)
}

/// The configured mappings that apply to `pod`'s family, forwarding to it (a host IP of the other family
/// skips the entry).
fn mappings_to(cfg: &Config, pod: &IpNetwork) -> Vec<Mapping> {
    let is_v4 = pod.is_ipv4();
    cfg.mappings
        .iter()
        .filter_map(|m| {
            Some(Mapping {
                proto: m.proto,
                host_port: m.host_port,
                host_ip: m.host_ip_for(is_v4).ok()?,
                target: pod.ip(),
                target_port: m.container_port,
            })
        })
        .collect()
}

/// The elements of this attachment: per pod address, one per mapping that applies to its family, and
/// with `snat` the hairpin element (the pod's subnet, or every source with `masqAll`).
fn plan(cfg: &Config, prev: &AddResult, ifname: &str) -> CniResult<(Vec<Element>, Option<IpNetwork>)> {
    let (v4, v6) = pod_addresses(prev, ifname);
    if v4.is_none() && v6.is_none() {
        return Err(CniError::invalid_config(format!(
            "prevResult has no IP address for interface {ifname}: nothing to forward the host ports to"
        ))
        .with_details("list portmap after the plugin (and IPAM) that assigns the pod's addresses"));
    }
    let mut out = Vec::new();
    let mut v4_mapped = false;
    for pod in [v4, v6].into_iter().flatten() {
        let is_v4 = pod.is_ipv4();
        let mappings = mappings_to(cfg, &pod);
        let any = !mappings.is_empty();
        // Runs of consecutive identical ports become one interval element (placed as single ports in a
        // condition set's maps, which have no range maps).
        out.extend(portmap::compact(&mappings));
        if any && cfg.snat {
            let sources = if cfg.masq_all {
                if is_v4 { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() }
            } else {
                IpNetwork::new(pod.network(), pod.prefix()).expect("prefix of a valid network")
            };
            out.push(Element::Hairpin(Hairpin { sources, pod: pod.ip() }));
        }
        v4_mapped |= any && is_v4;
    }
    Ok((out, if v4_mapped && cfg.snat { v4 } else { None }))
}

/// The node interface packets to `pod` leave by (longest matching route of the main table), whose
/// `route_localnet` lets 127.0.0.1 connections be forwarded to the pod.
fn localnet_iface(pod: &IpNetwork) -> CniResult<String> {
    block_on(async {
        let node = NetHandle::current()?;
        let routes = node
            .routes(&RouteFilter { family: Some(IpFamily::V4), table: Some(TABLE_MAIN), ..Default::default() })
            .await?;
        let best = routes.iter().filter(|r| r.dst.contains(pod.ip()) && r.oif.is_some()).max_by_key(|r| r.dst.prefix());
        let Some(oif) = best.and_then(|r| r.oif) else {
            return Err(CniError::internal(format!(
                "no route to the pod address {} on the node: cannot enable localhost access (route_localnet)",
                pod.ip()
            ))
            .with_details("set snat to false to skip localhost access, or fix the node's routes"));
        };
        let link = node.link_by_index(oif).await?.ok_or_else(|| {
            CniError::internal(format!("the route to {} uses interface #{oif}, which is gone", pod.ip()))
        })?;
        Ok(link.name)
    })
}

/// The node's local prefixes (the `local` routing table): what `fib daddr type local` matches.
fn local_prefixes() -> CniResult<Vec<IpNetwork>> {
    const TABLE_LOCAL: u32 = 255;
    const RTN_LOCAL: u8 = 2;
    block_on(async {
        let node = NetHandle::current()?;
        let routes = node.routes(&RouteFilter { table: Some(TABLE_LOCAL), ..Default::default() }).await?;
        Ok(routes.into_iter().filter(|r| r.kind == RTN_LOCAL).map(|r| r.dst).collect())
    })
}

/// UDP/SCTP flows that would keep going to an old target (or nowhere) are deleted; a failure only warns,
/// as the mapping itself is in place.
fn flush_after_add(elements: &[Element]) {
    let r = local_prefixes()
        .map_err(|e| e.to_string())
        .and_then(|l| portmap::flush::after_add(elements, &l).map_err(|e| e.to_string()));
    if let Err(e) = r {
        warn(PLUGIN, format!("conntrack flush after ADD: {e}"));
    }
}

fn route_localnet_key(iface: &str) -> String {
    format!("net/ipv4/conf/{iface}/route_localnet")
}

fn open_nfnl() -> CniResult<Nfnl> {
    Nfnl::open().map_err(|e| CniError::internal(format!("portmap: opening the nf_tables netlink socket: {e}")))
}

/// The elements `owner`'s last ADD recorded; `None` (DEL then falls back to the dump by owner) when
/// there is no record or it cannot be used, with a warning saying why.
fn recorded(ledger: &Ledger, owner: &Owner) -> Option<Vec<Listed>> {
    match ledger.read(owner) {
        Ok(r) => r,
        Err(e) => {
            warn(PLUGIN, format!("ledger: {e}; finding {owner}'s elements by owner instead"));
            None
        }
    }
}

fn ledger_err(e: String) -> CniError {
    CniError::new(code::IO_FAILURE, format!("portmap ledger: {e}"))
        .with_details(format!("{} must be a root-owned directory (mode 0700) on tmpfs", ledger::BASE))
}

/// CHECK: route_localnet is set where ADD sets it.
fn check_localnet(localnet: Option<IpNetwork>) -> CniResult<()> {
    if let Some(pod) = localnet {
        let iface = localnet_iface(&pod)?;
        let v = rcni::net::sysctl::read(&route_localnet_key(&iface))?;
        if v.trim() != "1" {
            return Err(CniError::internal(format!(
                "portmap: route_localnet is {v} on {iface}, so 127.0.0.1 cannot reach the pod's host ports; an \
                 ADD sets it (or set snat to false)"
            )));
        }
    }
    Ok(())
}

struct Portmap;

impl Plugin for Portmap {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        // portmap reads no CNI_ARGS keys: an unknown one is refused like everywhere else (IgnoreUnknown=1 allows it).
        req.args.check_known(&[])?;
        let cfg = Config::parse(&req.conf.raw)?;
        let prev = prev_result(req)?;
        if cfg.mappings.is_empty() {
            return Ok(prev);
        }
        let (elements, localnet) = plan(&cfg, &prev, &req.ifname)?;
        if elements.is_empty() {
            return Ok(prev);
        }
        if let Backend::Iptables { mark, conditions_v4, conditions_v6 } = &cfg.backend {
            iptables_backend::add(req, &cfg, &prev, mark, [conditions_v4, conditions_v6])?;
            return Ok(prev);
        }
        let iface = localnet.as_ref().map(localnet_iface).transpose()?;
        let owner = owner(req);
        let mut nl = open_nfnl()?;
        let structure = Structure { mark_bit: cfg.mark_bit };
        structure.ensure(&mut nl).map_err(pm_err)?;
        for c in &cfg.conditions {
            c.ensure(&mut nl, &structure).map_err(pm_err)?;
        }
        let placed = elements::place(&elements, &cfg.conditions);
        // The reference's rules for this container would DNAT the same ports first (or instead).
        match portmap::reference::remove_leftovers(&mut nl, &req.conf.name, &req.container_id) {
            Ok(done) => done.iter().for_each(|d| warn(PLUGIN, format!("{owner}: removed the reference portmap's {d}"))),
            Err(e) => warn(PLUGIN, format!("{owner}: the reference portmap's rules for this container stay: {e}")),
        }
        let ledger = Ledger::for_this_node(Path::new(ledger::BASE));
        let previous = recorded(&ledger, &owner);
        // Recorded before the batch as old ∪ new, so a crash between the two never leaves an element of
        // ours that the record does not list; rewritten to exactly `wanted` once the batch is in.
        let wanted = elements::encoded(&placed);
        let mut union = previous.clone().unwrap_or_default();
        union.extend(wanted.iter().cloned());
        ledger.write(&owner, &union).map_err(ledger_err)?;
        let restore = |ledger: &Ledger| {
            let r = match &previous {
                Some(p) => ledger.write(&owner, p),
                None => ledger.remove(&owner),
            };
            if let Err(e) = r {
                warn(PLUGIN, format!("restoring the ledger record: {e}"));
            }
        };
        let applied = match elements::apply(&mut nl, &owner, &placed, cfg.conflict, previous.as_deref().unwrap_or(&[]))
        {
            Ok(a) => a,
            Err(e) => {
                restore(&ledger);
                return Err(pm_err(e));
            }
        };
        for d in &applied.displaced {
            warn(PLUGIN, format!("{owner}: {} replaces the mapping of {}", d.element, d.owner));
        }
        let localnet = iface.map(|i| rcni::net::sysctl::write(&route_localnet_key(&i), "1").map_err(|e| (i, e)));
        let recorded = ledger.write(&owner, &wanted);
        if let Some(Err((iface, e))) = localnet {
            if let Err(u) = elements::undo(&mut nl, &applied) {
                warn(PLUGIN, format!("undo: {u}"));
            }
            restore(&ledger);
            return Err(CniError::internal(format!(
                "enabling localhost access to the pod's host ports on {iface}: {e}"
            ))
            .with_details("set snat to false to skip localhost access"));
        }
        if let Err(e) = recorded {
            // The elements are in and the record lists them (the union above): DEL still finds them all.
            warn(PLUGIN, format!("ledger: {e}"));
        }
        flush_after_add(&elements);
        Ok(prev)
    }

    /// Removes every element this attachment owns, found by owner: works with no runtimeConfig, no
    /// prevResult and no netns, and never removes another owner's element under the same host port.
    fn del(&self, req: &Request) -> CniResult<()> {
        let mut nl = match Nfnl::open() {
            Ok(nl) => nl,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(CniError::internal(format!("portmap: opening the nf_tables netlink socket: {e}"))),
        };
        let owner = owner(req);
        let ledger = Ledger::for_this_node(Path::new(ledger::BASE));
        let removed = match recorded(&ledger, &owner) {
            Some(listed) => elements::remove_listed(&mut nl, &owner, &listed),
            None => elements::remove_owner(&mut nl, &owner),
        }
        .map_err(pm_err)?;
        ledger.remove(&owner).map_err(ledger_err)?;
        // A pod added by the reference portmap before the node switched to rcni.
        for d in portmap::reference::remove_leftovers(&mut nl, &req.conf.name, &req.container_id).map_err(pm_err)? {
            warn(PLUGIN, format!("{owner}: removed the reference portmap's {d}"));
        }
        if let Err(e) = portmap::flush::after_del(&removed.iter().map(|r| r.element).collect::<Vec<_>>()) {
            warn(PLUGIN, format!("conntrack flush after DEL: {e}"));
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let cfg = Config::parse(&req.conf.raw)?;
        let prev = prev_result(req)?;
        if cfg.mappings.is_empty() {
            return Ok(());
        }
        let (elements, localnet) = plan(&cfg, &prev, &req.ifname)?;
        if elements.is_empty() {
            return Ok(());
        }
        if let Backend::Iptables { mark, conditions_v4, conditions_v6 } = &cfg.backend {
            iptables_backend::check(req, &cfg, &prev, mark, [conditions_v4, conditions_v6])?;
            return check_localnet(localnet);
        }
        let mut nl = open_nfnl()?;
        let structure = Structure { mark_bit: cfg.mark_bit };
        if !structure.intact(&mut nl).map_err(pm_err)? {
            return Err(CniError::internal(format!(
                "portmap: the portmap rules of table inet {} are missing or changed (markMasqBit {}); an ADD \
                 rewrites them",
                portmap::TABLE,
                cfg.mark_bit
            )));
        }
        for c in &cfg.conditions {
            if !c.intact(&mut nl).map_err(pm_err)? {
                return Err(CniError::internal(format!(
                    "portmap: the chains of conditions {:?} in table inet {} are missing or changed; an ADD rewrites them",
                    c.tokens.join(" "),
                    portmap::TABLE
                )));
            }
        }
        elements::verify(&mut nl, &owner(req), &elements::place(&elements, &cfg.conditions)).map_err(pm_err)?;
        check_localnet(localnet)
    }

    /// Ready when nf_tables answers and the node's portmap structure is either intact (of this
    /// markMasqBit) or missing/changed in a way an ADD's rewrite repairs; otherwise code 50 saying why.
    fn status(&self, req: &Request) -> CniResult<()> {
        let cfg = Config::parse(&req.conf.raw)?;
        let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
        if let Backend::Iptables { .. } = cfg.backend {
            for fam in IpFamily::BOTH {
                ipt::save(fam).map_err(|e| {
                    unavailable(format!("{e}; backend \"iptables\" needs a working {}", fam.iptables()))
                })?;
            }
            return Ok(());
        }
        let mut nl = Nfnl::open().map_err(|e| {
            unavailable(format!(
                "portmap: nf_tables is not usable on this node ({e}); host ports need the nf_tables and nft_nat \
                 kernel modules"
            ))
        })?;
        let structure = Structure { mark_bit: cfg.mark_bit };
        let ready = structure.ready(&mut nl).map_err(|e| unavailable(format!("{e}; is nf_tables usable?")))?;
        match ready {
            Ok(()) => Ok(()),
            Err(portmap::structure::NotReady::MarkBit(found)) => {
                Err(unavailable(portmap::Error::MarkBit { wanted: cfg.mark_bit, found }.to_string()))
            }
            Err(portmap::structure::NotReady::Unwritable(why)) => Err(unavailable(format!(
                "portmap: the portmap rules of table inet {} are missing or changed and cannot be rewritten: {why}",
                portmap::TABLE
            ))
            .with_details(format!(
                "`nft list table inet {}` shows what is there; an object of the same name with another type \
                 blocks the rewrite",
                portmap::TABLE
            ))),
        }
    }

    /// Removes this network's elements whose owner is not among `valid`.
    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let Some(valid) = valid else { return Ok(()) };
        let network = &req.conf.name;
        let cfg = Config::parse(&req.conf.raw)?;
        if let Backend::Iptables { .. } = cfg.backend {
            let keep = valid.iter().map(|a| a.container_id.clone()).collect();
            for id in ipt::remove_stale(network, &keep).map_err(pm_err)? {
                warn(PLUGIN, format!("gc: removed the host port rules of {id}"));
            }
            return Ok(());
        }
        let keep: std::collections::HashSet<String> =
            valid.iter().map(|a| Owner::new(network, &a.container_id, &a.ifname).tag()).collect();
        let mut nl = match Nfnl::open() {
            Ok(nl) => nl,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(CniError::internal(format!("portmap: opening the nf_tables netlink socket: {e}"))),
        };
        let removed = elements::remove_where(&mut nl, &format!("stale attachments of network {network:?}"), |t| {
            Owner::tag_of_network(t, network) && !keep.contains(t)
        })
        .map_err(pm_err)?;
        for r in removed {
            warn(PLUGIN, format!("gc: removed {} of {}", r.element, r.owner));
        }
        let ledger = Ledger::for_this_node(Path::new(ledger::BASE));
        for o in ledger.owners(network).into_iter().filter(|o| !keep.contains(&o.tag())) {
            if let Err(e) = ledger.remove(&o) {
                warn(PLUGIN, format!("gc: {e}"));
            }
        }
        Ok(())
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI portmap plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Portmap)
}
