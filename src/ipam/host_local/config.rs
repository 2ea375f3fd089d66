//! host-local configuration: the `ipam` object of stdin, plus `runtimeConfig.{ips,ipRanges}`,
//! `args.cni.ips` and CNI_ARGS `IP=`. Every error names the field it is about.
//!
//! Merging follows the reference: range sets = `runtimeConfig.ipRanges` ++ [legacy top-level range, if
//! `ipam.subnet` is set] ++ `ipam.ranges`; requested IPs = CNI_ARGS `IP` ++ `args.cni.ips` ++
//! `runtimeConfig.ips` (duplicates collapse).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use super::range::{Range, canonical};
use super::range_set::{RangeSet, first_overlap};
use crate::cni::result::Route;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// How long a command waits for the network's lock before giving up with "try again" (code 11).
/// rcni extension `ipam.lockTimeout` (seconds); the reference waits forever.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the network's state lives: all DEL and GC need (they work even when the ranges changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Network name = directory under `data_dir`.
    pub name: String,
    pub data_dir: PathBuf,
    pub lock_timeout: Duration,
}

impl Location {
    pub fn net_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub loc: Location,
    pub range_sets: Vec<RangeSet>,
    /// Configured routes, returned verbatim in the result.
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
    pub requested: Vec<IpAddr>,
}

type R<T> = Result<T, String>;

/// The network name becomes a directory name under `dataDir`: refuse anything that could leave it.
pub fn check_network_name(name: &str) -> R<()> {
    if name.is_empty() {
        return Err("missing network name".into());
    }
    crate::validate::network_name(name).map_err(|e| {
        format!("network name {name:?} cannot be used as a directory name under dataDir ({e}): {}", e.kind.rule())
    })
}

fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn as_str<'a>(v: &'a Value, path: &str) -> R<&'a str> {
    v.as_str().ok_or_else(|| format!("{path}: expected a string, got {v}"))
}

fn as_obj<'a>(v: &'a Value, path: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| format!("{path}: expected an object, got {v}"))
}

fn as_arr<'a>(v: &'a Value, path: &str) -> R<&'a Vec<Value>> {
    v.as_array().ok_or_else(|| format!("{path}: expected a list, got {v}"))
}

pub fn parse_ip(s: &str, path: &str) -> R<IpAddr> {
    s.trim().parse::<IpAddr>().map(canonical).map_err(|_| format!("{path}: invalid IP address {s:?}"))
}

/// `address/prefix`, host bits allowed (checked later where it matters).
pub fn parse_cidr(s: &str, path: &str) -> R<(IpAddr, u8)> {
    let bad = || format!("{path}: invalid CIDR address {s:?} (expected address/prefix, e.g. 10.22.0.0/16)");
    let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
        return Err(bad());
    }
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if prefix > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// A requested address: `ip` or `ip/prefix` (the prefix is ignored, as in the reference).
pub fn parse_requested(s: &str, path: &str) -> R<IpAddr> {
    let t = s.trim();
    if t.contains('/') { parse_cidr(t, path).map(|(ip, _)| canonical(ip)) } else { parse_ip(t, path) }
        .map_err(|_| format!("cannot understand ip: {path}: {s:?} is not an IP address"))
}

/// A range object before validation, with where it came from for error messages.
struct RawRange {
    path: String,
    subnet: (IpAddr, u8),
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

fn opt_ip(obj: &Map<String, Value>, key: &str, path: &str) -> R<Option<IpAddr>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => {
            let p = format!("{path}.{key}");
            parse_ip(as_str(v, &p)?, &p).map(Some)
        }
    }
}

fn raw_range(obj: &Map<String, Value>, path: &str) -> R<RawRange> {
    let sp = format!("{path}.subnet");
    let subnet = match get(obj, "subnet") {
        None => {
            return Err(format!("{sp}: missing (every range needs a subnet, e.g. \"10.22.0.0/16\")"));
        }
        Some(v) => parse_cidr(as_str(v, &sp)?, &sp)?,
    };
    Ok(RawRange {
        path: path.to_string(),
        subnet,
        start: opt_ip(obj, "rangeStart", path)?,
        end: opt_ip(obj, "rangeEnd", path)?,
        gateway: opt_ip(obj, "gateway", path)?,
    })
}

