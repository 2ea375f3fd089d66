//! The vxlan plugin: pods on a local bridge (the shared bridge recipe), nodes joined by a VXLAN overlay
//! the plugin programs itself — no daemon. See plugins/vxlan/README.md.
//!
//! `vxlan sync <conflist-or-conf>` (without CNI_COMMAND) reconciles the VTEP and the peer entries without a
//! pod event, e.g. from a systemd path unit watching the peers file.

#![cfg_attr(not(test), no_main)]

mod config;
mod node;

use config::VxlanConf;
use ipnetwork::IpNetwork;
use node::Trigger;
use rcni::cni::error::code;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Plugin, Request};
use rcni::cni::{CniError, CniResult};
use rcni::net::NetHandle;
use rcni::net::masq::Backend;
use rcni::pod::attach::{AttachSpec, MasqSpec};
use rcni::pod::bridge::BridgeSettings;
use rcni::pod::ipam::Ipam;
use rcni::pod::{attach, block_on, check, detach, ipam, open_netns};
use serde_json::{Value, json};

/// This node's pod subnets: the `subnet` shorthand, or the subnets of host-local's ranges.
fn own_subnets(c: &VxlanConf, raw: &Value) -> CniResult<Vec<IpNetwork>> {
    if !c.subnet.is_empty() {
        return Ok(c.subnet.clone());
    }
    let out = rcni::pod::plan::ipam_subnets(raw);
    if out.is_empty() {
        return Err(CniError::invalid_config("cannot tell this node's pod subnet")
            .with_details("set \"subnet\" (e.g. \"10.244.1.0/24\") or give host-local \"ipam\" with \"ranges\""));
    }
    Ok(out)
}

/// The IPAM delegate: the configured `ipam`, or host-local ranges generated from `subnet` (the same bytes
/// for ADD and DEL, since they come from the same config).
fn ipam_for(req_conf: &Value, c: &VxlanConf, own: &[IpNetwork]) -> CniResult<Ipam> {
    if let Some(t) = req_conf.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str).filter(|t| !t.is_empty())
    {
        return Ok(Ipam { plugin: t.to_string(), stdin: serde_json::to_vec(req_conf).expect("JSON value") });
    }
    let ranges: Vec<Value> = own.iter().map(|s| json!([{ "subnet": s.to_string() }])).collect();
    let mut ipam = json!({ "type": "host-local", "ranges": ranges });
    if let Some(d) = &c.data_dir {
        ipam["dataDir"] = json!(d);
    }
    let mut conf = req_conf.clone();
    conf["ipam"] = ipam;
    Ok(Ipam { plugin: "host-local".into(), stdin: serde_json::to_vec(&conf).expect("JSON value") })
}

/// Everything one invocation needs, from the plugin's config.
struct Loaded {
    conf: VxlanConf,
    own: Vec<IpNetwork>,
    ipam: Ipam,
}

fn load(raw: &Value, stdin: &[u8]) -> CniResult<Loaded> {
    let conf = VxlanConf::parse(stdin)?;
    let own = own_subnets(&conf, raw)?;
    let ipam = ipam_for(raw, &conf, &own)?;
    Ok(Loaded { conf, own, ipam })
}

/// DEL and GC: only what teardown reads — the bridge, background deletion, and the IPAM delegate (built
/// from this node's subnets) — with none of ADD's checks (peers, VNI, port, device names, subnets inside
/// the network, masquerade backend). A pod must stay deletable whatever its config says now, wherever the
/// reference's bridge DEL would still delete it; like the reference, a config whose fields do not even
/// decode is refused.
fn load_for_teardown(raw: &Value, stdin: &[u8]) -> CniResult<(AttachSpec, Ipam)> {
    let conf = VxlanConf::decode(stdin)?;
    let own = own_subnets(&conf, raw)?;
    let ipam = ipam_for(raw, &conf, &own)?;
    let spec = AttachSpec {
        bridge: BridgeSettings { name: conf.bridge.clone(), ..Default::default() },
        background_unlink: conf.delete_link_in_background,
        ..Default::default()
    };
    Ok((spec, ipam))
}

/// The pod attachment: the bridge as gateway with the overlay MTU, the cluster network via the gateway,
/// masquerade only for traffic leaving the cluster network.
fn spec(c: &VxlanConf, mtu: u32) -> CniResult<AttachSpec> {
    let masq = if c.ip_masq {
        let backend =
            Backend::parse(c.ip_masq_backend.as_deref()).map_err(|e| CniError::invalid_config(e.to_string()))?;
        Some(MasqSpec { backend, exempt: Some(c.network.clone()) })
    } else {
        None
    };
    Ok(AttachSpec {
        bridge: BridgeSettings { name: c.bridge.clone(), mtu: Some(mtu), vlan_filtering: false, promisc: false },
        mtu: Some(mtu),
        hairpin: c.hairpin_mode,
        is_gateway: true,
        is_default_gateway: c.is_default_gateway,
        masq,
        gateway_routes: c.network.clone(),
        background_unlink: c.delete_link_in_background,
        ..Default::default()
    })
}

