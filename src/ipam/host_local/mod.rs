//! The host-local IPAM plugin's logic: a drop-in for the reference `host-local`, sharing its on-disk state.
//! The `host-local` executable runs it; bridge and vxlan run it in-process when the `host-local` on
//! CNI_PATH is rcni's own of the same build (see `rcni::pod::ipam`), which saves a process per command.
//!
//! - `config`: the `ipam` object (+ requested IPs, runtime ranges), validated with errors naming the field;
//! - `allocator`: pure range/iteration/choice logic;
//! - `store`: `<dataDir>/<network>/` files, flock, atomic reservations.
//!
//! Every command holds the network's lock for its whole duration. Error codes: 7 invalid config,
//! 999 allocation failures (as the reference), 5 state-directory I/O, 11 lock not obtained in time,
//! 50 STATUS while a range set is exhausted.

pub mod allocator;
pub mod config;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use crate::cni::error::{CniError, CniResult, code};
use crate::cni::result::{AddResult, Dns, IpConfig};
use crate::cni::skel::{Attachment, Plugin, Request};

use allocator::{Holder, Pick};
use config::{IpamConf, Location};
use store::{Store, StoreError};

pub struct HostLocal;

fn store_err(e: StoreError) -> CniError {
    match e {
        StoreError::LockTimeout { .. } => CniError::new(code::TRY_AGAIN, e.to_string()),
        StoreError::Io { .. } => CniError::new(code::IO_FAILURE, e.to_string()),
    }
}

fn load(req: &Request) -> CniResult<IpamConf> {
    req.args.check_known(&["IP"])?;
    config::parse(&req.conf.raw, &req.conf.cni_version, req.args.get("IP")).map_err(CniError::invalid_config)
}

fn location(req: &Request) -> CniResult<Location> {
    config::parse_location(&req.conf.raw).map_err(CniError::invalid_config)
}

fn read_dns(conf: &IpamConf) -> CniResult<Dns> {
    let Some(path) = &conf.resolv_conf else { return Ok(Dns::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("ipam.resolvConf: cannot read {}: {e}", path.display()))
    })?;
    let d = config::parse_resolv_conf(&text);
    Ok(Dns { nameservers: d.nameservers, domain: d.domain, search: d.search, options: d.options })
}

fn alloc_err(e: allocator::AllocError) -> CniError {
    CniError::internal(e.to_string())
}

