//! The tuning plugin: sysctls and link attributes of the pod's interface, chained after the plugin that
//! made it. Drop-in for the reference `tuning`; see plugins/tuning/README.md for every field and where we
//! differ.
//!
//! ADD checks everything it can before the first write (keys, allowlist, MAC, that each sysctl exists in
//! the pod), then writes the sysctls in config order, saves the link's originals and changes the link. A
//! failure undoes what this ADD did. DEL puts the saved originals back.

#![cfg_attr(not(test), no_main)]

mod backup;
mod config;
mod sysctl;

use backup::Backup;
use config::Tuning;
use rcni::cni::error::code;
use rcni::cni::log::warn;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::{Link, Mac, NetError, NetHandle, Netns, spoofchk};
use rcni::pod::{block_on, open_netns, open_netns_for_del};
use std::path::Path;

/// A sysctl to write: the key as written, its /proc/sys path in slash form, the value.
struct SysctlWrite<'a> {
    key: &'a str,
    rel: String,
    value: &'a str,
}

fn prev_result(req: &Request) -> CniResult<AddResult> {
    req.conf.prev_result.clone().ok_or_else(|| {
        CniError::invalid_config("Required prevResult missing")
            .with_details("tuning is a chained plugin: list it after the plugin that creates the interface")
    })
}

fn sysctl_error(w: &SysctlWrite, e: NetError) -> CniError {
    let c = if e.errno() == Some(libc::EINVAL) { code::INVALID_CONFIG } else { code::INTERNAL };
    CniError::new(c, format!("sysctl {}={:?}: {e}", w.key, w.value))
}

/// Why sysctl `w` is missing in the pod. This thread is in the plugin's own namespace (the node's): a key
/// that exists here but not in the pod is not namespaced, and writing it "for the pod" cannot work (nor must
/// it reach the node).
fn missing_sysctl(w: &SysctlWrite) -> CniError {
    if Path::new("/proc/sys").join(&w.rel).exists() {
        CniError::invalid_config(format!(
            "sysctl {} is not namespaced: it exists on the node but not in the pod",
            w.key
        ))
        .with_details("it cannot be set per pod; set it on the node instead")
    } else {
        CniError::invalid_config(format!("sysctl {} does not exist in the pod (/proc/sys/{})", w.key, w.rel))
            .with_details(
                "it is misspelt, names an interface the pod lacks, or is not namespaced (a node-wide setting such as \
                 net.core.busy_poll, which cannot be set per pod)",
            )
    }
}

/// Inside the pod, on one thread: check that every key exists before the first write, then write them in
/// order; returns the previous values (for undo). On a failed write, what was written is put back before
/// the error returns.
fn write_sysctls(ns: &Netns, writes: &[SysctlWrite]) -> CniResult<Vec<(String, String)>> {
    enum Failed {
        Missing(usize),
        Write(usize, NetError),
    }
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let outcome = ns.run(|| {
        if let Some(i) = writes.iter().position(|w| !Path::new("/proc/sys").join(&w.rel).exists()) {
            return Err(Failed::Missing(i));
        }
        let mut done: Vec<(String, String)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let step = rcni::net::sysctl::read(&w.rel).and_then(|old| {
                rcni::net::sysctl::write(&w.rel, w.value)?;
                Ok(old)
            });
            match step {
                Ok(old) => done.push((w.rel.clone(), old)),
                Err(e) => {
                    undo_sysctls(&done);
                    return Err(Failed::Write(i, e));
                }
            }
        }
        Ok(done)
    })?;
    outcome.map_err(|f| match f {
        Failed::Missing(i) => missing_sysctl(&writes[i]),
        Failed::Write(i, e) => sysctl_error(&writes[i], e),
    })
}

/// Put previous values back, last first (calling thread's namespace).
fn undo_sysctls(done: &[(String, String)]) {
    for (rel, old) in done.iter().rev() {
        if let Err(e) = rcni::net::sysctl::write(rel, old) {
            warn("tuning", format!("undo: could not restore sysctl {rel}={old}: {e}"));
        }
    }
}

/// What the link has now, for the attributes `t` changes.
fn originals(link: &Link, t: &Tuning) -> Backup {
    Backup {
        mac: if t.mac.is_some() { link.mac.map(|m| m.to_string()).unwrap_or_default() } else { String::new() },
        promisc: t.promisc.then_some(link.promisc),
        mtu: if t.mtu.is_some() { link.mtu.unwrap_or(0) } else { 0 },
        allmulti: t.allmulti.map(|_| link.allmulti),
        txqlen: t.txqlen.and(link.txqlen),
    }
}

