//! host-local integration tests: the built binary with CNI_* env + stdin, a temp dataDir per test, and
//! (when installed) the reference binary `/usr/lib/cni/host-local` on the same state.
//! host-local needs no network namespace: nothing here touches the host network.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod support;

const OURS: &str = env!("CARGO_BIN_EXE_host-local");
const REFERENCE: &str = "/usr/lib/cni/host-local";
const NET: &str = "testnet";

/// `root` is a directory not yet created (tests assert that a refused command leaves it so) inside a
/// throwaway directory, removed with `_outer`.
struct TempDir {
    root: PathBuf,
    _outer: tempfile::TempDir,
}

impl TempDir {
    fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }
    fn new_in(base: &Path, tag: &str) -> TempDir {
        let outer = tempfile::TempDir::with_prefix_in(format!("rcni-hl-{tag}-"), base).unwrap();
        TempDir { root: outer.path().join("t"), _outer: outer }
    }
    fn data(&self) -> String {
        self.root.join("data").to_string_lossy().into_owned()
    }
    fn net(&self) -> PathBuf {
        self.root.join("data").join(NET)
    }
}

#[derive(Debug)]
struct Out {
    ok: bool,
    json: Value,
    stderr: String,
}

impl Out {
    fn code(&self) -> u64 {
        assert!(!self.ok, "expected failure, got {}", self.json);
        self.json["code"].as_u64().unwrap()
    }
    fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
    fn ips(&self) -> Vec<String> {
        assert!(self.ok, "expected success: {} {}", self.json, self.stderr);
        self.json["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap().to_string()).collect()
    }
    fn expect_ok(&self) {
        assert!(self.ok, "expected success: {} {}", self.json, self.stderr);
    }
}

fn run(bin: &str, cmd: &str, id: &str, ifname: &str, conf: &Value, cni_args: &str) -> Out {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !id.is_empty() {
        c.env("CNI_CONTAINERID", id).env("CNI_IFNAME", ifname).env("CNI_NETNS", "/nonexistent/netns");
    }
    if !cni_args.is_empty() {
        c.env("CNI_ARGS", cni_args);
    }
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let json = if o.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&o.stdout).unwrap() };
    Out { ok: o.status.success(), json, stderr: String::from_utf8_lossy(&o.stderr).into_owned() }
}

fn add(bin: &str, id: &str, conf: &Value) -> Out {
    run(bin, "ADD", id, "eth0", conf, "")
}

fn del(bin: &str, id: &str, conf: &Value) -> Out {
    run(bin, "DEL", id, "eth0", conf, "")
}

/// The reference host-local is the oracle of the differential tests: missing, they fail (scripts/deps
/// installs it), never pass without comparing.
fn require_reference() {
    support::reference_plugin("host-local");
}

fn conf(t: &TempDir, version: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(t.data());
    json!({"cniVersion": version, "name": NET, "type": "bridge", "ipam": ipam})
}

/// Files of the network directory: name -> content.
fn files(dir: &Path) -> BTreeMap<String, String> {
    let Ok(rd) = fs::read_dir(dir) else { return BTreeMap::new() };
    rd.map(|e| {
        let e = e.unwrap();
        (e.file_name().to_string_lossy().into_owned(), fs::read_to_string(e.path()).unwrap_or_default())
    })
    .collect()
}

fn ip_files(dir: &Path) -> BTreeMap<String, String> {
    files(dir).into_iter().filter(|(n, _)| n.parse::<std::net::IpAddr>().is_ok()).collect()
}

fn dual_stack(t: &TempDir, version: &str) -> Value {
    conf(
        t,
        version,
        json!({
            "ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd00:22::/64", "gateway": "fd00:22::fe"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "192.168.0.0/16", "gw": "10.22.0.9"}]
        }),
    )
}

#[test]
fn dual_stack_result_shape_for_every_version() {
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let t = TempDir::new("shape");
        let c = dual_stack(&t, version);
        let o = add(OURS, "c1", &c);
        assert!(o.ok, "{version}: {}", o.json);
        let j = &o.json;
        assert_eq!(j["cniVersion"], version);
        assert!(j.get("interfaces").is_none(), "{version}: IPAM result has no interfaces: {j}");
        if version.starts_with("0.1") || version.starts_with("0.2") {
            assert_eq!(j["ip4"]["ip"], "10.22.0.2/24", "{j}");
            assert_eq!(j["ip4"]["gateway"], "10.22.0.1");
            assert_eq!(j["ip6"]["ip"], "fd00:22::1/64", "{j}");
            assert_eq!(j["ip6"]["gateway"], "fd00:22::fe");
            let r4: Vec<&str> =
                j["ip4"]["routes"].as_array().unwrap().iter().map(|r| r["dst"].as_str().unwrap()).collect();
            assert_eq!(r4, ["0.0.0.0/0", "192.168.0.0/16"]);
            assert_eq!(j["ip4"]["routes"][1]["gw"], "10.22.0.9");
            assert_eq!(j["ip6"]["routes"][0]["dst"], "::/0");
        } else {
            let ips = j["ips"].as_array().unwrap();
            assert_eq!(ips.len(), 2);
            assert_eq!(ips[0]["address"], "10.22.0.2/24");
            assert_eq!(ips[0]["gateway"], "10.22.0.1");
            assert_eq!(ips[1]["address"], "fd00:22::1/64");
            assert_eq!(ips[1]["gateway"], "fd00:22::fe");
            for ip in ips {
                assert!(ip.get("interface").is_none(), "{j}");
            }
            if version.starts_with("0.") {
                assert_eq!(ips[0]["version"], "4");
                assert_eq!(ips[1]["version"], "6");
            } else {
                assert!(ips[0].get("version").is_none());
            }
            assert_eq!(j["routes"].as_array().unwrap().len(), 3);
            assert_eq!(j["routes"][2], json!({"dst": "192.168.0.0/16", "gw": "10.22.0.9"}));
        }
        let f = files(&t.net());
        assert_eq!(f["10.22.0.2"], "c1\r\neth0");
        assert_eq!(f["fd00:22::1"], "c1\r\neth0");
        assert_eq!(f["last_reserved_ip.0"], "10.22.0.2");
        assert_eq!(f["last_reserved_ip.1"], "fd00:22::1");
    }
}

