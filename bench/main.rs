//! rcni-bench: rcni against the reference CNI plugins, side by side in one run, in throwaway namespaces.
//! (The phases of a run, in the order they run, one function each; the workers, namespaces, statistics and
//! report are in their own modules. Over 500 lines because each phase sets up and times both suites.)
//!
//! ```text
//! rcni-bench [--pods N] [--reps R] [--concurrency C] [--scale-pods S] [--scale-window W] [--iperf-secs T]
//!            [--quick] [--plugin-dir DIR] [--reference-dir DIR] [--json FILE] [--markdown FILE]
//!            [--run-id ID] [--no-throughput]
//! rcni-bench worker        (internal: one timed job inside a node netns, JSON on stdin/stdout)
//! rcni-bench adds ...      (for bench/profile: ADDs one after another as a reaping runner, see adds.rs)
//! ```
//! See bench/README.md for what every figure means. Must run as root; it touches only namespaces it
//! creates (`rcni-bench-<run-id>-*`), and removes them also on panic and on SIGINT/SIGTERM.

mod adds;
mod ns;
mod report;
mod stats;
mod worker;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ns::Ns;
use serde_json::{Value, json};
use stats::{Pct, floats};

/// Parameters of a run.
#[derive(Clone, Debug)]
pub struct Params {
    pub pods: usize,
    pub reps: usize,
    pub concurrency: usize,
    pub scale_pods: usize,
    pub scale_window: usize,
    pub iperf_secs: u32,
    pub quick: bool,
    pub plugin_dir: PathBuf,
    pub reference_dir: PathBuf,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub run_id: String,
    /// Which parts run: latency (runner, concurrency, direct, RSS), scaling, throughput.
    pub phases: Vec<String>,
}

impl Params {
    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: rcni-bench [--pods N] [--reps R] [--concurrency C] [--scale-pods S] [--scale-window W]\n\
         \x20                 [--iperf-secs T] [--quick] [--plugin-dir DIR] [--reference-dir DIR]\n\
         \x20                 [--json FILE] [--markdown FILE] [--run-id ID] [--no-throughput]\n\
         \x20                 [--phases latency,scaling,throughput]"
    );
    std::process::exit(2)
}

fn parse_args(args: &[String]) -> Params {
    let mut it = args.iter();
    let mut opt: std::collections::HashMap<&str, String> = Default::default();
    let mut quick = false;
    let mut throughput = true;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-throughput" => throughput = false,
            "--pods" | "--reps" | "--concurrency" | "--scale-pods" | "--scale-window" | "--iperf-secs"
            | "--plugin-dir" | "--reference-dir" | "--json" | "--markdown" | "--run-id" | "--phases" => {
                let v = it.next().unwrap_or_else(|| usage());
                opt.insert(a.as_str().trim_start_matches("--"), v.clone());
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other}");
                usage()
            }
        }
    }
    let num = |k: &str, full: usize, q: usize| -> usize {
        opt.get(k).map(|v| v.parse().unwrap_or_else(|_| usage())).unwrap_or(if quick { q } else { full })
    };
    let exe_dir = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let p = Params {
        pods: num("pods", 100, 5),
        reps: num("reps", 5, 1),
        concurrency: num("concurrency", 8, 4),
        scale_pods: num("scale-pods", 1000, 20),
        scale_window: num("scale-window", 25, 5),
        iperf_secs: num("iperf-secs", 5, 1) as u32,
        quick,
        plugin_dir: opt.get("plugin-dir").map(PathBuf::from).unwrap_or(exe_dir),
        reference_dir: PathBuf::from(opt.get("reference-dir").map(String::as_str).unwrap_or("/usr/lib/cni")),
        json: opt.get("json").map(PathBuf::from),
        markdown: opt.get("markdown").map(PathBuf::from),
        run_id: opt.get("run-id").cloned().unwrap_or_else(|| std::process::id().to_string()),
        phases: opt
            .get("phases")
            .map(String::as_str)
            .unwrap_or("latency,scaling,throughput")
            .split(',')
            .filter(|p| *p != "throughput" || throughput)
            .map(String::from)
            .collect(),
    };
    if let Some(bad) = p.phases.iter().find(|x| !["latency", "scaling", "throughput"].contains(&x.as_str())) {
        eprintln!("unknown phase {bad}");
        usage()
    }
    if p.pods == 0 || p.reps == 0 || p.scale_pods < 2 * p.scale_window || p.scale_window == 0 {
        eprintln!("need pods >= 1, reps >= 1, scale-window >= 1 and scale-pods >= 2 * scale-window");
        usage()
    }
    p
}