/// Apply a backup to the link, in the reference's order: MTU, MAC, promisc, allmulti, txqlen. Goes on
/// past failures and returns them all.
async fn restore_link(pod: &NetHandle, index: u32, b: &Backup) -> Vec<NetError> {
    let mut errors = Vec::new();
    if b.mtu != 0 {
        errors.extend(pod.set_mtu(index, b.mtu).await.err());
    }
    if let Ok(mac) = b.mac.parse() {
        errors.extend(pod.set_mac(index, mac).await.err());
    }
    if let Some(p) = b.promisc {
        errors.extend(pod.set_promisc(index, p).await.err());
    }
    if let Some(a) = b.allmulti {
        errors.extend(pod.set_allmulti(index, a).await.err());
    }
    if let Some(q) = b.txqlen {
        errors.extend(pod.set_txqlen(index, q).await.err());
    }
    errors
}

/// Save the originals (keeping those of an earlier ADD), then change the link. A failure puts the link
/// and the backup file back as they were.
async fn tune_link(req: &Request, ns: &Netns, t: &Tuning) -> CniResult<()> {
    let pod = NetHandle::for_netns(ns)?;
    let link = pod.require_link(&req.ifname).await?;
    let file = backup::path(&t.data_dir, &req.container_id, &req.ifname);
    let before = originals(&link, t);
    let earlier = backup::read(&file).unwrap_or_else(|e| {
        warn("tuning", format!("{e}; replacing it"));
        None
    });
    let mut saved = earlier.clone().unwrap_or_default();
    saved.merge_missing(before.clone());
    backup::write(&file, &saved)?;

    let i = link.index;
    let changed = async {
        if let Some(mac) = t.mac {
            pod.set_mac(i, mac).await?;
        }
        if t.promisc {
            pod.set_promisc(i, true).await?;
        }
        if let Some(mtu) = t.mtu {
            pod.set_mtu(i, mtu).await?;
        }
        if let Some(a) = t.allmulti {
            pod.set_allmulti(i, a).await?;
        }
        if let Some(q) = t.txqlen {
            pod.set_txqlen(i, q).await?;
        }
        Ok::<(), NetError>(())
    }
    .await
    .map_err(|e| {
        let c = if e.errno() == Some(libc::EINVAL) { code::INVALID_CONFIG } else { code::INTERNAL };
        CniError::new(c, format!("tune {}: {e}", req.ifname))
    });
    let followed = match (&changed, t.mac) {
        (Ok(()), Some(mac)) => follow_spoof_check(req, &link, mac).await,
        _ => Ok(()),
    };
    if let Err(e) = changed.and(followed) {
        for undo in restore_link(&pod, i, &before).await {
            warn("tuning", format!("undo: {undo}"));
        }
        if let (Some(_), Ok(mac)) = (t.mac, before.mac.parse()) {
            if let Err(e) = follow_spoof_check(req, &link, mac).await {
                warn("tuning", format!("undo: {e}"));
            }
        }
        let _ = match &earlier {
            Some(b) => backup::write(&file, b),
            None => backup::remove(&file),
        };
        return Err(e);
    }
    Ok(())
}

/// The bridge's `macspoofchk` pins the pod interface's MAC in the node's `bridge nat` table: when tuning
/// changes the MAC, the pin moves with it, or every frame the pod sends would be dropped. Only for an
/// attachment that has such a pin (its chain exists); one netlink lookup otherwise.
async fn follow_spoof_check(req: &Request, pod_link: &Link, mac: Mac) -> CniResult<()> {
    use rcni::net::nft::{NFPROTO_BRIDGE, Nfnl};
    let names = spoofchk::Names::new(&req.container_id, &req.ifname);
    let pinned = Nfnl::open().and_then(|mut n| n.chain_exists(NFPROTO_BRIDGE, spoofchk::TABLE, &names.mac_chain));
    if !pinned.unwrap_or(false) {
        return Ok(());
    }
    let node = NetHandle::current()?;
    let host = match pod_link.peer_index {
        Some(peer) => node.link_by_index(peer).await?.filter(|h| h.peer_index == Some(pod_link.index)),
        None => None,
    };
    let host = host.ok_or_else(|| {
        CniError::internal(format!(
            "{} has a MAC spoof check but no veth peer in the node to pin the new MAC to",
            req.ifname
        ))
    })?;
    spoofchk::setup(&req.conf.name, &req.container_id, &req.ifname, &host.name, mac)
        .map_err(|e| CniError::internal(format!("move the MAC spoof check of {} to {mac}: {e}", req.ifname)))
}

/// The result passes on unchanged but for the interface's new MAC (and MTU, where the result carries one).
fn update_result(result: &mut AddResult, ifname: &str, t: &Tuning) {
    for iface in result.interfaces.iter_mut().filter(|i| i.name == ifname) {
        if let Some(mac) = t.mac {
            iface.mac = mac.to_string();
        }
        if let (Some(mtu), Some(old)) = (t.mtu, iface.mtu.as_mut()) {
            *old = mtu;
        }
    }
}

struct Tune;