#[test]
fn same_shape_as_reference() {
    require_reference();
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"] {
        let (t1, t2) = (TempDir::new("shape-ours"), TempDir::new("shape-ref"));
        let mut ours = add(OURS, "c1", &dual_stack(&t1, version)).json;
        let mut theirs = add(REFERENCE, "c1", &dual_stack(&t2, version)).json;
        // The reference (libcni 1.0.1) always prints "dns": {}; ours omits an empty dns in 1.x (like HEAD).
        for j in [&mut ours, &mut theirs] {
            if j.get("dns") == Some(&json!({})) {
                j.as_object_mut().unwrap().remove("dns");
            }
        }
        assert_eq!(ours, theirs, "cniVersion {version}");
        assert_eq!(files(&t1.net()), files(&t2.net()), "cniVersion {version}");
    }
}

#[test]
fn resolv_conf_fills_dns() {
    let t = TempDir::new("dns");
    fs::create_dir_all(&t.root).unwrap();
    let rc = t.root.join("resolv.conf");
    fs::write(&rc, "nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\ndomain example\n").unwrap();
    let c = conf(&t, "1.0.0", json!({"subnet": "10.5.0.0/24", "resolvConf": rc}));
    let o = add(OURS, "c1", &c);
    o.expect_ok();
    assert_eq!(
        o.json["dns"],
        json!({"nameservers": ["10.0.0.53"], "domain": "example", "search": ["a.example", "b.example"], "options": ["ndots:2"]})
    );
    let c = conf(&t, "1.0.0", json!({"subnet": "10.5.0.0/24", "resolvConf": t.root.join("missing")}));
    let o = add(OURS, "c2", &c);
    assert!(o.msg().contains("ipam.resolvConf"), "{}", o.json);
}

#[test]
fn concurrent_adds_then_dels() {
    let t = TempDir::new("conc");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.30.0.0/24"}]]}));
    let n = 200;
    let outs: Vec<(String, Out)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let id = format!("ctr-{i:03}");
                    let o = add(OURS, &id, c);
                    (id, o)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for (id, o) in &outs {
        let ips = o.ips();
        assert_eq!(ips.len(), 1);
        let ip = ips[0].strip_suffix("/24").unwrap().to_string();
        assert!(seen.insert(ip.clone()), "duplicate {ip}");
        assert_eq!(fs::read_to_string(t.net().join(&ip)).unwrap(), format!("{id}\r\neth0"));
    }
    let f = ip_files(&t.net());
    assert_eq!(f.len(), n);
    assert!(!f.contains_key("10.30.0.1") && !f.contains_key("10.30.0.0") && !f.contains_key("10.30.0.255"));
    // 253 allocatable addresses (.2-.254; .1 is the gateway), 200 taken.
    let free = (2..=254).filter(|i| !f.contains_key(&format!("10.30.0.{i}"))).count();
    assert_eq!(free, 253 - n);
    for (name, _) in files(&t.net()) {
        assert!(
            name == "lock" || name.starts_with("last_reserved_ip.") || f.contains_key(&name),
            "unexpected file {name}"
        );
    }
    // STATUS (needs a 1.1.0 config): still addresses left.
    let c11 = conf(&t, "1.1.0", json!({"ranges": [[{"subnet": "10.30.0.0/24"}]]}));
    run(OURS, "STATUS", "", "", &c11, "").expect_ok();

    let dels: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = outs.iter().map(|(id, _)| s.spawn(|| del(OURS, id, &c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in dels {
        o.expect_ok();
    }
    let left: Vec<String> = files(&t.net()).into_keys().collect();
    assert_eq!(left, ["last_reserved_ip.0", "lock"]);
}

#[test]
fn exhaustion_and_status() {
    let t = TempDir::new("exhaust");
    let ipam = json!({"ranges": [[{"subnet": "10.40.0.0/29"}], [{"subnet": "fd00:40::/64"}]]});
    let c = conf(&t, "1.1.0", ipam);
    for i in 0..5 {
        add(OURS, &format!("c{i}"), &c).expect_ok();
    }
    let o = add(OURS, "c5", &c);
    assert_eq!(o.code(), 999);
    assert!(
        o.msg()
            .starts_with("failed to allocate for range 0: no IP addresses available in range set: 10.40.0.1-10.40.0.6"),
        "{}",
        o.msg()
    );
    assert!(o.msg().contains("all 5 allocatable addresses"), "{}", o.msg());
    // The failed ADD took nothing from range set 1.
    assert_eq!(ip_files(&t.net()).len(), 10);
    let s = run(OURS, "STATUS", "", "", &c, "");
    assert_eq!(s.code(), 50);
    assert!(s.msg().contains("range set 0 (10.40.0.1-10.40.0.6, 5 addresses)"), "{}", s.msg());
    del(OURS, "c2", &c).expect_ok();
    run(OURS, "STATUS", "", "", &c, "").expect_ok();
    // Round-robin wraps to the freed address.
    assert_eq!(add(OURS, "c5", &c).ips()[0], "10.40.0.4/29");
}

#[test]
fn requested_ips_from_every_source() {
    let t = TempDir::new("req");
    let mut c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.50.0.0/24"}], [{"subnet": "fd00:50::/64"}]]}));
    // CNI_ARGS IP (comma list).
    let o = run(OURS, "ADD", "c1", "eth0", &c, "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.50.0.77,fd00:50::77/64");
    assert_eq!(o.ips(), ["10.50.0.77/24", "fd00:50::77/64"]);
    // args.cni.ips
    c["args"] = json!({"cni": {"ips": ["10.50.0.78"]}});
    // (the other set continues round-robin after the last reserved address, requested or not)
    assert_eq!(add(OURS, "c2", &c).ips(), ["10.50.0.78/24", "fd00:50::78/64"]);
    // runtimeConfig.ips
    c.as_object_mut().unwrap().remove("args");
    c["runtimeConfig"] = json!({"ips": ["fd00:50::79"]});
    assert_eq!(add(OURS, "c3", &c).ips(), ["10.50.0.79/24", "fd00:50::79/64"]);
    // Taken: the error names the holder; nothing else reserved.
    c["runtimeConfig"] = json!({"ips": ["10.50.0.77"]});
    let before = files(&t.net());
    let o = add(OURS, "c4", &c);
    assert_eq!(o.code(), 999);
    assert!(o.msg().contains("requested IP address 10.50.0.77 is not available in range set 10.50.0.1-10.50.0.254"));
    assert!(o.msg().contains("held by container c1 interface eth0"), "{}", o.msg());
    assert_eq!(files(&t.net()), before);
    // Gateway.
    c["runtimeConfig"] = json!({"ips": ["10.50.0.1"]});
    assert!(add(OURS, "c4", &c).msg().contains("requested ip 10.50.0.1 is subnet's gateway"));
    // Outside every range: refused before any file is touched.
    c["runtimeConfig"] = json!({"ips": ["10.99.0.1"]});
    let o = add(OURS, "c4", &c);
    assert_eq!(o.code(), 999);
    assert!(o.msg().starts_with("failed to allocate all requested IPs: 10.99.0.1"), "{}", o.msg());
    assert_eq!(files(&t.net()), before);
    // ipRanges from the runtime are prepended; the set indexes shift, so round-robin restarts once
    // (last_reserved_ip.1 now names an IPv6 address, outside set 1), as in the reference.
    c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.60.0.0/24"}]]});
    assert_eq!(add(OURS, "c5", &c).ips(), ["10.60.0.2/24", "10.50.0.2/24", "fd00:50::2/64"]);
}

#[test]
fn del_is_idempotent_and_check_finds_reservation() {
    let t = TempDir::new("del");
    let c = conf(&t, "1.0.0", json!({"subnet": "10.70.0.0/24"}));
    // DEL of something never added, on a network that has no directory: ok, and creates nothing.
    del(OURS, "ghost", &c).expect_ok();
    assert!(!t.root.exists());
    let r = add(OURS, "c1", &c);
    r.expect_ok();
    add(OURS, "c1x", &c).expect_ok();
    run(OURS, "CHECK", "c1", "eth0", &c, "").expect_ok();
    // CHECK with prevResult that matches, and one that does not.
    let mut cp = c.clone();
    cp["prevResult"] = r.json.clone();
    run(OURS, "CHECK", "c1", "eth0", &cp, "").expect_ok();
    let o = run(OURS, "CHECK", "c1x", "eth0", &cp, "");
    assert_eq!(o.code(), 999);
    assert!(o.msg().contains("reserved for container c1 interface eth0"), "{}", o.msg());
    del(OURS, "c1", &c).expect_ok();
    del(OURS, "c1", &c).expect_ok();
    let o = run(OURS, "CHECK", "c1", "eth0", &c, "");
    assert_eq!(o.code(), 999);
    assert!(o.msg().starts_with("host-local: Failed to find address added by container c1"), "{}", o.msg());
    assert_eq!(ip_files(&t.net()).len(), 1);
    // DEL still releases when the configured ranges changed since ADD.
    let c2 = conf(&t, "1.0.0", json!({"subnet": "10.71.0.0/24"}));
    del(OURS, "c1x", &c2).expect_ok();
    assert!(ip_files(&t.net()).is_empty());
}

#[test]
fn lock_held_gives_try_again() {
    let t = TempDir::new("lock");
    let c = conf(&t, "1.0.0", json!({"subnet": "10.80.0.0/24", "lockTimeout": 0.3}));
    fs::create_dir_all(t.net()).unwrap();
    let f = fs::OpenOptions::new().create(true).append(true).open(t.net().join("lock")).unwrap();
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let o = add(OURS, "c1", &c);
    assert_eq!(o.code(), 11, "{}", o.json);
    assert!(o.msg().contains("try again"));
    assert!(ip_files(&t.net()).is_empty());
    drop(f);
    add(OURS, "c1", &c).expect_ok();
}

#[test]
fn gc_removes_exactly_the_stale() {
    let t = TempDir::new("gc");
    let c = conf(&t, "1.1.0", json!({"ranges": [[{"subnet": "10.90.0.0/24"}], [{"subnet": "fd00:90::/64"}]]}));
    for id in ["a", "b", "c"] {
        add(OURS, id, &c).expect_ok();
    }
    run(OURS, "ADD", "a", "net1", &c, "").expect_ok();
    // Key absent: nothing removed.
    run(OURS, "GC", "", "", &c, "").expect_ok();
    assert_eq!(ip_files(&t.net()).len(), 8);
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] =
        json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "c", "ifname": "eth0"}]);
    run(OURS, "GC", "", "", &g, "").expect_ok();
    let owners: HashSet<String> = ip_files(&t.net()).into_values().collect();
    assert_eq!(owners, HashSet::from(["a\r\neth0".to_string(), "c\r\neth0".to_string()]));
    assert_eq!(ip_files(&t.net()).len(), 4);
    assert!(t.net().join("last_reserved_ip.0").exists() && t.net().join("lock").exists());
    // The older key name is accepted too; an empty list releases everything.
    let mut g = c.clone();
    g["cni.dev/attachments"] = json!([]);
    run(OURS, "GC", "", "", &g, "").expect_ok();
    assert!(ip_files(&t.net()).is_empty());
}

