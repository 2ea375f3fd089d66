//! Which sysctls tuning may write: the key grammar (net.* only, `IFNAME`), and the allowlist file.

use rcni::cni::{CniError, CniResult};
use std::path::{Path, PathBuf};

/// The reference's allowlist: one regular expression per line, matched unanchored against the key as
/// written. No file means every net.* key is allowed.
pub const ALLOWLIST_FILE: &str = "/etc/cni/tuning/allowlist.conf";

/// Test-only: the tests point this at a file of their own so they never touch /etc. The reference has no
/// such knob; operators use [`ALLOWLIST_FILE`].
pub const ALLOWLIST_ENV: &str = "RCNI_TUNING_ALLOWLIST";

/// The key as a path relative to /proc/sys, in slash form (`net/ipv4/conf/eth0.100/arp_filter`).
///
/// Dotted keys become slash keys first and `IFNAME` is replaced after, so an interface name with dots
/// (`eth0.100`) survives. A key that already has slashes keeps its dots (as sysctl(8) reads it), which
/// also lets a literal dotted interface name be addressed. Only `net/...` is allowed, and no component
/// may be empty, `.` or `..`: nothing can climb out of /proc/sys/net.
pub fn resolve(key: &str, ifname: &str) -> CniResult<String> {
    let slash = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    let slash = slash.replacen("IFNAME", ifname, 1);
    let rel = slash.strip_prefix('/').unwrap_or(&slash);
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(CniError::invalid_config(format!("invalid sysctl key {key:?}: it is not a plain path under net"))
            .with_details("write it as net.ipv4.conf.IFNAME.arp_filter or net/ipv4/conf/eth0.100/arp_filter"));
    }
    if parts[0] != "net" || parts.len() < 2 {
        return Err(CniError::invalid_config(format!(
            "invalid net sysctl key {key:?}: tuning sets only net.* sysctls"
        ))
        .with_details("other sysctls are not per network namespace; set them on the node or in the pod spec"));
    }
    Ok(rel.to_string())
}

fn allowlist_path() -> PathBuf {
    std::env::var_os(ALLOWLIST_ENV).filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or(ALLOWLIST_FILE.into())
}

/// Refuse keys the allowlist does not match (every key must match at least one line).
pub fn check_allowlist(keys: &[&str]) -> CniResult<()> {
    let path = allowlist_path();
    let Some(lines) = read_allowlist(&path)? else { return Ok(()) };
    let patterns = lines
        .iter()
        .map(|l| {
            if !l.starts_with('^') || !l.ends_with('$') {
                rcni::cni::log::warn(
                    "tuning",
                    format!(
                        "allowlist {}: {l:?} is not anchored (^...$), so it matches inside longer keys",
                        path.display()
                    ),
                );
            }
            regex_lite::Regex::new(l).map_err(|e| {
                CniError::invalid_config(format!(
                    "allowlist {}: line {l:?} is not a valid regular expression: {e}",
                    path.display()
                ))
            })
        })
        .collect::<CniResult<Vec<_>>>()?;
    for key in keys {
        if !patterns.iter().any(|p| p.is_match(key)) {
            return Err(CniError::invalid_config(format!(
                "Sysctl {key} is not allowed. Only the following sysctls are allowed: [{}]",
                lines.join(" ")
            ))
            .with_details(format!("the allowlist is {}", path.display())));
        }
    }
    Ok(())
}

/// The non-blank lines, trimmed; `None` when there is no file.
fn read_allowlist(path: &Path) -> CniResult<Option<Vec<String>>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::new(
            rcni::cni::error::code::IO_FAILURE,
            format!("cannot read the sysctl allowlist {}: {e}", path.display()),
        )),
    }
}

/// Values compared the way the kernel means them: `4096 131072 6291456` equals the kernel's tab-separated
/// `4096\t131072\t6291456`.
pub fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar() {
        assert_eq!(resolve("net.core.somaxconn", "eth0").unwrap(), "net/core/somaxconn");
        assert_eq!(
            resolve("net.ipv4.conf.IFNAME.arp_filter", "eth0.100").unwrap(),
            "net/ipv4/conf/eth0.100/arp_filter"
        );
        assert_eq!(resolve("net/ipv4/conf/eth0.100/arp_filter", "x").unwrap(), "net/ipv4/conf/eth0.100/arp_filter");
        assert_eq!(resolve("/net/ipv4/ip_forward", "x").unwrap(), "net/ipv4/ip_forward");
        for bad in [
            "net/../kernel/hostname",
            "net.ipv4/../../kernel/x",
            "kernel.hostname",
            "/etc/passwd",
            "net",
            "",
            "net..x",
            "net/./x",
        ] {
            let e = resolve(bad, "eth0").unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.contains(&format!("{bad:?}")), "the message names the key: {e}");
        }
    }

    #[test]
    fn normalizes_whitespace() {
        assert_eq!(normalize("4096\t131072\t6291456\n"), normalize("4096 131072  6291456"));
    }
}
