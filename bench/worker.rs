//! The timed part. `rcni-bench worker` runs *inside a node netns* (`ip netns exec <node> rcni-bench worker`),
//! reads one [`Job`] as JSON on stdin and prints a JSON answer on stdout. Plugins it starts inherit the node
//! netns, like plugins started by a container runtime on a host.
//!
//! * [`Job::Runner`]: operations through the library's runtime (`rcni::cni::runtime::Runtime`, what cnitool
//!   uses), in-process: every sample is the time of one `add_network_list` / `check_network_list` /
//!   `del_network_list` call, i.e. plugin processes (+ the runtime's small result-cache file).
//! * [`Job::Direct`]: the plugin binary itself with CNI_* env + stdin, no runner; the child is reaped with
//!   `wait4`, whose rusage gives its CPU time and peak RSS (`ru_maxrss` = the max over the plugin and the
//!   descendants it waited for, i.e. bridge *and* its host-local child).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rcni::cni::runtime::{Runtime, RuntimeConf, conf_list_from_bytes};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    Runner {
        plugin_dir: PathBuf,
        cache_dir: PathBuf,
        conflist: Value,
        /// Pod netns paths; pod i gets container ID `pod<i>`.
        pods: Vec<String>,
        /// Phases in order, each over all pods: "add", "check", "del".
        ops: Vec<String>,
        /// Threads (1 = serial, in pod order).
        concurrency: usize,
    },
    Direct {
        plugin_dir: PathBuf,
        /// A single plugin's config (bridge, with cniVersion and name).
        bridge_conf: Value,
        /// A config with only an `ipam` section for host-local.
        ipam_conf: Value,
        /// Pods for bridge ADD/DEL (one ADD then one DEL each, ADDs first).
        pods: Vec<String>,
        /// How many host-local ADD/DEL pairs and VERSION calls of each binary.
        count: usize,
    },
}

pub fn main() -> i32 {
    // rcni's DEL leaves the kernel's slow veth unregister to a detached child; as a subreaper the worker
    // adopts those children and waits for them (outside the timed part, but their CPU is counted).
    if let Err(e) = rcni::net::detached::adopt_helpers() {
        eprintln!("rcni-bench worker: cannot become a subreaper: {e}");
        return 1;
    }
    // Plugins (and the runner's) are told so: they leave the unregister to a helper only when it is reaped.
    let (reaper_k, reaper_v) = rcni::net::detached::reaper_env();
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var(reaper_k, reaper_v) };
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read the job");
    let job: Job = serde_json::from_str(&input).expect("parse the job");
    let out = match job {
        Job::Runner { plugin_dir, cache_dir, conflist, pods, ops, concurrency } => {
            run_runner(&plugin_dir, &cache_dir, &conflist, &pods, &ops, concurrency)
        }
        Job::Direct { plugin_dir, bridge_conf, ipam_conf, pods, count } => {
            run_direct(&plugin_dir, &bridge_conf, &ipam_conf, &pods, count)
        }
    };
    match out {
        Ok(v) => {
            println!("{v}");
            0
        }
        Err(e) => {
            eprintln!("rcni-bench worker: {e}");
            1
        }
    }
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn run_runner(
    plugin_dir: &Path,
    cache_dir: &Path,
    conflist: &Value,
    pods: &[String],
    ops: &[String],
    concurrency: usize,
) -> Result<Value, String> {
    let rt = Runtime::new(vec![plugin_dir.to_path_buf()]).with_cache_dir(cache_dir);
    let list = conf_list_from_bytes(&serde_json::to_vec(conflist).unwrap()).map_err(|e| e.to_string())?;
    let att = |i: usize| RuntimeConf {
        container_id: format!("pod{i}"),
        netns: pods[i].clone(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let mut out = serde_json::Map::new();
    let mut ips = vec![String::new(); pods.len()];
    for op in ops {
        let cpu = Mutex::new(vec![0f64; pods.len()]);
        let sys = Mutex::new(vec![0f64; pods.len()]);
        let one = |i: usize| -> Result<(f64, Option<String>), String> {
            let a = att(i);
            let t = Instant::now();
            let (cpu0, sys0) = if concurrency <= 1 { children_times_us() } else { (0.0, 0.0) };
            let ip = match op.as_str() {
                "add" => {
                    let r = rt.add_network_list(&list, &a).map_err(|e| format!("ADD pod{i}: {e}"))?;
                    r.ips.first().map(|c| c.address.ip().to_string())
                }
                "check" => {
                    rt.check_network_list(&list, &a).map_err(|e| format!("CHECK pod{i}: {e}"))?;
                    None
                }
                "del" => {
                    rt.del_network_list(&list, &a).map_err(|e| format!("DEL pod{i}: {e}"))?;
                    None
                }
                other => return Err(format!("unknown op {other}")),
            };
            let wall = us(t);
            if concurrency <= 1 {
                // Serial calls: the next one starts after this one's background work has finished too.
                rcni::net::detached::reap_helpers(true);
                let (cpu1, sys1) = children_times_us();
                cpu.lock().unwrap()[i] = cpu1 - cpu0;
                sys.lock().unwrap()[i] = sys1 - sys0;
            }
            Ok((wall, ip))
        };
        let samples = Mutex::new(vec![0f64; pods.len()]);
        let found = Mutex::new(vec![None; pods.len()]);
        let errors = Mutex::new(Vec::new());
        let next = AtomicUsize::new(0);
        let wall = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..concurrency.max(1) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= pods.len() {
                            break;
                        }
                        match one(i) {
                            Ok((t, ip)) => {
                                samples.lock().unwrap()[i] = t;
                                found.lock().unwrap()[i] = ip;
                            }
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                    }
                });
            }
        });
        // The phase's wall time includes the background work of its calls.
        rcni::net::detached::reap_helpers(true);
        let wall_us = us(wall);
        let errors = errors.into_inner().unwrap();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        for (i, ip) in found.into_inner().unwrap().into_iter().enumerate() {
            if let Some(ip) = ip {
                ips[i] = ip;
            }
        }
        let mut v = json!({"samples_us": samples.into_inner().unwrap(), "wall_us": wall_us});
        if concurrency <= 1 {
            v["cpu_us"] = json!(cpu.into_inner().unwrap());
            v["sys_us"] = json!(sys.into_inner().unwrap());
        }
        out.insert(op.clone(), v);
    }
    out.insert("ips".into(), json!(ips));
    Ok(Value::Object(out))
}

