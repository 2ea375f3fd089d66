//! A simulated node running `rcni-overlay` against an [`Etcd`](super::etcd::Etcd): its netns on the
//! [`Switch`] at 198.18.0.N, its files (subnet.env, state dir, logs, IPAM) in a temp dir, pods added
//! through bridge + host-local from its subnet.env (what the flannel plugin delegates to) or through the
//! kube-flannel conflist with cnitool. The agent's log is printed when a test fails.

use super::etcd::Proc;
use super::underlay::Switch;
use super::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, rcni_bin};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const PREFIX: &str = "/coreos.com/network";
pub const VTEP: &str = "flannel.1";

/// The agent binary (another workspace member: `cargo build --workspace` first, as scripts/test does);
/// `RCNI_OVERLAY_BIN` points elsewhere (bench/overlay/run uses the release build).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RCNI_OVERLAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("rcni-overlay");
    assert!(p.is_file(), "{} missing: build the workspace first (cargo build --workspace)", p.display());
    p
}

pub struct AgentNode {
    pub agent: Proc,
    pub pods: Vec<PodNs>,
    pub tool: Cnitool,
    _conf: NetConfDir,
    pub ns: NodeNs,
    pub dir: TempDir,
    pub i: usize,
    pub etcd_url: String,
    /// Flags added to (or overriding the defaults of) every start of the agent.
    pub extra: Vec<String>,
    logs: Vec<PathBuf>,
}

impl AgentNode {
    /// Node `i` (198.18.0.i) with its agent started.
    pub fn new(tag: &str, switch: &Switch, i: usize, etcd_url: &str) -> AgentNode {
        AgentNode::with_flags(tag, switch, i, etcd_url, &[])
    }

    pub fn with_flags(tag: &str, switch: &Switch, i: usize, etcd_url: &str, extra: &[&str]) -> AgentNode {
        let ns = NodeNs::new(&format!("{tag}-n{i}"));
        switch.plug(&ns, &format!("p{i}"), &format!("198.18.0.{i}/24"));
        let dir = TempDir::new(&format!("{tag}-n{i}"));
        let conf = NetConfDir::empty();
        let tool = Cnitool::new(&conf, &[rcni_bin("bridge").parent().unwrap().to_path_buf()]);
        let mut n = AgentNode {
            agent: Proc(None),
            pods: Vec::new(),
            tool,
            _conf: conf,
            ns,
            dir,
            i,
            etcd_url: etcd_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            logs: Vec::new(),
        };
        n.start_agent();
        n
    }

    pub fn agent_args(&self) -> Vec<String> {
        let (env, state) = (self.dir.join("subnet.env"), self.dir.join("state"));
        let args = [
            "--etcd-endpoints",
            &self.etcd_url,
            "--iface",
            "eth0",
            "--subnet-file",
            &env.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
            "--lease-ttl",
            "5s",
            "--resync",
            "5s",
        ];
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(self.extra.iter().cloned());
        v
    }

    pub fn start_agent(&mut self) {
        let log = self.dir.join(format!("agent-{}.log", super::unique_suffix()));
        self.agent = Proc::spawn(self.ns.name(), &agent_bin(), &self.agent_args(), &log);
        self.logs.push(log);
    }

    /// Everything the agent wrote to stderr, over all its starts.
    pub fn log(&self) -> String {
        self.logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }

    pub fn subnet_env(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("subnet.env")).ok()
    }

    pub fn env_var(&self, key: &str) -> String {
        let text = self.subnet_env().expect("subnet.env");
        let line =
            text.lines().find(|l| l.starts_with(&format!("{key}="))).unwrap_or_else(|| panic!("{key} in {text}"));
        line.split_once('=').unwrap().1.to_string()
    }

    /// The leased subnet (10.244.N.0/24) from FLANNEL_SUBNET (10.244.N.1/24).
    pub fn subnet(&self) -> String {
        let first = self.env_var("FLANNEL_SUBNET");
        let (ip, len) = first.split_once('/').unwrap();
        let mut o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        o[3] -= 1;
        format!("{}.{}.{}.{}/{len}", o[0], o[1], o[2], o[3])
    }

    /// The etcd key of this node's lease.
    pub fn key(&self) -> String {
        format!("{PREFIX}/subnets/{}", self.subnet().replace('/', "-"))
    }

    pub fn status(&self) -> Value {
        // Null until the agent wrote its first status.
        let out = self.ns.cmd(agent_bin()).arg("status").arg("--state-dir").arg(self.dir.join("state")).run();
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    }

    /// A pod through bridge + host-local with the network from subnet.env (the flannel plugin's delegate).
    pub fn add_pod(&mut self) -> String {
        let n = self.pods.len();
        let pod = PodNs::new(&format!("ovc-n{}p{n}", self.i));
        let conflist = json!({"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
            "ipMasq": false, "mtu": self.env_var("FLANNEL_MTU").parse::<u32>().unwrap(),
            "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet()}]],
                     "routes": [{"dst": self.env_var("FLANNEL_NETWORK")}], "dataDir": self.dir.join("ipam")}
        }]});
        std::fs::write(self.tool.netconf.join("10-cbr0.conflist"), conflist.to_string()).unwrap();
        let cid = format!("c{n}");
        self.tool.run_with(&self.ns, &["add", "cbr0", pod.path_str()], &[("CNI_CONTAINERID", &cid)]).ok();
        let ip = pod.addrs("eth0").into_iter().find(|a| a.family == "inet").unwrap().local;
        self.pods.push(pod);
        ip
    }

    /// A pod through conf/50-flannel.conflist (kube-flannel's) with cnitool: our flannel plugin reads the
    /// agent's subnet.env and hands the pod to bridge + host-local, then our portmap: every type of the list
    /// is rcni's (CNI_PATH holds only our build). Only the paths are moved into the node's temp dir.
    pub fn add_flannel_pod(&mut self) -> String {
        let n = self.pods.len();
        let pod = PodNs::new(&format!("ovf-n{}p{n}", self.i));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/50-flannel.conflist");
        let mut conf: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let flannel = &mut conf["plugins"][0];
        assert_eq!(flannel["type"], "flannel");
        flannel["subnetFile"] = json!(self.dir.join("subnet.env"));
        flannel["dataDir"] = json!(self.dir.join("flannel"));
        flannel["ipam"] = json!({"dataDir": self.dir.join("ipam")});
        std::fs::write(self.tool.netconf.join("50-flannel.conflist"), conf.to_string()).unwrap();
        let cid = format!("f{n}");
        self.tool.run_with(&self.ns, &["add", "cbr0", pod.path_str()], &[("CNI_CONTAINERID", &cid)]).ok();
        assert!(self.dir.join("flannel").join(&cid).is_file(), "the flannel plugin saved the delegate config");
        let ip = pod.addrs("eth0").into_iter().find(|a| a.family == "inet").unwrap().local;
        self.pods.push(pod);
        ip
    }

    pub fn vtep_ifindex(&self) -> u64 {
        self.ns.ip_json(&["link", "show", VTEP])[0]["ifindex"].as_u64().unwrap()
    }

    /// The VTEP's routes, permanent neighbours and FDB entries.
    pub fn dump(&self) -> String {
        let r = self.ns.ip(&["route", "show", "dev", VTEP]).ok().stdout;
        let n = self.ns.ip(&["neigh", "show", "dev", VTEP, "nud", "permanent"]).ok().stdout;
        let f = self.ns.cmd("bridge").args(["fdb", "show", "dev", VTEP]).run().ok().stdout;
        format!("{r}\n{n}\n{f}")
    }

    /// The VTEP's routes ("" while there is no VTEP).
    pub fn routes(&self) -> String {
        let out = self.ns.ip(&["route", "show", "dev", VTEP]);
        if out.success() { out.stdout } else { String::new() }
    }

    /// (tx packets, rx packets) of the VTEP.
    pub fn vtep_tx(&self) -> (u64, u64) {
        let v = self.ns.ip_json(&["-s", "link", "show", VTEP]);
        let s = &v[0]["stats64"];
        (s["tx"]["packets"].as_u64().unwrap(), s["rx"]["packets"].as_u64().unwrap())
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.agent.kill();
        if std::thread::panicking() {
            eprintln!("---- node {} agent log ----\n{}", self.i, self.log());
        }
    }
}
