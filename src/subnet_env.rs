//! flannel's `subnet.env`: the node's pod subnet as the overlay agent (flanneld or rcni-overlay) hands it
//! to the CNI side. It is the only coupling between the agent and the `flannel` plugin.
//!
//! Format (what flanneld writes, in this order; the IPv4 pair only with IPv4 on, the IPv6 pair only
//! with IPv6 on):
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.5.1/24
//! FLANNEL_IPV6_NETWORK=fd00:10:244::/56
//! FLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=false
//! ```
//! `FLANNEL_SUBNET` is the node's lease with its *first usable address* in place of the network address.
//! `FLANNEL_NETWORK` may be a comma-separated list (flannel's multi-network form).
//!
//! Reading follows flannel's CNI plugin: one `KEY=value` per line, exact key match (no trimming, so an
//! `export ` prefix or indentation makes a line unknown), unknown lines (comments, blanks, other keys)
//! ignored, the last occurrence of a key wins, CRLF line ends accepted. It is stricter than flannel on
//! values: a value flannel would silently treat as something else (`FLANNEL_IPMASQ=yes` as false, an
//! IPv6 range in `FLANNEL_NETWORK`, an MTU of 0) is refused with a message naming the variable and file.
//!
//! Writing is byte-identical to flanneld and atomic (`fs_private::write_atomic`: temp file beside it,
//! renamed over it; then mode 0644 as flanneld sets it), so a reader never sees a half-written file.

use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::fs_private;

/// Where flanneld writes the file, and where the `flannel` plugin looks by default.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// Mode flanneld gives the file (umask ignored): every user may read the node's subnet.
const FILE_MODE: u32 = 0o644;

/// A subnet.env is a few hundred bytes; anything far larger is not one.
const MAX_LEN: u64 = 64 * 1024;

/// The lowest MTU an IPv4 link may have (RFC 791); the highest the kernel's `mtu` attribute carries in
/// practice for these devices.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// The contents of one subnet.env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the cluster network(s); the pods' route to the rest of the cluster.
    pub networks: Vec<Ipv4Network>,
    /// `FLANNEL_SUBNET` as written: the node's lease with its first usable address (10.244.5.1/24).
    pub subnet: Option<Ipv4Network>,
    /// `FLANNEL_IPV6_NETWORK`.
    pub ipv6_networks: Vec<Ipv6Network>,
    /// `FLANNEL_IPV6_SUBNET` as written (first usable address/len).
    pub ipv6_subnet: Option<Ipv6Network>,
    /// `FLANNEL_MTU`: the MTU pods get (the underlay's minus the encapsulation).
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: the agent masquerades traffic leaving the cluster network itself (so the
    /// bridge must not).
    pub ipmasq: bool,
}

/// What went wrong reading a subnet.env. Every message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetEnvError {
    /// The file does not exist (the agent has not written it yet, or is not running).
    Missing { path: PathBuf },
    /// It exists but cannot be read (permissions, not a regular file, too large); `reason` names the file.
    Unreadable { path: PathBuf, reason: String },
    /// A variable has a value that is not what flanneld writes.
    Invalid { path: PathBuf, variable: &'static str, value: String, reason: String },
    /// Required variables are absent (names listed as flannel's plugin lists them).
    Incomplete { path: PathBuf, missing: Vec<&'static str> },
}

impl fmt::Display for SubnetEnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubnetEnvError::Missing { path } => write!(f, "{} does not exist", path.display()),
            SubnetEnvError::Unreadable { reason, .. } => write!(f, "{reason}"),
            SubnetEnvError::Invalid { path, variable, value, reason } => {
                write!(f, "{}: {variable}={value:?} is invalid: {reason}", path.display())
            }
            SubnetEnvError::Incomplete { path, missing } => {
                write!(f, "{} is missing {}", path.display(), missing.join(", "))
            }
        }
    }
}

impl std::error::Error for SubnetEnvError {}

/// `a.b.c.d/len` with an explicit prefix length (flannel uses Go's ParseCIDR, which requires one).
fn parse_cidr<N: FromStr>(value: &str) -> Result<N, String> {
    if !value.contains('/') {
        return Err("expected address/prefix-length, e.g. 10.244.0.0/16".into());
    }
    value.parse::<N>().map_err(|_| "not an address/prefix-length of this address family".into())
}