/// user+sys CPU of all reaped descendants so far (RUSAGE_CHILDREN). Around one serial runner call, the
/// difference is the CPU of that call's plugin processes (the plugin waits for its IPAM child, so it counts too).
fn children_cpu_us() -> f64 {
    children_times_us().0
}

/// (user+sys, sys) CPU of all reaped descendants so far. The kernel splits a process's exact run time into
/// user and sys by the share of timer ticks that found it in each, so for one short process the split is
/// coarse; averaged over many calls it is not biased.
fn children_times_us() -> (f64, f64) {
    // SAFETY: getrusage fills a plain struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (tv(ru.ru_utime) + tv(ru.ru_stime), tv(ru.ru_stime))
}

/// One finished direct invocation.
pub struct Run {
    pub wall_us: f64,
    cpu_us: f64,
    maxrss_kib: i64,
    stdout: Vec<u8>,
}

pub fn exec_direct(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Result<Run, String> {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let mut pipe = child.stdin.take().unwrap();
    // Configs are far below the pipe buffer: write all, close, then read the answer.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let mut stdout = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child (std's Child never waits on drop).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_us = us(t);
    if r != pid {
        return Err(format!("wait4 {}: {}", bin.display(), std::io::Error::last_os_error()));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!(
            "{} {:?} failed (status {status:#x}): {}",
            bin.display(),
            env.iter().find(|(k, _)| *k == "CNI_COMMAND").map(|(_, v)| v),
            String::from_utf8_lossy(&stdout)
        ));
    }
    // Background work the call left (rcni's detached veth deletion): not part of the latency, but its CPU is.
    let before = children_cpu_us();
    rcni::net::detached::reap_helpers(true);
    let helper_cpu_us = children_cpu_us() - before;
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Ok(Run { wall_us, cpu_us: tv(ru.ru_utime) + tv(ru.ru_stime) + helper_cpu_us, maxrss_kib: ru.ru_maxrss, stdout })
}

fn run_direct(
    plugin_dir: &Path,
    bridge_conf: &Value,
    ipam_conf: &Value,
    pods: &[String],
    count: usize,
) -> Result<Value, String> {
    let bridge = plugin_dir.join("bridge");
    let hl = plugin_dir.join("host-local");
    let path = plugin_dir.to_string_lossy().into_owned();
    let env = |cmd: &'static str, id: &str, netns: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", String::new()),
            ("CNI_PATH", path.clone()),
        ]
    };
    let call = |bin: &Path, e: Vec<(&'static str, String)>, stdin: &[u8]| {
        let e2: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        exec_direct(bin, &e2, stdin)
    };
    #[derive(Default)]
    struct Series {
        wall: Vec<f64>,
        cpu: Vec<f64>,
        rss: Vec<i64>,
    }
    impl Series {
        fn push(&mut self, r: &Run) {
            self.wall.push(r.wall_us);
            self.cpu.push(r.cpu_us);
            self.rss.push(r.maxrss_kib);
        }
        fn json(&self) -> Value {
            json!({"samples_us": self.wall, "cpu_us": self.cpu, "maxrss_kib": self.rss})
        }
    }
    let (mut b_add, mut b_del, mut h_add, mut h_del, mut v_b, mut v_h) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );

    let bridge_stdin = serde_json::to_vec(bridge_conf).unwrap();
    let mut prev = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let r = call(&bridge, env("ADD", &format!("direct{i}"), pod), &bridge_stdin)?;
        b_add.push(&r);
        prev.push(serde_json::from_slice::<Value>(&r.stdout).map_err(|e| format!("bridge ADD output: {e}"))?);
    }
    for (i, pod) in pods.iter().enumerate() {
        let mut conf = bridge_conf.clone();
        conf["prevResult"] = prev[i].clone();
        let r = call(&bridge, env("DEL", &format!("direct{i}"), pod), &serde_json::to_vec(&conf).unwrap())?;
        b_del.push(&r);
    }
    let ipam_stdin = serde_json::to_vec(ipam_conf).unwrap();
    // host-local never enters the netns; any existing path will do.
    let netns = pods.first().cloned().unwrap_or_else(|| "/proc/self/ns/net".into());
    for i in 0..count {
        h_add.push(&call(&hl, env("ADD", &format!("hl{i}"), &netns), &ipam_stdin)?);
    }
    for i in 0..count {
        h_del.push(&call(&hl, env("DEL", &format!("hl{i}"), &netns), &ipam_stdin)?);
    }
    let version_stdin = br#"{"cniVersion":"1.0.0"}"#;
    for _ in 0..count {
        v_b.push(&call(&bridge, env("VERSION", "", ""), version_stdin)?);
        v_h.push(&call(&hl, env("VERSION", "", ""), version_stdin)?);
    }
    Ok(json!({
        "bridge_add": b_add.json(),
        "bridge_del": b_del.json(),
        "host_local_add": h_add.json(),
        "host_local_del": h_del.json(),
        "version_bridge": v_b.json(),
        "version_host_local": v_h.json(),
    }))
}
