//! `rcni-bench adds`: ADDs of new pods one after another, the way a runtime on a node with a reaping init
//! (systemd) runs them, for `bench/profile --perf`. Runs inside the node netns; as a subreaper it is the
//! runner that adopts the plugins' detached helpers (an ADD forks none; a DEL's helper deletes the veth),
//! so the plugins take the path they take on such a node; each call's helpers are waited for before the
//! next call, as the bench's worker does. Prints the wall times of the calls to stderr.
//!
//! ```text
//! rcni-bench adds <plugin> <conf.json> <count> <netns-prefix> <container-prefix>
//! ```
//! Call i runs in netns `/run/netns/<netns-prefix><i>` with container ID `<container-prefix><i>`.

use crate::stats::Pct;

pub fn main(args: &[String]) -> i32 {
    let [plugin, conf, count, netns_prefix, id_prefix] = args else {
        eprintln!("usage: rcni-bench adds <plugin> <conf.json> <count> <netns-prefix> <container-prefix>");
        return 2;
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("rcni-bench adds: count {count:?} is not a number");
        return 2;
    };
    if let Err(e) = rcni::net::detached::adopt_helpers() {
        eprintln!("rcni-bench adds: cannot become a subreaper: {e}");
        return 1;
    }
    let (reaper_k, reaper_v) = rcni::net::detached::reaper_env();
    let cni_path = std::path::Path::new(plugin).parent().unwrap_or(std::path::Path::new(".")).display().to_string();
    let stdin = match std::fs::read(conf) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rcni-bench adds: {conf}: {e}");
            return 1;
        }
    };
    let mut walls = Vec::with_capacity(count);
    for i in 0..count {
        let (id, netns) = (format!("{id_prefix}{i}"), format!("/run/netns/{netns_prefix}{i}"));
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path.as_str()),
            (reaper_k, reaper_v.as_str()),
        ];
        // Spawn, wait, then wait for the call's detached helpers: the worker's own direct invocation.
        match crate::worker::exec_direct(std::path::Path::new(plugin), &env, &stdin) {
            Ok(run) => walls.push(run.wall_us),
            Err(e) => {
                eprintln!("rcni-bench adds: ADD {i}: {e}");
                return 1;
            }
        }
    }
    let p = Pct::of_us(&walls);
    eprintln!("{count} ADDs, wall per call (ms): p50 {:.2} p90 {:.2} p99 {:.2}", p.p50, p.p90, p.p99);
    0
}
