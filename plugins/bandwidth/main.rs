//! The bandwidth plugin: limits a pod's traffic with token buckets, chained after the plugin that made its
//! veth. Drop-in for the reference `bandwidth` (same fields, capability, ifb name and tc objects); see
//! plugins/bandwidth/README.md for where we differ.
//!
//! Towards the pod: a tbf as the root qdisc of the host end of the veth. From the pod: everything the host
//! end receives is redirected (ingress qdisc, u32 match-all, one mirred action) to an ifb device, whose
//! root tbf shapes it.

#![cfg_attr(not(test), no_main)]

mod config;

use config::{Bandwidth, Limit};
use rcni::cni::log::warn;
use rcni::cni::result::{AddResult, Interface};
use rcni::cni::skel::{self, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::tc::{INGRESS_HANDLE, ROOT, TBF_HANDLE, Tbf, ticks_per_usec};
use rcni::net::{Link, NetError, NetHandle};
use rcni::pod::{block_on, open_netns, open_netns_for_del};
use sha2::{Digest, Sha512};

/// The reference's queueing latency bound: the tbf queue holds what the rate sends in this time.
const LATENCY_USEC: f64 = 25_000.0;
/// Ethernet header: tbf measures packets with it.
const ETH_HLEN: u32 = 14;
/// Priority of the redirect filter (the reference's).
const REDIRECT_PRIO: u16 = 1;

/// `bwp` + hex SHA-512 of network name and container ID, cut to 15 bytes: the reference's ifb name, so either
/// implementation finds the other's device.
fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")[..15].to_string()
}

/// The reference's tbf parameters for a limit, so CHECK agrees across implementations: rate in bytes/s,
/// buffer = burst/rate in ticks, limit = 25 ms at the rate plus the burst.
fn tbf_for(limit: &Limit, ticks_per_usec: f64) -> Tbf {
    let rate = limit.rate / 8;
    let burst = (limit.burst / 8) as u32;
    let usec = (burst as f64 * 1e6 / rate as f64) as u32;
    let buffer = (usec as f64 * ticks_per_usec) as u32;
    let queue = (rate as f64 * LATENCY_USEC / 1e6) as u32;
    Tbf { rate, limit: queue.saturating_add(burst), buffer }
}

/// The largest packet the bucket passes: what the kernel computes back from the buffer (in ticks) at the
/// rate. A packet larger than this is dropped, never sent.
fn largest_packet(tbf: &Tbf, ticks_per_usec: f64) -> f64 {
    tbf.rate as f64 * (tbf.buffer as f64 / ticks_per_usec) / 1e6
}

/// Refuse a burst too small for one full-size packet on a link of `mtu`.
fn check_burst(field: &str, limit: &Limit, tbf: &Tbf, mtu: u32, ticks: f64) -> CniResult<()> {
    let need = (mtu + ETH_HLEN) as f64;
    if largest_packet(tbf, ticks) >= need {
        return Ok(());
    }
    // Rounding to whole microseconds and ticks costs up to ~2 us at the rate.
    let suggest = ((need + tbf.rate as f64 * 2e-6).ceil() as u64 + 1) * 8;
    Err(CniError::invalid_config(format!(
        "{field} {} bits is smaller than one full-size packet ({mtu} MTU + {ETH_HLEN} header bytes): every larger \
         packet would be dropped",
        limit.burst
    ))
    .with_details(format!("give at least {suggest} bits")))
}

