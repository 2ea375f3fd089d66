//! The iptables backend, compatible with the reference plugins (`ipMasqBackend: "iptables"`): rcni's DEL
//! cleans rules a reference ADD made and the other way round.
//!
//! Per container and address family, table `nat`:
//! ```text
//! -A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \"brnet\" id: \"ctr1\"" -j CNI-2fbf118d4cafd020f013271b
//! -A CNI-2fbf118d4cafd020f013271b -d 10.88.0.0/16 -m comment --comment "..." -j ACCEPT
//! -A CNI-2fbf118d4cafd020f013271b ! -d 224.0.0.0/4 -m comment --comment "..." -j MASQUERADE
//! ```
//! (v6: `/128`, `ff00::/8`, ip6tables). The reference runs several `iptables` commands per address; we
//! read the table once with `iptables-save -t nat` and apply the change atomically with one
//! `iptables-restore --noflush`. Teardown finds the POSTROUTING jumps by their target chain, so it needs
//! no IPs, and is skipped without spawning anything when a netlink / `/proc` probe shows the chain cannot
//! exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Error, Owner, PodEntry, Result, reference_chain_name, reference_comment};
use crate::net::IpFamily;
use crate::net::command::Command;
use crate::net::nft::Nfnl;

/// The legacy (x_tables) table list of the calling thread's netns.
fn legacy_names(fam: IpFamily) -> &'static str {
    match fam {
        IpFamily::V4 => "/proc/thread-self/net/ip_tables_names",
        IpFamily::V6 => "/proc/thread-self/net/ip6_tables_names",
    }
}

/// Quotes like iptables-save does: always double quotes, `"` and `\` escaped.
fn save_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Splits an iptables-save line into arguments (double quotes, backslash escapes).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_quote, mut escaped, mut have) = (false, false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
            have = true;
        } else if c == '"' {
            in_quote = !in_quote;
            have = true;
        } else if c.is_whitespace() && !in_quote {
            if have {
                out.push(std::mem::take(&mut cur));
                have = false;
            }
        } else {
            cur.push(c);
            have = true;
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// The rules the reference creates for this pod and family, in iptables-save form:
/// (rules of the container chain, POSTROUTING jumps).
fn expected_lines(network: &str, exempt: &[IpNetwork], pod: &PodEntry, fam: IpFamily) -> (Vec<String>, Vec<String>) {
    let chain = reference_chain_name(network, &pod.container_id);
    let comment = save_quote(&reference_comment(network, &pod.container_id));
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    for n in exempt.iter().filter(|n| IpFamily::of(&n.ip()) == fam) {
        let net = format!("{}/{}", n.network(), n.prefix());
        if seen.insert(net.clone()) {
            rules.push(format!("-A {chain} -d {net} -m comment --comment {comment} -j ACCEPT"));
        }
    }
    rules.push(format!("-A {chain} ! -d {} -m comment --comment {comment} -j MASQUERADE", fam.multicast()));
    let ips: BTreeSet<IpAddr> = pod.ips.iter().map(|n| n.ip()).filter(|a| IpFamily::of(a) == fam).collect();
    let jumps = ips
        .iter()
        .map(|ip| format!("-A POSTROUTING -s {ip}/{} -m comment --comment {comment} -j {chain}", fam.host_prefix()))
        .collect();
    (rules, jumps)
}

fn families(pod: &PodEntry) -> Vec<IpFamily> {
    IpFamily::used_by(pod.ips.iter().map(|n| n.ip()))
}

fn run(network: &str, tool: &str, args: &[&str], stdin: Option<&str>, what: &str) -> Result<String> {
    let mut cmd = Command::new(tool).args(args.iter().copied());
    if let Some(input) = stdin {
        cmd = cmd.stdin(input);
    }
    cmd.run().map(|out| out.stdout).map_err(|e| {
        let hint = if e.is_not_installed() {
            " (install iptables, or use the default nftables backend)".to_string()
        } else {
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        };
        Error::Command { what: format!("masquerade for network {network:?} (iptables backend): {what}"), err: e, hint }
    })
}

/// The `nat` table of one family, as iptables-save lines (without comments / COMMIT).
fn save(network: &str, fam: IpFamily) -> Result<Vec<String>> {
    let tool = format!("{}-save", fam.iptables());
    let out = run(network, &tool, &["-t", "nat"], None, "reading table nat")?;
    Ok(out.lines().filter(|l| l.starts_with('-') || l.starts_with(':')).map(str::to_string).collect())
}

fn restore(network: &str, fam: IpFamily, input: &str, what: &str) -> Result<()> {
    let tool = format!("{}-restore", fam.iptables());
    run(network, &tool, &["-w", "--noflush"], Some(input), what).map(|_| ())
}

fn chain_declared(lines: &[String], chain: &str) -> bool {
    let decl = format!(":{chain} ");
    lines.iter().any(|l| l.starts_with(&decl))
}

fn jumps_to<'a>(lines: &'a [String], chain: &str) -> Vec<&'a String> {
    let suffix = format!(" -j {chain}");
    lines.iter().filter(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&suffix)).collect()
}

