//! Turning raw worker samples into figures (JSON) and the markdown table.

use serde_json::{Value, json};

use crate::stats::{Pct, floats, median};
use crate::{Params, Suite};

const OPS: [&str; 3] = ["add", "check", "del"];
const DIRECT: [&str; 6] =
    ["bridge_add", "bridge_del", "host_local_add", "host_local_del", "version_bridge", "version_host_local"];

/// Per-repetition percentiles and their medians for one sample series found at `path` in every rep.
fn series(reps: &[Value], path: &str) -> Value {
    let per: Vec<Pct> = reps.iter().map(|r| Pct::of_us(&floats(r.pointer(path).unwrap_or(&Value::Null)))).collect();
    let mut v = Pct::median_of(&per).json();
    v["reps"] = json!(per.iter().map(Pct::json).collect::<Vec<_>>());
    v
}

/// Median over repetitions of a per-repetition statistic of a series.
fn med_of(reps: &[Value], path: &str, f: impl Fn(&[f64]) -> f64) -> f64 {
    median(&reps.iter().map(|r| f(&floats(r.pointer(path).unwrap_or(&Value::Null)))).collect::<Vec<_>>())
}

pub fn suite_json(p: &Params, s: &Suite, reps: &[Value], scale: &Value, tput: &Value, sizes: Value) -> Value {
    let mut runner = serde_json::Map::new();
    for op in OPS {
        let mut v = series(reps, &format!("/serial/{op}/samples_us"));
        v["cpu_ms_median"] = json!(med_of(reps, &format!("/serial/{op}/cpu_us"), median) / 1000.0);
        runner.insert(op.into(), v);
    }
    let wall = |op: &str| {
        median(&reps.iter().filter_map(|r| r["parallel"][op]["wall_us"].as_f64()).collect::<Vec<_>>()) / 1000.0
    };
    let parallel = json!({
        "pods": p.pods,
        "concurrency": p.concurrency,
        "add_wall_ms": wall("add"),
        "del_wall_ms": wall("del"),
        "total_wall_ms": wall("add") + wall("del"),
        "add_latency": series(reps, "/parallel/add/samples_us"),
        "del_latency": series(reps, "/parallel/del/samples_us"),
    });
    let mut direct = serde_json::Map::new();
    for k in DIRECT {
        let mut v = series(reps, &format!("/direct/{k}/samples_us"));
        v["cpu_ms_median"] = json!(med_of(reps, &format!("/direct/{k}/cpu_us"), median) / 1000.0);
        v["maxrss_kib_median"] = json!(med_of(reps, &format!("/direct/{k}/maxrss_kib"), median));
        v["maxrss_kib_max"] =
            json!(med_of(reps, &format!("/direct/{k}/maxrss_kib"), |s| s.iter().cloned().fold(0.0, f64::max)));
        direct.insert(k.into(), v);
    }
    let rss = json!({
        "bridge_add_tree_kib": direct["bridge_add"]["maxrss_kib_median"],
        "bridge_add_tree_kib_max": direct["bridge_add"]["maxrss_kib_max"],
        "host_local_add_kib": direct["host_local_add"]["maxrss_kib_median"],
        "bridge_version_kib": direct["version_bridge"]["maxrss_kib_median"],
    });
    json!({
        "plugin_dir": s.dir,
        "runner": runner,
        "parallel": parallel,
        "scaling": scale,
        "direct": direct,
        "rss": rss,
        "sizes": sizes,
        "throughput": tput,
    })
}

pub fn document(p: &Params, machine: Value, suites: Value, overlay: Value) -> Value {
    let mut doc = json!({
        "params": {
            "pods": p.pods, "reps": p.reps, "concurrency": p.concurrency, "scale_pods": p.scale_pods,
            "scale_window": p.scale_window, "iperf_secs": p.iperf_secs, "quick": p.quick,
        },
        "machine": machine,
        "ratio": "rcni / reference (< 1: rcni faster or smaller; for throughput > 1: rcni faster)",
        "suites": suites,
        "overlay": overlay,
    });
    let rows = rows(&doc);
    let ratios: serde_json::Map<String, Value> = rows
        .iter()
        .filter(|r| r.ratio.is_some())
        .map(|r| (r.key.clone(), json!(r.ratio.clone().unwrap().iter().map(|x| finite(*x)).collect::<Vec<_>>())))
        .collect();
    doc["ratios"] = Value::Object(ratios);
    doc
}

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// One line of the table: values of both suites (1 or 3 numbers each) and their ratios.
struct Row {
    section: &'static str,
    key: String,
    label: String,
    rcni: Vec<f64>,
    reference: Option<Vec<f64>>,
    ratio: Option<Vec<f64>>,
    decimals: usize,
}

