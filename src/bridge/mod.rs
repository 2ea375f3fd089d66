//! The bridge plugin: pods on a Linux bridge in the node, each through a veth pair, addresses from IPAM,
//! the bridge as gateway, masquerade for traffic leaving the pod subnet. Drop-in for the reference `bridge`.
//! See plugins/bridge/README.md for every field and how we differ from the reference.
//!
//! The commands live in the library so a plugin that delegates to the bridge (flannel) can run it
//! in-process with a config it generated: [`delegate_request`] builds the request, [`Bridge`] (or the
//! functions [`add`], [`del`], …) run it. The executable `plugins/bridge` is only `skel::run(&Bridge)`.
//! The work itself is the shared recipe in `crate::pod` (attach / check / detach); this module turns the
//! bridge config into an `AttachSpec`.

pub mod config;

use crate::cni::config::NetConf;
use crate::cni::result::AddResult;
use crate::cni::skel::{Attachment, Plugin, Request};
use crate::cni::{CniError, CniResult, log, version};
use crate::net::Mac;
use crate::net::masq::Backend;
use crate::pod::attach::{AttachSpec, MasqSpec, VlanPlan};
use crate::pod::bridge::BridgeSettings;
use crate::pod::ipam::Ipam;
use crate::pod::{attach, check, detach, ipam};
use config::BridgeConf;

/// The container interface's MAC: runtimeConfig.mac, then args.cni.mac, then CNI_ARGS MAC (the reference's
/// precedence).
fn container_mac(req: &Request) -> CniResult<Option<Mac>> {
    let conf = &req.conf;
    let from_json = |v: Option<&serde_json::Value>| v.and_then(|m| m.as_str()).map(str::to_string);
    let Some(s) = from_json(conf.runtime_config.get("mac")).or_else(|| from_json(conf.cni_arg("mac"))) else {
        return req.args.parsed("MAC", "write it as six hex bytes, e.g. 02:42:ac:11:00:02", str::parse::<Mac>);
    };
    s.parse::<Mac>().map(Some).map_err(|_| {
        CniError::invalid_config(format!("invalid MAC address {s:?}"))
            .with_details("write it as six hex bytes, e.g. 02:42:ac:11:00:02")
    })
}

/// The attachment this config describes.
fn spec(req: &Request, c: &BridgeConf, has_ipam: bool) -> CniResult<AttachSpec> {
    let mtu = (c.mtu > 0).then_some(c.mtu);
    let trunk = c.trunk_vids()?;
    let vlans = (c.vlan != 0 || !trunk.is_empty()).then(|| VlanPlan {
        native: (c.vlan != 0).then_some(c.vlan as u16),
        tagged: trunk,
        preserve_default: c.preserve_default_vlan,
    });
    let masq = if c.ip_masq && has_ipam {
        let backend =
            Backend::parse(c.ip_masq_backend.as_deref()).map_err(|e| CniError::invalid_config(e.to_string()))?;
        // The network's own subnets, all of them: one shared rule must exempt every pod subnet, not just
        // the one of the pod being added (IPAM configs that do not list them fall back to that one).
        let subnets = crate::pod::plan::ipam_subnets(&req.conf.raw);
        Some(MasqSpec { backend, exempt: (!subnets.is_empty()).then_some(subnets) })
    } else {
        None
    };
    Ok(AttachSpec {
        bridge: BridgeSettings {
            name: c.bridge.clone(),
            mtu,
            vlan_filtering: vlans.is_some(),
            promisc: c.promisc_mode,
        },
        mtu,
        hairpin: c.hairpin_mode,
        isolated: c.port_isolation,
        container_mac: container_mac(req)?,
        is_gateway: c.is_gateway,
        is_default_gateway: c.is_default_gateway,
        force_address: c.force_address,
        enable_dad: c.enable_dad,
        disable_container_interface: c.disable_container_interface,
        mac_spoof_check: c.mac_spoof_check,
        vlans,
        masq,
        gateway_routes: Vec::new(),
        background_unlink: c.delete_link_in_background,
    })
}

/// Parse the config and CNI_ARGS (the bridge knows MAC=, plus IgnoreUnknown and K8S_*, like the reference).
fn load(req: &Request) -> CniResult<(AttachSpec, Option<Ipam>)> {
    let ipam = Ipam::from_request(req);
    let conf = BridgeConf::parse(&req.stdin, ipam.is_some())?;
    req.args.check_known(&["MAC"])?;
    Ok((spec(req, &conf, ipam.is_some())?, ipam))
}