/// One side of the comparison.
pub struct Suite {
    pub name: &'static str,
    pub dir: PathBuf,
}

// ------------------------------------------------------------------------------------------------
// The workload: the same JSON for both suites, only dataDir differs.

const NET: &str = "rcni-bench";

fn bridge_plugin(data_dir: &Path) -> Value {
    json!({
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.88.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": data_dir,
        }
    })
}

fn conflist(data_dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": NET, "plugins": [bridge_plugin(data_dir)]})
}

/// The bridge plugin's own stdin (what a runner would build from the conflist).
fn bridge_conf(data_dir: &Path) -> Value {
    let mut v = bridge_plugin(data_dir);
    v["cniVersion"] = json!("1.0.0");
    v["name"] = json!(NET);
    v
}

fn ipam_conf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "rcni-bench-ipam",
        "type": "bridge",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]], "dataDir": data_dir}
    })
}

// ------------------------------------------------------------------------------------------------
// Running jobs

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn progress(msg: &str) {
    let t = START.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    eprintln!("[{t:7.1}s] {msg}");
}

/// Runs a worker job inside `node` and returns its JSON answer.
fn worker(node: &Ns, job: Value) -> Value {
    let exe = std::env::current_exe().unwrap();
    let mut child = node
        .cmd(&exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the worker");
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&job).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker failed in {} ({}), job kind {}", node.name(), out.status, job["kind"]);
    serde_json::from_slice(&out.stdout).expect("worker output is JSON")
}

fn pod_paths(pods: &[Ns]) -> Vec<String> {
    pods.iter().map(|p| p.path_str().to_string()).collect()
}

/// A node netns with `lo` up.
fn node(tag: &str) -> Ns {
    let n = Ns::create(tag);
    n.lo_up();
    n
}

/// One repetition for one suite: runner serial ADD/CHECK/DEL, runner parallel ADD/DEL, direct invocation.
fn latency_rep(p: &Params, s: &Suite, rep: usize) -> Value {
    let tag = if s.name == "rcni" { "r" } else { "g" };
    let n = node(&format!("{tag}node"));
    let pods = Ns::create_many(&format!("{tag}pod"), p.pods);
    let dir = ns::temp_dir(&format!("{}-rep{rep}", s.name));
    let data = dir.join("data");
    let paths = pod_paths(&pods);
    let serial = worker(
        &n,
        json!({"kind": "runner", "plugin_dir": s.dir, "cache_dir": dir.join("cache"), "conflist": conflist(&data),
               "pods": paths, "ops": ["add", "check", "del"], "concurrency": 1}),
    );
    let parallel = worker(
        &n,
        json!({"kind": "runner", "plugin_dir": s.dir, "cache_dir": dir.join("cache-par"), "conflist": conflist(&data),
               "pods": paths, "ops": ["add", "del"], "concurrency": p.concurrency}),
    );
    let direct = worker(
        &n,
        json!({"kind": "direct", "plugin_dir": s.dir, "bridge_conf": bridge_conf(&data),
               "ipam_conf": ipam_conf(&dir.join("hl")), "pods": paths, "count": p.pods}),
    );
    ns::delete_many(pods);
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
    json!({"serial": serial, "parallel": parallel, "direct": direct})
}

/// A few untimed plugin runs per suite so that neither side pays for a cold page cache in rep 0.
fn warm_up(s: &Suite) {
    let n = node("warm");
    let pods = Ns::create_many("warmpod", 1);
    let dir = ns::temp_dir(&format!("{}-warm", s.name));
    worker(
        &n,
        json!({"kind": "direct", "plugin_dir": s.dir, "bridge_conf": bridge_conf(&dir.join("data")),
               "ipam_conf": ipam_conf(&dir.join("hl")), "pods": pod_paths(&pods), "count": 3}),
    );
    ns::delete_many(pods);
}