fn raw_sets(v: &Value, path: &str) -> R<Vec<Vec<RawRange>>> {
    let mut out = Vec::new();
    for (i, set) in as_arr(v, path)?.iter().enumerate() {
        let sp = format!("{path}[{i}]");
        let mut ranges = Vec::new();
        for (j, r) in as_arr(set, &sp)?.iter().enumerate() {
            let rp = format!("{sp}[{j}]");
            ranges.push(raw_range(as_obj(r, &rp)?, &rp)?);
        }
        out.push(ranges);
    }
    Ok(out)
}

fn opt_u32(obj: &Map<String, Value>, key: &str, path: &str) -> R<Option<u32>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{path}.{key}: expected a non-negative integer, got {v}")),
    }
}

fn parse_route(v: &Value, path: &str) -> R<Route> {
    let obj = as_obj(v, path)?;
    let dp = format!("{path}.dst");
    let dst = match get(obj, "dst") {
        None => return Err(format!("{dp}: missing (e.g. \"0.0.0.0/0\")")),
        Some(v) => {
            let (ip, p) = parse_cidr(as_str(v, &dp)?, &dp)?;
            IpNetwork::new(ip, p).map_err(|e| format!("{dp}: {e}"))?
        }
    };
    let scope = match opt_u32(obj, "scope", path)? {
        None => None,
        Some(n) => Some(u8::try_from(n).map_err(|_| format!("{path}.scope: must be 0..255, got {n}"))?),
    };
    Ok(Route {
        dst,
        gw: opt_ip(obj, "gw", path)?,
        mtu: opt_u32(obj, "mtu", path)?,
        advmss: opt_u32(obj, "advmss", path)?,
        priority: opt_u32(obj, "priority", path)?,
        table: opt_u32(obj, "table", path)?,
        scope,
    })
}

fn ip_list(v: &Value, path: &str, out: &mut Vec<IpAddr>) -> R<()> {
    for (i, item) in as_arr(v, path)?.iter().enumerate() {
        let p = format!("{path}[{i}]");
        out.push(parse_requested(as_str(item, &p)?, &p)?);
    }
    Ok(())
}

fn version_below_030(v: &str) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) < (0, 3)
}

type Obj = Map<String, Value>;

fn top_and_ipam(stdin: &Value) -> R<(&Obj, &Obj)> {
    let top = as_obj(stdin, "network configuration")?;
    let ipam = match get(top, "ipam") {
        None => return Err("IPAM config missing 'ipam' key".into()),
        Some(v) => as_obj(v, "ipam")?,
    };
    Ok((top, ipam))
}

/// The path in `ipam.<key>`; `None` when absent or empty. Relative paths are refused (stricter than the
/// reference): they would depend on the runtime's working directory, which may differ between ADD and DEL.
fn absolute_path(ipam: &Obj, key: &str) -> R<Option<PathBuf>> {
    let Some(v) = get(ipam, key) else { return Ok(None) };
    let s = as_str(v, &format!("ipam.{key}"))?;
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') {
        return Err(format!("ipam.{key}: {s:?} is a relative path: give an absolute one (starting with '/')"));
    }
    Ok(Some(PathBuf::from(s)))
}

/// Network name, `ipam.dataDir`, `ipam.lockTimeout`; nothing else is looked at.
pub fn parse_location(stdin: &Value) -> R<Location> {
    let (top, ipam) = top_and_ipam(stdin)?;
    let name = match get(top, "name") {
        Some(v) => as_str(v, "name")?.to_string(),
        None => String::new(),
    };
    check_network_name(&name)?;
    let data_dir = absolute_path(ipam, "dataDir")?.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let lock_timeout = match get(ipam, "lockTimeout") {
        None => DEFAULT_LOCK_TIMEOUT,
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f <= 86400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("ipam.lockTimeout: expected seconds (0..86400), got {v}"))?,
    };
    Ok(Location { name, data_dir, lock_timeout })
}