/// The host end of the pod's veth, found as the reference does (the peer of CNI_IFNAME, which prevResult
/// must list as a host interface), and checked both ways so a stray index in another namespace is never
/// mistaken for it.
async fn host_veth(req: &Request, pod: &NetHandle, node: &NetHandle, prev: &AddResult) -> CniResult<Link> {
    let ifname = &req.ifname;
    let inside = pod
        .link_by_name(ifname)
        .await?
        .ok_or_else(|| CniError::internal(format!("container interface {ifname} not found in {}", req.netns)))?;
    let no_peer = || CniError::internal(format!("container interface {ifname} has no veth peer"));
    let peer = inside.peer_index.filter(|_| inside.is_kind("veth")).ok_or_else(no_peer)?;
    let host = node.link_by_index(peer).await?.filter(|h| h.is_kind("veth") && h.peer_index == Some(inside.index));
    let host = host.ok_or_else(|| CniError::internal(format!("veth peer with index {peer} is not in host ns")))?;
    if !prev.interfaces.iter().any(|i| i.sandbox.is_empty() && i.name == host.name) {
        return Err(CniError::internal(format!(
            "no veth peer of container interface found in host ns: prevResult does not list {} as a host interface",
            host.name
        )));
    }
    Ok(host)
}

fn prev_result(req: &Request) -> CniResult<AddResult> {
    req.conf.prev_result.clone().ok_or_else(|| {
        CniError::invalid_config("must be called as chained plugin")
            .with_details("bandwidth needs prevResult: list it after the plugin that creates the veth")
    })
}

/// What an ADD changed, to put back if a later step fails.
#[derive(Default)]
struct Undo {
    /// The host veth's root qdisc before (`Some(None)`: it had none of ours; `Some(Some(t))`: our tbf with t).
    root: Option<Option<Tbf>>,
    ingress_qdisc_made: bool,
    ifb_made: Option<u32>,
}

impl Undo {
    async fn run(self, node: &NetHandle, host: u32) {
        let mut errs = Vec::new();
        if self.ingress_qdisc_made {
            errs.extend(node.delete_ingress_qdisc(host).await.err());
        }
        if let Some(ifb) = self.ifb_made {
            errs.extend(node.delete_link(ifb).await.err());
        }
        match self.root {
            Some(None) => errs.extend(node.delete_root_qdisc(host).await.err()),
            Some(Some(t)) => errs.extend(node.replace_root_tbf(host, &t).await.err()),
            None => {}
        }
        for e in errs {
            warn("bandwidth", format!("undo: {e}"));
        }
    }
}

async fn our_root_tbf(node: &NetHandle, index: u32) -> Result<Option<Tbf>, NetError> {
    let qdiscs = node.qdiscs(index).await?;
    Ok(qdiscs.into_iter().find(|q| q.parent == ROOT && q.handle == TBF_HANDLE).and_then(|q| q.tbf))
}

async fn shape(
    req: &Request,
    bw: &Bandwidth,
    node: &NetHandle,
    host: &Link,
    undo: &mut Undo,
) -> CniResult<Option<Link>> {
    let ticks = ticks_per_usec()?;
    let mtu = host.mtu.unwrap_or(1500);
    let plan_in = bw.ingress.map(|l| (l, tbf_for(&l, ticks)));
    let plan_out = bw.egress.map(|l| (l, tbf_for(&l, ticks)));
    let prefix = if req.conf.raw.get("ingressRate").is_some() || req.conf.raw.get("egressRate").is_some() {
        ""
    } else {
        "runtimeConfig.bandwidth."
    };
    if let Some((l, t)) = &plan_in {
        check_burst(&format!("{prefix}ingressBurst"), l, t, mtu, ticks)?;
    }
    if let Some((l, t)) = &plan_out {
        check_burst(&format!("{prefix}egressBurst"), l, t, mtu, ticks)?;
    }
    if let Some((_, t)) = plan_in {
        undo.root = Some(our_root_tbf(node, host.index).await?);
        node.replace_root_tbf(host.index, &t).await?;
    }
    let Some((_, t)) = plan_out else { return Ok(None) };
    let name = ifb_name(&req.conf.name, &req.container_id);
    let ifb = match node.create_ifb(&name, mtu).await {
        Ok(l) => {
            undo.ifb_made = Some(l.index);
            l
        }
        // A repeated ADD: keep the device (the ifb of this network and container) and set it up again.
        Err(e) if e.is_exists() => node.link_by_name(&name).await?.filter(|l| l.is_kind("ifb")).ok_or_else(|| {
            CniError::internal(format!("{name} exists but is not an ifb device")).with_details("delete it and retry")
        })?,
        Err(e) => return Err(e.into()),
    };
    node.replace_root_tbf(ifb.index, &t).await?;
    match node.add_ingress_qdisc(host.index).await {
        Ok(()) => undo.ingress_qdisc_made = true,
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(e.into()),
    }
    node.replace_ingress_redirect(host.index, REDIRECT_PRIO, ifb.index).await?;
    Ok(Some(ifb))
}

