//! Benchmarks of rcni-overlay (issue 11), `#[ignore]`d: run by bench/overlay/run, which uses the release
//! agent (RCNI_OVERLAY_BIN) and prints one line per figure. Everything is in the test's own namespaces:
//! etcd on the switch at 198.18.0.254, synthetic peers with 198.18.x.y underlays (no packets needed).
//!
//! Leases are written through etcd's JSON gateway over one kept-alive HTTP connection opened inside a
//! node's netns, so a write costs no process start; kernel changes are seen by `ip monitor route` in the
//! observing node, stamped when each line arrives.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::NetNs;
use support::agent::{AgentNode, PREFIX};
use support::etcd::{ETCD_IP, Etcd, wait_for};
use support::underlay::{Switch, tcp_exchange};

const LONG: Duration = Duration::from_secs(60);
const CONFIG: &str = r#"{"Network":"10.128.0.0/9","Backend":{"Type":"vxlan"}}"#;

/// A kept-alive HTTP/1.1 connection to etcd's JSON gateway.
struct Gateway(BufReader<TcpStream>);

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Gateway {
    /// Connected from inside `ns` (the socket stays in that netns).
    fn open(ns: &NetNs) -> Gateway {
        let s = ns.run_inside(|| TcpStream::connect((ETCD_IP, 2379)).expect("etcd gateway"));
        s.set_nodelay(true).unwrap();
        Gateway(BufReader::new(s))
    }

    fn call(&mut self, path: &str, body: &str) {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {ETCD_IP}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        let (mut status, mut len, mut chunked) = (String::new(), 0usize, false);
        self.0.read_line(&mut status).unwrap();
        loop {
            let mut h = String::new();
            self.0.read_line(&mut h).unwrap();
            let l = h.trim().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            chunked |= l == "transfer-encoding: chunked";
        }
        if chunked {
            loop {
                let mut size = String::new();
                self.0.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut buf = vec![0; n + 2];
                self.0.read_exact(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
            }
        } else {
            let mut buf = vec![0; len];
            self.0.read_exact(&mut buf).unwrap();
        }
        assert!(status.contains(" 200 "), "{path}: {status}");
    }

    fn put(&mut self, key: &str, value: &str) {
        self.call("/v3/kv/put", &format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key.as_bytes()), b64(value.as_bytes())));
    }

    fn del(&mut self, key: &str) {
        self.call("/v3/kv/deleterange", &format!(r#"{{"key":"{}"}}"#, b64(key.as_bytes())));
    }

    /// Deletes every key starting with `prefix`, in one revision.
    fn del_prefix(&mut self, prefix: &str) {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        self.call(
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{}","range_end":"{}"}}"#, b64(prefix.as_bytes()), b64(&end)),
        );
    }
}

/// Synthetic peer `i`: subnet 10.(128 + i / 256).(i % 256).0/24 with underlay 198.19.(i / 250).(i % 250 + 1).
fn synthetic(i: usize) -> (String, String, String) {
    let subnet = format!("10.{}.{}.0/24", 128 + i / 256, i % 256);
    let key = format!("{PREFIX}/subnets/{}", subnet.replace('/', "-"));
    let value = format!(
        r#"{{"PublicIP":"198.19.{}.{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"c6:00:00:00:{:02x}:{:02x}"}}}}"#,
        i / 250,
        i % 250 + 1,
        i / 256,
        i % 256
    );
    (subnet, key, value)
}

/// `ip monitor route` in `ns`: each line with its arrival time.
struct Monitor {
    child: std::process::Child,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(ns: &NetNs) -> Monitor {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ip", "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Monitor { child, rx }
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// When a route line for `subnet` (added, or with `deleted` removed) arrived.
    fn wait(&self, subnet: &str, deleted: bool) -> Instant {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let (t, line) =
                self.rx.recv_timeout(until.saturating_duration_since(Instant::now())).expect("route change seen");
            if line.contains(subnet) && line.starts_with("Deleted") == deleted {
                return t;
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "BENCH {name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        v.len(),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(*v.last().unwrap())
    );
}

fn route_count(n: &AgentNode) -> usize {
    n.routes().lines().count()
}

/// Flags of a production-like agent: a day's lease, the default resync, removals not held back.
const FLAGS: &[&str] = &["--lease-ttl", "24h", "--resync", "60s", "--mass-delete-grace", "0s"];

#[test]
#[ignore = "benchmark: bench/overlay/run"]
fn bench_lease_change_to_kernel_latency() {
    let switch = Switch::new("ovb");
    let etcd = Etcd::start("ovb", &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), CONFIG]).ok();
    let node = AgentNode::with_flags("ovb", &switch, 1, &etcd.url(), FLAGS);
    wait_for("the agent's subnet", LONG, || node.subnet_env().is_some() && node.status()["etcd_reachable"] == true);
    let mut gw = Gateway::open(&node.ns);
    let mon = Monitor::start(&node.ns);
    let rounds: usize = std::env::var("RCNI_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let (subnet, key, value) = synthetic(1000 + i);
        mon.drain();
        let t0 = Instant::now();
        gw.put(&key, &value);
        add.push(mon.wait(&subnet, false) - t0);
        mon.drain();
        let t0 = Instant::now();
        gw.del(&key);
        del.push(mon.wait(&subnet, true) - t0);
    }
    let both: Vec<Duration> = add.iter().chain(&del).copied().collect();
    summary("lease put -> route added", add);
    summary("lease delete -> route removed", del);
    summary("lease change -> kernel (both)", both);
}

#[test]
#[ignore = "benchmark: bench/overlay/run"]
fn bench_thousand_leases_and_idle_cost() {
    let switch = Switch::new("ovb");
    let etcd = Etcd::start("ovb", &switch);
    etcd.ctl(&["put", &format!("{PREFIX}/config"), CONFIG]).ok();
    let mut gw = Gateway::open(&etcd.ns);
    let t = Instant::now();
    for i in 0..1000 {
        let (_, key, value) = synthetic(i);
        gw.put(&key, &value);
    }
    println!("BENCH writing 1000 leases (one connection, serial): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);

    // (a) cold start: agent start to 1000 routes (and their neighbour and FDB entries) in the kernel.
    let node = AgentNode::with_flags("ovb", &switch, 1, &etcd.url(), FLAGS);
    let t0 = Instant::now();
    wait_for("1000 routes", LONG, || route_count(&node) == 1000);
    let cold = t0.elapsed();
    let d = node.dump();
    assert_eq!(d.matches("lladdr c6:00").count(), 1000, "1000 neighbours");
    assert_eq!(d.matches("dst 198.19.").count(), 1000, "1000 FDB entries");
    println!(
        "BENCH cold start with 1000 leases -> 1000 routes+neighbours+FDB: {:.0} ms (incl. process start, polled every 100 ms)",
        cold.as_secs_f64() * 1e3
    );

    // Idle: CPU time and RSS over 60 s with 1000 peers (one full resync falls in the window).
    let pid = node.agent.pid();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let rss = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let idle: u64 = std::env::var("RCNI_BENCH_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let (c0, t0) = (cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu() - c0;
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "BENCH idle with 1000 peers over {:.0} s: CPU {:.2} s ({:.3} %), RSS {} KiB",
        t0.elapsed().as_secs_f64(),
        ticks as f64 / tck,
        ticks as f64 / tck / t0.elapsed().as_secs_f64() * 100.0,
        rss()
    );

    // (d) 1000 removals in one revision (delete --prefix), then (b) a burst of 1000 new leases.
    let mon = Monitor::start(&node.ns);
    let t0 = Instant::now();
    gw.del_prefix(&format!("{PREFIX}/subnets/10.1"));
    wait_for("0 routes", LONG, || route_count(&node) == 0);
    println!("BENCH 1000 removals in one revision -> 0 routes: {:.0} ms (polled)", t0.elapsed().as_secs_f64() * 1e3);
    mon.drain();
    let t0 = Instant::now();
    for i in 0..1000 {
        let (_, key, value) = synthetic(i);
        gw.put(&key, &value);
    }
    let written = t0.elapsed();
    let (last, _, _) = synthetic(999);
    let seen = mon.wait(&last, false) - t0;
    wait_for("1000 routes again", LONG, || route_count(&node) == 1000);
    println!(
        "BENCH burst of 1000 serial puts: written in {:.0} ms, last route in the kernel {:.0} ms after the first put",
        written.as_secs_f64() * 1e3,
        seen.as_secs_f64() * 1e3
    );
}

/// iperf3 from a pod on node 1 to a pod on node 2: bits per second received.
fn iperf(n1: &AgentNode, n2: &AgentNode, ip: &str) -> f64 {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", n2.pods[0].name(), "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let secs = std::env::var("RCNI_BENCH_IPERF_SECS").unwrap_or_else(|_| "10".into());
    let out = n1.pods[0].cmd("iperf3").args(["-c", ip, "-t", &secs, "-J"]).timeout(Duration::from_secs(60)).run().ok();
    let _ = srv.wait();
    out.json()["end"]["sum_received"]["bits_per_second"].as_f64().unwrap()
}

#[test]
#[ignore = "benchmark: bench/overlay/run"]
fn bench_direct_routing_vs_vxlan_throughput() {
    for (tag, direct) in [("ovbv", false), ("ovbd", true)] {
        let switch = Switch::new(tag);
        let etcd = Etcd::start(tag, &switch);
        let conf = format!(r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"vxlan","DirectRouting":{direct}}}}}"#);
        etcd.ctl(&["put", &format!("{PREFIX}/config"), &conf]).ok();
        let mut nodes: Vec<AgentNode> =
            (1..=2).map(|i| AgentNode::with_flags(tag, &switch, i, &etcd.url(), FLAGS)).collect();
        for n in &nodes {
            wait_for("subnet.env", LONG, || n.subnet_env().is_some());
        }
        let s2 = nodes[1].subnet();
        wait_for("the peer's route", LONG, || nodes[0].ns.ip(&["route", "show", &s2]).ok().stdout.contains(&s2));
        nodes[0].add_pod();
        let ip2 = nodes[1].add_pod();
        assert!(tcp_exchange(&nodes[0].pods[0], &nodes[1].pods[0], &ip2));
        let (tx0, _) = nodes[0].vtep_tx();
        let bps = iperf(&nodes[0], &nodes[1], &ip2);
        let via_vtep = nodes[0].vtep_tx().0 - tx0;
        assert_eq!(via_vtep == 0, direct, "DirectRouting={direct}: {via_vtep} packets through the VTEP");
        println!(
            "BENCH iperf3 TCP pod->pod across nodes, {}: {:.2} Gbit/s",
            if direct { "DirectRouting (plain route via the underlay)" } else { "VXLAN" },
            bps / 1e9
        );
    }
}
