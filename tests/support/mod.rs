//! Test harness shared by every integration test (`mod support;`).
//!
//! Rules it enforces (see DEVELOPERS.md): every test works in its own throwaway "node" network
//! namespace ([`NodeNs`]) and "pod" namespaces ([`PodNs`]); all commands run via `ip netns exec`, never
//! in the host's netns; names are unique (`rcni-<tag>-<pid>-<n>`) so tests run in parallel; guards
//! remove what they created on drop, also when the test panics.
//!
//! ```ignore
//! let node = NodeNs::new("br");
//! let pod = PodNs::new("br-pod");
//! let conf = NetConfDir::new(&json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "loopback"}]}));
//! let tool = Cnitool::new(&conf, &[PathBuf::from("/usr/lib/cni")]);
//! let out = tool.run(&node, &["add", "n", pod.path_str()]).ok();
//! assert!(pod.link("lo").unwrap().is_up());
//! ```

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent;
pub mod etcd;
pub mod netns;
pub mod underlay;

/// How long one command may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique in this machine for this run: `rcni-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("rcni-{tag}-{}-{n}", std::process::id())
}

/// A short unique suffix (`<pid36><n36>`), for names with length limits (interfaces: 15 bytes).
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}{}", base36(std::process::id() as u64), base36(n as u64))
}

fn base36(mut n: u64) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(D[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// Fails the test early with a clear message when not root (namespaces need it).
pub fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "integration tests create network namespaces: run them as root");
}

// ------------------------------------------------------------------------------------------------
// Running commands

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; -1 if killed by a signal (or by the timeout).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub cmdline: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics (with the command, exit code, stdout and stderr) unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command failed.
    #[track_caller]
    pub fn fails(self) -> Output {
        assert!(!self.success(), "command unexpectedly succeeded: {self}");
        self
    }

    /// stdout parsed as JSON (panics with the output if it is not JSON).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` exited {}\n--- stdout\n{}\n--- stderr\n{}", self.cmdline, self.status, self.stdout, self.stderr)
    }
}

/// Inherited variables a test never wants to leak into a plugin or cnitool.
fn is_cni_var(k: &OsStr) -> bool {
    let k = k.to_string_lossy();
    k.starts_with("CNI_") || k == "NETCONFPATH" || k == "CAP_ARGS"
}