/// Reserve one address per range set; on failure, release what this ADD reserved and nothing else.
fn allocate(conf: &IpamConf, store: &Store, id: &str, ifname: &str) -> CniResult<Vec<Pick>> {
    let requested = allocator::assign_requested(&conf.range_sets, &conf.requested).map_err(alloc_err)?;
    let mut taken = store.scan().map_err(store_err)?;
    let mut picks: Vec<Pick> = Vec::with_capacity(conf.range_sets.len());
    let rollback = |picks: &[Pick]| {
        for p in picks {
            if let Err(e) = store.unreserve(p.ip, id, ifname) {
                crate::cni::log::warn("host-local", format!("rollback: {e}"));
            }
        }
    };
    for (i, set) in conf.range_sets.iter().enumerate() {
        let last = store.last_reserved(i);
        loop {
            let p = match allocator::pick(set, i, requested[i], last, &taken, id, ifname) {
                Ok(p) => p,
                Err(e) => {
                    rollback(&picks);
                    return Err(alloc_err(e));
                }
            };
            match store.reserve(p.ip, id, ifname) {
                Ok(true) => {
                    taken.insert(p.ip, Holder { container_id: id.trim().to_string(), ifname: Some(ifname.into()) });
                    picks.push(p);
                    break;
                }
                // Appeared since the scan: only a writer that ignores the lock can do that. Skip it.
                Ok(false) => {
                    taken.insert(p.ip, Holder { container_id: "(unknown)".into(), ifname: None });
                }
                Err(e) => {
                    rollback(&picks);
                    return Err(store_err(e));
                }
            }
        }
    }
    for p in &picks {
        if let Err(e) = store.set_last_reserved(p.set, p.ip) {
            rollback(&picks);
            return Err(store_err(e));
        }
    }
    Ok(picks)
}

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let conf = load(req)?;
        let dns = read_dns(&conf)?;
        // Fail on requests no range set can satisfy before touching any file.
        allocator::assign_requested(&conf.range_sets, &conf.requested).map_err(alloc_err)?;
        let store = Store::open(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)?;
        let picks = allocate(&conf, &store, &req.container_id, &req.ifname)?;
        drop(store);
        let ips = picks
            .iter()
            .map(|p| IpConfig {
                interface: None,
                address: ipnetwork::IpNetwork::new(p.ip, p.prefix).expect("prefix validated"),
                gateway: Some(p.gateway),
            })
            .collect();
        Ok(AddResult {
            cni_version: req.conf.cni_version.clone(),
            interfaces: Vec::new(),
            ips,
            routes: conf.routes.clone(),
            dns,
        })
    }

    /// Release by owner across the whole network directory, whatever the ranges say now. Idempotent.
    fn del(&self, req: &Request) -> CniResult<()> {
        let loc = location(req)?;
        let Some(store) = Store::open_existing(&loc.net_dir(), loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let r = store.release(&req.container_id, &req.ifname).map_err(store_err)?;
        if r.errors.is_empty() { Ok(()) } else { Err(CniError::new(code::IO_FAILURE, r.errors.join("; "))) }
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = load(req)?;
        let (id, ifname) = (req.container_id.as_str(), req.ifname.as_str());
        let missing = || {
            CniError::internal(format!(
                "host-local: Failed to find address added by container {id} (interface {ifname}) in {}: \
                 DEL and ADD the attachment again",
                conf.loc.net_dir().display()
            ))
        };
        let Some(store) = Store::open_existing(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)? else {
            return Err(missing());
        };
        let taken = store.scan().map_err(store_err)?;
        if !taken.values().any(|h| h.belongs_to(id, ifname)) {
            return Err(missing());
        }
        // Every address of ours in prevResult must still be reserved for this attachment.
        if let Some(prev) = &req.conf.prev_result {
            for ipc in &prev.ips {
                let ip = ipc.address.ip();
                if !conf.range_sets.iter().any(|s| s.contains(ip)) {
                    continue;
                }
                match taken.get(&ip) {
                    Some(h) if h.belongs_to(id, ifname) => {}
                    Some(h) => {
                        return Err(CniError::internal(format!(
                            "host-local: {ip} from prevResult is reserved for {h}, not for container {id} \
                             interface {ifname}: DEL and ADD the attachment again"
                        )));
                    }
                    None => {
                        return Err(CniError::internal(format!(
                            "host-local: {ip} from prevResult is not reserved in {}: DEL and ADD the attachment again",
                            conf.loc.net_dir().display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let Some(valid) = valid else { return Ok(()) };
        let loc = location(req)?;
        let Some(store) = Store::open_existing(&loc.net_dir(), loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let valid: HashSet<(String, String)> =
            valid.iter().map(|a| (a.container_id.trim().to_string(), a.ifname.clone())).collect();
        let r = store.gc(&valid).map_err(store_err)?;
        if !r.ips.is_empty() {
            let list: Vec<String> = r.ips.iter().map(IpAddr::to_string).collect();
            crate::cni::log::warn("host-local", format!("gc {}: released {}", loc.name, list.join(" ")));
        }
        if r.errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(code::IO_FAILURE, format!("host-local gc: {}", r.errors.join("; "))))
        }
    }

    /// Not available (50) while any range set has no free address.
    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = load(req)?;
        let Some(store) = Store::open_existing(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let names = store.scan_names().map_err(store_err)?;
        let mut full = Vec::new();
        for (i, set) in conf.range_sets.iter().enumerate() {
            if !allocator::has_free(set, store.last_reserved(i), &|ip| names.contains(ip)) {
                full.push(format!("range set {i} ({set}, {} addresses)", set.capacity()));
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::NOT_AVAILABLE,
                format!("no IP addresses available in {}: all reserved", full.join(", ")),
            )
            .with_details("release stale reservations with DEL or GC, or add a range"))
        }
    }
}

/// Embedded in every binary built from this source tree (see build.rs): a `host-local` executable that
/// contains this exact string was built from the same code as the caller, so running its logic in-process
/// is the same as exec'ing it.
pub static BUILD_MARKER: &str = concat!("rcni-host-local-build:", env!("RCNI_BUILD_ID"), ";");
