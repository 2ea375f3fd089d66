//! sysctls under /proc/sys.
//!
//! `/proc/sys/net/...` resolves against the network namespace of the thread that *opens* the file, so
//! [`read`]/[`write`] act on the calling thread's namespace and [`read_in`]/[`write_in`] do the same on
//! a throw-away thread inside another namespace (see [`super::netns::run_in_netns`]).

use std::path::PathBuf;

use super::error::{NetError, Result};
use super::netns::Netns;

/// Map a key to its file. Accepts the path form `net/ipv6/conf/eth0/accept_dad` (required when an
/// interface name contains a dot, e.g. `eth0.100`) or the dotted form `net.ipv4.ip_forward` (only
/// when there is no `/`). Rejects absolute paths and `..`, which could escape /proc/sys.
pub fn key_path(key: &str) -> Result<PathBuf> {
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(NetError::from_errno(format!("sysctl key {key:?} is not a valid /proc/sys path"), libc::EINVAL));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Read a sysctl of the calling thread's namespace, trailing newline removed. A missing key (e.g.
/// `net/ipv6/...` with IPv6 disabled, or an interface that does not exist) is `is_not_found()`.
pub fn read(key: &str) -> Result<String> {
    read_labelled(key, "")
}

fn read_labelled(key: &str, label: &str) -> Result<String> {
    let p = key_path(key)?;
    let s = std::fs::read_to_string(&p).map_err(|e| NetError::io(format!("read sysctl {key}{label}"), e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// Write a sysctl of the calling thread's namespace. Missing key: `is_not_found()`.
pub fn write(key: &str, value: &str) -> Result<()> {
    write_labelled(key, value, "")
}

fn write_labelled(key: &str, value: &str, label: &str) -> Result<()> {
    let p = key_path(key)?;
    // One write(2) of the whole value: /proc/sys parses each write as a full value.
    std::fs::write(&p, value.as_bytes()).map_err(|e| NetError::io(format!("write sysctl {key}={value}{label}"), e))
}

fn label(ns: &Netns) -> String {
    format!(" (netns {})", ns.path().display())
}

/// [`read`] inside `ns`.
pub fn read_in(ns: &Netns, key: &str) -> Result<String> {
    let label = label(ns);
    ns.run(|| read_labelled(key, &label))?
}

/// [`write`] inside `ns`.
pub fn write_in(ns: &Netns, key: &str, value: &str) -> Result<()> {
    write_all_in(ns, &[(key, value)])
}

/// Several writes inside `ns` on one thread (one spawn for all). Stops at the first failure.
pub fn write_all_in(ns: &Netns, kvs: &[(&str, &str)]) -> Result<()> {
    let label = label(ns);
    ns.run(|| kvs.iter().try_for_each(|(k, v)| write_labelled(k, v, &label)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_forms() {
        assert_eq!(key_path("net.ipv4.ip_forward").unwrap(), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        for bad in ["", "/etc/passwd", "net/../../etc/passwd", "net//ipv4", "net.ipv4."] {
            assert_eq!(key_path(bad).unwrap_err().errno(), Some(libc::EINVAL), "{bad}");
        }
    }

    #[test]
    fn missing_key_is_not_found() {
        let e = read("net/ipv4/conf/no-such-if0/rp_filter").unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}
