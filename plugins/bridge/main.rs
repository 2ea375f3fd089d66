//! The bridge plugin: pods on a Linux bridge in the node, each through a veth pair, addresses from IPAM,
//! the bridge as gateway, masquerade for traffic leaving the pod subnet. Drop-in for the reference `bridge`.
//! See plugins/bridge/README.md for every field and how we differ from the reference.
//!
//! The work itself is the shared recipe in `rcni::pod` (attach / check / detach); this file turns the
//! bridge config into an `AttachSpec`.

mod config;

use config::BridgeConf;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::Mac;
use rcni::net::masq::Backend;
use rcni::pod::attach::{AttachSpec, MasqSpec, VlanPlan};
use rcni::pod::bridge::BridgeSettings;
use rcni::pod::ipam::Ipam;
use rcni::pod::{attach, check, detach, ipam};

/// The container interface's MAC: runtimeConfig.mac, then args.cni.mac, then CNI_ARGS MAC (the reference's
/// precedence).
fn container_mac(req: &Request) -> CniResult<Option<Mac>> {
    let conf = &req.conf;
    let from_json = |v: Option<&serde_json::Value>| v.and_then(|m| m.as_str()).map(str::to_string);
    let chosen = from_json(conf.runtime_config.get("mac"))
        .or_else(|| from_json(conf.cni_arg("mac")))
        .or_else(|| req.args.get("MAC").map(str::to_string));
    chosen
        .map(|s| {
            s.parse::<Mac>().map_err(|_| {
                CniError::invalid_config(format!("invalid MAC address {s:?}"))
                    .with_details("write it as six hex bytes, e.g. 02:42:ac:11:00:02")
            })
        })
        .transpose()
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
        let subnets = rcni::pod::plan::ipam_subnets(&req.conf.raw);
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

struct Bridge;

impl Plugin for Bridge {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let (spec, ipam) = load(req)?;
        attach::add(req, &spec, ipam.as_ref())
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let (spec, ipam) = load(req)?;
        detach::del(req, ipam.as_ref(), spec.mac_spoof_check, spec.background_unlink)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let (spec, ipam) = load(req)?;
        check::check(req, &spec, ipam.as_ref())
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let (spec, ipam) = load(req)?;
        let spoof_bridge = spec.mac_spoof_check.then_some(spec.bridge.name.as_str());
        detach::gc(req, ipam.as_ref(), valid, spoof_bridge)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let (_, ipam) = load(req)?;
        ipam::status(ipam.as_ref(), req)
    }
}

fn main() {
    skel::run(&format!("CNI bridge plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Bridge)
}
