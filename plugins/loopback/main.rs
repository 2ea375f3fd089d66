//! The loopback plugin: brings `lo` up in the pod's network namespace (CNI_IFNAME is ignored, as in the
//! reference; runtimes pass "lo").

#![cfg_attr(not(test), no_main)]

use rcni::cni::result::{AddResult, Interface, IpConfig};
use rcni::cni::skel::{self, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::NetHandle;
use rcni::pod::{block_on, open_netns, open_netns_for_del};

struct Loopback;

// GC and STATUS: the trait's defaults (loopback keeps no state outside the pod's netns, depends on nothing).
impl Plugin for Loopback {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let ns = open_netns(&req.netns)?;
        block_on(async {
            let pod = NetHandle::for_netns(&ns)?;
            pod.set_loopback(true).await?;
            let lo = pod.loopback().await?;
            let addrs = pod.addresses(Some(lo.index), None).await?;
            if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(CniError::internal(format!("loopback interface has a non-loopback address {}", bad.net))
                    .with_details("something configured lo in this pod before us; remove that address"));
            }
            // A chained loopback passes the previous result on unchanged.
            if let Some(prev) = &req.conf.prev_result {
                return Ok(prev.clone());
            }
            let first = |v4: bool| addrs.iter().find(|a| a.net.is_ipv4() == v4);
            let ips = [first(true), first(false)]
                .into_iter()
                .flatten()
                .map(|a| IpConfig { interface: Some(0), address: a.net, gateway: None })
                .collect();
            Ok(AddResult {
                interfaces: vec![Interface {
                    name: "lo".into(),
                    mac: "00:00:00:00:00:00".into(),
                    sandbox: req.netns.clone(),
                    ..Default::default()
                }],
                ips,
                ..Default::default()
            })
        })
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // An empty or vanished netns means the pod is gone, and with it its lo: nothing to do.
        let Some(ns) = open_netns_for_del(&req.netns)? else { return Ok(()) };
        block_on(async {
            let pod = NetHandle::for_netns(&ns)?;
            match pod.set_loopback(false).await {
                Err(e) if !e.is_not_found() => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let ns = open_netns(&req.netns)?;
        block_on(async {
            let lo = NetHandle::for_netns(&ns)?.loopback().await?;
            if !lo.admin_up {
                return Err(CniError::internal("loopback interface is down")
                    .with_details("something set lo down after ADD; DEL and ADD the pod again"));
            }
            Ok(())
        })
    }
}

rcni::plugin_main!(run);

fn run() -> ! {
    skel::run(&format!("CNI loopback plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Loopback)
}
