//! The container image and the manifests that use it: `scripts/image` builds the Containerfile offline with
//! podman from static executables; a plugin in it answers VERSION under `podman run`, its install-cni role
//! copies the plugins and a conflist into a mounted directory; the manifests in deploy/ parse and name only
//! files the image contains.
//!
//! This sandbox's podman needs two settings a normal node does not: runc instead of crun (the machine mounts
//! cgroups in hybrid mode, which crun refuses) and no default ulimits (raising them is not permitted here).
//! They are passed through a private containers.conf for these runs only.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{TempDir, repo_dir, shipped_executables};

/// Where the image puts an executable of this kind.
fn image_path(kind: &str, name: &str) -> String {
    if kind == "plugin" { format!("/opt/cni/bin/{name}") } else { format!("/usr/bin/{name}") }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Static (glibc linked in) dev builds of every shipped executable, stripped, in `dir`: the image has no libc.
fn static_executables(dir: &Path) {
    let host = run(Command::new("rustc").arg("-vV"));
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_string();
    let target_dir = repo_dir().join("target/static");
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(repo_dir())
        .args(["build", "--bins", "--target", &host, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if repo_dir().join("agent/Cargo.toml").is_file() {
        build.arg("--workspace");
    }
    run(&mut build);
    std::fs::create_dir_all(dir).unwrap();
    for (_, name) in shipped_executables() {
        run(Command::new("strip").arg("-o").arg(dir.join(&name)).arg(target_dir.join(&host).join("debug").join(&name)));
    }
}

/// podman with this sandbox's two settings (see the module doc).
fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf).arg("--runtime").arg("runc");
    c
}

struct Image {
    tag: String,
    conf: PathBuf,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&self.conf).args(["rmi", "-f", &self.tag]).output();
    }
}

#[test]
fn image_builds_offline_its_plugin_answers_version_and_install_cni_copies_the_plugins() {
    let t = TempDir::new("image");
    let conf = t.write("containers.conf", "[containers]\ndefault_ulimits = []\n");
    let bins = t.join("bin");
    static_executables(&bins);
    let tag = format!("localhost/rcni-test:{}", std::process::id());
    let printed = run(Command::new(repo_dir().join("scripts/image"))
        .args(["--from", bins.to_str().unwrap(), "--tag", &tag])
        .env("CONTAINERS_CONF", &conf));
    assert_eq!(printed.trim(), tag);
    let image = Image { tag: tag.clone(), conf: conf.clone() };

    let version = run(podman(&conf).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--env",
        "CNI_COMMAND=VERSION",
        "--entrypoint",
        "/opt/cni/bin/bridge",
        &image.tag,
    ]));
    let v: Value = serde_json::from_str(&version).unwrap_or_else(|e| panic!("VERSION answer {version:?}: {e}"));
    assert!(v["supportedVersions"].as_array().unwrap().iter().any(|x| x == "1.1.0"), "{v}");

    // The install-cni role, as the DaemonSet's init container runs it, onto a "node" directory.
    let node_bin = t.join("node/opt/cni/bin");
    let node_conf = t.join("node/etc/cni/net.d");
    std::fs::create_dir_all(&node_bin).unwrap();
    std::fs::create_dir_all(&node_conf).unwrap();
    run(podman(&conf)
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/host/opt/cni/bin", node_bin.display()))
        .arg("-v")
        .arg(format!("{}:/host/etc/cni/net.d", node_conf.display()))
        .args(["--entrypoint", "/usr/bin/rcni-install-cni", &image.tag])
        .args([
            "--conf-src",
            "/etc/rcni/conf/10-bridge.conflist",
            "--conf-dest",
            "/host/etc/cni/net.d/10-bridge.conflist",
        ]));
    for (kind, name) in shipped_executables() {
        if kind == "plugin" {
            assert_eq!(
                std::fs::read(node_bin.join(&name)).unwrap(),
                std::fs::read(bins.join(&name)).unwrap(),
                "{name}"
            );
        } else {
            assert!(!node_bin.join(&name).exists(), "{name} is not a plugin but was installed as one");
        }
    }
    assert_eq!(
        std::fs::read(node_conf.join("10-bridge.conflist")).unwrap(),
        std::fs::read(repo_dir().join("conf/10-bridge.conflist")).unwrap()
    );
}

/// Every `--flag` a manifest passes is one the executable's `--help` lists, and not as unsupported.
fn flags_are_supported(manifest: &Path, cmd: &str, args: &[&str]) {
    let name = Path::new(cmd).file_name().unwrap().to_str().unwrap();
    let built = support::rcni_bin("bridge").parent().unwrap().join(name);
    let out = Command::new(&built).arg("--help").output().unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    let help = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        let line = help.lines().find(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '-')).any(|w| w == flag));
        let line = line.unwrap_or_else(|| panic!("{}: {name} has no flag {flag}:\n{help}", manifest.display()));
        assert!(!line.contains("not supported"), "{}: {name} {flag}: {line}", manifest.display());
    }
}

/// Every `command:` of every container in deploy/*.yaml names an executable the image has, and every
/// conflist a ConfigMap carries is valid JSON with plugin types rcni ships or the reference does.
#[test]
fn manifests_parse_and_name_only_files_the_image_contains() {
    let in_image: Vec<String> = shipped_executables().iter().map(|(k, n)| image_path(k, n)).collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_dir().join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        // YAML to JSON with Python's yaml (python3-yaml, scripts/deps).
        let json = run(Command::new("python3")
            .arg("-c")
            .arg("import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))")
            .arg(&path));
        let docs: Vec<Value> = serde_json::from_str(&json).unwrap();
        for doc in &docs {
            assert!(doc["kind"].is_string() && doc["apiVersion"].is_string(), "{}: {doc}", path.display());
            let spec = &doc["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    let cmd = c["command"][0].as_str().unwrap_or_else(|| panic!("{}: no command", path.display()));
                    assert!(in_image.iter().any(|p| p == cmd), "{}: {cmd} is not in the image", path.display());
                    let args: Vec<&str> =
                        c["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
                    flags_are_supported(&path, cmd, &args);
                    checked += 1;
                }
            }
            if doc["kind"] == "ConfigMap" {
                for (key, value) in doc["data"].as_object().unwrap() {
                    let v: Value = serde_json::from_str(value.as_str().unwrap())
                        .unwrap_or_else(|e| panic!("{}: {key} is not JSON: {e}", path.display()));
                    for p in v["plugins"].as_array().into_iter().flatten() {
                        let ty = p["type"].as_str().unwrap();
                        let ours = in_image.contains(&format!("/opt/cni/bin/{ty}"));
                        let reference = Path::new(support::REFERENCE_PLUGIN_DIR).join(ty).is_file();
                        assert!(ours || reference, "{}: {key} uses plugin type {ty} nobody ships", path.display());
                    }
                }
            }
        }
    }
    assert!(checked >= 2, "no containers found in deploy/");
}