/// 1000 pods on one bridge: ADD (and DEL) latency of the first and the last window.
fn scaling(p: &Params, s: &Suite) -> Value {
    let tag = if s.name == "rcni" { "rs" } else { "gs" };
    let n = node(&format!("{tag}node"));
    progress(&format!("{}: creating {} pod namespaces for the scaling run", s.name, p.scale_pods));
    let pods = Ns::create_many(&format!("{tag}p"), p.scale_pods);
    let dir = ns::temp_dir(&format!("{}-scale", s.name));
    progress(&format!("{}: scaling run, {} pods ADD then DEL", s.name, p.scale_pods));
    let t = Instant::now();
    let out = worker(
        &n,
        json!({"kind": "runner", "plugin_dir": s.dir, "cache_dir": dir.join("cache"), "conflist": conflist(&dir.join("data")),
               "pods": pod_paths(&pods), "ops": ["add", "del"], "concurrency": 1}),
    );
    progress(&format!("{}: scaling run took {:.1}s", s.name, t.elapsed().as_secs_f64()));
    ns::delete_many(pods);
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
    let w = p.scale_window;
    let win = |op: &str| {
        let v = floats(&out[op]["samples_us"]);
        let first = Pct::of_us(&v[..w]);
        let last = Pct::of_us(&v[v.len() - w..]);
        let cpu = floats(&out[op]["cpu_us"]);
        let sys = floats(&out[op]["sys_us"]);
        let (cf, cl) = (stats::median(&cpu[..w]) / 1000.0, stats::median(&cpu[cpu.len() - w..]) / 1000.0);
        // Where one call's time goes, as means over the window (the user/sys split of one short process is
        // tick-sampled, see worker::children_times_us): user CPU, kernel CPU, and the rest of the wall time,
        // off CPU (waiting for locks, RCU, workqueues, the other core).
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64 / 1000.0;
        let split = |r: std::ops::Range<usize>| {
            let (c, k, t) = (mean(&cpu[r.clone()]), mean(&sys[r.clone()]), mean(&v[r]));
            json!({"user_ms": c - k, "sys_ms": k, "off_cpu_ms": (t - c).max(0.0), "wall_ms": t})
        };
        json!({"first": first.json(), "last": last.json(), "all": Pct::of_us(&v).json(),
               "growth_p50": last.p50 / first.p50, "growth_first_p50": first.p50 / last.p50, "wall_ms": out[op]["wall_us"].as_f64().unwrap_or(0.0) / 1000.0,
               "cpu_ms_first": cf, "cpu_ms_last": cl, "cpu_growth": cl / cf,
               "split_first": split(0..w), "split_last": split(v.len() - w..v.len())})
    };
    json!({"pods": p.scale_pods, "window": w, "add": win("add"), "del": win("del")})
}