#[test]
fn bad_configs_touch_nothing() {
    let t = TempDir::new("bad");
    let ok_ipam = json!({"subnet": "10.10.0.0/24"});
    let with = |ipam: Value| conf(&t, "1.0.0", ipam);
    let mut no_ipam = with(ok_ipam.clone());
    no_ipam.as_object_mut().unwrap().remove("ipam");
    let mut bad_name = with(ok_ipam.clone());
    bad_name["name"] = json!("..");
    let mut slash_name = with(ok_ipam.clone());
    slash_name["name"] = json!("a/../../etc");
    let mut bad_version = with(ok_ipam.clone());
    bad_version["cniVersion"] = json!("9.9.9");
    let mut rc_ip = with(ok_ipam.clone());
    rc_ip["runtimeConfig"] = json!({"ips": ["10.10.1.5"]});
    let mut rc_bad_ip = with(ok_ipam.clone());
    rc_bad_ip["runtimeConfig"] = json!({"ips": ["ten"]});
    let mut rel_data = with(ok_ipam.clone());
    rel_data["ipam"]["dataDir"] = json!("rcni-relative-data-dir");
    let mut rel_resolv = with(ok_ipam.clone());
    rel_resolv["ipam"]["resolvConf"] = json!("resolv.conf");
    let two_v4_old = conf(&t, "0.2.0", json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}));
    let cases: Vec<(&str, Value, &str, u64, &str)> = vec![
        ("no ipam", no_ipam, "", 7, "IPAM config missing 'ipam' key"),
        ("no ranges", with(json!({})), "", 7, "no IP ranges specified"),
        ("bad cidr", with(json!({"ranges": [[{"subnet": "10.10.0/24"}]]})), "", 7, "ipam.ranges[0][0].subnet"),
        ("start outside", with(json!({"subnet": "10.10.0.0/24", "rangeStart": "10.11.0.1"})), "", 7, "ipam.rangeStart"),
        ("end outside", with(json!({"subnet": "10.10.0.0/24", "rangeEnd": "10.11.0.1"})), "", 7, "ipam.rangeEnd"),
        (
            "start after end",
            with(json!({"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.9", "rangeEnd": "10.10.0.8"})),
            "",
            7,
            "is before RangeStart",
        ),
        ("gateway outside", with(json!({"subnet": "10.10.0.0/24", "gateway": "10.11.0.1"})), "", 7, "ipam.gateway"),
        (
            "mixed families",
            with(json!({"ranges": [[{"subnet": "10.10.0.0/24"}, {"subnet": "fd00::/64"}]]})),
            "",
            7,
            "mixed address families",
        ),
        (
            "overlap in set",
            with(json!({"ranges": [[{"subnet": "10.10.0.0/24"}, {"subnet": "10.10.0.0/16"}]]})),
            "",
            7,
            "overlap",
        ),
        (
            "overlapping sets",
            with(json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.10.0.0/16"}]]})),
            "",
            7,
            "range set 0 overlaps with 1",
        ),
        ("slash 31", with(json!({"subnet": "10.10.0.0/31"})), "", 7, "too small to allocate from"),
        ("slash 32", with(json!({"subnet": "10.10.0.0/32"})), "", 7, "too small to allocate from"),
        ("slash 127", with(json!({"subnet": "fd00::/127"})), "", 7, "too small to allocate from"),
        ("host bits", with(json!({"subnet": "10.10.0.1/24"})), "", 7, "host bits set"),
        ("name ..", bad_name, "", 7, "network name"),
        ("name with slash", slash_name, "", 7, "network name"),
        ("bad version", bad_version, "", 1, "incompatible CNI versions"),
        ("two v4 sets on 0.2.0", two_v4_old, "", 7, "does not support more than 1 address per family"),
        ("CNI_ARGS bad IP", with(ok_ipam.clone()), "IP=10.10.0.x", 4, "cannot understand ip: CNI_ARGS IP"),
        ("relative dataDir", rel_data, "", 7, "ipam.dataDir: \"rcni-relative-data-dir\" is a relative path"),
        ("relative resolvConf", rel_resolv, "", 7, "ipam.resolvConf: \"resolv.conf\" is a relative path"),
        ("slash 0", with(json!({"subnet": "0.0.0.0/0"})), "", 7, "Network 0.0.0.0/0 is too large"),
        ("ipv6 slash 0", with(json!({"ranges": [[{"subnet": "::/0"}]]})), "", 7, "(ipam.ranges[0][0].subnet)"),
        (
            "gateway on broadcast",
            with(json!({"subnet": "10.10.0.0/24", "gateway": "10.10.0.255"})),
            "",
            7,
            "gateway 10.10.0.255 is the subnet's broadcast address",
        ),
        ("CNI_ARGS unknown key", with(ok_ipam.clone()), "FOO=bar", 4, "ARGS: unknown args"),
        ("CNI_ARGS lower-case ip", with(ok_ipam.clone()), "ip=10.10.0.5", 4, "ARGS: unknown args"),
        ("requested outside", rc_ip, "", 999, "failed to allocate all requested IPs: 10.10.1.5"),
        ("requested garbage", rc_bad_ip, "", 7, "cannot understand ip"),
    ];
    for (what, c, args, code, needle) in cases {
        let o = run(OURS, "ADD", "c1", "eth0", &c, args);
        assert_eq!(o.code(), code, "{what}: {}", o.json);
        assert!(o.msg().contains(needle), "{what}: {:?} does not contain {needle:?}", o.msg());
        assert!(!t.root.exists(), "{what}: touched {}", t.root.display());
        assert!(!Path::new("rcni-relative-data-dir").exists(), "{what}: made state under the working directory");
    }
}

