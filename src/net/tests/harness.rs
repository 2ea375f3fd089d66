use std::process::Command;

use super::kit::NsGuard;
use crate::net::{NetHandle, Netns};

/// A named network namespace for a unit test, removed on drop by the test kit's guard.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
    // Last: the namespace is deleted after its handle is closed.
    _guard: NsGuard,
}

impl TestNs {
    /// `rcni-net-<tag>-<pid>`; `tag` must be unique per test (tests run in parallel threads of one pid).
    pub fn new(tag: &str) -> TestNs {
        let name = format!("rcni-net-{tag}-{}", std::process::id());
        assert!(name.len() < 64, "netns name too long: {name}");
        // A leftover from an aborted earlier run with a recycled pid: remove it first.
        super::kit::delete(&name);
        let guard = NsGuard::add(name.clone());
        let ns = Netns::open(guard.path()).expect("open test netns");
        TestNs { name, ns, _guard: guard }
    }

    pub fn handle(&self) -> NetHandle {
        NetHandle::for_netns(&self.ns).expect("netlink handle for test netns")
    }

    /// Run `ip <args>` inside this namespace (only to cross-check what we did, or to set up fixtures).
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.name]).args(args).output().expect("run ip");
        assert!(out.status.success(), "ip -n {} {:?}: {}", self.name, args, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Root tests need CAP_NET_ADMIN and CAP_SYS_ADMIN (`ip netns add` mounts).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Tests that need root fail without it (never pass without having run).
macro_rules! require_root {
    () => {
        assert!(
            crate::net::tests::harness::is_root(),
            "this test creates network namespaces: run the suite as root (scripts/test)"
        );
    };
}
pub(crate) use require_root;

use crate::net::{VethEnd, VethSpec};

/// A node namespace and a pod namespace joined by a veth: `host_if` in node, `eth0` in pod, both up.
/// Returns (node handle, pod handle, host index, eth0 index).
pub async fn node_pod_pair(node: &TestNs, pod: &TestNs, host_if: &str) -> (NetHandle, NetHandle, u32, u32) {
    let nh = node.handle();
    let ph = pod.handle();
    let host = nh
        .create_veth(&VethSpec {
            host: VethEnd { name: host_if.into(), ..Default::default() },
            host_up: true,
            host_master: None,
            peer: VethEnd { name: "eth0".into(), ..Default::default() },
            peer_ns: &pod.ns,
        })
        .await
        .expect("create veth");
    let eth0 = ph.require_link("eth0").await.expect("eth0 in pod");
    ph.set_up(eth0.index).await.expect("eth0 up");
    (nh, ph, host.index, eth0.index)
}
