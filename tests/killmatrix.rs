//! Kill matrix: the bridge plugin (host-local IPAM in-process, or exec'd so that the IPAM child dies too) is
//! SIGKILLed at a random moment of ADD or of DEL, then DEL is retried as a runtime does until it succeeds.
//! After every round nothing of the pod may be left in the node: no reservation (host-local files), no veth,
//! no nft element or rule (masquerade and macspoofchk), no stray file in the dataDir; two live pods added
//! before the first round keep their addresses, rules and connectivity; later ADDs work and never get a
//! live pod's address.
//!
//! The kill delays are spread over the whole run of the plugin: a normal run of each (IPAM mode, command) is
//! timed first (then the estimate follows the latest uninterrupted ADDs), and the delay is uniform in
//! [0, 1.25 × the expected duration] (the tail lets some runs finish).
//!
//! CI runs a short matrix per IPAM mode. The long one (1000 rounds, both modes mixed):
//!
//! ```text
//! RCNI_KILL_ROUNDS=1000 cargo test --test killmatrix -- --ignored --nocapture
//! ```
//!
//! Every run prints its seed; `RCNI_KILL_SEED=<seed>` replays the same choices and kill points (as fractions
//! of the expected run: the absolute delays follow the machine's load).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{NodeNs, PluginDir, PodNs, Rng, Spawned, TempDir, cni_env, rcni_bin};

const NETWORK: &str = "km";
const BRIDGE: &str = "kmbr0";
const GATEWAY: &str = "10.77.0.1";
const LIVE_PODS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum IpamMode {
    InProcess,
    Exec,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Add,
    Del,
}

struct Matrix {
    node: NodeNs,
    data: TempDir,
    plugins: PluginDir,
    conf: Value,
    seed: u64,
    /// (container ID, pod, IP) of the pods that live through the whole matrix.
    live: Vec<(String, PodNs, String)>,
    /// Node state with only the live pods, which every round must return to.
    baseline: NodeState,
}

#[derive(Debug, PartialEq)]
struct NodeState {
    veths: Vec<String>,
    reservations: Vec<(String, String, String)>,
    ruleset: String,
}

impl Matrix {
    fn new(tag: &str, seed: u64) -> Matrix {
        let node = NodeNs::new(tag);
        let data = TempDir::new(tag);
        let plugins = PluginDir::new(&[("bridge", rcni_bin("bridge")), ("host-local", rcni_bin("host-local"))]);
        let conf = json!({
            "cniVersion": "1.1.0", "name": NETWORK, "type": "bridge", "bridge": BRIDGE,
            "isGateway": true, "ipMasq": true, "macspoofchk": true,
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": data.path().to_string_lossy()}
        });
        let mut m = Matrix {
            node,
            data,
            plugins,
            conf,
            seed,
            live: Vec::new(),
            baseline: NodeState { veths: vec![], reservations: vec![], ruleset: String::new() },
        };
        for i in 0..LIVE_PODS {
            let pod = PodNs::new("km-live");
            let cid = format!("km-live-{i}");
            let r = m.run(IpamMode::InProcess, "ADD", &cid, &pod, None).output.ok().json();
            let ip = pod_ip(&r);
            m.live.push((cid, pod, ip));
        }
        m.baseline = m.state();
        assert_eq!(m.baseline.reservations.len(), LIVE_PODS, "{:?}", m.baseline);
        assert_eq!(m.baseline.veths.len(), LIVE_PODS, "{:?}", m.baseline);
        m
    }

    fn env(&self, mode: IpamMode, command: &str, cid: &str, pod: &PodNs) -> Vec<(String, String)> {
        let mut env = cni_env(command, cid, pod.path_str(), "eth0", &[self.plugins.path().to_path_buf()]);
        env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
        if mode == IpamMode::Exec {
            env.push(("RCNI_IPAM_EXEC".into(), "1".into()));
        }
        env
    }