fn get(doc: &Value, suite: &str, ptr: &str) -> f64 {
    doc["suites"][suite].pointer(ptr).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn rows(doc: &Value) -> Vec<Row> {
    let prm = &doc["params"];
    let (n, reps, c) = (&prm["pods"], &prm["reps"], &prm["concurrency"]);
    let (sp, w) = (prm["scale_pods"].as_u64().unwrap_or(0), prm["scale_window"].as_u64().unwrap_or(0));
    let mut out = Vec::new();
    let mut add = |section: &'static str, key: &str, label: String, ptrs: &[String], decimals: usize| {
        let r: Vec<f64> = ptrs.iter().map(|p| get(doc, "rcni", p)).collect();
        let g: Vec<f64> = ptrs.iter().map(|p| get(doc, "reference", p)).collect();
        let has_ref = g.iter().any(|x| x.is_finite());
        let ratio = has_ref.then(|| r.iter().zip(&g).map(|(a, b)| a / b).collect());
        out.push(Row { section, key: key.into(), label, rcni: r, reference: has_ref.then_some(g), ratio, decimals });
    };
    let pct =
        |base: &str| -> Vec<String> { ["p50_ms", "p90_ms", "p99_ms"].iter().map(|k| format!("{base}/{k}")).collect() };
    for op in OPS {
        add(
            "runner",
            &format!("runner_{op}"),
            format!("{} p50 / p90 / p99 (ms), N={n} serial, median of {reps} reps", op.to_uppercase()),
            &pct(&format!("/runner/{op}")),
            2,
        );
    }
    add(
        "runner",
        "runner_cpu",
        "ADD / CHECK / DEL CPU time per call, user+sys of the plugin processes (ms, median)".into(),
        &OPS.map(|op| format!("/runner/{op}/cpu_ms_median")),
        2,
    );
    add(
        "scaling",
        "scaling_add_first",
        format!("ADD p50 / p90 / p99 (ms), pods 1–{w} of {sp} on one bridge"),
        &pct("/scaling/add/first"),
        2,
    );
    add(
        "scaling",
        "scaling_add_last",
        format!("ADD p50 / p90 / p99 (ms), pods {}–{sp} of {sp}", sp - w + 1),
        &pct("/scaling/add/last"),
        2,
    );
    add(
        "scaling",
        "scaling_add_growth",
        "ADD p50 growth: last window / first window".into(),
        &["/scaling/add/growth_p50".into()],
        2,
    );
    add(
        "scaling",
        "scaling_add_cpu",
        format!("ADD CPU time (ms, median): pods 1–{w} / pods {}–{sp} / growth", sp - w + 1),
        &["/scaling/add/cpu_ms_first".into(), "/scaling/add/cpu_ms_last".into(), "/scaling/add/cpu_growth".into()],
        2,
    );
    for (when, pods) in [("first", format!("pods 1–{w}")), ("last", format!("pods {}–{sp}", sp - w + 1))] {
        add(
            "scaling",
            &format!("scaling_add_split_{when}"),
            format!("one ADD, {pods}: user / kernel / off-CPU (ms, mean of the window)"),
            &["user_ms", "sys_ms", "off_cpu_ms"].map(|k| format!("/scaling/add/split_{when}/{k}")),
            2,
        );
    }
    add(
        "scaling",
        "scaling_del_first",
        format!("(extra) DEL p50 / p90 / p99 (ms), pods 1–{w}, {sp} present"),
        &pct("/scaling/del/first"),
        2,
    );
    add(
        "scaling",
        "scaling_del_last",
        format!("(extra) DEL p50 / p90 / p99 (ms), pods {}–{sp}", sp - w + 1),
        &pct("/scaling/del/last"),
        2,
    );
    add(
        "scaling",
        "scaling_del_growth",
        "(extra) DEL p50 growth: first window (all present) / last window".into(),
        &["/scaling/del/growth_first_p50".into()],
        2,
    );
    add(
        "scaling",
        "scaling_wall",
        format!("(extra) wall (ms) of all {sp} ADD / all {sp} DEL"),
        &["/scaling/add/wall_ms".into(), "/scaling/del/wall_ms".into()],
        0,
    );
    add(
        "parallel",
        "parallel_add_wall",
        format!("{n} ADD, {c} in parallel: total wall (ms)"),
        &["/parallel/add_wall_ms".into()],
        0,
    );
    add(
        "parallel",
        "parallel_del_wall",
        format!("{n} DEL, {c} in parallel: total wall (ms)"),
        &["/parallel/del_wall_ms".into()],
        0,
    );
    add(
        "parallel",
        "parallel_total_wall",
        format!("{n} ADD + {n} DEL: total wall (ms)"),
        &["/parallel/total_wall_ms".into()],
        0,
    );
    let labels = [
        ("bridge_add", "bridge ADD (includes the host-local child)"),
        ("bridge_del", "bridge DEL (includes the host-local child)"),
        ("host_local_add", "host-local ADD"),
        ("host_local_del", "host-local DEL"),
        ("version_bridge", "bridge VERSION (process start-up)"),
        ("version_host_local", "host-local VERSION (process start-up)"),
    ];
    for (k, l) in labels {
        add("direct", &format!("direct_{k}"), format!("{l}: p50 / p90 / p99 (ms)"), &pct(&format!("/direct/{k}")), 2);
    }
    add(
        "direct",
        "cpu_bridge_add",
        "bridge ADD CPU time, user+sys of plugin + IPAM child (ms, median)".into(),
        &["/direct/bridge_add/cpu_ms_median".into()],
        2,
    );
    add(
        "direct",
        "cpu_bridge_del",
        "bridge DEL CPU time, user+sys of plugin + IPAM child (ms, median)".into(),
        &["/direct/bridge_del/cpu_ms_median".into()],
        2,
    );
    add(
        "memory",
        "rss_bridge_add",
        "peak RSS of one bridge ADD, max(plugin, IPAM child) (KiB, median)".into(),
        &["/rss/bridge_add_tree_kib".into()],
        0,
    );
    add(
        "memory",
        "rss_host_local_add",
        "peak RSS of host-local ADD alone (KiB, median)".into(),
        &["/rss/host_local_add_kib".into()],
        0,
    );
    add(
        "memory",
        "rss_version",
        "peak RSS of bridge VERSION (KiB, median)".into(),
        &["/rss/bridge_version_kib".into()],
        0,
    );
    for b in ["bridge", "host-local", "loopback", "vxlan"] {
        add("size", &format!("size_{b}"), format!("binary size: {b} (KiB)"), &[format!("/sizes/{b}")], 0);
    }
    add(
        "throughput",
        "tput_bridge",
        "pod↔pod TCP on one bridge, iperf3 (Gbit/s, median of runs)".into(),
        &["/throughput/gbps".into()],
        2,
    );
    // sizes are bytes in the JSON, KiB in the table
    for r in out.iter_mut().filter(|r| r.section == "size") {
        r.rcni.iter_mut().for_each(|x| *x /= 1024.0);
        if let Some(g) = r.reference.as_mut() {
            g.iter_mut().for_each(|x| *x /= 1024.0);
        }
    }
    out
}