/// Remove what shaping left on the host veth: our root tbf, and the ingress qdisc when its redirect goes
/// to our ifb or to a device that no longer exists (the reference's DEL leaves such a blackhole).
async fn unshape_veth(node: &NetHandle, host: &Link, ifb: Option<&Link>) -> Vec<NetError> {
    let mut errs = Vec::new();
    if our_root_tbf(node, host.index).await.ok().flatten().is_some() {
        errs.extend(node.delete_root_qdisc(host.index).await.err().filter(|e| !e.is_not_found()));
    }
    let has_ingress =
        node.qdiscs(host.index).await.map(|qs| qs.iter().any(|q| q.handle == INGRESS_HANDLE)).unwrap_or(false);
    if has_ingress {
        let redirects = node.ingress_redirects(host.index).await.unwrap_or_default();
        let mut ours = false;
        for r in &redirects {
            for &t in &r.targets {
                // The kernel reports index 0 once the target device is deleted.
                let gone = t == 0 || matches!(node.link_by_index(t).await, Ok(None));
                ours |= gone || ifb.is_some_and(|i| i.index == t);
            }
        }
        if ours {
            errs.extend(node.delete_ingress_qdisc(host.index).await.err().filter(|e| !e.is_not_found()));
        }
    }
    errs
}

struct BandwidthPlugin;