/// iperf3 from `client` to `ip` (a server started with `-1` in `server`); Gbit/s received.
fn iperf(server: &Ns, client: &Ns, ip: &str, secs: u32) -> f64 {
    let mut srv = server
        .cmd("timeout")
        .args([&(secs + 30).to_string(), "iperf3", "-s", "-1", "-p", "5201"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start iperf3 -s");
    let mut last = String::new();
    let mut gbps = None;
    for _ in 0..100 {
        let out = client
            .cmd("timeout")
            .args([&(secs + 15).to_string(), "iperf3", "-c", ip, "-p", "5201", "-t", &secs.to_string(), "-J"])
            .stdin(Stdio::null())
            .output()
            .expect("run iperf3 -c");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success()
            && let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64()
        {
            gbps = Some(bps / 1e9);
            break;
        }
        last = format!("{} {}", v["error"], String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    gbps.unwrap_or_else(|| panic!("iperf3 {} -> {ip} failed: {last}", client.name()))
}

/// Two pods on one bridge of `s`, TCP pod1 -> pod0.
fn bridge_throughput(p: &Params, s: &Suite) -> f64 {
    let tag = if s.name == "rcni" { "rt" } else { "gt" };
    let n = node(&format!("{tag}node"));
    let pods = Ns::create_many(&format!("{tag}p"), 2);
    let dir = ns::temp_dir(&format!("{}-tput", s.name));
    let out = worker(
        &n,
        json!({"kind": "runner", "plugin_dir": s.dir, "cache_dir": dir.join("cache"), "conflist": conflist(&dir.join("data")),
               "pods": pod_paths(&pods), "ops": ["add"], "concurrency": 1}),
    );
    let ip0 = out["ips"][0].as_str().unwrap().to_string();
    let g = iperf(&pods[0], &pods[1], &ip0, p.iperf_secs);
    ns::delete_many(pods);
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
    g
}

/// Two nodes on an underlay switch (198.18.0.1, .2), our vxlan, one pod each: pod↔pod vs node↔node.
fn overlay_throughput(p: &Params, s: &Suite, runs: usize) -> Value {
    let switch = node("sw");
    switch.ip(&["link", "add", "sw0", "type", "bridge"]);
    switch.ip(&["link", "set", "sw0", "up"]);
    let dir = ns::temp_dir("vxlan");
    let peers_file = dir.join("peers.json");
    let peer = |i: usize| json!({"underlay": format!("198.18.0.{i}"), "subnets": [format!("10.244.{i}.0/24")]});
    std::fs::write(&peers_file, serde_json::to_vec(&json!([peer(1), peer(2)])).unwrap()).unwrap();
    let example = include_str!("../conf/40-vxlan.conflist");
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    let mut ips = Vec::new();
    for i in 1..=2usize {
        let n = node(&format!("vx{i}n"));
        let port = format!("p{i}");
        switch.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", n.name()]);
        switch.ip(&["link", "set", &port, "master", "sw0", "up"]);
        n.ip(&["addr", "add", &format!("198.18.0.{i}/24"), "dev", "eth0"]);
        n.ip(&["link", "set", "eth0", "up"]);
        let data = dir.join(format!("data{i}"));
        let mut conf: Value = serde_json::from_str(example).expect("conf/40-vxlan.conflist is JSON");
        // IPv4 only (the underlay comparison is IPv4), this node's subnet, our files.
        let plug = &mut conf["plugins"][0];
        plug["network"] = json!(["10.244.0.0/16"]);
        plug["subnet"] = json!([format!("10.244.{i}.0/24")]);
        plug["peersFile"] = json!(peers_file);
        plug["dataDir"] = json!(data);
        let pod = Ns::create(&format!("vx{i}p"));
        let out = worker(
            &n,
            json!({"kind": "runner", "plugin_dir": s.dir, "cache_dir": dir.join(format!("cache{i}")), "conflist": conf,
                   "pods": [pod.path_str()], "ops": ["add"], "concurrency": 1}),
        );
        ips.push(out["ips"][0].as_str().unwrap().to_string());
        nodes.push(n);
        pods.push(pod);
    }
    // Alternating overlay and underlay runs, median of each.
    let (mut ov, mut un) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        ov.push(iperf(&pods[1], &pods[0], &ips[1], p.iperf_secs));
        un.push(iperf(&nodes[1], &nodes[0], "198.18.0.2", p.iperf_secs));
    }
    let (overlay, underlay) = (stats::median(&ov), stats::median(&un));
    drop(pods);
    drop(nodes);
    drop(switch);
    let _ = std::fs::remove_dir_all(&dir);
    json!({"vxlan_gbps": overlay, "underlay_gbps": underlay, "ratio": overlay / underlay, "secs": p.iperf_secs,
           "runs_vxlan_gbps": ov, "runs_underlay_gbps": un})
}

fn sizes(s: &Suite) -> Value {
    let mut m = serde_json::Map::new();
    for b in ["bridge", "host-local", "loopback", "vxlan"] {
        if let Ok(md) = std::fs::metadata(s.dir.join(b)) {
            m.insert(b.into(), json!(md.len()));
        }
    }
    Value::Object(m)
}

// ------------------------------------------------------------------------------------------------
// Machine info

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Value {
    let cpu = sh("grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-");
    let repo = env!("CARGO_MANIFEST_DIR");
    json!({
        "cpu": cpu.trim(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": sh("uname -r"),
        "date": sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
        "rcni_commit": sh(&format!("git -C {repo} rev-parse --short HEAD")),
        "rcni_dirty": !sh(&format!("git -C {repo} status --porcelain -- src plugins ipam tools Cargo.toml")).is_empty(),
        "reference": sh("dpkg-query -W -f='${Package} ${Version}' containernetworking-plugins"),
        "iptables": sh("iptables --version"),
        "memory": sh("free -m | awk '/^Mem:/{print $2\" MiB\"}'"),
        "loadavg_start": loadavg(),
    })
}

// ------------------------------------------------------------------------------------------------

fn check_suite(s: &Suite) {
    for b in ["bridge", "host-local"] {
        let p = s.dir.join(b);
        assert!(
            p.is_file(),
            "{} plugin {} missing (build it / install containernetworking-plugins)",
            s.name,
            p.display()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        std::process::exit(worker::main());
    }
    if args.first().map(String::as_str) == Some("adds") {
        std::process::exit(adds::main(&args[1..]));
    }
    assert_eq!(unsafe { libc::geteuid() }, 0, "rcni-bench creates network namespaces: run it as root");
    let p = parse_args(&args);
    START.set(Instant::now()).unwrap();
    ns::init(&p.run_id);
    ns::install_cleanup();
    let suites = [
        Suite { name: "rcni", dir: std::fs::canonicalize(&p.plugin_dir).expect("plugin dir") },
        Suite { name: "reference", dir: p.reference_dir.clone() },
    ];
    for s in &suites {
        check_suite(s);
    }
    let mut meta = machine();
    progress(&format!(
        "params: pods={} reps={} concurrency={} scale={}/{} iperf={}s quick={}; load {}",
        p.pods, p.reps, p.concurrency, p.scale_pods, p.scale_window, p.iperf_secs, p.quick, meta["loadavg_start"]
    ));

    let mut reps: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    if p.runs("latency") {
        for s in &suites {
            warm_up(s);
        }
        // Repetitions alternate between the suites (and which one goes first) to spread drift evenly.
        for rep in 0..p.reps {
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                progress(&format!("rep {}/{}: {}", rep + 1, p.reps, suites[i].name));
                reps[i].push(latency_rep(&p, &suites[i], rep));
            }
        }
    }
    let mut scale = [Value::Null, Value::Null];
    if p.runs("scaling") {
        for (i, s) in suites.iter().enumerate() {
            scale[i] = scaling(&p, s);
        }
    }
    let mut tput = [Value::Null, Value::Null];
    let mut overlay = Value::Null;
    if p.runs("throughput") {
        // A few alternating runs per suite (the data path is the kernel's: differences are setup or noise).
        let runs = p.reps.min(3);
        let mut gbps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for r in 0..runs {
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                progress(&format!("{}: pod-pod throughput on one bridge ({}/{runs})", suites[i].name, r + 1));
                gbps[i].push(bridge_throughput(&p, &suites[i]));
            }
        }
        for i in 0..2 {
            tput[i] = json!({"gbps": stats::median(&gbps[i]), "runs_gbps": gbps[i], "secs": p.iperf_secs});
        }
        progress("rcni: cross-node vxlan throughput vs raw underlay");
        overlay = overlay_throughput(&p, &suites[0], runs);
    }
    meta["loadavg_end"] = json!(loadavg());
    meta["duration_s"] = json!(START.get().unwrap().elapsed().as_secs_f64());

    let mut results = serde_json::Map::new();
    for (i, s) in suites.iter().enumerate() {
        results.insert(s.name.into(), report::suite_json(&p, s, &reps[i], &scale[i], &tput[i], sizes(s)));
    }
    let doc = report::document(&p, meta, Value::Object(results), overlay);
    let md = report::markdown(&doc);
    print!("{md}");
    if let Some(f) = &p.json {
        std::fs::write(f, serde_json::to_vec_pretty(&doc).unwrap()).expect("write the JSON file");
    }
    if let Some(f) = &p.markdown {
        std::fs::write(f, &md).expect("write the markdown file");
    }
    let left = ns::leftovers();
    ns::cleanup_all();
    assert!(left.is_empty(), "namespaces left behind (now removed): {left:?}");
    progress("done");
}