fn fmt(v: &[f64], d: usize) -> String {
    v.iter().map(|x| if x.is_finite() { format!("{x:.d$}") } else { "–".into() }).collect::<Vec<_>>().join(" / ")
}

pub fn markdown(doc: &Value) -> String {
    let m = &doc["machine"];
    let prm = &doc["params"];
    let mut s = String::new();
    s.push_str("# rcni vs reference CNI plugins\n\n");
    s.push_str(&format!(
        "- machine: {} ({} cores), {} memory, kernel {}\n- date: {}; run took {:.0} s\n- rcni commit: {}{}; reference: {}; {}\n\
         - load average (1/5/15 min): start {}, end {}\n- parameters: pods={} reps={} concurrency={} scale-pods={} \
         scale-window={} iperf-secs={}{}\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        m["duration_s"].as_f64().unwrap_or(0.0),
        m["rcni_commit"].as_str().unwrap_or("?"),
        if m["rcni_dirty"].as_bool() == Some(true) { " (+ uncommitted changes)" } else { "" },
        m["reference"].as_str().unwrap_or("?"),
        m["iptables"].as_str().unwrap_or(""),
        m["loadavg_start"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
        prm["pods"],
        prm["reps"],
        prm["concurrency"],
        prm["scale_pods"],
        prm["scale_window"],
        prm["iperf_secs"],
        if prm["quick"].as_bool() == Some(true) { " (quick)" } else { "" },
    ));
    s.push_str("ratio = rcni / reference: below 1 means rcni is faster (latency, wall time) or smaller (RSS, size); ");
    s.push_str("for throughput above 1 means rcni is faster. Latencies in ms.\n\n");
    let titles = [
        ("runner", "Through the runner (the rcni runtime library in-process, as cnitool/containerd would)"),
        ("scaling", "Scaling: one bridge, ipMasq on, pods added one after another"),
        ("parallel", "Concurrency"),
        ("direct", "Direct invocation (the plugin binary with CNI_* env + stdin, no runner)"),
        ("memory", "Memory"),
        ("size", "Binary size"),
        ("throughput", "Data path"),
    ];
    let rows = rows(doc);
    s.push_str("| figure | rcni | reference | ratio rcni/ref |\n|---|---:|---:|---:|\n");
    for (sec, title) in titles {
        s.push_str(&format!("| **{title}** | | | |\n"));
        for r in rows.iter().filter(|r| r.section == sec) {
            let g = r.reference.as_ref().map(|g| fmt(g, r.decimals)).unwrap_or_else(|| "n/a".into());
            let ratio = r.ratio.as_ref().map(|x| fmt(x, 2)).unwrap_or_else(|| "–".into());
            s.push_str(&format!("| {} | {} | {} | {} |\n", r.label, fmt(&r.rcni, r.decimals), g, ratio));
        }
    }
    let o = &doc["overlay"];
    if !o.is_null() {
        s.push_str(&format!(
            "\nCross-node (two node netns on an underlay switch, 198.18.0.0/24), iperf3 TCP {} s; the reference has no \
             vxlan plugin:\n\n| path | Gbit/s |\n|---|---:|\n| pod↔pod over rcni vxlan | {:.2} |\n| raw underlay node↔node | \
             {:.2} |\n| ratio vxlan / underlay | {:.2} |\n",
            o["secs"],
            o["vxlan_gbps"].as_f64().unwrap_or(f64::NAN),
            o["underlay_gbps"].as_f64().unwrap_or(f64::NAN),
            o["ratio"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    s
}