/// Creates (or rewrites) the container chain and adds the missing POSTROUTING jumps.
pub fn setup(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let chain = reference_chain_name(network, &pod.container_id);
    for fam in families(pod) {
        let (rules, jumps) = expected_lines(network, exempt, pod, fam);
        let lines = save(network, fam)?;
        let mut input = format!("*nat\n:{chain} - [0:0]\n");
        for r in &rules {
            input.push_str(r);
            input.push('\n');
        }
        for j in jumps.iter().filter(|j| !lines.contains(j)) {
            input.push_str(j);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        restore(network, fam, &input, &format!("creating chain {chain} in table nat"))?;
    }
    Ok(())
}

/// What a probe looks for in the `nat` table.
enum Probe<'a> {
    /// A user chain of this name.
    Chain(&'a str),
    /// Any rule commented with this prefix (the reference comment of a network).
    Comment(&'a str),
}

/// Whether the object may exist in this family's `nat` table, probed without running anything: over
/// nf_tables netlink for iptables-nft, and in the legacy x_tables blob read straight from the kernel
/// (what `iptables-legacy-save` reads, but without a process and without formatting the whole table).
/// Unsure means yes: the tools then look, rather than leak.
fn may_exist(fam: IpFamily, probe: &Probe<'_>) -> bool {
    let legacy =
        std::fs::read_to_string(legacy_names(fam)).map(|s| s.lines().any(|l| l.trim() == "nat")).unwrap_or(false);
    // The table is listed, so reading it does not make the kernel load (create) it.
    if legacy && legacy::nat_mentions(fam, probe).unwrap_or(true) {
        return true;
    }
    let chain = match probe {
        Probe::Chain(c) => c,
        Probe::Comment(_) => "POSTROUTING",
    };
    match Nfnl::open().and_then(|mut nl| nl.chain_exists(fam.nfproto(), "nat", chain)) {
        Ok(exists) => exists,
        Err(e) => !matches!(e.errno(), Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT)),
    }
}

/// The legacy (x_tables) `nat` table as the kernel hands it to `iptables-legacy-save`:
/// `IPT_SO_GET_INFO` for its size, then `IPT_SO_GET_ENTRIES` for the rule blob. User chain names (in
/// the ERROR targets that head them) and rule comments (in the comment matches) are plain bytes in it.
mod legacy {
    use super::{IpFamily, Probe};

    const SO_GET_INFO: libc::c_int = 64;
    const SO_GET_ENTRIES: libc::c_int = 65;
    const TABLE_NAME_LEN: usize = 32;
    /// `struct ipt_getinfo`: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size.
    const GETINFO_LEN: usize = TABLE_NAME_LEN + 4 + 20 + 20 + 4 + 4;
    /// `struct ipt_get_entries` up to its entry table (name, size, padding to the u64 counters).
    const GET_ENTRIES_HDR: usize = 40;

    /// Whether the blob contains the probe's bytes; `None` when it cannot be read.
    pub(super) fn nat_mentions(fam: IpFamily, probe: &Probe<'_>) -> Option<bool> {
        let needle = match probe {
            Probe::Chain(c) => {
                // The chain name is NUL-terminated in its ERROR target.
                let mut v = c.as_bytes().to_vec();
                v.push(0);
                v
            }
            Probe::Comment(c) => c.as_bytes().to_vec(),
        };
        let blob = read_nat(fam)?;
        Some(memchr::memmem::find(&blob, &needle).is_some())
    }

    fn read_nat(fam: IpFamily) -> Option<Vec<u8>> {
        let (domain, level) = match fam {
            IpFamily::V4 => (libc::AF_INET, libc::IPPROTO_IP),
            IpFamily::V6 => (libc::AF_INET6, libc::IPPROTO_IPV6),
        };
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        use std::os::fd::AsRawFd;
        // The table can change between the two calls (EAGAIN: size mismatch); read again then.
        for _ in 0..3 {
            let mut info = [0u8; GETINFO_LEN];
            info[..3].copy_from_slice(b"nat");
            let mut len = GETINFO_LEN as libc::socklen_t;
            // SAFETY: the buffer is GETINFO_LEN bytes and len says so.
            let rc =
                unsafe { libc::getsockopt(sock.as_raw_fd(), level, SO_GET_INFO, info.as_mut_ptr().cast(), &mut len) };
            if rc != 0 {
                return None;
            }
            let size = u32::from_ne_bytes(info[GETINFO_LEN - 4..].try_into().ok()?) as usize;
            let mut buf = vec![0u8; GET_ENTRIES_HDR + size];
            buf[..3].copy_from_slice(b"nat");
            buf[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
            let mut len = buf.len() as libc::socklen_t;
            // SAFETY: the buffer is as long as len says.
            let rc =
                unsafe { libc::getsockopt(sock.as_raw_fd(), level, SO_GET_ENTRIES, buf.as_mut_ptr().cast(), &mut len) };
            if rc == 0 {
                buf.drain(..GET_ENTRIES_HDR);
                return Some(buf);
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                return None;
            }
        }
        None
    }
}

/// restore input removing the given chains and every POSTROUTING jump to them.
fn removal_input(lines: &[String], chains: &[String]) -> Option<String> {
    let mut body = String::new();
    for chain in chains {
        for j in jumps_to(lines, chain) {
            body.push_str(&format!("-D{}\n", &j[2..]));
        }
    }
    for chain in chains {
        if chain_declared(lines, chain) {
            body.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
    }
    if body.is_empty() { None } else { Some(format!("*nat\n{body}COMMIT\n")) }
}

/// Removes the reference chain of (network, container) and the jumps to it, if they exist.
pub fn teardown_if_present(network: &str, pod: &PodEntry) -> Result<()> {
    let chain = reference_chain_name(network, &pod.container_id);
    for fam in IpFamily::BOTH {
        if !may_exist(fam, &Probe::Chain(&chain)) {
            continue;
        }
        let lines = save(network, fam)?;
        if let Some(input) = removal_input(&lines, std::slice::from_ref(&chain)) {
            restore(network, fam, &input, &format!("removing chain {chain} from table nat"))?;
        }
    }
    Ok(())
}

/// Verifies the pod's chain and jumps.
pub fn check(network: &str, exempt: &[IpNetwork], pod: &PodEntry) -> Result<()> {
    let chain = reference_chain_name(network, &pod.container_id);
    for fam in families(pod) {
        let (rules, jumps) = expected_lines(network, exempt, pod, fam);
        let lines = save(network, fam)?;
        if !chain_declared(&lines, &chain) {
            return Err(Error::Check(format!(
                "masquerade for network {network:?}: chain {chain} of container {} is missing from \
                 {} table nat; re-create the pod",
                pod.container_id,
                fam.iptables()
            )));
        }
        if let Some(missing) = rules.iter().chain(&jumps).find(|r| !lines.contains(r)) {
            return Err(Error::Check(format!(
                "masquerade for network {network:?}: rule `{missing}` is missing from {} table nat \
                 (`{}-save -t nat` shows the state); re-create the pod",
                fam.iptables(),
                fam.iptables()
            )));
        }
    }
    Ok(())
}

/// The container ID of a reference rule comment of `network`, if the line has one.
fn comment_id(line: &str, network: &str) -> Option<String> {
    let toks = tokens(line);
    let i = toks.iter().position(|t| t == "--comment")?;
    let comment = toks.get(i + 1)?;
    let prefix = format!("name: {} id: ", super::go_quote(network));
    let quoted = comment.strip_prefix(&prefix)?;
    let id = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some(id.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// Removes reference chains of `network` whose container is not among `valid`.
pub fn gc_if_present(network: &str, valid: &[Owner]) -> Result<()> {
    let valid_ids: HashSet<&str> = valid.iter().map(|o| o.container_id.as_str()).collect();
    let comment_prefix = format!("name: {} id: ", super::go_quote(network));
    for fam in IpFamily::BOTH {
        if !may_exist(fam, &Probe::Comment(&comment_prefix)) {
            continue;
        }
        let lines = save(network, fam)?;
        let mut stale: BTreeMap<String, String> = BTreeMap::new();
        for l in &lines {
            if let Some(id) = comment_id(l, network) {
                if !valid_ids.contains(id.as_str()) {
                    let chain = reference_chain_name(network, &id);
                    stale.insert(chain, id);
                }
            }
        }
        let chains: Vec<String> = stale.into_keys().collect();
        if let Some(input) = removal_input(&lines, &chains) {
            restore(network, fam, &input, "removing chains of removed containers")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodEntry {
        PodEntry {
            container_id: "ctr1".into(),
            ifname: "eth0".into(),
            ips: vec!["10.88.0.5/16".parse().unwrap(), "fd88::5/64".parse().unwrap()],
        }
    }

    #[test]
    fn reference_lines() {
        let ex: Vec<IpNetwork> = pod().ips.clone();
        let (rules, jumps) = expected_lines("brnet", &ex, &pod(), IpFamily::V4);
        let c = r#""name: \"brnet\" id: \"ctr1\"""#;
        assert_eq!(
            rules,
            vec![
                format!("-A CNI-2fbf118d4cafd020f013271b -d 10.88.0.0/16 -m comment --comment {c} -j ACCEPT"),
                format!("-A CNI-2fbf118d4cafd020f013271b ! -d 224.0.0.0/4 -m comment --comment {c} -j MASQUERADE"),
            ]
        );
        assert_eq!(
            jumps,
            vec![format!("-A POSTROUTING -s 10.88.0.5/32 -m comment --comment {c} -j CNI-2fbf118d4cafd020f013271b")]
        );
        let (rules6, jumps6) = expected_lines("brnet", &ex, &pod(), IpFamily::V6);
        assert!(rules6[0].contains("-d fd88::/64 "), "{rules6:?}");
        assert!(rules6[1].contains("! -d ff00::/8 "));
        assert!(jumps6[0].contains("-s fd88::5/128 "));
    }

    #[test]
    fn tokenizer_and_comment_id() {
        let l = r#"-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \"brnet\" id: \"ctr1\"" -j CNI-x"#;
        let t = tokens(l);
        assert_eq!(t[7], r#"name: "brnet" id: "ctr1""#);
        assert_eq!(t.len(), 10);
        assert_eq!(comment_id(l, "brnet").as_deref(), Some("ctr1"));
        assert_eq!(comment_id(l, "other"), None);
        assert_eq!(tokens(r#"a "" b"#), vec!["a", "", "b"]);
    }

    #[test]
    fn removal() {
        let lines: Vec<String> = [
            ":POSTROUTING ACCEPT [0:0]",
            ":CNI-x - [0:0]",
            "-A POSTROUTING -s 10.0.0.5/32 -j CNI-x",
            "-A POSTROUTING -s 10.0.0.6/32 -j CNI-xy",
            "-A CNI-x -j MASQUERADE",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            removal_input(&lines, &["CNI-x".to_string()]).unwrap(),
            "*nat\n-D POSTROUTING -s 10.0.0.5/32 -j CNI-x\n-F CNI-x\n-X CNI-x\nCOMMIT\n"
        );
        assert_eq!(removal_input(&lines, &["CNI-z".to_string()]), None);
    }
}
