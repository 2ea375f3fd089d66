//! The firewall plugin: accepts forwarded traffic of a pod's addresses, chained after the plugin that gave
//! them (podman's lists: bridge, portmap, firewall, tuning). Drop-in for the reference `firewall`'s iptables
//! backend (same chains, rules and comments, so either implementation's DEL removes the other's ADD); see
//! plugins/firewall/README.md for the fields, the ledger that lets DEL work without prevResult, and where
//! we differ.

#![cfg_attr(not(test), no_main)]

mod bridged;
mod config;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use config::{Backend, Firewall, IngressPolicy};
use rcni::cni::error::code;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::firewall::ledger::{self, Ledger, Record};
use rcni::net::firewall::{Error, owner_tag};
use rcni::net::firewall::{iptables, nftables};

fn prev_result(req: &Request) -> CniResult<AddResult> {
    req.conf.prev_result.clone().ok_or_else(|| {
        CniError::invalid_config("missing prevResult from earlier plugin")
            .with_details("firewall is a chained plugin: list it after the plugin that assigns the addresses (bridge)")
    })
}

fn cni_err(e: Error) -> CniError {
    match e {
        Error::Invalid(m) => CniError::invalid_config(m),
        Error::Busy(m) => CniError::new(code::TRY_AGAIN, m),
        Error::Ledger(m) => CniError::new(code::IO_FAILURE, m),
        e => CniError::internal(e.to_string()),
    }
}