    fn stdin(&self, prev: Option<&Value>) -> Vec<u8> {
        let mut conf = self.conf.clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        serde_json::to_vec(&conf).unwrap()
    }

    fn spawn(&self, mode: IpamMode, command: &str, cid: &str, pod: &PodNs, prev: Option<&Value>) -> Spawned {
        self.node.spawn(&rcni_bin("bridge"), &self.env(mode, command, cid, pod), &self.stdin(prev))
    }

    fn run(&self, mode: IpamMode, command: &str, cid: &str, pod: &PodNs, prev: Option<&Value>) -> support::Finished {
        self.spawn(mode, command, cid, pod, prev).wait()
    }

    /// DEL until it succeeds, as a runtime retries a failed DEL (a few times, with a pause).
    fn del_until_ok(&self, mode: IpamMode, cid: &str, pod: &PodNs, prev: Option<&Value>, ctx: &str) {
        let mut outs = Vec::new();
        for _ in 0..10 {
            let f = self.run(mode, "DEL", cid, pod, prev);
            if f.output.success() {
                support::wait_for_detached_helpers();
                return;
            }
            outs.push(f.output.to_string());
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{ctx}: DEL never succeeded:\n{}", outs.join("\n"));
    }

    fn state(&self) -> NodeState {
        NodeState {
            veths: sorted(self.node.veth_names()),
            reservations: support::reservations(self.data.path()),
            ruleset: self.node.nft_ruleset(),
        }
    }

    /// The dataDir holds the network directory with its lock, `last_reserved_ip.0` (overwritten in place:
    /// no temporary file), the reservations in `reservations`, and the owner index beside it. Nothing else.
    fn assert_data_dir(&self, reservations: &[(String, String, String)], ctx: &str) {
        let mut allowed: Vec<String> =
            ["km", "km/lock", "km/last_reserved_ip.0"].iter().map(|s| s.to_string()).collect();
        allowed.push(format!(".rcni-index.{NETWORK}"));
        allowed.extend(reservations.iter().map(|(n, ip, _)| format!("{n}/{ip}")));
        let stray: Vec<String> =
            support::files_under(self.data.path()).into_iter().filter(|f| !allowed.contains(f)).collect();
        assert!(stray.is_empty(), "{ctx}: stray files in the dataDir: {stray:?}");
    }

    /// Everything of the round's pod is gone: the node is back at the baseline.
    fn assert_clean(&self, pod: &PodNs, ctx: &str) {
        let links = pod.link_names();
        assert_eq!(links, vec!["lo".to_string()], "{ctx}: links left in the pod");
        let now = self.state();
        assert_eq!(now.veths, self.baseline.veths, "{ctx}: veths in the node");
        assert_eq!(now.reservations, self.baseline.reservations, "{ctx}: host-local reservations");
        if now.ruleset != self.baseline.ruleset {
            panic!(
                "{ctx}: nft ruleset differs from the baseline\n--- baseline\n{}\n--- now\n{}",
                self.baseline.ruleset, now.ruleset
            );
        }
        self.assert_data_dir(&self.baseline.reservations, ctx);
    }

    /// One round; returns whether the plugin was really killed (it may finish before the delay), and the
    /// duration of the round's uninterrupted ADD, if it had one.
    fn round(
        &self,
        rng: &mut Rng,
        round: usize,
        mode: IpamMode,
        phase: Phase,
        max_delay: Duration,
    ) -> (bool, Option<Duration>) {
        // A fraction of the expected run, so that a replay repeats the relative kill points.
        let at = rng.below(1_000_000) as f64 / 1e6;
        let delay = max_delay.mul_f64(at);
        let ctx = format!(
            "seed {} round {round} ({mode:?} IPAM, kill in {phase:?} after {delay:?} = {at:.3} of {max_delay:?}; \
             replay: RCNI_KILL_SEED={})",
            self.seed, self.seed
        );
        let pod = PodNs::new("km-p");
        let cid = format!("km-{round}");
        let live_ips: Vec<&str> = self.live.iter().map(|(_, _, ip)| ip.as_str()).collect();
        let mut full_add = None;
        let (killed, prev) = match phase {
            Phase::Add => {
                let f = self.kill_after(self.spawn(mode, "ADD", &cid, &pod, None), delay);
                if !f.killed {
                    assert!(f.output.success(), "{ctx}: ADD failed without a kill: {}", f.output);
                }
                let prev = f.output.success().then(|| f.output.json());
                (f.killed, prev)
            }
            Phase::Del => {
                let r = self.run(mode, "ADD", &cid, &pod, None);
                assert!(r.output.success(), "{ctx}: ADD failed: {}", r.output);
                full_add = Some(r.elapsed);
                let r = r.output.json();
                let f = self.kill_after(self.spawn(mode, "DEL", &cid, &pod, Some(&r)), delay);
                if !f.killed {
                    assert!(f.output.success(), "{ctx}: DEL failed without a kill: {}", f.output);
                }
                (f.killed, Some(r))
            }
        };
        if let Some(r) = &prev {
            let ip = pod_ip(r);
            assert!(!live_ips.contains(&ip.as_str()), "{ctx}: ADD got the address {ip} of a live pod");
        }
        self.del_until_ok(mode, &cid, &pod, prev.as_ref(), &ctx);
        self.assert_clean(&pod, &ctx);
        (killed, full_add)
    }

    fn kill_after(&self, mut p: Spawned, delay: Duration) -> support::Finished {
        let left = delay.saturating_sub(p.elapsed());
        std::thread::sleep(left);
        p.kill();
        p.wait()
    }

    /// Median duration of a normal ADD and DEL in `mode`.
    fn calibrate(&self, mode: IpamMode) -> (Duration, Duration) {
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..5 {
            let pod = PodNs::new("km-cal");
            let cid = format!("km-cal-{i}");
            let a = self.run(mode, "ADD", &cid, &pod, None);
            adds.push(a.elapsed);
            let r = a.output.ok().json();
            let d = self.run(mode, "DEL", &cid, &pod, Some(&r));
            dels.push(d.elapsed);
            d.output.ok();
            support::wait_for_detached_helpers();
            self.assert_clean(&pod, &format!("calibration {mode:?} {i}"));
        }
        (median(adds), median(dels))
    }

    /// After the matrix: fresh pods get distinct addresses (none a live pod's) and reach each other and the
    /// live pods; after their DEL and a GC that keeps only the live pods, the node is at the baseline again.
    fn finish(&self) {
        let pods: Vec<PodNs> = (0..3).map(|_| PodNs::new("km-end")).collect();
        let mut ips: Vec<String> = self.live.iter().map(|(_, _, ip)| ip.clone()).collect();
        for (i, pod) in pods.iter().enumerate() {
            let r = self.run(IpamMode::InProcess, "ADD", &format!("km-end-{i}"), pod, None).output.ok().json();
            let ip = pod_ip(&r);
            assert!(!ips.contains(&ip), "fresh ADD {i} got {ip}, already in use: {ips:?}");
            ips.push(ip);
        }
        for (i, pod) in pods.iter().enumerate() {
            assert!(pod.wait_ping(GATEWAY, Duration::from_secs(3)), "a fresh pod reaches the gateway");
            // Not its own address: the pod's lo is down, as a runtime leaves it without the loopback plugin.
            for ip in ips.iter().filter(|ip| **ip != ips[LIVE_PODS + i]) {
                assert!(pod.wait_ping(ip, Duration::from_secs(3)), "fresh pod {i} reaches {ip}");
            }
        }
        for (i, pod) in pods.iter().enumerate() {
            self.del_until_ok(IpamMode::InProcess, &format!("km-end-{i}"), pod, None, "final DEL");
        }
        let valid: Vec<Value> =
            self.live.iter().map(|(cid, _, _)| json!({"containerID": cid, "ifname": "eth0"})).collect();
        let mut gc = self.conf.clone();
        gc["cni.dev/valid-attachments"] = Value::Array(valid);
        let env = cni_env("GC", "", "", "", &[self.plugins.path().to_path_buf()]);
        self.node.run_plugin(&rcni_bin("bridge"), &env, gc.to_string().as_bytes()).ok();
        assert_eq!(self.state(), self.baseline, "after the final DELs and GC");
        let gone: Vec<String> = support::files_under(self.data.path())
            .into_iter()
            .filter(|f| f.contains(".tmp") || f.contains(".rcni-tmp."))
            .collect();
        assert!(gone.is_empty(), "GC removes temporary files: {gone:?}");
        for (_, pod, _) in &self.live {
            assert!(pod.ping(GATEWAY), "a live pod still reaches the gateway");
        }
    }
}

fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap().to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `rounds` rounds with IPAM modes drawn from `modes`; returns (rounds killed, rounds finished first).
fn run_matrix(tag: &str, rounds: usize, modes: &[IpamMode]) -> (usize, usize) {
    let seed = Rng::seed_from_env("RCNI_KILL_SEED");
    eprintln!("killmatrix {tag}: seed {seed}, {rounds} rounds (replay: RCNI_KILL_SEED={seed})");
    let mut rng = Rng::new(seed);
    let m = Matrix::new(tag, seed);
    // Per mode: the durations of the latest uninterrupted ADDs, and DEL's duration relative to ADD's. The
    // machine's load changes during a run, so the estimate follows the ADDs the rounds make anyway (a DEL
    // is taken to scale with them).
    let mut estimates = Vec::new();
    for &mode in modes {
        let (add, del) = m.calibrate(mode);
        eprintln!("killmatrix {tag}: {mode:?} IPAM: normal ADD {add:?}, DEL {del:?}");
        estimates.push((mode, vec![add; 3], del.as_secs_f64() / add.as_secs_f64()));
    }
    let started = Instant::now();
    let (mut killed, mut finished) = (0, 0);
    for round in 0..rounds {
        let (mode, recent, del_ratio) = &mut estimates[rng.below(modes.len() as u64) as usize];
        let phase = if rng.below(2) == 0 { Phase::Add } else { Phase::Del };
        let add = median(recent.clone());
        let normal = if phase == Phase::Add { add } else { add.mul_f64(*del_ratio) };
        let (was_killed, full_add) = m.round(&mut rng, round, *mode, phase, normal * 5 / 4);
        if let Some(d) = full_add {
            recent.push(d);
            if recent.len() > 7 {
                recent.remove(0);
            }
        }
        if was_killed {
            killed += 1;
        } else {
            finished += 1;
        }
        if (round + 1) % 100 == 0 {
            eprintln!("killmatrix {tag}: {} rounds clean, {:.0}s", round + 1, started.elapsed().as_secs_f64());
        }
    }
    m.finish();
    eprintln!(
        "killmatrix {tag}: {rounds} rounds ({killed} killed, {finished} finished before the kill), 0 leaks, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // A sanity check that the delays land inside runs at all (the printed counts show how many did).
    assert!(killed > 0, "no round killed the plugin (seed {seed})");
    (killed, finished)
}

#[test]
fn kill_bridge_with_in_process_ipam() {
    run_matrix("km-inproc", 30, &[IpamMode::InProcess]);
}

#[test]
fn kill_bridge_and_its_exec_d_ipam() {
    run_matrix("km-exec", 30, &[IpamMode::Exec]);
}

/// The long matrix: `RCNI_KILL_ROUNDS` rounds (default 1000), both IPAM modes mixed.
#[test]
#[ignore = "long: RCNI_KILL_ROUNDS=1000 cargo test --test killmatrix -- --ignored --nocapture"]
fn kill_matrix_long() {
    let rounds = std::env::var("RCNI_KILL_ROUNDS").map(|s| s.parse().expect("RCNI_KILL_ROUNDS")).unwrap_or(1000);
    run_matrix("km-long", rounds, &[IpamMode::InProcess, IpamMode::Exec]);
}

/// A runtime that does not reap orphans: PID 1 of its own pid namespace, not an init rcni knows, not naming
/// itself in `RCNI_HELPER_REAPER`. Its bridge ADD and DEL must not leave a detached helper behind (it would
/// be adopted by the runner and stay a zombie): ADD announces the address in-line, DEL deletes the pair
/// in-line, so the pair is gone when DEL answers; the runner has no child left after either.
#[test]
fn add_and_del_under_a_runner_that_does_not_reap_leave_no_zombie() {
    let tag = "km-noreap";
    let node = NodeNs::new(tag);
    let data = TempDir::new(tag);
    let pod = PodNs::new(tag);
    let conf = json!({
        "cniVersion": "1.1.0", "name": "kmnr", "type": "bridge", "bridge": "kmnrbr0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": data.path().to_string_lossy()}
    });
    let stdin = serde_json::to_vec(&conf).unwrap();
    let plugins = PluginDir::new(&[("bridge", rcni_bin("bridge")), ("host-local", rcni_bin("host-local"))]);
    let env = |command: &str| cni_env(command, "km-noreap-0", pod.path_str(), "eth0", &[plugins.path().to_path_buf()]);

    let add = NonReapingInit::start(&node, &rcni_bin("bridge"), &env("ADD"), &stdin);
    let (answer, status) = add.answer();
    let add_orphans = add.orphans();
    drop(add);
    assert_eq!(status, 0, "ADD failed: {}", String::from_utf8_lossy(&answer));
    assert_eq!(node.veth_names().len(), 1, "ADD made one host veth");
    assert!(add_orphans.is_empty(), "ADD left the runner children (pid, state, name): {add_orphans:?}");

    let del = NonReapingInit::start(&node, &rcni_bin("bridge"), &env("DEL"), &stdin);
    let (answer, status) = del.answer();
    // The moment DEL has answered: nothing of the pair may be left, in the node or in the pod.
    let node_veths = node.veth_names();
    let pod_links = pod.link_names();
    let del_orphans = del.orphans();
    drop(del);
    assert_eq!(status, 0, "DEL failed: {}", String::from_utf8_lossy(&answer));
    assert!(node_veths.is_empty(), "host veth still there when DEL answered: {node_veths:?}");
    assert!(pod_links.iter().all(|l| l == "lo"), "pod links still there when DEL answered: {pod_links:?}");
    assert!(del_orphans.is_empty(), "DEL left the runner children (pid, state, name): {del_orphans:?}");
    assert!(support::reservations(data.path()).is_empty(), "the IP is still reserved");
}

/// Under the same non-reaping runner the pod's gratuitous ARP still goes out: the kernel sends it once the
/// port forwards (the pod's MAC set to itself, with `arp_notify` on). Pod a holds a stale, wrong entry for
/// the address pod b is about to get; after b's ADD, a's entry carries b's MAC within 1 s, and neither ADD
/// left the runner a child.
#[test]
fn add_under_a_runner_that_does_not_reap_still_announces_the_address() {
    let tag = "km-nrarp";
    let node = NodeNs::new(tag);
    let data = TempDir::new(tag);
    let (a, b) = (PodNs::new(tag), PodNs::new(tag));
    let conf = json!({
        "cniVersion": "1.1.0", "name": "kmna", "type": "bridge", "bridge": "kmnabr0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.79.0.0/24", "dataDir": data.path().to_string_lossy()}
    });
    let stdin = serde_json::to_vec(&conf).unwrap();
    let plugins = PluginDir::new(&[("bridge", rcni_bin("bridge")), ("host-local", rcni_bin("host-local"))]);
    let env = |command: &str, cid: &str, pod: &PodNs| {
        cni_env(command, cid, pod.path_str(), "eth0", &[plugins.path().to_path_buf()])
    };
    let add = |cid: &str, pod: &PodNs| -> Value {
        let run = NonReapingInit::start(&node, &rcni_bin("bridge"), &env("ADD", cid, pod), &stdin);
        let (answer, status) = run.answer();
        let orphans = run.orphans();
        drop(run);
        assert_eq!(status, 0, "ADD {cid} failed: {}", String::from_utf8_lossy(&answer));
        assert!(orphans.is_empty(), "ADD {cid} left the runner children (pid, state, name): {orphans:?}");
        serde_json::from_slice(&answer).unwrap()
    };
    let ra = add("km-nrarp-a", &a);
    let ip_a: std::net::Ipv4Addr =
        ra["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    // host-local hands out the address after a's next.
    let next = std::net::Ipv4Addr::from(u32::from(ip_a) + 1).to_string();
    let neigh = || a.ip_json(&["neigh", "show", &next, "dev", "eth0"]);
    a.ip(&["neigh", "replace", &next, "lladdr", "02:00:00:00:de:ad", "nud", "stale", "dev", "eth0"]).ok();
    assert_eq!(neigh()[0]["lladdr"], "02:00:00:00:de:ad");
    let rb = add("km-nrarp-b", &b);
    let answered = Instant::now();
    assert_eq!(rb["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap(), next);
    let mac_b = rb["interfaces"][2]["mac"].as_str().unwrap().to_string();
    loop {
        let seen = neigh()[0]["lladdr"].as_str().unwrap_or_default().to_string();
        if seen == mac_b {
            break;
        }
        assert!(answered.elapsed() < Duration::from_secs(1), "a still has {seen} for {next}, not {mac_b}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (cid, pod) in [("km-nrarp-a", &a), ("km-nrarp-b", &b)] {
        let run = NonReapingInit::start(&node, &rcni_bin("bridge"), &env("DEL", cid, pod), &stdin);
        let (answer, status) = run.answer();
        drop(run);
        assert_eq!(status, 0, "DEL {cid} failed: {}", String::from_utf8_lossy(&answer));
    }
    assert!(support::reservations(data.path()).is_empty(), "an IP is still reserved");
}

/// PID 1 of a new pid namespace that runs one plugin (stdin/stdout piped, in the node netns), waits for
/// that pid only, and then sleeps without ever reaping anything else, until dropped (which kills it and
/// with it the namespace). Only async-signal-safe calls after the fork: the test process has threads.
struct NonReapingInit {
    /// The intermediate child, which waits for PID 1 (`init`, as seen from here).
    outer: i32,
    init: i32,
    stdout: std::fs::File,
    /// Where PID 1 reports the plugin's exit status.
    status: std::fs::File,
}

impl NonReapingInit {
    fn start(node: &NodeNs, program: &std::path::Path, env: &[(String, String)], stdin: &[u8]) -> NonReapingInit {
        use std::ffi::CString;
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let ns = std::fs::File::open(node.path()).unwrap();
        let prog = CString::new(program.as_os_str().as_bytes()).unwrap();
        let argv = [prog.as_ptr(), std::ptr::null()];
        // No RCNI_HELPER_REAPER: this runner does not reap.
        let env_c: Vec<CString> = env.iter().map(|(k, v)| CString::new(format!("{k}={v}")).unwrap()).collect();
        let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        let (mut in_pipe, mut out_pipe, mut pid_pipe) = ([0i32; 2], [0i32; 2], [0i32; 2]);
        // SAFETY: pipes and a fork; the children below make only async-signal-safe calls on data prepared
        // above, and end with _exit or execve.
        unsafe {
            assert_eq!(libc::pipe2(in_pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
            // A config is far below a pipe's capacity: all of it is written before the plugin starts.
            assert_eq!(libc::write(in_pipe[1], stdin.as_ptr().cast(), stdin.len()), stdin.len() as isize);
            libc::close(in_pipe[1]);
            assert_eq!(libc::pipe2(out_pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(pid_pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
            let outer = libc::fork();
            assert!(outer >= 0, "fork");
            if outer == 0 {
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(101);
                }
                let init = libc::fork();
                if init < 0 {
                    libc::_exit(102);
                }
                if init > 0 {
                    // Only PID 1 and the plugin may hold the plugin's ends, or its stdout never ends.
                    libc::close(in_pipe[0]);
                    libc::close(out_pipe[1]);
                    libc::write(pid_pipe[1], (&init as *const i32).cast(), 4);
                    let mut st = 0;
                    libc::waitpid(init, &mut st, 0);
                    libc::_exit(0);
                }
                // PID 1 of the new namespace.
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    libc::_exit(103);
                }
                let plugin = libc::fork();
                if plugin == 0 {
                    libc::dup2(in_pipe[0], 0);
                    libc::dup2(out_pipe[1], 1);
                    libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(104);
                }
                libc::close(in_pipe[0]);
                libc::close(out_pipe[1]);
                let mut st = 0;
                libc::waitpid(plugin, &mut st, 0);
                // The plugin's exit status, after its answer on the pipe.
                let code: u8 = if libc::WIFEXITED(st) { libc::WEXITSTATUS(st) as u8 } else { 255 };
                libc::write(pid_pipe[1], (&code as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
            libc::close(in_pipe[0]);
            libc::close(out_pipe[1]);
            libc::close(pid_pipe[1]);
            let mut init = 0i32;
            assert_eq!(libc::read(pid_pipe[0], (&mut init as *mut i32).cast(), 4), 4, "runner did not start");
            NonReapingInit {
                outer,
                init,
                stdout: std::fs::File::from_raw_fd(out_pipe[0]),
                status: std::fs::File::from_raw_fd(pid_pipe[0]),
            }
        }
    }

    /// The plugin's stdout (read to its end: the plugin and anything holding its stdout are done) and exit
    /// status; panics after 60 s (the runner is then killed by drop).
    fn answer(&self) -> (Vec<u8>, i32) {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + Duration::from_secs(60);
        let wait_readable = |f: &std::fs::File| {
            let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let left = deadline.saturating_duration_since(Instant::now()).as_millis() as i32;
            // SAFETY: poll on one fd we own.
            assert!(unsafe { libc::poll(&mut p, 1, left) } == 1, "the runner's plugin did not answer in time");
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            wait_readable(&self.stdout);
            match (&self.stdout).read(&mut buf).unwrap() {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        wait_readable(&self.status);
        let mut code = [0u8; 1];
        (&self.status).read_exact(&mut code).expect("the runner reports the plugin's status");
        (out, i32::from(code[0]))
    }

    /// Children the runner was left (a helper is adopted by it when the plugin exits), watched for 800 ms
    /// after the answer: (pid, state, name).
    fn orphans(&self) -> Vec<(i32, String, String)> {
        let t0 = Instant::now();
        loop {
            let found = self.children();
            if !found.is_empty() || t0.elapsed() > Duration::from_millis(800) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The runner's children: (pid, state, name).
    fn children(&self) -> Vec<(i32, String, String)> {
        let list = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.init)).unwrap_or_default();
        list.split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let name = stat.split(['(', ')']).nth(1).unwrap_or("").to_string();
                let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("").to_string();
                (pid, state, name)
            })
            .collect()
    }
}

impl Drop for NonReapingInit {
    fn drop(&mut self) {
        // SAFETY: killing PID 1 of the namespace we made (the kernel then ends everything in it) and reaping
        // our own child, which waits for it.
        unsafe {
            libc::kill(self.init, libc::SIGKILL);
            libc::waitpid(self.outer, std::ptr::null_mut(), 0);
        }
    }
}