/// The addresses of CNI_ARGS `IP` (a comma-separated list; empty items skipped).
pub fn parse_cni_args_ip(value: &str) -> R<Vec<IpAddr>> {
    value.split(',').filter(|item| !item.trim().is_empty()).map(|item| parse_requested(item, "CNI_ARGS IP")).collect()
}

/// Parse and validate. `stdin` is the whole request object; `cni_args_ip` the value of CNI_ARGS `IP`.
pub fn parse(stdin: &Value, cni_version: &str, cni_args_ip: Option<&str>) -> R<IpamConf> {
    let loc = parse_location(stdin)?;
    let (top, ipam) = top_and_ipam(stdin)?;
    let rc = match get(top, "runtimeConfig") {
        None => None,
        Some(v) => Some(as_obj(v, "runtimeConfig")?),
    };

    let mut requested = match cni_args_ip {
        Some(s) => parse_cni_args_ip(s)?,
        None => Vec::new(),
    };
    if let Some(args) = get(top, "args") {
        let args = as_obj(args, "args")?;
        if let Some(cni) = get(args, "cni") {
            if let Some(ips) = get(as_obj(cni, "args.cni")?, "ips") {
                ip_list(ips, "args.cni.ips", &mut requested)?;
            }
        }
    }
    if let Some(ips) = rc.and_then(|rc| get(rc, "ips")) {
        ip_list(ips, "runtimeConfig.ips", &mut requested)?;
    }
    let mut seen = std::collections::HashSet::new();
    requested.retain(|ip| seen.insert(*ip));

    // Range sets, merged in the reference's order.
    let mut raw: Vec<Vec<RawRange>> = Vec::new();
    if let Some(v) = rc.and_then(|rc| get(rc, "ipRanges")) {
        raw.extend(raw_sets(v, "runtimeConfig.ipRanges")?);
    }
    if get(ipam, "subnet").is_some() {
        raw.push(vec![raw_range(ipam, "ipam")?]);
    }
    if let Some(v) = get(ipam, "ranges") {
        raw.extend(raw_sets(v, "ipam.ranges")?);
    }
    if raw.is_empty() {
        return Err("no IP ranges specified: set ipam.ranges (e.g. [[{\"subnet\": \"10.22.0.0/16\"}]]) \
                    or ipam.subnet"
            .into());
    }
    let mut range_sets = Vec::with_capacity(raw.len());
    for (i, set) in raw.into_iter().enumerate() {
        if set.is_empty() {
            return Err(format!("invalid range set {i}: empty range set: give it at least one range"));
        }
        let set_path = set[0].path.rsplit_once('[').map(|(p, _)| p.to_string()).unwrap_or_default();
        let mut ranges = Vec::with_capacity(set.len());
        for r in set {
            let range = Range::new(r.subnet.0, r.subnet.1, r.start, r.end, r.gateway)
                .map_err(|e| format!("invalid range set {i}: {e} ({}.{})", r.path, e.field()))?;
            ranges.push(range);
        }
        let rs = RangeSet::new(ranges).map_err(|e| {
            let at = if set_path.is_empty() { String::new() } else { format!(" ({set_path})") };
            format!("invalid range set {i}: {e}{at}")
        })?;
        range_sets.push(rs);
    }
    let v4 = range_sets.iter().filter(|s| s.is_v4()).count();
    if (v4 > 1 || range_sets.len() - v4 > 1) && version_below_030(cni_version) {
        return Err(format!(
            "CNI version {cni_version} does not support more than 1 address per family: \
             use cniVersion 0.3.0 or later, or one range set per family"
        ));
    }
    // Ranges of one set are disjoint already: an overlap found among all ranges is between two sets.
    let (all, set_of): (Vec<&Range>, Vec<usize>) =
        range_sets.iter().enumerate().flat_map(|(i, s)| s.ranges.iter().map(move |r| (r, i))).unzip();
    if let Some((a, b)) = first_overlap(&all) {
        let (i, j) = (set_of[a].min(set_of[b]), set_of[a].max(set_of[b]));
        return Err(format!(
            "range set {i} overlaps with {j} ({} and {}): range sets must be disjoint",
            range_sets[i], range_sets[j]
        ));
    }

    let mut routes = Vec::new();
    if let Some(v) = get(ipam, "routes") {
        for (i, r) in as_arr(v, "ipam.routes")?.iter().enumerate() {
            routes.push(parse_route(r, &format!("ipam.routes[{i}]"))?);
        }
    }
    let resolv_conf = absolute_path(ipam, "resolvConf")?;
    Ok(IpamConf { loc, range_sets, routes, resolv_conf, requested })
}