// GC: everything bandwidth makes belongs to a veth (gone with it) or is an ifb named by a hash, which
// cannot be traced back to an attachment, so the trait's "nothing to collect" applies.
impl Plugin for BandwidthPlugin {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let bw = Bandwidth::parse(&req.conf.raw)?;
        if bw.is_empty() {
            return Ok(req.conf.prev_result.clone().unwrap_or_default());
        }
        let mut result = prev_result(req)?;
        let ns = open_netns(&req.netns)?;
        block_on(async {
            let pod = NetHandle::for_netns(&ns)?;
            let node = NetHandle::current()?;
            let host = host_veth(req, &pod, &node, &result).await?;
            let mut undo = Undo::default();
            match shape(req, &bw, &node, &host, &mut undo).await {
                Ok(Some(ifb)) => result.interfaces.push(Interface {
                    name: ifb.name.clone(),
                    mac: ifb.mac.map(|m| m.to_string()).unwrap_or_default(),
                    ..Default::default()
                }),
                Ok(None) => {}
                Err(e) => {
                    undo.run(&node, host.index).await;
                    return Err(e);
                }
            }
            Ok(result)
        })
    }

    /// Removes every qdisc, filter and ifb this attachment has (also those the reference made). Needs
    /// neither prevResult nor the netns for the ifb; the veth's qdiscs go with the veth when it is gone.
    fn del(&self, req: &Request) -> CniResult<()> {
        let name = ifb_name(&req.conf.name, &req.container_id);
        let ns = open_netns_for_del(&req.netns).unwrap_or(None);
        block_on(async {
            let node = NetHandle::current()?;
            let ifb = node.link_by_name(&name).await?.filter(|l| l.is_kind("ifb"));
            let mut errs: Vec<CniError> = Vec::new();
            let host = match (&ns, &req.conf.prev_result) {
                (Some(ns), Some(prev)) => {
                    let pod = NetHandle::for_netns(ns)?;
                    host_veth(req, &pod, &node, prev).await.ok()
                }
                (Some(ns), None) => {
                    // No prevResult: the veth is still the pod interface's peer.
                    let pod = NetHandle::for_netns(ns)?;
                    let prev = AddResult {
                        interfaces: match pod.link_by_name(&req.ifname).await?.and_then(|l| l.peer_index) {
                            Some(peer) => node
                                .link_by_index(peer)
                                .await?
                                .map(|h| vec![Interface { name: h.name, ..Default::default() }])
                                .unwrap_or_default(),
                            None => Vec::new(),
                        },
                        ..Default::default()
                    };
                    host_veth(req, &pod, &node, &prev).await.ok()
                }
                _ => None,
            };
            if let Some(host) = &host {
                errs.extend(unshape_veth(&node, host, ifb.as_ref()).await.into_iter().map(CniError::from));
            }
            if let Some(ifb) = &ifb {
                if let Err(e) = node.delete_link(ifb.index).await {
                    if !e.is_not_found() {
                        errs.push(e.into());
                    }
                }
            }
            CniError::join(errs)
        })
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let bw = Bandwidth::parse(&req.conf.raw)?;
        if bw.is_empty() {
            return Ok(());
        }
        let prev = prev_result(req)?;
        let ns = open_netns(&req.netns)?;
        block_on(async {
            let pod = NetHandle::for_netns(&ns)?;
            let node = NetHandle::current()?;
            let host = host_veth(req, &pod, &node, &prev).await?;
            let ticks = ticks_per_usec()?;
            let expect = |dev: &Link, want: Tbf, got: Option<Tbf>, dir: &str| match got {
                Some(g) if g == want => Ok(()),
                Some(g) => Err(CniError::internal(format!(
                    "{dir} shaping on {}: tbf has rate {} B/s, limit {}, buffer {}; the config wants rate {}, limit {}, buffer {}",
                    dev.name, g.rate, g.limit, g.buffer, want.rate, want.limit, want.buffer
                ))),
                None => Err(CniError::internal(format!("{dir} shaping on {}: no tbf root qdisc", dev.name))),
            };
            if let Some(l) = bw.ingress {
                expect(&host, tbf_for(&l, ticks), our_root_tbf(&node, host.index).await?, "ingress")?;
            }
            if let Some(l) = bw.egress {
                let name = ifb_name(&req.conf.name, &req.container_id);
                let ifb = node
                    .link_by_name(&name)
                    .await?
                    .ok_or_else(|| CniError::internal(format!("egress shaping: ifb device {name} is missing")))?;
                expect(&ifb, tbf_for(&l, ticks), our_root_tbf(&node, ifb.index).await?, "egress")?;
                let redirects = node.ingress_redirects(host.index).await?;
                let targets: Vec<u32> = redirects.iter().flat_map(|r| r.targets.clone()).collect();
                if targets != [ifb.index] {
                    return Err(CniError::internal(format!(
                        "egress shaping: {} should redirect to {name} (#{}) with one filter, has targets {targets:?}",
                        host.name, ifb.index
                    )));
                }
            }
            Ok(())
        })
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI bandwidth plugin (rcni {})", env!("CARGO_PKG_VERSION")), &BandwidthPlugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_name_is_the_references() {
        let n = ifb_name("mynet", "ctr1");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        let hex: String = Sha512::digest(b"mynetctr1").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&n[3..], &hex[..12]);
    }

    #[test]
    fn tbf_matches_the_references_numbers() {
        // 8 Mbit/s, 800000-bit burst, 15.625 ticks/us: rate 1e6 B/s, buffer 0.1 s in ticks, limit 25 ms + burst.
        let t = tbf_for(&Limit { rate: 8_000_000, burst: 800_000 }, 15.625);
        assert_eq!(t, Tbf { rate: 1_000_000, limit: 25_000 + 100_000, buffer: 1_562_500 });
        assert!((largest_packet(&t, 15.625) - 100_000.0).abs() < 1.0);
    }
}
