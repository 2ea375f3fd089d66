//! The bridge plugin: pods on a Linux bridge in the node, each through a veth pair, addresses from IPAM,
//! the bridge as gateway, masquerade for traffic leaving the pod subnet. Drop-in for the reference `bridge`.
//! See plugins/bridge/README.md for every field and how we differ from the reference.

mod add;
mod check;
mod config;
mod del;

use config::BridgeConf;
use rcni::cni::result::AddResult;
use rcni::cni::skel::{self, Attachment, Plugin, Request};
use rcni::cni::{CniError, CniResult, delegate};
use rcni::net::Mac;

/// The settings of one invocation: the parsed config plus what the runtime passed.
pub struct Invocation<'a> {
    pub req: &'a Request,
    pub conf: BridgeConf,
    /// The IPAM plugin to delegate to; None for an L2-only network.
    pub ipam: Option<String>,
}

impl<'a> Invocation<'a> {
    fn new(req: &'a Request) -> CniResult<Invocation<'a>> {
        let ipam = req.conf.ipam.as_ref().map(|i| i.plugin_type.clone());
        let conf = BridgeConf::parse(&req.stdin, ipam.is_some())?;
        // The bridge knows MAC= in CNI_ARGS (plus IgnoreUnknown and K8S_*), like the reference.
        req.args.check_known(&["MAC"])?;
        Ok(Invocation { req, conf, ipam })
    }

    /// The container interface's MAC: runtimeConfig.mac, then args.cni.mac, then CNI_ARGS MAC (the
    /// reference's precedence).
    pub fn container_mac(&self) -> CniResult<Option<Mac>> {
        let conf = &self.req.conf;
        let from_json = |v: Option<&serde_json::Value>| v.and_then(|m| m.as_str()).map(str::to_string);
        let chosen = from_json(conf.runtime_config.get("mac"))
            .or_else(|| from_json(conf.cni_arg("mac")))
            .or_else(|| self.req.args.get("MAC").map(str::to_string));
        chosen
            .map(|s| {
                s.parse::<Mac>().map_err(|_| {
                    CniError::invalid_config(format!("invalid MAC address {s:?}"))
                        .with_details("write it as six hex bytes, e.g. 02:42:ac:11:00:02")
                })
            })
            .transpose()
    }

    pub fn masq_backend(&self) -> CniResult<rcni::net::masq::Backend> {
        rcni::net::masq::Backend::parse(self.conf.ip_masq_backend.as_deref())
            .map_err(|e| CniError::invalid_config(e.to_string()))
    }
}

struct Bridge;

impl Plugin for Bridge {
    fn add(&self, req: &Request) -> CniResult<AddResult> {
        add::add(&Invocation::new(req)?)
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        del::del(&Invocation::new(req)?)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        check::check(&Invocation::new(req)?)
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        del::gc(&Invocation::new(req)?, valid)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let inv = Invocation::new(req)?;
        match &inv.ipam {
            Some(ipam) => delegate::status(ipam, req),
            None => Ok(()),
        }
    }
}

fn main() {
    skel::run(&format!("CNI bridge plugin (rcni {})", env!("CARGO_PKG_VERSION")), &Bridge)
}
