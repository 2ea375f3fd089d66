//! Shipping: `scripts/install` (with backups and `--uninstall`) and `scripts/release` (the tarball in the
//! reference's layout), run on the binaries cargo built for the tests. The tarball's own cnitool then runs a
//! conflist from the tarball in a throwaway node.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{NodeNs, PodNs, TempDir, rcni_bin, repo_dir, shipped_executables};

/// The directory cargo put the test binaries in (`target/debug`).
fn built_dir() -> PathBuf {
    rcni_bin("bridge").parent().unwrap().to_path_buf()
}

/// Stripped copies of every shipped executable in `dir`: the scripts treat them like release builds, and
/// the tests do not spend their time compressing debug info.
fn stripped_copies(dir: &Path) -> PathBuf {
    ensure_built();
    std::fs::create_dir_all(dir).unwrap();
    for (_, name) in shipped_executables() {
        let ok = Command::new("strip").arg("-o").arg(dir.join(&name)).arg(built_dir().join(&name)).status().unwrap();
        assert!(ok.success(), "strip {name}");
    }
    dir.to_path_buf()
}

fn script(name: &str, args: &[&str]) -> String {
    let out = Command::new(repo_dir().join("scripts").join(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/{name} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file below `dir` (hidden ones too) with its bytes, for before/after comparisons.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.map(|e| e.unwrap()) {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn ensure_built() {
    for (_, name) in shipped_executables() {
        assert!(
            built_dir().join(&name).is_file(),
            "{name} is not built in {}: build the whole workspace first (scripts/test does)",
            built_dir().display()
        );
    }
}

#[test]
fn install_backs_up_what_it_replaces_is_idempotent_and_uninstall_restores_the_bytes() {
    let t = TempDir::new("install");
    let (bin, tools, confd) = (t.join("opt/cni/bin"), t.join("usr/local/bin"), t.join("etc/cni/net.d"));
    // A node with the reference's bridge and a plugin rcni does not ship, and an older conflist.
    t.write("opt/cni/bin/bridge", b"reference bridge\n");
    t.write("opt/cni/bin/macvlan", b"reference macvlan\n");
    t.write("etc/cni/net.d/10-bridge.conflist", b"{\"old\": true}\n");
    let before = (tree(&bin), tree(&tools), tree(&confd));

    let from = stripped_copies(&t.join("built"));
    let args = [
        "--from",
        from.to_str().unwrap(),
        "--dest",
        bin.to_str().unwrap(),
        "--tools-dest",
        tools.to_str().unwrap(),
        "--conf",
        "10-bridge.conflist",
        "--conf-dir",
        confd.to_str().unwrap(),
    ];
    script("install", &args);
    for (kind, name) in shipped_executables() {
        let dir = if kind == "plugin" { &bin } else { &tools };
        assert_eq!(std::fs::read(dir.join(&name)).unwrap(), std::fs::read(from.join(&name)).unwrap(), "{name}");
    }
    assert_eq!(std::fs::read(bin.join(".rcni-backup/bridge")).unwrap(), b"reference bridge\n");
    assert_eq!(std::fs::read(bin.join("macvlan")).unwrap(), b"reference macvlan\n");
    assert_eq!(
        std::fs::read(confd.join("10-bridge.conflist")).unwrap(),
        std::fs::read(repo_dir().join("conf/10-bridge.conflist")).unwrap()
    );

    // A second run changes nothing, and keeps the first backup.
    let installed = (tree(&bin), tree(&tools), tree(&confd));
    let out = script("install", &args);
    assert!(!out.contains("installed"), "second install did something: {out}");
    assert_eq!((tree(&bin), tree(&tools), tree(&confd)), installed);

    script(
        "install",
        &[
            "--uninstall",
            "--dest",
            bin.to_str().unwrap(),
            "--tools-dest",
            tools.to_str().unwrap(),
            "--conf-dir",
            confd.to_str().unwrap(),
        ],
    );
    assert_eq!((tree(&bin), tree(&tools), tree(&confd)), before);
}

#[test]
fn release_tarball_is_reproducible_flat_and_its_conflist_runs_through_its_cnitool() {
    let t = TempDir::new("release");
    let from = stripped_copies(&t.join("built"));
    let a = script("release", &["--from", from.to_str().unwrap(), "--out", t.join("a").to_str().unwrap()]);
    let b = script("release", &["--from", from.to_str().unwrap(), "--out", t.join("b").to_str().unwrap()]);
    let (a, b) = (PathBuf::from(a.trim()), PathBuf::from(b.trim()));
    let version = env!("CARGO_PKG_VERSION");
    assert!(a.file_name().unwrap().to_str().unwrap().ends_with(&format!("-v{version}.tgz")), "{}", a.display());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same inputs, different tarballs");
    let mut sum = Command::new("sha256sum");
    sum.arg("-c").arg(a.with_extension("tgz.sha256")).current_dir(a.parent().unwrap());
    assert!(sum.status().unwrap().success(), "sha256 file does not verify");

    // Unpacked as an operator would, into /opt/cni/bin: the plugins are flat files at the top.
    let bin = t.join("opt/cni/bin");
    std::fs::create_dir_all(&bin).unwrap();
    assert!(Command::new("tar").arg("-xzf").arg(&a).arg("-C").arg(&bin).status().unwrap().success());
    for (_, name) in shipped_executables() {
        assert_eq!(std::fs::read(bin.join(&name)).unwrap(), std::fs::read(from.join(&name)).unwrap(), "{name}");
    }
    for e in std::fs::read_dir(repo_dir().join("conf")).unwrap() {
        let e = e.unwrap();
        assert!(bin.join("conf").join(e.file_name()).is_file(), "{:?} not in the tarball", e.file_name());
    }

    // Its bridge conflist, with a private dataDir, through its own cnitool.
    let mut conf: Value = serde_json::from_slice(&std::fs::read(bin.join("conf/10-bridge.conflist")).unwrap()).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = t.join("ipam").to_str().unwrap().into();
    t.write("net.d/10-bridge.conflist", serde_json::to_vec(&conf).unwrap());
    let node = NodeNs::new("rel");
    let pod = PodNs::new("rel");
    let net = conf["name"].as_str().unwrap().to_string();
    let run = |cmd: &str| {
        node.cmd(bin.join("cnitool"))
            .args([cmd, &net, pod.path_str()])
            .env("NETCONFPATH", t.join("net.d"))
            .env("CNI_PATH", &bin)
            .env("CNI_CACHE_DIR", t.join("cache"))
            .run()
    };
    let result = run("add").ok().json();
    let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(pod.addr_cidrs("eth0").contains(&ip), "pod eth0 lacks {ip}");
    run("check").ok();
    run("del").ok();
    assert!(pod.link("eth0").is_none());
}
