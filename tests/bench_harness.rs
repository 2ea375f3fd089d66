//! The benchmark harness (bench/) runs end to end in quick mode with a tiny N against our debug binaries and
//! the reference plugins, and its JSON has every figure for both suites. Correctness of the harness, not timing.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{TempDir, netns_list, rcni_bin, reference_plugin, require_root};

fn num(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr).and_then(Value::as_f64).unwrap_or_else(|| panic!("{ptr} missing or not a number in {v:#}"))
}

#[test]
fn quick_run_reports_every_figure_for_both_suites() {
    require_root();
    reference_plugin("bridge");
    let dir = TempDir::new("benchh");
    let json_path = dir.join("out.json");
    let md_path = dir.join("out.md");
    let run_id = format!("t{}", std::process::id());
    let plugin_dir = rcni_bin("bridge").parent().unwrap().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_rcni-bench"))
        .args([
            "--quick",
            "--pods",
            "3",
            "--reps",
            "2",
            "--concurrency",
            "2",
            "--scale-pods",
            "6",
            "--scale-window",
            "2",
        ])
        .args(["--iperf-secs", "1", "--run-id", &run_id])
        .arg("--plugin-dir")
        .arg(&plugin_dir)
        .arg("--json")
        .arg(&json_path)
        .arg("--markdown")
        .arg(&md_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rcni-bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> =
        netns_list().into_iter().filter(|n| n.starts_with(&format!("rcni-bench-{run_id}-"))).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");

    let doc: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    for suite in ["rcni", "reference"] {
        let s = &doc["suites"][suite];
        let mut ptrs = Vec::new();
        for op in ["add", "check", "del"] {
            for p in ["p50_ms", "p90_ms", "p99_ms"] {
                ptrs.push(format!("/runner/{op}/{p}"));
            }
            assert_eq!(s["runner"][op]["reps"].as_array().unwrap().len(), 2, "{suite}: one entry per rep");
        }
        for w in ["first", "last"] {
            for op in ["add", "del"] {
                ptrs.push(format!("/scaling/{op}/{w}/p50_ms"));
            }
        }
        ptrs.push("/scaling/add/growth_p50".into());
        for k in ["add_wall_ms", "del_wall_ms", "total_wall_ms"] {
            ptrs.push(format!("/parallel/{k}"));
        }
        for k in
            ["bridge_add", "bridge_del", "host_local_add", "host_local_del", "version_bridge", "version_host_local"]
        {
            ptrs.push(format!("/direct/{k}/p50_ms"));
            ptrs.push(format!("/direct/{k}/p99_ms"));
            ptrs.push(format!("/direct/{k}/cpu_ms_median"));
        }
        ptrs.extend(["/rss/bridge_add_tree_kib", "/rss/host_local_add_kib"].map(String::from));
        ptrs.extend(["/sizes/bridge", "/sizes/host-local", "/sizes/loopback", "/throughput/gbps"].map(String::from));
        for p in &ptrs {
            let x = num(s, p);
            assert!(x.is_finite() && x > 0.0, "{suite}{p} = {x}");
        }
        assert_eq!(s["runner"]["add"]["samples"], 6, "{suite}: 3 pods x 2 reps");
    }
    assert!(num(&doc, "/suites/rcni/sizes/vxlan") > 0.0);
    assert!(num(&doc, "/overlay/vxlan_gbps") > 0.0);
    assert!(num(&doc, "/overlay/underlay_gbps") > 0.0);
    // Every figure with a reference value has a ratio.
    for k in
        ["runner_add", "runner_check", "runner_del", "scaling_add_first", "scaling_add_last", "parallel_total_wall"]
    {
        let r = doc["ratios"][k].as_array().unwrap_or_else(|| panic!("ratio {k} missing"));
        assert!(r.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)), "ratio {k}: {r:?}");
    }
    for k in ["direct_bridge_add", "direct_version_bridge", "rss_bridge_add", "size_bridge", "tput_bridge"] {
        assert!(doc["ratios"][k].is_array(), "ratio {k} missing");
    }
    // The markdown on stdout and the file agree, and name both suites.
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert_eq!(md, stdout);
    assert!(md.contains("| figure | rcni | reference | ratio rcni/ref |"));
    assert!(md.contains("pod↔pod over rcni vxlan"));
    assert!(!std::env::temp_dir().join(format!("rcni-bench-{run_id}")).exists(), "temp dir removed");
}