// ---- interoperability with the reference binary (Debian containernetworking-plugins 1.1.1) ----

fn addr(o: &Out) -> Vec<String> {
    o.ips().into_iter().map(|a| a.split('/').next().unwrap().to_string()).collect()
}

#[test]
fn interop_allocation_continues_round_robin_both_ways() {
    require_reference();
    let t = TempDir::new("interop-rr");
    let c = conf(
        &t,
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.100.0.0/29"}], [{"subnet": "fd00:100::/125", "rangeStart": "fd00:100::4"}]]}),
    );
    // .2-.6 allocatable in v4 (5), fd00:100::4-::7 in v6 (4): the v6 set wraps first.
    let seq = [
        (REFERENCE, "r1", vec!["10.100.0.2", "fd00:100::4"]),
        (OURS, "o1", vec!["10.100.0.3", "fd00:100::5"]),
        (REFERENCE, "r2", vec!["10.100.0.4", "fd00:100::6"]),
        (OURS, "o2", vec!["10.100.0.5", "fd00:100::7"]),
    ];
    for (bin, id, want) in &seq {
        let o = add(bin, id, &c);
        assert_eq!(addr(&o), *want, "{bin} {id}");
    }
    // Free an early v6 address with the reference; ours wraps around to it (v6), continues after .5 (v4).
    del(REFERENCE, "r1", &c).expect_ok();
    assert_eq!(addr(&add(OURS, "o3", &c)), ["10.100.0.6", "fd00:100::4"]);
    // The v6 set is full for the reference too (it takes .2 in v4, then rolls it back).
    let o = add(REFERENCE, "r3", &c);
    assert!(!o.ok);
    assert!(
        o.msg().contains(
            "failed to allocate for range 1: no IP addresses available in range set: fd00:100::4-fd00:100::7"
        ),
        "{}",
        o.msg()
    );
    assert!(!t.net().join("10.100.0.2").exists());
    // Free one by ours (allocated by the reference); the reference wraps to it.
    del(OURS, "r2", &c).expect_ok();
    assert_eq!(addr(&add(REFERENCE, "r4", &c)), ["10.100.0.4", "fd00:100::6"]);
    // The reference refuses a duplicate of an attachment ours allocated, and vice versa.
    assert!(add(REFERENCE, "o1", &c).msg().contains("duplicate allocation is not allowed"));
    assert!(add(OURS, "r4", &c).msg().contains("duplicate allocation is not allowed"));
    // Files: same bytes whoever wrote them.
    let f = ip_files(&t.net());
    assert_eq!(f.len(), 8);
    for (ip, owner) in &f {
        assert!(owner.ends_with("\r\neth0") && !owner.ends_with('\n'), "{ip}: {owner:?}");
    }
    assert_eq!(fs::read_to_string(t.net().join("last_reserved_ip.1")).unwrap(), "fd00:100::6");
}