/// DEL and GC: only what teardown reads, with none of ADD's checks — a pod must stay deletable whatever
/// its config says now (a MAC ADD would refuse, vlan with isGateway, unknown CNI_ARGS). A config whose
/// fields do not even parse still tears down, with the defaults that are safe without it (in-line veth
/// deletion).
fn load_for_teardown(req: &Request) -> (AttachSpec, Option<Ipam>) {
    let conf = BridgeConf::from_json(&req.stdin).unwrap_or_else(|e| {
        log::warn(&req.conf.plugin_type, format!("{e}; tearing down with the defaults"));
        BridgeConf::default()
    });
    let spec = AttachSpec {
        bridge: BridgeSettings { name: conf.bridge.clone(), ..Default::default() },
        mac_spoof_check: conf.mac_spoof_check,
        background_unlink: conf.delete_link_in_background,
        ..Default::default()
    };
    (spec, Ipam::from_request(req))
}

/// The request a delegating plugin hands to the bridge: the same environment (command, container, netns,
/// ifname, CNI_ARGS, CNI_PATH) as `req`, with `conf` — a bridge config the caller built in memory — as stdin.
/// The config is checked as skel checks a config read from stdin (syntax, name, supported version).
pub fn delegate_request(req: &Request, conf: Vec<u8>) -> CniResult<Request> {
    let parsed = NetConf::from_slice(&conf)?;
    if !version::is_supported(&parsed.cni_version) {
        return Err(version::incompatible(&parsed.cni_version));
    }
    Ok(Request { stdin: conf, conf: parsed, ..req.clone() })
}

pub fn add(req: &Request) -> CniResult<AddResult> {
    let (spec, ipam) = load(req)?;
    // A bridge keeps nothing on the node but what each attachment makes (the bridge itself included).
    attach::add(req, ipam.as_ref(), async move |_| Ok(spec))
}

pub fn del(req: &Request) -> CniResult<()> {
    let (spec, ipam) = load_for_teardown(req);
    detach::del(req, &spec, ipam.as_ref())
}

pub fn check(req: &Request) -> CniResult<()> {
    let (spec, ipam) = load(req)?;
    check::check(req, &spec, ipam.as_ref())
}

pub fn gc(req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
    let (spec, ipam) = load_for_teardown(req);
    detach::gc(req, &spec, ipam.as_ref(), valid)
}

pub fn status(req: &Request) -> CniResult<()> {
    let (_, ipam) = load(req)?;
    ipam::status(ipam.as_ref(), req)
}

/// Embedded in the `bridge` executable (plugins/bridge/main.rs keeps it there): a delegating plugin
/// (flannel) that finds a `bridge` containing this exact string on CNI_PATH runs [`Bridge`] in-process
/// instead of exec'ing it, as `pod::ipam` does for host-local (`pod::ipam::is_same_build`).
pub static BUILD_MARKER: &str = concat!("rcni-bridge-build:", env!("RCNI_BUILD_ID"), ";");

/// The bridge as a `skel::Plugin`: what the executable runs.
pub struct Bridge;

impl Plugin for Bridge {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        add(req)
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        del(req)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        check(req)
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        gc(req, valid)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        status(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::skel::{Command, Invocation, parse_invocation};

    fn request(conf: &str) -> Request {
        let env = |k: &str| {
            let v = match k {
                "CNI_COMMAND" => "ADD",
                "CNI_CONTAINERID" => "c1",
                "CNI_NETNS" => "/run/netns/x",
                "CNI_IFNAME" => "eth0",
                "CNI_PATH" => "/opt/cni/bin",
                "CNI_ARGS" => "IgnoreUnknown=1;K8S_POD_NAME=p",
                _ => return None,
            };
            Some(v.to_string())
        };
        let Invocation::Request(r) = parse_invocation(&env, &mut conf.as_bytes()).unwrap() else { panic!() };
        *r
    }

    #[test]
    fn delegate_request_keeps_env_and_replaces_config() {
        let outer = request(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}"#);
        let inner = br#"{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni9"}"#.to_vec();
        let r = delegate_request(&outer, inner.clone()).unwrap();
        assert_eq!(r.command, Command::Add);
        assert_eq!((r.container_id.as_str(), r.ifname.as_str(), r.netns.as_str()), ("c1", "eth0", "/run/netns/x"));
        assert_eq!(r.args.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(r.stdin, inner);
        assert_eq!(r.conf.plugin_type, "bridge");
        let (spec, ipam) = load(&r).unwrap();
        assert_eq!(spec.bridge.name, "cni9");
        assert!(ipam.is_none());
    }

    #[test]
    fn delegate_request_refuses_bad_configs() {
        let outer = request(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}"#);
        assert_eq!(delegate_request(&outer, b"{".to_vec()).unwrap_err().code, 6);
        let e = delegate_request(&outer, br#"{"cniVersion":"9.9.9","name":"n","type":"bridge"}"#.to_vec());
        assert_eq!(e.unwrap_err().code, 1);
    }
}