fn addresses(prev: &AddResult) -> Vec<IpAddr> {
    prev.ips.iter().map(|c| c.address.ip()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// The iptables layout this config asks for, given the previous result.
fn layout(fw: &Firewall, prev: &AddResult) -> CniResult<iptables::Config> {
    let isolated = match fw.ingress {
        IngressPolicy::Open => None,
        IngressPolicy::SameBridge => Some(false),
        IngressPolicy::Isolated => Some(true),
    };
    let isolation = match isolated {
        None => None,
        Some(isolated) => {
            // The reference takes the bridge as the first interface of the result, as bridge reports it.
            let bridge = prev.interfaces.first().map(|i| i.name.clone()).unwrap_or_default();
            let policy = if isolated { "isolated" } else { "same-bridge" };
            if bridge.is_empty() {
                return Err(CniError::invalid_config(format!(
                    "ingressPolicy \"{policy}\" needs the bridge as the first interface of prevResult, which has none"
                ))
                .with_details("chain firewall after the bridge plugin"));
            }
            rcni::cni::config::check_device_name("prevResult.interfaces[0].name", &bridge)?;
            if isolated {
                bridged::check_isolated_enforced(prev, &bridge, &addresses(prev))?;
            }
            Some(iptables::Isolation { bridge, isolated })
        }
    };
    Ok(iptables::Config { admin_chain: fw.admin_chain.clone(), isolation, dnat: fw.accept_dnat })
}

/// What ADD and CHECK both start from: the config, prevResult, the rule layout and the pod's addresses.
struct Planned {
    fw: Firewall,
    prev: AddResult,
    cfg: iptables::Config,
    ips: Vec<IpAddr>,
}

fn plan(req: &Request) -> CniResult<Planned> {
    let fw = Firewall::parse(&req.conf.raw)?;
    let prev = prev_result(req)?;
    if let Backend::Firewalld { explicit } = fw.backend {
        return Err(Firewall::refuse_firewalld(explicit));
    }
    let cfg = layout(&fw, &prev)?;
    let ips = addresses(&prev);
    if fw.backend == Backend::Nftables {
        let found = nftables::drop_policies().map_err(cni_err)?;
        if !found.is_empty() {
            return Err(Firewall::refuse_nftables(&found));
        }
    }
    Ok(Planned { fw, prev, cfg, ips })
}

fn nft_config(req: &Request, cfg: &iptables::Config) -> nftables::Config {
    nftables::Config {
        network: req.conf.name.clone(),
        admin_chain: cfg.admin_chain.clone(),
        isolation: cfg.isolation.clone(),
    }
}

/// Removes the network's nftables rules once the ledger holds no attachment of it on this node.
fn remove_network_if_unused(ledger: &Ledger, network: &str) -> CniResult<()> {
    if ledger.all().map_err(cni_err)?.is_empty() { nftables::remove_network(network).map_err(cni_err) } else { Ok(()) }
}

/// Adds the rules of the configured backend.
fn add_rules(req: &Request, fw: &Firewall, cfg: &iptables::Config, ips: &[IpAddr]) -> rcni::net::firewall::Result<()> {
    match fw.backend {
        Backend::Nftables => nftables::add(&nft_config(req, cfg)),
        _ => iptables::add(cfg, ips),
    }
}

fn ledger_base() -> &'static Path {
    Path::new(ledger::BASE)
}

/// Removes the rules of `ips` that `owner` may remove (not those a newer attachment of the address owns).
fn remove_rules(ledger: &Ledger, owner: &str, ips: &[IpAddr]) -> CniResult<()> {
    let mut mine = Vec::new();
    for ip in ips {
        if ledger.may_remove(ip, owner).map_err(cni_err)? {
            mine.push(*ip);
        }
    }
    match iptables::del(&mine) {
        Ok(()) => Ok(()),
        // Without iptables there are no iptables rules to remove.
        Err(Error::Command { err, .. }) if err.is_not_installed() => Ok(()),
        Err(e) => Err(cni_err(e)),
    }
}

struct FirewallPlugin;

impl Plugin for FirewallPlugin {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let Planned { fw, prev, cfg, ips } = plan(req)?;
        let ledger = Ledger::open(ledger_base(), &req.conf.name).map_err(cni_err)?;
        let rec = Record {
            network: req.conf.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            ips: ips.clone(),
            dnat: fw.accept_dnat,
        };
        // A repeated ADD with other addresses: the record must still cover the earlier ones for DEL.
        let mut rec = rec;
        if let Some(old) = ledger.get(&req.container_id, &req.ifname).map_err(cni_err)? {
            for ip in old.ips {
                if !rec.ips.contains(&ip) {
                    rec.ips.push(ip);
                }
            }
        }
        ledger.record(&rec).map_err(cni_err)?;
        if let Err(e) = add_rules(req, &fw, &cfg, &ips) {
            let undo = ledger
                .remove(&req.container_id, &req.ifname, &ips)
                .map_err(cni_err)
                .and_then(|()| remove_network_if_unused(&ledger, &req.conf.name));
            if let Err(undo) = undo {
                rcni::cni::log::warn("firewall", format!("undo: {undo}"));
            }
            return Err(cni_err(e));
        }
        Ok(prev)
    }

    /// Removes this attachment's rules: the addresses of prevResult and those the ledger recorded, so it
    /// works without prevResult (the reference then removes nothing). Addresses a newer attachment owns
    /// keep their rules.
    fn del(&self, req: &Request) -> CniResult<()> {
        let ledger = Ledger::open(ledger_base(), &req.conf.name).map_err(cni_err)?;
        let mut ips: BTreeSet<IpAddr> =
            req.conf.prev_result.as_ref().map(addresses).unwrap_or_default().into_iter().collect();
        if let Some(rec) = ledger.get(&req.container_id, &req.ifname).map_err(cni_err)? {
            ips.extend(rec.ips);
        }
        let ips: Vec<IpAddr> = ips.into_iter().collect();
        let owner = owner_tag(&req.container_id, &req.ifname);
        remove_rules(&ledger, &owner, &ips)?;
        ledger.remove(&req.container_id, &req.ifname, &ips).map_err(cni_err)?;
        remove_network_if_unused(&ledger, &req.conf.name)?;
        ledger.remove_if_empty();
        Ok(())
    }

    /// Reads the rules back: every rule ADD makes must be there, and the ledger must name this attachment
    /// as the owner of its addresses.
    fn check(&self, req: &Request) -> CniResult<()> {
        let Planned { fw, cfg, ips, .. } = plan(req)?;
        match fw.backend {
            Backend::Nftables => nftables::check(&nft_config(req, &cfg)).map_err(cni_err)?,
            _ => iptables::check(&cfg, &ips).map_err(cni_err)?,
        }
        let ledger = Ledger::open(ledger_base(), &req.conf.name).map_err(cni_err)?;
        let owner = owner_tag(&req.container_id, &req.ifname);
        for ip in &ips {
            match ledger.owner_of(ip).map_err(cni_err)? {
                Some(o) if o != owner => {
                    return Err(CniError::internal(format!(
                        "firewall: the accept rules of {ip} belong to attachment {o}, not to {owner}"
                    ))
                    .with_details("two attachments were given the same address; re-create this one"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the rules and records of every attachment of this network the runtime no longer lists.
    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let Some(valid) = valid else { return Ok(()) };
        let keep: BTreeSet<String> = valid.iter().map(|a| owner_tag(&a.container_id, &a.ifname)).collect();
        let ledger = Ledger::open(ledger_base(), &req.conf.name).map_err(cni_err)?;
        let mut errs = Vec::new();
        for rec in ledger.all().map_err(cni_err)? {
            let owner = rec.owner();
            if keep.contains(&owner) {
                continue;
            }
            let r = remove_rules(&ledger, &owner, &rec.ips)
                .and_then(|()| ledger.remove(&rec.container_id, &rec.ifname, &rec.ips).map_err(cni_err));
            errs.extend(r.err());
        }
        errs.extend(remove_network_if_unused(&ledger, &req.conf.name).err());
        ledger.remove_if_empty();
        CniError::join(errs)
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI firewall plugin (rcni {})", env!("CARGO_PKG_VERSION")), &FirewallPlugin)
}