struct Vxlan;

impl Plugin for Vxlan {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let l = load(&req.conf.raw, &req.stdin)?;
        if l.ipam.plugin == "host-local" {
            // host-local would refuse unknown CNI_ARGS only after the VTEP is set up: refuse them first, so a
            // refused ADD changes nothing on the node.
            req.args.check_known(&["IP"])?;
        }
        attach::add(req, Some(&l.ipam), async |node| {
            let (mtu, _) = node::prepare(node, &req.conf.name, &l.conf, &l.own, Trigger::Add).await?;
            spec(&l.conf, mtu)
        })
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // The VTEP and the peer entries stay: they serve every pod of the node.
        let (spec, ipam) = load_for_teardown(&req.conf.raw, &req.stdin)?;
        detach::del(req, &spec, Some(&ipam))
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let l = load(&req.conf.raw, &req.stdin)?;
        let prev = check::required_prev_result(req)?;
        let pod_ns = open_netns(&req.netns)?;
        let spec = block_on(async {
            let node = NetHandle::current()?;
            let pod = NetHandle::for_netns(&pod_ns)?;
            let mtu = node::check(&node, &l.conf, &l.own).await?;
            let spec = spec(&l.conf, mtu)?;
            check::check_in(req, &spec, prev, &node, &pod).await?;
            Ok::<_, CniError>(spec)
        })?;
        check::check_state(req, &spec, prev, Some(&l.ipam))
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let (spec, ipam) = load_for_teardown(&req.conf.raw, &req.stdin)?;
        detach::gc(req, &spec, Some(&ipam), valid)
    }

    /// Not ready (50) when the underlay is missing or the peer source is unreadable or invalid — not merely
    /// because no pod has created the VTEP yet: STATUS gates the first ADD.
    fn status(&self, req: &Request) -> CniResult<()> {
        let l = load(&req.conf.raw, &req.stdin)?;
        let not_ready = |e: CniError| CniError { code: code::NOT_AVAILABLE, ..e };
        node::peers(&l.conf).map_err(not_ready)?;
        block_on(async { node::underlay(&NetHandle::current()?, &l.conf).await }).map_err(not_ready)?;
        ipam::status(Some(&l.ipam), req)
    }
}

/// `vxlan sync <file>`: the vxlan plugin object of a conflist (or a single-plugin conf), with the list's
/// name and cniVersion injected as a runtime would. The file is the operator's: every shape it can have
/// gets a message, never a panic, and the network name is checked as a runtime would check it.
fn sync(path: &str) -> CniResult<Vec<String>> {
    let bytes = rcni::fs_private::read_regular(std::path::Path::new(path), rcni::overlay::peer::MAX_PEERS_FILE)
        .map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))?;
    let file: Value =
        serde_json::from_slice(&bytes).map_err(|e| CniError::new(code::DECODE, format!("{path}: {e}")))?;
    let obj = file.as_object().ok_or_else(|| {
        CniError::invalid_config(format!("{path} is not a JSON object"))
            .with_details("give a conflist or a single-plugin conf")
    })?;
    let mut plugin = match obj.get("plugins") {
        Some(Value::Array(list)) => list
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("vxlan"))
            .cloned()
            .ok_or_else(|| CniError::invalid_config(format!("{path} has no plugin of type vxlan")))?,
        Some(_) => {
            return Err(CniError::invalid_config(format!("{path}: \"plugins\" must be a list of plugin objects")));
        }
        None => file.clone(),
    };
    let name = match obj.get("name") {
        Some(Value::String(n)) if rcni::validate::network_name(n).is_ok() => n.clone(),
        other => {
            return Err(CniError::invalid_config(format!("{path}: invalid network name {other:?}"))
                .with_details(format!("\"name\": {}", rcni::validate::NameKind::Id.rule())));
        }
    };
    let plugin_obj = plugin
        .as_object_mut()
        .ok_or_else(|| CniError::invalid_config(format!("{path}: the vxlan plugin entry is not an object")))?;
    plugin_obj.insert("name".into(), json!(name));
    if let Some(v) = obj.get("cniVersion") {
        plugin_obj.insert("cniVersion".into(), v.clone());
    }
    let l = load(&plugin, &serde_json::to_vec(&plugin).expect("JSON value"))?;
    block_on(async {
        let node = NetHandle::current()?;
        Ok(node::prepare(&node, &name, &l.conf, &l.own, Trigger::Sync).await?.1)
    })
}

rcni::plugin_main!(run);

fn run() -> ! {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("CNI_COMMAND").is_none() && args.get(1).map(String::as_str) == Some("sync") {
        let Some(path) = args.get(2) else {
            eprintln!("usage: vxlan sync <conflist-or-conf>");
            std::process::exit(2);
        };
        match sync(path) {
            Ok(changes) if changes.is_empty() => println!("in sync"),
            Ok(changes) => changes.iter().for_each(|c| println!("{c}")),
            Err(e) => {
                eprintln!("vxlan sync: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(0);
    }
    skel::run(&format!("CNI vxlan plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Vxlan)
}