/// DNS settings read from a resolv.conf: `nameserver`, `domain`, `search`, `options`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConf {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

pub fn parse_resolv_conf(text: &str) -> DnsConf {
    let mut d = DnsConf::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            continue;
        }
        let rest = f[1..].iter().map(|s| s.to_string());
        match f[0] {
            "nameserver" => d.nameservers.push(f[1].to_string()),
            "domain" => d.domain = f[1].to_string(),
            "search" => d.search.extend(rest),
            "options" => d.options.extend(rest),
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conf(ipam: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam})
    }

    fn err(v: Value) -> String {
        parse(&v, "1.0.0", None).unwrap_err()
    }

    #[test]
    fn legacy_single_range() {
        let c = parse(
            &conf(json!({"type": "host-local", "subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10",
                         "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254",
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.1"}]})),
            "1.0.0",
            None,
        )
        .unwrap();
        assert_eq!(c.loc.name, "net1");
        assert_eq!(c.loc.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.loc.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].ranges[0];
        assert_eq!((r.start, r.end, r.gateway, r.prefix), (ip("10.1.0.10"), ip("10.1.0.20"), ip("10.1.0.254"), 16));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("10.1.0.1")));
        assert_eq!(c.loc.net_dir(), PathBuf::from("/var/lib/cni/networks/net1"));
    }

    #[test]
    fn merge_order_and_requested() {
        let v = json!({
            "cniVersion": "1.0.0", "name": "n",
            "ipam": {"subnet": "10.2.0.0/24", "ranges": [[{"subnet": "fd00::/64"}]], "dataDir": "/tmp/x"},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]], "ips": ["10.3.0.5/24", "fd00::5"]},
            "args": {"cni": {"ips": ["10.2.0.7", "fd00::5"]}}
        });
        let c = parse(&v, "1.0.0", Some("10.2.0.9, 10.3.0.5")).unwrap();
        let nets: Vec<String> = c.range_sets.iter().map(|s| s.ranges[0].network.to_string()).collect();
        assert_eq!(nets, ["10.3.0.0", "10.2.0.0", "fd00::"]);
        assert_eq!(c.requested, vec![ip("10.2.0.9"), ip("10.3.0.5"), ip("10.2.0.7"), ip("fd00::5")]);
        assert_eq!(c.loc.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"cniVersion": "1.0.0", "name": "n"}), "IPAM config missing 'ipam' key"),
            (conf(json!({"type": "host-local"})), "no IP ranges specified"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0/24"}]]})), "ipam.ranges[0][0].subnet: invalid CIDR address"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0.0"}]]})), "ipam.ranges[0][0].subnet: invalid CIDR address"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]})), "invalid CIDR"),
            (conf(json!({"ranges": [[{"rangeStart": "10.0.0.1"}]]})), "ipam.ranges[0][0].subnet: missing"),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]})),
                "invalid range set 0: RangeStart 10.0.1.1 not in network 10.0.0.0/24 (ipam.ranges[0][0].rangeStart)",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}]]})),
                "invalid range set 0: RangeEnd 10.0.1.1 not in network 10.0.0.0/24 (ipam.ranges[0][0].rangeEnd)",
            ),
            (
                conf(
                    json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}]]}),
                ),
                "RangeEnd 10.0.0.40 is before RangeStart 10.0.0.50",
            ),
            (
                conf(json!({"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"})),
                "invalid range set 0: gateway 10.9.0.1 not in network 10.0.0.0/24",
            ),
            (conf(json!({"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"})), "(ipam.gateway)"),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]})),
                "invalid range set 0: mixed address families",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]})),
                "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap (ipam.ranges[0])",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]})),
                "range set 0 overlaps with 1",
            ),
            (conf(json!({"ranges": [[]]})), "invalid range set 0: empty range set"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]})), "Network 10.0.0.0/31 too small to allocate from"),
            (conf(json!({"ranges": [[{"subnet": "fd00::/127"}]]})), "Network fd00::/127 too small to allocate from"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0.1/24"}]]})), "Network has host bits set"),
            (conf(json!({"ranges": {"subnet": "10.0.0.0/24"}})), "ipam.ranges: expected a list"),
            (conf(json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]})), "ipam.routes[0].dst: invalid CIDR"),
            (conf(json!({"subnet": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]})), "ipam.routes[0].dst: missing"),
            (conf(json!({"subnet": "10.0.0.0/24", "dataDir": 5})), "ipam.dataDir: expected a string"),
            (
                conf(json!({"subnet": "10.0.0.0/24", "dataDir": "relative/data"})),
                "ipam.dataDir: \"relative/data\" is a relative path",
            ),
            (
                conf(json!({"subnet": "10.0.0.0/24", "resolvConf": "resolv.conf"})),
                "ipam.resolvConf: \"resolv.conf\" is a relative path",
            ),
            (conf(json!({"ranges": [[{"subnet": "0.0.0.0/0"}]]})), "Network 0.0.0.0/0 is too large"),
            (conf(json!({"ranges": [[{"subnet": "10.0.0.0/7"}]]})), "(ipam.ranges[0][0].subnet)"),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"},
                       "runtimeConfig": {"ipRanges": [[{"subnet": "::/8"}]]}}),
                "(runtimeConfig.ipRanges[0][0].subnet)",
            ),
            (conf(json!({"ranges": [[{"subnet": "::/0"}]]})), "Network ::/0 is too large"),
            (conf(json!({"ranges": [[{"subnet": "fd00::/15"}]]})), "too large"),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"},
                       "runtimeConfig": {"ipRanges": [[{"subnet": "0.0.0.0/0"}]]}}),
                "Network 0.0.0.0/0 is too large: a range's subnet needs a prefix of at least /8 (IPv4) or /16 (IPv6)",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "10.0.0.0/30", "rangeStart": "10.0.0.3", "rangeEnd": "10.0.0.3",
                                         "gateway": "10.0.0.3"}]]})),
                "gateway 10.0.0.3 is the subnet's broadcast address: use a host address of the subnet or omit it (default: first address) (ipam.ranges[0][0].gateway)",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "fd00::/64", "gateway": "fd00::"}]]})),
                "gateway fd00:: is the subnet's network address",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"},
                       "runtimeConfig": {"ips": ["banana"]}}),
                "cannot understand ip: runtimeConfig.ips[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "..", "ipam": {"subnet": "10.0.0.0/24"}}),
                "cannot be used as a directory name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "a/b", "ipam": {"subnet": "10.0.0.0/24"}}),
                "cannot be used as a directory name",
            ),
        ];
        for (v, want) in cases {
            let e = err(v.clone());
            assert!(e.contains(want), "config {v}\n  got:  {e}\n  want: {want}");
        }
        let e = parse(&conf(json!({"subnet": "10.0.0.0/24"})), "1.0.0", Some("10.0.0.x")).unwrap_err();
        assert!(e.starts_with("cannot understand ip: CNI_ARGS IP"), "{e}");
    }

    #[test]
    fn old_versions_one_address_per_family() {
        let v = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}));
        assert!(parse(&v, "0.3.1", None).is_ok());
        let e = parse(&v, "0.2.0", None).unwrap_err();
        assert!(e.starts_with("CNI version 0.2.0 does not support more than 1 address per family"));
        let v = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
        assert!(parse(&v, "0.2.0", None).is_ok());
    }

    #[test]
    fn resolv_conf() {
        let d = parse_resolv_conf(
            "# comment\n; other\nnameserver 10.0.0.10\nnameserver  fd00::10 \ndomain example.com\n\
             search a.example b.example\noptions ndots:5 edns0\nbogus\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.10", "fd00::10"]);
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:5", "edns0"]);
    }
}
