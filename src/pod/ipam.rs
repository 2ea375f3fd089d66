//! The IPAM delegate of an attachment: which plugin, and the configuration it gets on stdin. Usually the
//! plugin's own stdin (the spec's rule); a plugin may hand it a generated one (vxlan builds host-local
//! ranges from its `subnet` shorthand), as long as ADD and DEL generate the same.

use crate::cni::CniResult;
use crate::cni::delegate;
use crate::cni::result::AddResult;
use crate::cni::skel::{Command, Request};

pub struct Ipam {
    pub plugin: String,
    pub stdin: Vec<u8>,
}

impl Ipam {
    /// The IPAM named in the request's config, fed the request's own stdin; None for an L2-only network.
    pub fn from_request(req: &Request) -> Option<Ipam> {
        req.conf.ipam.as_ref().map(|i| Ipam { plugin: i.plugin_type.clone(), stdin: req.stdin.clone() })
    }

    fn exec(&self, req: &Request, command: Command) -> CniResult<Vec<u8>> {
        let bin = delegate::find_plugin(&self.plugin, &req.path)?;
        delegate::exec(&bin, command, &self.stdin)
    }

    pub fn add(&self, req: &Request) -> CniResult<AddResult> {
        let out = self.exec(req, Command::Add)?;
        AddResult::from_slice(&out, &req.conf.cni_version)
            .map_err(|e| e.context(format!("IPAM plugin {} returned an unreadable result", self.plugin)))
    }

    pub fn del(&self, req: &Request) -> CniResult<()> {
        self.exec(req, Command::Del).map(|_| ())
    }

    pub fn check(&self, req: &Request) -> CniResult<()> {
        self.exec(req, Command::Check).map(|_| ())
    }

    pub fn gc(&self, req: &Request) -> CniResult<()> {
        self.exec(req, Command::Gc).map(|_| ())
    }

    pub fn status(&self, req: &Request) -> CniResult<()> {
        self.exec(req, Command::Status).map(|_| ())
    }
}

/// STATUS of an attachment-making plugin: its IPAM's STATUS, or ready when there is none.
pub fn status(ipam: Option<&Ipam>, req: &Request) -> CniResult<()> {
    ipam.map_or(Ok(()), |i| i.status(req))
}