#[test]
fn interop_del_releases_what_the_other_allocated() {
    require_reference();
    let t = TempDir::new("interop-del");
    let c = dual_stack(&t, "1.0.0");
    add(REFERENCE, "r1", &c).expect_ok();
    add(OURS, "o1", &c).expect_ok();
    add(REFERENCE, "r2", &c).expect_ok();
    del(OURS, "r1", &c).expect_ok();
    del(REFERENCE, "o1", &c).expect_ok();
    let owners: HashSet<String> = ip_files(&t.net()).into_values().collect();
    assert_eq!(owners, HashSet::from(["r2\r\neth0".to_string()]));
    // Reference CHECK sees our reservation; ours sees the reference's.
    add(OURS, "o2", &c).expect_ok();
    run(REFERENCE, "CHECK", "o2", "eth0", &c, "").expect_ok();
    run(OURS, "CHECK", "r2", "eth0", &c, "").expect_ok();
    del(REFERENCE, "o2", &c).expect_ok();
    del(OURS, "r2", &c).expect_ok();
    assert!(ip_files(&t.net()).is_empty());
}

#[test]
fn interop_requested_ip_held_by_reference() {
    require_reference();
    let t = TempDir::new("interop-req");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "fd00:7::/64"}]]}));
    let o = run(REFERENCE, "ADD", "r1", "eth0", &c, "IP=fd00:7:0:0:0:0:0:a");
    assert_eq!(addr(&o), ["fd00:7::a"]);
    let o = run(OURS, "ADD", "o1", "eth0", &c, "IP=fd00:7::a");
    assert!(o.msg().contains("held by container r1 interface eth0"), "{}", o.msg());
    let o = run(OURS, "ADD", "o1", "eth0", &c, "IP=fd00:7:0:0:1:0:0:b");
    assert_eq!(addr(&o), ["fd00:7::1:0:0:b"]);
    let o = run(REFERENCE, "ADD", "r2", "eth0", &c, "IP=fd00:7::1:0:0:b");
    assert!(o.msg().contains("not available"), "{}", o.msg());
}

#[test]
fn interop_gc_after_mixed_allocations() {
    require_reference();
    let t = TempDir::new("interop-gc");
    let c10 = dual_stack(&t, "1.0.0");
    for (bin, id) in [(REFERENCE, "r1"), (OURS, "o1"), (REFERENCE, "r2"), (OURS, "o2")] {
        add(bin, id, &c10).expect_ok();
    }
    let mut g = dual_stack(&t, "1.1.0");
    g["cni.dev/valid-attachments"] =
        json!([{"containerID": "r2", "ifname": "eth0"}, {"containerID": "o1", "ifname": "eth0"}]);
    let before = ip_files(&t.net());
    run(OURS, "GC", "", "", &g, "").expect_ok();
    let after = ip_files(&t.net());
    let expect: BTreeMap<String, String> =
        before.into_iter().filter(|(_, o)| o == "r2\r\neth0" || o == "o1\r\neth0").collect();
    assert_eq!(after, expect);
    assert_eq!(after.len(), 4);
    // The reference continues happily on the GC'd state.
    add(REFERENCE, "r3", &c10).expect_ok();
}