/// A command to run inside a namespace (`ip netns exec <ns> <program> <args>`), builder style.
/// Inherited `CNI_*`, `NETCONFPATH` and `CAP_ARGS` are removed; set what you need with [`env`].
///
/// [`env`]: NsCommand::env
pub struct NsCommand {
    netns: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl NsCommand {
    pub fn new(netns: &str, program: impl AsRef<OsStr>) -> NsCommand {
        NsCommand {
            netns: netns.to_string(),
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            timeout: COMMAND_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn stdin(mut self, data: impl AsRef<[u8]>) -> Self {
        self.stdin = data.as_ref().to_vec();
        self
    }

    pub fn stdin_json(self, v: &Value) -> Self {
        self.stdin(serde_json::to_vec(v).unwrap())
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs it and waits (at most the timeout; then it is killed and the status is -1).
    pub fn run(self) -> Output {
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(&self.netns).arg(&self.program).args(&self.args);
        for (k, _) in std::env::vars_os() {
            if is_cni_var(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // This process adopts and reaps the plugins' detached helpers (see run_with_timeout).
        let (reaper_k, reaper_v) = rcni::net::detached::reaper_env();
        cmd.env(reaper_k, reaper_v);
        let env_str: Vec<String> =
            self.env.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
        let cmdline = format!(
            "{}ip netns exec {} {} {}",
            if env_str.is_empty() { String::new() } else { format!("{} ", env_str.join(" ")) },
            self.netns,
            self.program.to_string_lossy(),
            self.args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        );
        run_with_timeout(cmd, &self.stdin, self.timeout, cmdline)
    }
}

fn run_with_timeout(mut cmd: Command, stdin: &[u8], timeout: Duration, cmdline: String) -> Output {
    // rcni's DEL leaves the veth deletion to a detached child: the test process adopts such children and
    // waits for them after every command, so a test sees the final kernel state.
    static ADOPT: std::sync::Once = std::sync::Once::new();
    ADOPT.call_once(|| rcni::net::detached::adopt_helpers().expect("become a subreaper"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run `{cmdline}`: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if Instant::now() > deadline {
            // Our own child (ip netns exec execs the program, so this is the program itself).
            let _ = child.kill();
            timed_out = true;
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let mut stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    if timed_out {
        stderr.push_str(&format!("\n[harness: killed after {timeout:?}]"));
    }
    rcni::net::detached::reap_helpers(true);
    Output { status: status.code().unwrap_or(-1), stdout, stderr, cmdline }
}

// ------------------------------------------------------------------------------------------------
// Kernel state, parsed from `ip -j`

/// A network interface (`ip -d -j link show`).
#[derive(Debug, Clone)]
pub struct Link {
    pub ifindex: u64,
    pub ifname: String,
    pub flags: Vec<String>,
    pub mtu: u64,
    pub operstate: String,
    /// MAC address.
    pub address: String,
    /// Name of the master device (a bridge), if enslaved.
    pub master: Option<String>,
    /// `linkinfo.info_kind`: "bridge", "veth", "vxlan", ...; None for plain devices like lo.
    pub kind: Option<String>,
    pub raw: Value,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    fn from_value(v: &Value) -> Link {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Link {
            ifindex: v["ifindex"].as_u64().unwrap_or(0),
            ifname: s("ifname").unwrap_or_default(),
            flags: v["flags"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            mtu: v["mtu"].as_u64().unwrap_or(0),
            operstate: s("operstate").unwrap_or_default(),
            address: s("address").unwrap_or_default(),
            master: s("master"),
            kind: v.pointer("/linkinfo/info_kind").and_then(Value::as_str).map(str::to_string),
            raw: v.clone(),
        }
    }
}

/// One address of an interface (`ip -j addr show`).
#[derive(Debug, Clone, PartialEq)]
pub struct Addr {
    /// "inet" or "inet6".
    pub family: String,
    pub local: String,
    pub prefixlen: u64,
    pub scope: String,
}

impl Addr {
    /// `10.0.0.2/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.local, self.prefixlen)
    }
}

/// One route (`ip -j route show`).
#[derive(Debug, Clone)]
pub struct Route {
    /// "default" or a CIDR / address.
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub protocol: Option<String>,
    pub scope: Option<String>,
    pub prefsrc: Option<String>,
    pub metric: Option<u64>,
    pub raw: Value,
}

impl Route {
    fn from_value(v: &Value) -> Route {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Route {
            dst: s("dst").unwrap_or_default(),
            gateway: s("gateway"),
            dev: s("dev"),
            protocol: s("protocol"),
            scope: s("scope"),
            prefsrc: s("prefsrc"),
            metric: v.get("metric").and_then(Value::as_u64),
            raw: v.clone(),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Namespaces

/// A throwaway network namespace, removed on drop by the kit's guard ([`netns::NsGuard`]). Use
/// [`NodeNs`] / [`PodNs`].
pub struct NetNs {
    guard: netns::NsGuard,
}

impl NetNs {
    /// Runs `f` on a thread that `setns`'d into this namespace (for library calls that work in the calling
    /// thread's netns, e.g. masquerade and spoof-check rules); the test's own thread never moves.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path().to_path_buf();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let fd = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    fn create(tag: &str) -> NetNs {
        require_root();
        NetNs { guard: netns::NsGuard::add(unique_name(tag)) }
    }

    pub fn name(&self) -> &str {
        self.guard.name()
    }

    /// `/run/netns/<name>`: what `CNI_NETNS` / cnitool take.
    pub fn path(&self) -> &Path {
        self.guard.path()
    }

    pub fn path_str(&self) -> &str {
        self.path().to_str().unwrap()
    }

    /// A command to run inside this namespace.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> NsCommand {
        NsCommand::new(self.name(), program)
    }

    /// `sh -c <script>` inside this namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd("sh").arg("-c").arg(script).run()
    }

    /// `ip <args>` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        self.cmd("ip").args(args).run()
    }

    /// `ip -j <args>` inside this namespace, parsed (a failing command panics).
    #[track_caller]
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let out = self.ip(&a).ok();
        if out.stdout.trim().is_empty() {
            return Value::Array(vec![]);
        }
        out.json()
    }

    /// All interfaces.
    pub fn links(&self) -> Vec<Link> {
        self.ip_json(&["-d", "link", "show"]).as_array().unwrap().iter().map(Link::from_value).collect()
    }

    /// The interface `name`, if it exists.
    pub fn link(&self, name: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.ifname == name)
    }

    /// Names of all interfaces.
    pub fn link_names(&self) -> Vec<String> {
        self.links().into_iter().map(|l| l.ifname).collect()
    }

    /// Addresses of interface `dev` (empty if it does not exist).
    pub fn addrs(&self, dev: &str) -> Vec<Addr> {
        let out = self.ip(&["-j", "addr", "show", "dev", dev]);
        if !out.success() || out.stdout.trim().is_empty() {
            return Vec::new();
        }
        let v = out.json();
        let mut addrs = Vec::new();
        for l in v.as_array().unwrap() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a.get("local").is_none() {
                    continue;
                }
                addrs.push(Addr {
                    family: a["family"].as_str().unwrap_or_default().to_string(),
                    local: a["local"].as_str().unwrap_or_default().to_string(),
                    prefixlen: a["prefixlen"].as_u64().unwrap_or(0),
                    scope: a["scope"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        addrs
    }

    /// Addresses of `dev` as CIDR strings (`10.0.0.2/24`), link-local IPv6 excluded.
    pub fn addr_cidrs(&self, dev: &str) -> Vec<String> {
        self.addrs(dev).into_iter().filter(|a| a.scope != "link").map(|a| a.cidr()).collect()
    }

    /// IPv4 routes of the main table.
    pub fn routes4(&self) -> Vec<Route> {
        self.routes_of(&["-4", "route", "show"])
    }

    /// IPv6 routes of the main table.
    pub fn routes6(&self) -> Vec<Route> {
        self.routes_of(&["-6", "route", "show"])
    }

    /// IPv4 and IPv6 routes of the main table.
    pub fn routes(&self) -> Vec<Route> {
        let mut r = self.routes4();
        r.extend(self.routes6());
        r
    }

    /// Routes of any `ip route show` variant, e.g. `&["-4", "route", "show", "table", "all"]`.
    pub fn routes_of(&self, args: &[&str]) -> Vec<Route> {
        self.ip_json(args).as_array().unwrap().iter().map(Route::from_value).collect()
    }

    /// The default route's gateway for a family ("-4" or "-6").
    pub fn default_gateway(&self, family: &str) -> Option<String> {
        let routes = if family == "-6" { self.routes6() } else { self.routes4() };
        routes.into_iter().find(|r| r.dst == "default").and_then(|r| r.gateway)
    }

    /// One `ping -c1 -W1 <ip>` from this namespace.
    pub fn ping(&self, ip: &str) -> bool {
        self.cmd("ping").args(["-c1", "-W1", ip]).run().success()
    }

    /// Pings until it answers or `timeout` passes (IPv6 DAD, bridge learning, ...).
    pub fn wait_ping(&self, ip: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping(ip) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A sysctl's value inside this namespace (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str) -> String {
        self.cmd("sysctl").args(["-n", key]).run().ok().stdout.trim().to_string()
    }

    /// Sets a sysctl inside this namespace.
    pub fn set_sysctl(&self, key: &str, value: &str) {
        self.cmd("sysctl").args(["-q", "-w", &format!("{key}={value}")]).run().ok();
    }
}

/// A simulated node: the namespace in which plugins and cnitool run (as the runtime runs them in the
/// host's netns). Its `lo` is up.
pub struct NodeNs(NetNs);

impl NodeNs {
    pub fn new(tag: &str) -> NodeNs {
        let ns = NetNs::create(tag);
        ns.ip(&["link", "set", "lo", "up"]).ok();
        NodeNs(ns)
    }

    /// Runs a plugin binary inside the node with the given env (e.g. from [`cni_env`]) and stdin.
    pub fn run_plugin(&self, binary: &Path, env: &[(String, String)], stdin: &[u8]) -> Output {
        self.cmd(binary).envs(env.iter().map(|(k, v)| (k, v))).stdin(stdin).run()
    }
}

impl Deref for NodeNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.0
    }
}

/// A pod's namespace, as a container runtime would create it: nothing in it but a `lo` that is down.
pub struct PodNs(NetNs);

impl PodNs {
    pub fn new(tag: &str) -> PodNs {
        PodNs(NetNs::create(tag))
    }
}

impl Deref for PodNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.0
    }
}

/// The CNI_* variables for invoking a plugin directly.
pub fn cni_env(
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    cni_path: &[PathBuf],
) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_IFNAME".into(), ifname.into()),
        ("CNI_PATH".into(), join_path(cni_path)),
    ]
}

pub fn join_path(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":")
}

/// Names of all network namespaces on the machine (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    netns::list("")
}

/// Namespaces of this test process whose tag starts with `tag` (should be empty after a test).
pub fn leftover_netns(tag: &str) -> Vec<String> {
    let prefix = format!("rcni-{tag}");
    let pid = format!("-{}-", std::process::id());
    netns_list().into_iter().filter(|n| n.starts_with(&prefix) && n.contains(&pid)).collect()
}

// ------------------------------------------------------------------------------------------------
// Files

/// A temporary directory, removed (recursively) on drop ([`tempfile::TempDir`] underneath).
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// In `base` (e.g. /dev/shm, for data that must not wait on the disk).
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        // 0755 as a plain mkdir would make: daemons some tests start drop root and read files in here.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", unique_name(tag)))
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir_in(base)
            .unwrap();
        TempDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
}

