//! Exec'd plugins act on the network namespace that was opened, not on whatever CNI_NETNS's path names by
//! the time they run: a wrapper swaps the pod's bind mount (inside the plugin's private mount namespace of
//! `ip netns exec`, so the host's mounts never change) to a decoy namespace, then runs the real plugin.
//! Without the fd hand-over the real plugin (and every later one) configures the decoy.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;
use support::{Cnitool, NetConfDir, NodeNs, PodNs, TempDir, cni_env, leftover_netns, rcni_bin, reservations};

/// `dir/name`: swaps the bind mount at `swap` to `decoy` the first time any wrapper of `dir` runs, records
/// the inode of the namespace CNI_NETNS names (one line per run) in `dir/seen`, then runs `real`.
fn swapping_wrapper(dir: &TempDir, name: &str, real: &Path, swap: &Path, decoy: &Path) -> PathBuf {
    let (mark, seen) = (dir.join("swapped"), dir.join("seen"));
    let script = format!(
        "#!/bin/sh\nif [ ! -e '{m}' ]; then umount -l '{s}' && mount --bind '{d}' '{s}' && : > '{m}' || exit 99; fi\n\
         stat -L -c %i \"$CNI_NETNS\" >> '{seen}'\nexec '{r}'\n",
        m = mark.display(),
        s = swap.display(),
        d = decoy.display(),
        seen = seen.display(),
        r = real.display()
    );
    let p = dir.write(name, script);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn seen_inodes(dir: &TempDir) -> Vec<u64> {
    std::fs::read_to_string(dir.join("seen")).unwrap_or_default().lines().map(|l| l.trim().parse().unwrap()).collect()
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// bridge ADD with an exec'd IPAM: the IPAM child sees the pod namespace bridge opened.
#[test]
fn execd_ipam_gets_the_opened_netns() {
    let node = NodeNs::new("dn-ipam");
    let (pod, decoy) = (PodNs::new("dn-ipam-p"), PodNs::new("dn-ipam-d"));
    let bin = TempDir::new("dn-ipam-bin");
    swapping_wrapper(&bin, "swap-ipam", &rcni_bin("host-local"), pod.path(), decoy.path());
    std::os::unix::fs::symlink(rcni_bin("bridge"), bin.join("bridge")).unwrap();
    let data = TempDir::new("dn-ipam-data");
    let conf = json!({"cniVersion": "1.0.0", "name": "dn-ipam", "type": "bridge", "bridge": "dnbr0",
                      "ipam": {"type": "swap-ipam", "subnet": "10.67.0.0/24", "dataDir": data.path()}});
    let stdin = serde_json::to_vec(&conf).unwrap();
    let path = [bin.path().to_path_buf()];
    let add = node.run_plugin(&rcni_bin("bridge"), &cni_env("ADD", "dn1", pod.path_str(), "eth0", &path), &stdin);
    add.ok();
    assert_eq!(seen_inodes(&bin), vec![ino(pod.path())], "the IPAM child acted on the swapped path's namespace");
    assert!(pod.link("eth0").is_some() && decoy.link("eth0").is_none());
    // DEL in a fresh mount namespace (the path is the pod's again): the IPAM releases the address.
    node.run_plugin(&rcni_bin("bridge"), &cni_env("DEL", "dn1", pod.path_str(), "eth0", &path), &stdin).ok();
    assert!(reservations(data.path()).is_empty(), "{:?}", reservations(data.path()));
    drop((pod, decoy, node));
    assert!(leftover_netns("dn-ipam").is_empty());
}

/// cnitool's chain: the first plugin swaps the path, yet it and the plugin after it (tuning) configure the
/// namespace cnitool opened.
#[test]
fn chain_plugins_share_the_opened_netns() {
    let node = NodeNs::new("dn-chain");
    let (pod, decoy) = (PodNs::new("dn-chain-p"), PodNs::new("dn-chain-d"));
    let bin = TempDir::new("dn-chain-bin");
    swapping_wrapper(&bin, "swap-bridge", &rcni_bin("bridge"), pod.path(), decoy.path());
    for p in ["host-local", "tuning"] {
        std::os::unix::fs::symlink(rcni_bin(p), bin.join(p)).unwrap();
    }
    let data = TempDir::new("dn-chain-data");
    let conf = NetConfDir::new(&json!({"cniVersion": "1.0.0", "name": "dn-chain", "plugins": [
        {"type": "swap-bridge", "bridge": "dnbr1",
         "ipam": {"type": "host-local", "subnet": "10.68.0.0/24", "dataDir": data.path()}},
        {"type": "tuning", "mtu": 1400}]}));
    let tool = Cnitool::new(&conf, &[bin.path().to_path_buf()]);
    let r = tool.run(&node, &["add", "dn-chain", pod.path_str()]).ok().json();
    assert_eq!(seen_inodes(&bin), vec![ino(pod.path())], "the bridge acted on the swapped path's namespace");
    assert_eq!(pod.link("eth0").expect("eth0 in the pod cnitool opened").mtu, 1400, "tuning acted on the pod");
    assert!(decoy.link("eth0").is_none(), "nothing configured the decoy");
    let sandbox = r["interfaces"].as_array().unwrap().iter().find_map(|i| i["sandbox"].as_str()).unwrap();
    assert_eq!(sandbox, pod.path_str(), "results name the runtime's path, not the handed-over fd");
    tool.run(&node, &["del", "dn-chain", pod.path_str()]).ok();
    assert!(reservations(data.path()).is_empty(), "{:?}", reservations(data.path()));
    drop((pod, decoy, node));
    assert!(leftover_netns("dn-chain").is_empty());
}