/// A comma-separated list of CIDRs; duplicates are dropped (as flannel does).
fn parse_cidr_list<N: FromStr + PartialEq>(value: &str) -> Result<Vec<N>, String> {
    let mut out: Vec<N> = Vec::new();
    for part in value.split(',') {
        let n = parse_cidr::<N>(part).map_err(|e| format!("{part:?}: {e}"))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The network of a CIDR whose address has host bits set (10.244.5.1/24 → 10.244.5.0/24).
fn v4_network_of(n: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(n.network(), n.prefix()).expect("prefix of a valid network")
}

fn v6_network_of(n: Ipv6Network) -> Ipv6Network {
    Ipv6Network::new(n.network(), n.prefix()).expect("prefix of a valid network")
}

impl SubnetEnv {
    /// The file's contents for a node holding `lease` (the subnet's network address, as stored in
    /// etcd) on `network`: `FLANNEL_SUBNET` becomes the lease's first usable address, as flanneld writes.
    pub fn for_lease(network: Ipv4Network, lease: Ipv4Network, mtu: u32, ipmasq: bool) -> SubnetEnv {
        let first = Ipv4Addr::from(u32::from(lease.network()).wrapping_add(1));
        SubnetEnv {
            networks: vec![network],
            subnet: Some(Ipv4Network::new(first, lease.prefix()).expect("prefix of a valid network")),
            ipv6_networks: Vec::new(),
            ipv6_subnet: None,
            mtu,
            ipmasq,
        }
    }

    /// Add the IPv6 pair for `lease` on `network` (first usable address, as flanneld writes).
    pub fn with_ipv6_lease(mut self, network: Ipv6Network, lease: Ipv6Network) -> SubnetEnv {
        let first = Ipv6Addr::from(u128::from(lease.network()).wrapping_add(1));
        self.ipv6_networks = vec![network];
        self.ipv6_subnet = Some(Ipv6Network::new(first, lease.prefix()).expect("prefix of a valid network"));
        self
    }

    /// The node's IPv4 pod subnet as a network (10.244.5.1/24 → 10.244.5.0/24): host-local's range.
    pub fn subnet_network(&self) -> Option<Ipv4Network> {
        self.subnet.map(v4_network_of)
    }

    /// The node's IPv6 pod subnet as a network.
    pub fn ipv6_subnet_network(&self) -> Option<Ipv6Network> {
        self.ipv6_subnet.map(v6_network_of)
    }

    /// The cluster networks as networks (host bits cleared, as Go's ParseCIDR returns them).
    pub fn network_routes(&self) -> (Vec<Ipv4Network>, Vec<Ipv6Network>) {
        let mut v4: Vec<Ipv4Network> = Vec::new();
        for n in self.networks.iter().copied().map(v4_network_of) {
            if !v4.contains(&n) {
                v4.push(n);
            }
        }
        let mut v6: Vec<Ipv6Network> = Vec::new();
        for n in self.ipv6_networks.iter().copied().map(v6_network_of) {
            if !v6.contains(&n) {
                v6.push(n);
            }
        }
        (v4, v6)
    }

    /// Parse the text of a subnet.env; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<SubnetEnv, SubnetEnvError> {
        let mut networks = Vec::new();
        let mut subnet = None;
        let mut ipv6_networks = Vec::new();
        let mut ipv6_subnet = None;
        let mut mtu = None;
        let mut ipmasq = None;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else { continue };
            let invalid = |variable: &'static str, reason: String| SubnetEnvError::Invalid {
                path: path.to_path_buf(),
                variable,
                value: value.to_string(),
                reason,
            };
            match key {
                "FLANNEL_NETWORK" => {
                    networks = parse_cidr_list::<Ipv4Network>(value).map_err(|e| invalid("FLANNEL_NETWORK", e))?
                }
                "FLANNEL_SUBNET" => {
                    subnet = Some(parse_cidr::<Ipv4Network>(value).map_err(|e| invalid("FLANNEL_SUBNET", e))?)
                }
                "FLANNEL_IPV6_NETWORK" => {
                    ipv6_networks =
                        parse_cidr_list::<Ipv6Network>(value).map_err(|e| invalid("FLANNEL_IPV6_NETWORK", e))?
                }
                "FLANNEL_IPV6_SUBNET" => {
                    ipv6_subnet = Some(parse_cidr::<Ipv6Network>(value).map_err(|e| invalid("FLANNEL_IPV6_SUBNET", e))?)
                }
                "FLANNEL_MTU" => {
                    let m = value
                        .parse::<u32>()
                        .ok()
                        .filter(|m| MTU_RANGE.contains(m))
                        .ok_or_else(|| invalid("FLANNEL_MTU", format!("expected a number in {MTU_RANGE:?}")))?;
                    mtu = Some(m);
                }
                "FLANNEL_IPMASQ" => {
                    ipmasq = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("FLANNEL_IPMASQ", "expected true or false".into())),
                    })
                }
                _ => {}
            }
        }
        // Which variables must be present: flannel's plugin's rule (either family will do).
        let mut missing = Vec::new();
        if networks.is_empty() && ipv6_networks.is_empty() {
            missing.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if subnet.is_none() && ipv6_subnet.is_none() {
            missing.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        if mtu.is_none() {
            missing.push("FLANNEL_MTU");
        }
        if ipmasq.is_none() {
            missing.push("FLANNEL_IPMASQ");
        }
        match (mtu, ipmasq) {
            (Some(mtu), Some(ipmasq)) if missing.is_empty() => {
                Ok(SubnetEnv { networks, subnet, ipv6_networks, ipv6_subnet, mtu, ipmasq })
            }
            _ => Err(SubnetEnvError::Incomplete { path: path.to_path_buf(), missing }),
        }
    }

    /// Read and parse the file at `path` (symlinks followed, regular files only: a FIFO planted at the
    /// path must not hang a pod's ADD).
    pub fn read(path: &Path) -> Result<SubnetEnv, SubnetEnvError> {
        let bytes = fs_private::read_regular(path, MAX_LEN).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SubnetEnvError::Missing { path: path.to_path_buf() },
            _ => SubnetEnvError::Unreadable { path: path.to_path_buf(), reason: e.to_string() },
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SubnetEnvError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("{} is not UTF-8 text", path.display()),
        })?;
        SubnetEnv::parse(&text, path)
    }

    /// The file's bytes, exactly as flanneld formats them.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(subnet) = self.subnet {
            let networks: Vec<String> = self.networks.iter().map(|n| n.to_string()).collect();
            s += &format!("FLANNEL_NETWORK={}\nFLANNEL_SUBNET={subnet}\n", networks.join(","));
        }
        if let Some(subnet) = self.ipv6_subnet {
            let networks: Vec<String> = self.ipv6_networks.iter().map(|n| n.to_string()).collect();
            s += &format!("FLANNEL_IPV6_NETWORK={}\nFLANNEL_IPV6_SUBNET={subnet}\n", networks.join(","));
        }
        s += &format!("FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", self.mtu, self.ipmasq);
        s
    }

    /// Write the file at `path` atomically (creating its directory, 0755, as flanneld does). Readers see
    /// the previous file or this one, never a mix.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new().recursive(true).create(dir).map_err(context)?;
        }
        fs_private::write_atomic(path, self.render().as_bytes(), true).map_err(context)?;
        // Readable by every user, as flanneld leaves it: the node's subnet is no secret.
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE)).map_err(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/run/flannel/subnet.env")
    }

    fn tmpdir(tag: &str) -> tempfile::TempDir {
        tempfile::TempDir::with_prefix(format!("rcni-subnet-env-{tag}-")).unwrap()
    }

    const FLANNELD_V4: &str =
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn parses_flanneld_file() {
        let e = SubnetEnv::parse(FLANNELD_V4, p()).unwrap();
        assert_eq!(e.networks, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(e.subnet, Some("10.244.5.1/24".parse().unwrap()));
        assert_eq!(e.subnet_network(), Some("10.244.5.0/24".parse().unwrap()));
        assert_eq!(e.mtu, 1450);
        assert!(e.ipmasq);
        assert_eq!(e.ipv6_subnet, None);
    }

    #[test]
    fn writer_is_byte_identical_to_flanneld_and_round_trips() {
        let e = SubnetEnv::for_lease("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), 1450, true);
        assert_eq!(e.render(), FLANNELD_V4);
        assert_eq!(SubnetEnv::parse(&e.render(), p()).unwrap(), e);

        let dual =
            SubnetEnv::for_lease("10.244.0.0/16".parse().unwrap(), "10.244.5.0/24".parse().unwrap(), 1450, false)
                .with_ipv6_lease("fd00:10:244::/56".parse().unwrap(), "fd00:10:244:5::/64".parse().unwrap());
        let want = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n\
                    FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64\n\
                    FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        assert_eq!(dual.render(), want);
        assert_eq!(SubnetEnv::parse(want, p()).unwrap(), dual);
        assert_eq!(dual.ipv6_subnet_network(), Some("fd00:10:244:5::/64".parse().unwrap()));
    }

    #[test]
    fn ipv6_only_file() {
        let text = "FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        let e = SubnetEnv::parse(text, p()).unwrap();
        assert!(e.networks.is_empty() && e.subnet.is_none());
        assert_eq!(e.render(), text);
    }

    #[test]
    fn tolerates_what_flannel_tolerates() {
        let text = "# written by hand\r\n\r\nFLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16,10.1.0.0/16\r\nOTHER=x\n\
                    FLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=9000\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n  FLANNEL_IPMASQ=junk\nnot a line";
        let e = SubnetEnv::parse(text, p()).unwrap();
        assert_eq!(e.networks.len(), 2, "duplicate network dropped");
        assert_eq!(e.mtu, 1472, "last occurrence wins");
        assert!(!e.ipmasq, "an indented key is not the key");
        // No trailing newline on the last variable line either.
        assert!(SubnetEnv::parse(FLANNELD_V4.trim_end(), p()).is_ok());
    }

    #[test]
    fn refuses_malformed_values_naming_variable_and_file() {
        for (bad, var) in [
            ("FLANNEL_NETWORK=10.244.0.0", "FLANNEL_NETWORK"),
            ("FLANNEL_NETWORK=fd00::/48", "FLANNEL_NETWORK"),
            ("FLANNEL_NETWORK=10.244.0.0/16,", "FLANNEL_NETWORK"),
            ("FLANNEL_SUBNET=10.244.5.1/33", "FLANNEL_SUBNET"),
            ("FLANNEL_SUBNET= 10.244.5.1/24", "FLANNEL_SUBNET"),
            ("FLANNEL_IPV6_SUBNET=10.0.0.1/24", "FLANNEL_IPV6_SUBNET"),
            ("FLANNEL_IPV6_NETWORK=fd00::", "FLANNEL_IPV6_NETWORK"),
            ("FLANNEL_MTU=abc", "FLANNEL_MTU"),
            ("FLANNEL_MTU=0", "FLANNEL_MTU"),
            ("FLANNEL_MTU=70000", "FLANNEL_MTU"),
            ("FLANNEL_IPMASQ=yes", "FLANNEL_IPMASQ"),
        ] {
            let text = format!("{FLANNELD_V4}{bad}\n");
            let err = SubnetEnv::parse(&text, p()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, SubnetEnvError::Invalid { variable, .. } if variable == var), "{bad}: {msg}");
            assert!(msg.contains(var) && msg.contains("/run/flannel/subnet.env"), "{bad}: {msg}");
        }
    }

    #[test]
    fn incomplete_file_lists_missing_variables() {
        let err = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n", p()).unwrap_err();
        assert_eq!(
            err,
            SubnetEnvError::Incomplete {
                path: p().to_path_buf(),
                missing: vec!["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET", "FLANNEL_IPMASQ"]
            }
        );
        assert!(err.to_string().contains("/run/flannel/subnet.env is missing FLANNEL_SUBNET"));
        assert!(matches!(SubnetEnv::parse("", p()), Err(SubnetEnvError::Incomplete { .. })));
    }

    #[test]
    fn network_routes_are_networks() {
        let e = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.3.4/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            p(),
        )
        .unwrap();
        assert_eq!(e.network_routes().0, vec!["10.244.0.0/16".parse::<Ipv4Network>().unwrap()]);
    }

    #[test]
    fn write_is_atomic_with_flanneld_mode_and_read_back() {
        let t = tmpdir("write");
        let d = t.path();
        let path = d.join("flannel/subnet.env");
        let e = SubnetEnv::for_lease("10.244.0.0/16".parse().unwrap(), "10.244.9.0/24".parse().unwrap(), 1450, false);
        e.write(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), e.render());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o644);
        let e2 = SubnetEnv { mtu: 1400, ..e };
        e2.write(&path).unwrap();
        assert_eq!(SubnetEnv::read(&path).unwrap(), e2);
        let names: Vec<_> = fs::read_dir(d.join("flannel")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("subnet.env")], "no temp file left");
    }

    #[test]
    fn read_reports_missing_and_non_regular_files() {
        let t = tmpdir("read");
        let d = t.path();
        let missing = d.join("subnet.env");
        assert_eq!(SubnetEnv::read(&missing), Err(SubnetEnvError::Missing { path: missing.clone() }));
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(SubnetEnv::read(&fifo), Err(SubnetEnvError::Unreadable { .. })));
        assert!(matches!(SubnetEnv::read(d), Err(SubnetEnvError::Unreadable { .. })));
    }
}