/// A NETCONFPATH directory holding configuration files.
pub struct NetConfDir {
    dir: TempDir,
}

impl NetConfDir {
    /// A directory with `conflist` written as `10-<name>.conflist`.
    pub fn new(conflist: &Value) -> NetConfDir {
        let d = NetConfDir::empty();
        let name = conflist["name"].as_str().expect("conflist needs a name");
        d.write(&format!("10-{name}.conflist"), conflist);
        d
    }

    pub fn empty() -> NetConfDir {
        NetConfDir { dir: TempDir::new("netconf") }
    }

    /// Writes `file_name` (pretty JSON) and returns its path.
    pub fn write(&self, file_name: &str, v: &Value) -> PathBuf {
        self.dir.write(file_name, serde_json::to_vec_pretty(v).unwrap())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A plugin directory for CNI_PATH built from symlinks, to mix binaries (ours and the reference's).
pub struct PluginDir {
    dir: TempDir,
}

impl PluginDir {
    pub fn new(plugins: &[(&str, PathBuf)]) -> PluginDir {
        let dir = TempDir::new("cnibin");
        for (name, target) in plugins {
            assert!(target.is_file(), "plugin binary {} missing", target.display());
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        PluginDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The repository (the root package's manifest directory).
pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/executables`: (kind, name) of everything rcni ships; kind "plugin" or "tool".
pub fn shipped_executables() -> Vec<(String, String)> {
    let out = Command::new(repo_dir().join("scripts/executables")).output().unwrap();
    assert!(out.status.success(), "scripts/executables failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, n) = l.split_once(' ').unwrap();
            (k.to_string(), n.to_string())
        })
        .collect()
}

/// Where Debian's containernetworking-plugins (the reference, 1.1.1) are installed.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// A reference plugin binary (panics if not installed: `scripts/deps` installs it).
pub fn reference_plugin(name: &str) -> PathBuf {
    let p = Path::new(REFERENCE_PLUGIN_DIR).join(name);
    assert!(p.is_file(), "{} missing: install containernetworking-plugins (scripts/deps)", p.display());
    p
}

/// One of this package's binaries, built by cargo for the integration tests.
pub fn rcni_bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "bridge" => env!("CARGO_BIN_EXE_bridge"),
        "vxlan" => env!("CARGO_BIN_EXE_vxlan"),
        "loopback" => env!("CARGO_BIN_EXE_loopback"),
        "host-local" => env!("CARGO_BIN_EXE_host-local"),
        "flannel" => env!("CARGO_BIN_EXE_flannel"),
        "cnitool" => env!("CARGO_BIN_EXE_cnitool"),
        "tuning" => env!("CARGO_BIN_EXE_tuning"),
        "bandwidth" => env!("CARGO_BIN_EXE_bandwidth"),
        "portmap" => env!("CARGO_BIN_EXE_portmap"),
        "firewall" => env!("CARGO_BIN_EXE_firewall"),
        other => panic!("no binary named {other} in this package"),
    })
}

/// Runs our cnitool inside a node with a NETCONFPATH, a CNI_PATH and a private cache directory.
pub struct Cnitool {
    pub netconf: PathBuf,
    pub cni_path: Vec<PathBuf>,
    pub cache: TempDir,
    /// Extra variables for every run (CNI_IFNAME, CNI_ARGS, CAP_ARGS, ...).
    pub env: Vec<(String, String)>,
}

impl Cnitool {
    pub fn new(netconf: &NetConfDir, cni_path: &[PathBuf]) -> Cnitool {
        Cnitool {
            netconf: netconf.path().to_path_buf(),
            cni_path: cni_path.to_vec(),
            cache: TempDir::new("cnicache"),
            env: Vec::new(),
        }
    }

    /// Adds a variable for every later run.
    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    /// `cnitool <args>` inside `node`, with the base env plus `extra`.
    pub fn run_with(&self, node: &NodeNs, args: &[&str], extra: &[(&str, &str)]) -> Output {
        node.cmd(rcni_bin("cnitool"))
            .args(args)
            .env("NETCONFPATH", &self.netconf)
            .env("CNI_PATH", join_path(&self.cni_path))
            .env("CNI_CACHE_DIR", self.cache.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .run()
    }

    pub fn run(&self, node: &NodeNs, args: &[&str]) -> Output {
        self.run_with(node, args, &[])
    }

    /// `<cache>/results/<network>-<containerID>-<ifname>`.
    pub fn cache_file(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.cache.join("results").join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Files in `<cache>/results` (sorted).
    pub fn cache_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cache.join("results"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

// ------------------------------------------------------------------------------------------------
// Plugins that may be killed at any moment (kill matrix, scale)

/// A plugin process started inside a namespace (`setns` between fork and exec, no `ip netns exec` in
/// between, so the time since spawn is the plugin's own), in a process group of its own: [`kill`] reaches
/// the plugin and every process it started that is still in its group (an exec'd IPAM plugin), as a
/// runtime's timeout would. rcni's detached DEL helper has its own session and is not reached.
///
/// [`kill`]: Spawned::kill
pub struct Spawned {
    child: std::process::Child,
    pgid: i32,
    started: Instant,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    killed: bool,
    cmdline: String,
}

/// How a [`Spawned`] process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub output: Output,
    /// It was killed by [`Spawned::kill`] (before it exited by itself).
    pub killed: bool,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl NetNs {
    /// Starts `program` inside this namespace with `env` (inherited `CNI_*` removed) and `stdin`; see
    /// [`Spawned`].
    pub fn spawn(&self, program: &Path, env: &[(String, String)], stdin: &[u8]) -> Spawned {
        use std::os::unix::process::CommandExt;
        static ADOPT: std::sync::Once = std::sync::Once::new();
        ADOPT.call_once(|| rcni::net::detached::adopt_helpers().expect("become a subreaper"));
        let ns = std::fs::File::open(self.path()).expect("open netns");
        let ns_fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if is_cni_var(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        // Adopted and reaped here (wait_for_detached_helpers).
        let (reaper_k, reaper_v) = rcni::net::detached::reaper_env();
        cmd.env(reaper_k, reaper_v);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: only async-signal-safe syscalls between fork and exec; `ns` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 || libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let cmdline = format!(
            "{} ip netns exec {} {}",
            env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            self.name(),
            program.display()
        );
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run `{cmdline}`: {e}"));
        drop(ns);
        let pgid = child.id() as i32;
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        // Small enough for the pipe buffer: written at once, and closed so the plugin sees EOF.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let stdout = Some(read(Box::new(child.stdout.take().unwrap())));
        let stderr = Some(read(Box::new(child.stderr.take().unwrap())));
        Spawned { child, pgid, started, stdout, stderr, killed: false, cmdline }
    }
}

impl Spawned {
    /// Time since spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// SIGKILL to the process group, unless the plugin has already exited by itself.
    pub fn kill(&mut self) {
        if self.child.try_wait().expect("wait for plugin").is_some() {
            return;
        }
        // The leader is not reaped yet (try_wait said so), so the group id cannot have been reused.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        self.killed = true;
    }

    /// Waits for the plugin (killing it after [`COMMAND_TIMEOUT`]), then reaps what was left of its group
    /// (children orphaned by the kill are adopted by the test process, a subreaper).
    pub fn wait(self) -> Finished {
        self.wait_at_most(COMMAND_TIMEOUT)
    }

    /// [`Spawned::wait`] with another deadline (benchmarks that report a timeout as their result).
    pub fn wait_at_most(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for plugin") {
                break s;
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(-self.pgid, libc::SIGKILL);
                }
                timed_out = true;
                break self.child.wait().expect("wait for killed plugin");
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let elapsed = self.started.elapsed();
        let reap_deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut st = 0;
            let r = unsafe { libc::waitpid(-self.pgid, &mut st, libc::WNOHANG) };
            if r > 0 {
                continue;
            }
            if r < 0 || Instant::now() > reap_deadline {
                break; // ECHILD: nothing of the group is left
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let stdout = String::from_utf8_lossy(&self.stdout.take().unwrap().join().unwrap()).into_owned();
        let mut stderr = String::from_utf8_lossy(&self.stderr.take().unwrap().join().unwrap()).into_owned();
        if timed_out {
            stderr.push_str(&format!("\n[harness: killed after {limit:?}]"));
        }
        let output = Output { status: status.code().unwrap_or(-1), stdout, stderr, cmdline: self.cmdline.clone() };
        Finished { output, killed: self.killed && status.code().is_none(), elapsed }
    }
}

/// Waits for rcni's detached DEL helpers this process adopted (their veth deletions are then complete).
pub fn wait_for_detached_helpers() {
    rcni::net::detached::reap_helpers(true);
}

/// A small seeded PRNG (splitmix64) for randomized tests: print the seed, rerun with it.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from `var` if set, else from the clock.
    pub fn seed_from_env(var: &str) -> u64 {
        match std::env::var(var) {
            Ok(s) => s.parse().unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
            Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `0..=max`.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.below(max.as_nanos() as u64 + 1))
    }
}

/// Every file and directory under `root` (relative paths, sorted), `root` itself excluded.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// host-local reservations in a dataDir: (network, IP, owner line "containerID ifname").
pub fn reservations(data_dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
        if !net.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let network = net.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                let owner = std::fs::read_to_string(f.path()).unwrap_or_default().replace("\r\n", " ");
                out.push((network.clone(), name, owner));
            }
        }
    }
    out.sort();
    out
}

/// host-local's files in a dataDir's network directories other than `lock` and `last_reserved_ip.*`: the
/// reservations (and anything else left behind).
pub fn ip_files(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n != "lock" && !n.starts_with("last_reserved_ip") {
                out.push(n);
            }
        }
    }
    out
}

impl NetNs {
    /// `nft list ruleset` inside this namespace (text).
    pub fn nft_ruleset(&self) -> String {
        self.cmd("nft").args(["list", "ruleset"]).run().ok().stdout
    }

    /// Names of the veth devices in this namespace.
    pub fn veth_names(&self) -> Vec<String> {
        self.links().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).map(|l| l.ifname).collect()
    }
}

/// What `nft -j list ruleset` shows in a namespace, counted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NftSummary {
    /// Set elements per `family table set`.
    pub elements: std::collections::BTreeMap<String, usize>,
    /// Rules per `family table chain`.
    pub rules: std::collections::BTreeMap<String, usize>,
    /// Every chain, as `family table chain`.
    pub chains: Vec<String>,
}

impl NftSummary {
    pub fn total_elements(&self) -> usize {
        self.elements.values().sum()
    }

    /// Elements of the sets whose `family table set` contains `part` (rcni's pod sets: `" pods"`).
    pub fn elements_of_sets_containing(&self, part: &str) -> usize {
        self.elements.iter().filter(|(k, _)| k.contains(part)).map(|(_, n)| n).sum()
    }

    /// Chains whose name contains `part`.
    pub fn chains_containing(&self, part: &str) -> Vec<String> {
        self.chains.iter().filter(|c| c.contains(part)).cloned().collect()
    }
}

impl NetNs {
    pub fn nft_summary(&self) -> NftSummary {
        let v = self.cmd("nft").args(["-j", "list", "ruleset"]).run().ok().json();
        let mut s = NftSummary::default();
        let key = |o: &Value, name: &str| {
            format!(
                "{} {} {}",
                o["family"].as_str().unwrap_or(""),
                o["table"].as_str().unwrap_or(""),
                o[name].as_str().unwrap_or("")
            )
        };
        for item in v["nftables"].as_array().into_iter().flatten() {
            if let Some(set) = item.get("set") {
                let n = set.get("elem").and_then(Value::as_array).map_or(0, |a| a.len());
                *s.elements.entry(key(set, "name")).or_default() += n;
            }
            if let Some(rule) = item.get("rule") {
                *s.rules.entry(key(rule, "chain")).or_default() += 1;
            }
            if let Some(chain) = item.get("chain") {
                s.chains.push(key(chain, "name"));
            }
        }
        s
    }
}

/// `p`-th percentile (0–100) of `samples` (nearest rank; panics when empty).
pub fn percentile(samples: &[Duration], p: u32) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    let rank = ((p as usize * v.len()).div_ceil(100)).clamp(1, v.len());
    v[rank - 1]
}

/// Runs `f(i)` for every `i` in `0..n` on `workers` threads (each takes the next index), results in order.
pub fn parallel_map<T: Send>(n: usize, workers: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<T>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let v = f(i);
                    *slots[i].lock().unwrap() = Some(v);
                }
            });
        }
    });
    slots.into_iter().map(|m| m.into_inner().unwrap().expect("every index ran")).collect()
}