// GC: backups are named by container and interface only, shared by every network using the same dataDir,
// so one network's list of live attachments cannot tell which files are stale: the trait's "nothing to
// collect" applies.
impl Plugin for Tune {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let t = Tuning::from_request(req)?;
        let keys: Vec<&str> = t.sysctls.iter().map(|(k, _)| k.as_str()).collect();
        sysctl::check_allowlist(&keys)?;
        let writes = t
            .sysctls
            .iter()
            .map(|(key, value)| Ok(SysctlWrite { key, rel: sysctl::resolve(key, &req.ifname)?, value }))
            .collect::<CniResult<Vec<_>>>()?;
        let mut result = prev_result(req)?;
        let ns = open_netns(&req.netns)?;
        let written = write_sysctls(&ns, &writes)?;
        if t.changes_link() {
            if let Err(e) = block_on(tune_link(req, &ns, &t)) {
                ns.run(|| undo_sysctls(&written))?;
                return Err(e);
            }
        }
        update_result(&mut result, &req.ifname, &t);
        Ok(result)
    }

    /// Best effort and always successful, like the reference: put the saved originals back if the link is
    /// still there, and remove the backup in every case (also when the pod's netns is gone).
    fn del(&self, req: &Request) -> CniResult<()> {
        let file = backup::path(&config::data_dir(&req.conf.raw)?, &req.container_id, &req.ifname);
        let saved = match backup::read(&file) {
            Ok(Some(b)) => Some(b),
            Ok(None) => return Ok(()),
            Err(e) => {
                warn("tuning", format!("{e}; removing it"));
                None
            }
        };
        if let Some(saved) = saved {
            match open_netns_for_del(&req.netns) {
                Ok(Some(ns)) => {
                    let restored = block_on(async {
                        let pod = NetHandle::for_netns(&ns)?;
                        Ok::<_, NetError>(match pod.link_by_name(&req.ifname).await? {
                            Some(link) => {
                                let errors = restore_link(&pod, link.index, &saved).await;
                                if let Ok(mac) = saved.mac.parse() {
                                    if let Err(e) = follow_spoof_check(req, &link, mac).await {
                                        warn("tuning", format!("DEL: {e}"));
                                    }
                                }
                                errors
                            }
                            None => Vec::new(),
                        })
                    });
                    match restored {
                        Ok(errors) => errors.iter().for_each(|e| warn("tuning", format!("DEL: restore: {e}"))),
                        Err(e) => warn("tuning", format!("DEL: {e}")),
                    }
                }
                Ok(None) => {}
                Err(e) => warn("tuning", format!("DEL: {e}")),
            }
        }
        if let Err(e) = backup::remove(&file) {
            warn("tuning", format!("DEL: {e}"));
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let t = Tuning::from_request(req)?;
        prev_result(req)?;
        let ns = open_netns(&req.netns)?;
        let mut wanted = Vec::new();
        for (key, value) in &t.sysctls {
            wanted.push((key.as_str(), sysctl::resolve(key, &req.ifname)?, value.as_str()));
        }
        let current = ns.run(|| wanted.iter().map(|(_, rel, _)| rcni::net::sysctl::read(rel)).collect::<Vec<_>>())?;
        for ((key, _, want), now) in wanted.iter().zip(current) {
            let now = now.map_err(|e| CniError::internal(format!("sysctl {key}: {e}")))?;
            if sysctl::normalize(&now) != sysctl::normalize(want) {
                return Err(CniError::internal(format!(
                    "sysctl {key} is {now:?} in the pod, the config wants {want:?}"
                )));
            }
        }
        block_on(async {
            let pod = NetHandle::for_netns(&ns)?;
            let link = pod
                .link_by_name(&req.ifname)
                .await?
                .ok_or_else(|| CniError::internal(format!("Cannot find container link {}", req.ifname)))?;
            let differs = |what: &str, want: String, now: String| {
                CniError::internal(format!("{} {what} is {now}, the config wants {want}", req.ifname))
            };
            if let Some(mac) = t.mac {
                if link.mac != Some(mac) {
                    return Err(differs("MAC", mac.to_string(), format!("{:?}", link.mac)));
                }
            }
            // Only a configured `promisc: true` is checked: a pod running a packet capture is fine.
            if t.promisc && !link.promisc {
                return Err(differs("promisc", "on".into(), "off".into()));
            }
            if let Some(mtu) = t.mtu {
                if link.mtu != Some(mtu) {
                    return Err(differs("MTU", mtu.to_string(), format!("{:?}", link.mtu)));
                }
            }
            if let Some(a) = t.allmulti {
                if link.allmulti != a {
                    return Err(differs("allmulticast", a.to_string(), link.allmulti.to_string()));
                }
            }
            if let Some(q) = t.txqlen {
                if link.txqlen != Some(q) {
                    return Err(differs("txqueuelen", q.to_string(), format!("{:?}", link.txqlen)));
                }
            }
            Ok(())
        })
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI tuning plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Tune)
}