#[test]
fn interop_concurrent_mixed_adds_share_the_lock() {
    require_reference();
    let t = TempDir::new("interop-conc");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.110.0.0/24"}], [{"subnet": "fd00:110::/120"}]]}));
    let n = 120;
    let outs: Vec<(String, Out)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let (bin, id) = if i % 2 == 0 { (OURS, format!("o{i}")) } else { (REFERENCE, format!("r{i}")) };
                    (id.clone(), add(bin, &id, c))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for (id, o) in &outs {
        for a in addr(o) {
            assert!(seen.insert(a.clone()), "duplicate {a}");
            assert_eq!(fs::read_to_string(t.net().join(&a)).unwrap(), format!("{id}\r\neth0"));
        }
    }
    assert_eq!(ip_files(&t.net()).len(), 2 * n);
    // Release concurrently, each with the other binary.
    let dels: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = outs
            .iter()
            .map(|(id, _)| {
                let c = &c;
                s.spawn(move || del(if id.starts_with('o') { REFERENCE } else { OURS }, id, c))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in dels {
        o.expect_ok();
    }
    assert!(ip_files(&t.net()).is_empty());
}

/// Processes killed (SIGKILL) at arbitrary points leave either whole reservations or none: never an empty
/// or partial file, never one address for two containers; the next ADDs work normally.
#[test]
fn killed_adds_leave_whole_files_only() {
    let t = TempDir::new("kill");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.120.0.0/24"}], [{"subnet": "fd00:120::/64"}]]}));
    let body = c.to_string();
    std::thread::scope(|s| {
        for i in 0..60u64 {
            let body = &body;
            s.spawn(move || {
                let mut child = Command::new(OURS)
                    .env_clear()
                    .env("CNI_COMMAND", "ADD")
                    .env("CNI_CONTAINERID", format!("k{i}"))
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_NETNS", "/nonexistent/netns")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_micros((i * 1999) % 120_000));
                let _ = child.kill();
                let _ = child.wait();
            });
        }
    });
    let f = ip_files(&t.net());
    eprintln!("{} reservation files survived the kills", f.len());
    let mut owners = HashSet::new();
    for (ip, owner) in &f {
        let (id, ifname) = owner.split_once("\r\n").unwrap_or_else(|| panic!("{ip}: malformed {owner:?}"));
        assert_eq!(ifname, "eth0");
        assert!(id.starts_with('k'), "{ip}: {owner:?}");
        owners.insert((owner.clone(), ip.contains(':')));
    }
    assert_eq!(owners.len(), f.len(), "an attachment holds two addresses of one family");
    for (name, content) in files(&t.net()) {
        if let Some(set) = name.strip_prefix("last_reserved_ip.") {
            assert!(content.parse::<std::net::IpAddr>().is_ok(), "last_reserved_ip.{set}: {content:?}");
        }
    }
    // Runtimes DEL after a failed ADD: that clears every half-done attachment.
    for i in 0..60 {
        del(OURS, &format!("k{i}"), &c).expect_ok();
    }
    assert!(ip_files(&t.net()).is_empty());
    assert_eq!(add(OURS, "after", &c).ips().len(), 2);
}

// ---- the owner index (<dataDir>/.rcni-index.<network>): a cache that must never be believed wrongly ----

fn index_path(t: &TempDir) -> PathBuf {
    t.root.join("data").join(format!(".rcni-index.{NET}"))
}

/// The reservations an index lists (`ip -> "id ifname"`), if it is whole: header first, `e <count> <sum>` last.
fn index_records(t: &TempDir) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(index_path(t)).ok()?;
    let mut lines: Vec<&str> = text.strip_suffix('\n')?.split('\n').collect();
    let trailer = lines.pop()?;
    let count: usize = trailer.strip_prefix("e ")?.split(' ').next()?.parse().ok()?;
    if lines.first() != Some(&"rcni-host-local-index 1") || lines.len() != count + 2 {
        return None;
    }
    let recs = lines[2..].iter().filter_map(|l| l.strip_prefix("i ")?.split_once(' '));
    Some(recs.map(|(ip, owner)| (ip.to_string(), owner.to_string())).collect())
}

/// What the reservation files say, in the index's notation.
fn owners_on_disk(t: &TempDir) -> BTreeMap<String, String> {
    ip_files(&t.net()).into_iter().map(|(ip, o)| (ip, o.replace("\r\n", " "))).collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Change a reservation's owner without touching its directory (as an editor writing in place would): the
/// one change the index's directory stamp cannot see.
fn rewrite_in_place(t: &TempDir, ip: &str, owner: &str) {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: fs::Metadata| (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    let before = stamp(fs::metadata(t.net()).unwrap());
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(t.net().join(ip)).unwrap();
    f.write_all(owner.as_bytes()).unwrap();
    assert_eq!(stamp(fs::metadata(t.net()).unwrap()), before, "premise: an in-place write leaves the directory as is");
}

#[test]
fn index_lives_outside_the_network_directory() {
    let t = TempDir::new("idx-outside");
    let c = dual_stack(&t, "1.0.0");
    for id in ["c1", "c2", "c3"] {
        add(OURS, id, &c).expect_ok();
    }
    del(OURS, "c1", &c).expect_ok();
    run(OURS, "CHECK", "c2", "eth0", &c, "").expect_ok();
    // The network directory holds only what the reference itself writes (its DEL reads every file there).
    for name in files(&t.net()).keys() {
        assert!(
            name == "lock" || name.starts_with("last_reserved_ip.") || name.parse::<std::net::IpAddr>().is_ok(),
            "unexpected file {name} in the network directory"
        );
    }
    // Beside it, a file (not a directory: tools take every directory of dataDir for a network).
    assert_eq!(dir_names(&t.root.join("data")), [format!(".rcni-index.{NET}").as_str(), NET]);
    assert!(fs::metadata(index_path(&t)).unwrap().is_file());
    assert_eq!(index_records(&t), Some(owners_on_disk(&t)));
    assert_eq!(owners_on_disk(&t).len(), 4);
    // `.rcni-index.*` can never be a network: both binaries refuse names not starting with a letter or digit.
    let mut dot = c.clone();
    dot["name"] = json!(format!(".rcni-index.{NET}"));
    assert_eq!(add(OURS, "d1", &dot).code(), 7);
}

#[test]
fn duplicate_refused_with_missing_corrupt_or_outdated_index() {
    let t = TempDir::new("idx-dup");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.125.0.0/24"}]]}));
    add(OURS, "c0", &c).expect_ok();
    let outdated = fs::read(index_path(&t)).unwrap(); // saved before c1 existed
    add(OURS, "c1", &c).expect_ok();
    let good = fs::read(index_path(&t)).unwrap();
    let half = good[..good.len() / 2].to_vec();
    let mut zeroed = good.clone();
    zeroed[good.len() - 40..].fill(0);
    let mut flipped = good.clone();
    flipped[60] ^= 1;
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing", None),
        ("garbage", Some(b"not an index\n".to_vec())),
        ("torn in half", Some(half)),
        ("zeros at the end", Some(zeroed)),
        ("one bit flipped", Some(flipped)),
        ("empty", Some(Vec::new())),
        ("outdated", Some(outdated)),
    ];
    let before = files(&t.net());
    for (what, content) in cases {
        match &content {
            None => fs::remove_file(index_path(&t)).unwrap(),
            Some(b) => fs::write(index_path(&t), b).unwrap(),
        }
        let o = add(OURS, "c1", &c);
        assert_eq!(o.code(), 999, "{what}: {}", o.json);
        assert!(
            o.msg().contains("10.125.0.3 has been allocated to c1, duplicate allocation is not allowed"),
            "{what}: {}",
            o.msg()
        );
        assert_eq!(files(&t.net()), before, "{what}");
        // Rebuilt from the files.
        assert_eq!(index_records(&t), Some(owners_on_disk(&t)), "{what}");
    }
    // And DEL still finds c1 with each of them.
    fs::write(index_path(&t), b"garbage").unwrap();
    del(OURS, "c1", &c).expect_ok();
    assert_eq!(owners_on_disk(&t).into_values().collect::<Vec<_>>(), ["c0 eth0"]);
    assert_eq!(index_records(&t), Some(owners_on_disk(&t)));
}

/// The one staleness the directory stamp cannot see (a file's content rewritten in place): every positive
/// answer of the index is read back from its file before it is acted on.
#[test]
fn stale_index_is_checked_before_acting() {
    let t = TempDir::new("idx-stale");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.126.0.0/24"}]]}));
    assert_eq!(addr(&add(OURS, "c1", &c)), ["10.126.0.2"]);
    assert_eq!(addr(&add(OURS, "c2", &c)), ["10.126.0.3"]);
    // The index says c1 holds .2; the file now says c9. ADD c1 is not refused as a duplicate.
    rewrite_in_place(&t, "10.126.0.2", "c9\r\neth0");
    assert_eq!(addr(&add(OURS, "c1", &c)), ["10.126.0.4"]);
    // The index (rebuilt) says c2 holds .3; the file now says c1. DEL c2 must not release c1's address.
    rewrite_in_place(&t, "10.126.0.3", "c1\r\neth0");
    del(OURS, "c2", &c).expect_ok();
    assert_eq!(ip_files(&t.net())["10.126.0.3"], "c1\r\neth0");
    // The index (rebuilt again) says c1 holds .3 and .4; .4 now says c8. DEL c1 releases .3 only.
    rewrite_in_place(&t, "10.126.0.4", "c8\r\neth0");
    del(OURS, "c1", &c).expect_ok();
    let left = owners_on_disk(&t);
    assert_eq!(left.keys().collect::<Vec<_>>(), ["10.126.0.2", "10.126.0.4"]);
    assert_eq!(left["10.126.0.4"], "c8 eth0");
    assert_eq!(index_records(&t), Some(left));
    // CHECK of an owner the index does not know is confirmed from the files before it fails.
    rewrite_in_place(&t, "10.126.0.4", "c7\r\neth0");
    run(OURS, "CHECK", "c7", "eth0", &c, "").expect_ok();
    // A refused requested IP names the holder its file names, not the index's.
    rewrite_in_place(&t, "10.126.0.2", "c5\r\neth0");
    let o = run(OURS, "ADD", "c6", "eth0", &c, "IP=10.126.0.2");
    assert!(o.msg().contains("held by container c5 interface eth0"), "{}", o.msg());
}

#[test]
fn interop_index_follows_the_reference_between_our_commands() {
    require_reference();
    use std::os::unix::fs::MetadataExt;
    let t = TempDir::new("idx-interop");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.130.0.0/24"}]]}));
    assert_eq!(addr(&add(OURS, "o1", &c)), ["10.130.0.2"]);
    assert_eq!(addr(&add(OURS, "o2", &c)), ["10.130.0.3"]);
    // The reference adds and deletes behind the index.
    assert_eq!(addr(&add(REFERENCE, "r1", &c)), ["10.130.0.4"]);
    del(REFERENCE, "o1", &c).expect_ok();
    assert!(add(OURS, "r1", &c).msg().contains("duplicate allocation is not allowed"));
    assert_eq!(addr(&add(OURS, "o1", &c)), ["10.130.0.5"]);
    del(OURS, "r1", &c).expect_ok();
    assert!(!t.net().join("10.130.0.4").exists());
    assert_eq!(index_records(&t), Some(owners_on_disk(&t)));
    // The reference releases an address and gives the same one to another container at once: same name
    // and, on ext4, the same inode number. Ours must see the new owner.
    run(REFERENCE, "ADD", "r2", "eth0", &c, "IP=10.130.0.50").expect_ok();
    let ino = fs::metadata(t.net().join("10.130.0.50")).unwrap().ino();
    run(OURS, "CHECK", "r2", "eth0", &c, "").expect_ok();
    del(REFERENCE, "r2", &c).expect_ok();
    run(REFERENCE, "ADD", "r3", "eth0", &c, "IP=10.130.0.50").expect_ok();
    let same = fs::metadata(t.net().join("10.130.0.50")).unwrap().ino() == ino;
    eprintln!("re-created reservation kept its inode number: {same}");
    assert_eq!(run(OURS, "CHECK", "r2", "eth0", &c, "").code(), 999);
    run(OURS, "CHECK", "r3", "eth0", &c, "").expect_ok();
    assert!(add(OURS, "r3", &c).msg().contains("10.130.0.50 has been allocated to r3"));
    del(OURS, "r2", &c).expect_ok();
    assert!(t.net().join("10.130.0.50").exists());
    del(OURS, "r3", &c).expect_ok();
    assert!(!t.net().join("10.130.0.50").exists());
    // GC (by ours) and the reference's DEL both change the directory under the index.
    let mut g = conf(&t, "1.1.0", json!({"ranges": [[{"subnet": "10.130.0.0/24"}]]}));
    g["cni.dev/valid-attachments"] = json!([{"containerID": "o1", "ifname": "eth0"}]);
    run(OURS, "GC", "", "", &g, "").expect_ok();
    assert_eq!(addr(&add(OURS, "o2", &c)), ["10.130.0.51"]);
    del(REFERENCE, "o2", &c).expect_ok();
    assert_eq!(addr(&add(OURS, "o2", &c)), ["10.130.0.52"]);
    let expect: BTreeMap<String, String> =
        [("10.130.0.5", "o1 eth0"), ("10.130.0.52", "o2 eth0")].map(|(a, b)| (a.to_string(), b.to_string())).into();
    assert_eq!(owners_on_disk(&t), expect);
    assert_eq!(index_records(&t), Some(expect));
}

// ---- latency measurement (not a test: run on demand) ----

/// Median latency of direct `host-local` ADD and DEL invocations with `RCNI_HL_BENCH_N` (default 1000) other
/// reservations in the directory, `RCNI_HL_BENCH_RUNS` (default 25) ADD+DEL pairs. The binary is
/// `RCNI_HL_BENCH_BIN` (default: ours from this build), the data directory a temp dir under
/// `RCNI_HL_BENCH_DIR` (default: the system temp dir). Run with a release build:
/// `cargo nextest run --release --test host_local --run-ignored only --no-capture bench_add_del_latency`
#[test]
#[ignore]
fn bench_add_del_latency() {
    let env = |k: &str| std::env::var(k).ok();
    let n: usize = env("RCNI_HL_BENCH_N").map_or(1000, |v| v.parse().unwrap());
    let runs: usize = env("RCNI_HL_BENCH_RUNS").map_or(25, |v| v.parse().unwrap());
    let bin = env("RCNI_HL_BENCH_BIN").unwrap_or_else(|| OURS.to_string());
    let base = env("RCNI_HL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let t = TempDir::new_in(&base, "bench");
    let c = conf(&t, "1.0.0", json!({"ranges": [[{"subnet": "10.200.0.0/16"}]]}));
    // Existing reservations as another host-local would have left them.
    fs::create_dir_all(t.net()).unwrap();
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 200, 0, 2)) + i as u32);
        fs::write(t.net().join(ip.to_string()), format!("{:064x}\r\neth0", i)).unwrap();
    }
    // One warm-up pair (page cache, and any per-directory state a binary keeps).
    add(&bin, "warmup", &c).expect_ok();
    del(&bin, "warmup", &c).expect_ok();
    let timed = |cmd: &str, id: &str| {
        let t0 = std::time::Instant::now();
        let o = run(&bin, cmd, id, "eth0", &c, "");
        let dt = t0.elapsed();
        o.expect_ok();
        dt
    };
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let id = format!("{:064x}", 1_000_000 + i);
        adds.push(timed("ADD", &id));
        dels.push(timed("DEL", &id));
    }
    assert_eq!(ip_files(&t.net()).len(), n);
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    eprintln!(
        "BENCH bin={bin} n={n} runs={runs} dir={}: ADD median {:.2} ms (min {:.2}), DEL median {:.2} ms (min {:.2})",
        base.display(),
        median(&mut adds),
        adds[0].as_secs_f64() * 1e3,
        median(&mut dels),
        dels[0].as_secs_f64() * 1e3
    );
}

// ------------------------------------------------------------------------------------------------
// Through the bridge plugin (in-process host-local), in throwaway node and pod namespaces.

/// The bridge plugin's config for these tests: host-local on `ranges`, state in `data`.
fn bridge_conf(data: &Path, name: &str, ranges: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "br0", "isGateway": true,
           "ipam": {"type": "host-local", "ranges": ranges, "dataDir": data}})
}

fn bridge(
    node: &support::NodeNs,
    cmd: &str,
    pod: &support::PodNs,
    id: &str,
    conf: &Value,
    args: &str,
) -> support::Output {
    bridge_env(node, cmd, pod, id, conf, &[("CNI_ARGS", args)])
}

fn bridge_env(
    node: &support::NodeNs,
    cmd: &str,
    pod: &support::PodNs,
    id: &str,
    conf: &Value,
    extra: &[(&str, &str)],
) -> support::Output {
    let bin = support::rcni_bin("bridge");
    let mut env = support::cni_env(cmd, id, pod.path_str(), "eth0", &[bin.parent().unwrap().to_path_buf()]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    node.run_plugin(&bin, &env, conf.to_string().as_bytes())
}

/// Audit finding 1: a second ADD of a live attachment (same container ID and ifname) that asks for another
/// address fails, and that failure must not free the live pod's address: afterwards the address is still
/// reserved for the live pod, nobody else gets it, and the pod still works.
#[test]
fn failed_repeat_add_of_a_live_attachment_keeps_its_address() {
    support::require_root();
    let data = support::TempDir::new("hl-live");
    let net_dir = data.join("hl-live");
    // Two addresses: .5 and .6. After the failed ADD, the round-robin would come back to .5 first.
    let conf = bridge_conf(
        data.path(),
        "hl-live",
        json!([[{"subnet": "10.71.0.0/24", "rangeStart": "10.71.0.5",
                                                           "rangeEnd": "10.71.0.6", "gateway": "10.71.0.1"}]]),
    );
    let node = support::NodeNs::new("hl-live");
    let (live, other) = (support::PodNs::new("hl-live-a"), support::PodNs::new("hl-live-b"));
    let r = bridge(&node, "ADD", &live, "live", &conf, "IgnoreUnknown=1;IP=10.71.0.5").ok().json();
    assert_eq!(r["ips"][0]["address"], "10.71.0.5/24");
    let again = bridge(&node, "ADD", &live, "live", &conf, "IgnoreUnknown=1;IP=10.71.0.6").fails();
    assert!(again.stdout.contains("already"), "{again:?}");
    assert_eq!(ip_files(&net_dir), BTreeMap::from([("10.71.0.5".to_string(), "live\r\neth0".to_string())]));
    // Asked for, .5 is refused as held by the live pod; not asked for, the other pod gets .6.
    let taken = bridge(&node, "ADD", &other, "other", &conf, "IgnoreUnknown=1;IP=10.71.0.5").fails();
    assert!(taken.stdout.contains("held by container live interface eth0"), "{taken:?}");
    let r = bridge(&node, "ADD", &other, "other", &conf, "").ok().json();
    assert_eq!(r["ips"][0]["address"], "10.71.0.6/24");
    assert!(live.ping("10.71.0.1"), "the live pod still works");
    bridge(&node, "DEL", &other, "other", &conf, "").ok();
    bridge(&node, "DEL", &live, "live", &conf, "").ok();
    assert!(ip_files(&net_dir).is_empty());
}

/// Audit finding 1, when host-local's duplicate guard cannot help: the ranges changed so that the live pod's
/// address lies outside them, so IPAM ADD succeeds with a new address; the failed ADD then releases exactly
/// that new address, not the live pod's.
#[test]
fn failed_repeat_add_after_a_range_change_releases_only_its_own_pick() {
    support::require_root();
    let data = support::TempDir::new("hl-moved");
    let net_dir = data.join("hl-moved");
    let old = bridge_conf(data.path(), "hl-moved", json!([[{"subnet": "10.72.0.0/24", "rangeEnd": "10.72.0.9"}]]));
    let new = bridge_conf(data.path(), "hl-moved", json!([[{"subnet": "10.72.0.0/24", "rangeStart": "10.72.0.10"}]]));
    let node = support::NodeNs::new("hl-moved");
    let live = support::PodNs::new("hl-moved-a");
    let r = bridge(&node, "ADD", &live, "live", &old, "").ok().json();
    assert_eq!(r["ips"][0]["address"], "10.72.0.2/24");
    bridge(&node, "ADD", &live, "live", &new, "").fails();
    assert_eq!(ip_files(&net_dir), BTreeMap::from([("10.72.0.2".to_string(), "live\r\neth0".to_string())]));
    assert!(live.ping("10.72.0.1"), "the live pod still works");
    bridge(&node, "DEL", &live, "live", &new, "").ok();
    assert!(ip_files(&net_dir).is_empty());
}

/// Audit finding 1 with an exec'd IPAM plugin, whose only undo is DEL by owner: when the failed ADD is one of
/// a live attachment, that DEL would free the live pod's address, so none is run (the new address leaks to
/// the same owner, released by its DEL).
#[test]
fn failed_repeat_add_with_exec_ipam_does_not_release_the_live_address() {
    support::require_root();
    let data = support::TempDir::new("hl-exec");
    let net_dir = data.join("hl-exec");
    let old = bridge_conf(data.path(), "hl-exec", json!([[{"subnet": "10.73.0.0/24", "rangeEnd": "10.73.0.9"}]]));
    let new = bridge_conf(data.path(), "hl-exec", json!([[{"subnet": "10.73.0.0/24", "rangeStart": "10.73.0.10"}]]));
    let node = support::NodeNs::new("hl-exec");
    let live = support::PodNs::new("hl-exec-a");
    let exec = [("RCNI_IPAM_EXEC", "1")];
    let r = bridge_env(&node, "ADD", &live, "live", &old, &exec).ok().json();
    assert_eq!(r["ips"][0]["address"], "10.73.0.2/24");
    bridge_env(&node, "ADD", &live, "live", &new, &exec).fails();
    assert_eq!(ip_files(&net_dir).get("10.73.0.2").map(String::as_str), Some("live\r\neth0"));
    assert!(live.ping("10.73.0.1"), "the live pod still works");
    bridge_env(&node, "DEL", &live, "live", &new, &exec).ok();
    assert!(ip_files(&net_dir).is_empty());
}
