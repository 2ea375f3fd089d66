//! The ADD result: one internal model (the spec 1.1.0 shape), parsed from and rendered to every version.
//!
//! Conversion rules follow libcni (`pkg/types/{020,040,100}` and `internal/convert.go`):
//! - 0.1.0/0.2.0 carry at most one `ip4` and one `ip6`, each with its own routes, and no interfaces;
//! - 0.3.x/0.4.0 add `interfaces` and mark every IP with `version`;
//! - 1.0.0/1.1.0 drop `version`; 1.1.0 fields (mtu, socketPath, pciID, route mtu/advmss/priority/table/scope)
//!   ride along in both 1.x versions, as in libcni.

use super::error::{CniError, CniResult, code};
use super::version::{self, Family};
use ipnetwork::IpNetwork;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    /// Empty when unknown.
    pub mac: String,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty for host-side interfaces.
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
    /// Host address with the subnet's prefix, e.g. 10.1.0.5/16.
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    pub fn from_value(v: &Value) -> CniResult<Dns> {
        let obj = v.as_object().ok_or_else(|| decode("dns must be an object"))?;
        Ok(Dns {
            nameservers: str_list(obj.get("nameservers"), "dns.nameservers")?,
            domain: opt_str(obj.get("domain"), "dns.domain")?.unwrap_or_default(),
            search: str_list(obj.get("search"), "dns.search")?,
            options: str_list(obj.get("options"), "dns.options")?,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), json!(self.nameservers));
        }
        if !self.domain.is_empty() {
            m.insert("domain".into(), json!(self.domain));
        }
        if !self.search.is_empty() {
            m.insert("search".into(), json!(self.search));
        }
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        Value::Object(m)
    }
}

fn decode(msg: impl Into<String>) -> CniError {
    CniError::new(code::DECODE, format!("failed to decode result: {}", msg.into()))
}

fn opt_str(v: Option<&Value>, field: &str) -> CniResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(decode(format!("{field} must be a string, got {other}"))),
    }
}

fn str_list(v: Option<&Value>, field: &str) -> CniResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| decode(format!("{field} must hold strings"))))
            .collect(),
        Some(other) => Err(decode(format!("{field} must be a list, got {other}"))),
    }
}

fn opt_u64(v: Option<&Value>, field: &str) -> CniResult<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_u64().map(Some).ok_or_else(|| decode(format!("{field} must be a non-negative integer"))),
    }
}

fn parse_net(s: &str, field: &str) -> CniResult<IpNetwork> {
    s.parse().map_err(|_| decode(format!("{field} {s:?} is not an address with prefix (e.g. 10.1.0.5/24)")))
}

fn parse_ip(v: Option<&Value>, field: &str) -> CniResult<Option<IpAddr>> {
    match opt_str(v, field)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| decode(format!("{field} {s:?} is not an IP address"))),
    }
}

fn parse_route(v: &Value) -> CniResult<Route> {
    let dst = opt_str(v.get("dst"), "route dst")?.ok_or_else(|| decode("route without dst"))?;
    // libcni's mtu, advmss and priority are plain ints with `omitempty`: 0 means unset, and is never printed.
    // table and scope are pointers there: 0 is a value.
    let narrow = |n: Option<u64>, f: &str| -> CniResult<Option<u32>> {
        n.map(|x| u32::try_from(x).map_err(|_| decode(format!("route {f} {x} out of range (at most {})", u32::MAX))))
            .transpose()
    };
    let unset_if_zero = |n: Option<u32>| n.filter(|&x| x != 0);
    Ok(Route {
        dst: parse_net(&dst, "route dst")?,
        gw: parse_ip(v.get("gw"), "route gw")?,
        mtu: unset_if_zero(narrow(opt_u64(v.get("mtu"), "route mtu")?, "mtu")?),
        advmss: unset_if_zero(narrow(opt_u64(v.get("advmss"), "route advmss")?, "advmss")?),
        priority: unset_if_zero(narrow(opt_u64(v.get("priority"), "route priority")?, "priority")?),
        table: narrow(opt_u64(v.get("table"), "route table")?, "table")?,
        scope: opt_u64(v.get("scope"), "route scope")?
            .map(|x| u8::try_from(x).map_err(|_| decode("route scope out of range")))
            .transpose()?,
    })
}

fn route_value(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    for (k, v) in [("mtu", r.mtu), ("advmss", r.advmss), ("priority", r.priority)] {
        if let Some(v) = v.filter(|&v| v != 0) {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(t) = r.table {
        m.insert("table".into(), json!(t));
    }
    if let Some(s) = r.scope {
        m.insert("scope".into(), json!(s));
    }
    Value::Object(m)
}

fn list<'a>(v: &'a Value, key: &str) -> CniResult<&'a [Value]> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(decode(format!("{key} must be a list"))),
    }
}

impl AddResult {
    /// Parse a result of any version. `fallback_version` applies when the JSON carries no cniVersion.
    pub fn from_value(v: &Value, fallback_version: &str) -> CniResult<AddResult> {
        if !v.is_object() {
            return Err(decode("a result must be a JSON object"));
        }
        let declared = opt_str(v.get("cniVersion"), "cniVersion")?.unwrap_or_default();
        let ver = if declared.is_empty() { fallback_version.to_string() } else { declared };
        let dns = match v.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(d) => Dns::from_value(d)?,
        };
        let mut out = AddResult { cni_version: ver.clone(), dns, ..Default::default() };
        match version::family(&ver)? {
            Family::V02 => {
                for key in ["ip4", "ip6"] {
                    let Some(ipc) = v.get(key).filter(|x| !x.is_null()) else { continue };
                    let addr = opt_str(ipc.get("ip"), &format!("{key}.ip"))?
                        .ok_or_else(|| decode(format!("{key} without ip")))?;
                    out.ips.push(IpConfig {
                        interface: None,
                        address: parse_net(&addr, &format!("{key}.ip"))?,
                        gateway: parse_ip(ipc.get("gateway"), &format!("{key}.gateway"))?,
                    });
                    for r in list(ipc, "routes")? {
                        out.routes.push(parse_route(r)?);
                    }
                }
            }
            Family::V04 | Family::V1 => {
                for i in list(v, "interfaces")? {
                    out.interfaces.push(Interface {
                        name: opt_str(i.get("name"), "interface name")?.unwrap_or_default(),
                        mac: opt_str(i.get("mac"), "interface mac")?.unwrap_or_default(),
                        mtu: opt_u64(i.get("mtu"), "interface mtu")?
                            .map(|m| {
                                u32::try_from(m).map_err(|_| {
                                    decode(format!("interface mtu {m} out of range (at most {})", u32::MAX))
                                })
                            })
                            .transpose()?
                            .filter(|&m| m != 0),
                        sandbox: opt_str(i.get("sandbox"), "interface sandbox")?.unwrap_or_default(),
                        socket_path: opt_str(i.get("socketPath"), "socketPath")?.unwrap_or_default(),
                        pci_id: opt_str(i.get("pciID"), "pciID")?.unwrap_or_default(),
                    });
                }
                for ip in list(v, "ips")? {
                    let addr = opt_str(ip.get("address"), "ips address")?
                        .ok_or_else(|| decode("ips entry without address"))?;
                    let interface = opt_u64(ip.get("interface"), "ips interface")?.map(|i| i as usize);
                    if let Some(idx) = interface {
                        if idx >= out.interfaces.len() {
                            return Err(decode(format!(
                                "ips entry {addr} names interface {idx}, but there are only {} interfaces",
                                out.interfaces.len()
                            )));
                        }
                    }
                    out.ips.push(IpConfig {
                        interface,
                        address: parse_net(&addr, "ips address")?,
                        gateway: parse_ip(ip.get("gateway"), "ips gateway")?,
                    });
                }
                for r in list(v, "routes")? {
                    out.routes.push(parse_route(r)?);
                }
            }
        }
        Ok(out)
    }

    pub fn from_slice(bytes: &[u8], fallback_version: &str) -> CniResult<AddResult> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| decode(format!("invalid JSON: {e}")))?;
        Self::from_value(&v, fallback_version)
    }

    /// Render in the shape of `ver`. A 0.1.0/0.2.0 result needs at least one IP (libcni fails the same way).
    pub fn to_value(&self, ver: &str) -> CniResult<Value> {
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(ver));
        match version::family(ver)? {
            Family::V02 => {
                let mut any = false;
                for (key, v4) in [("ip4", true), ("ip6", false)] {
                    let Some(ip) = self.ips.iter().find(|i| i.address.is_ipv4() == v4) else { continue };
                    any = true;
                    let mut o = Map::new();
                    o.insert("ip".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        o.insert("gateway".into(), json!(gw.to_string()));
                    }
                    let routes: Vec<Value> =
                        self.routes.iter().filter(|r| r.dst.is_ipv4() == v4).map(route_value).collect();
                    if !routes.is_empty() {
                        o.insert("routes".into(), Value::Array(routes));
                    }
                    m.insert(key.into(), Value::Object(o));
                }
                if !any {
                    return Err(CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        format!("cannot express this result in cniVersion {ver}: it has no IP address"),
                    )
                    .with_details("0.1.0 and 0.2.0 results carry only ip4/ip6; use cniVersion 0.3.0 or later"));
                }
                m.insert("dns".into(), self.dns.to_value());
            }
            fam @ (Family::V04 | Family::V1) => {
                if !self.interfaces.is_empty() {
                    let ifs = self
                        .interfaces
                        .iter()
                        .map(|i| {
                            let mut o = Map::new();
                            o.insert("name".into(), json!(i.name));
                            if !i.mac.is_empty() {
                                o.insert("mac".into(), json!(i.mac));
                            }
                            if let Some(mtu) = i.mtu.filter(|&m| fam == Family::V1 && m != 0) {
                                o.insert("mtu".into(), json!(mtu));
                            }
                            if !i.sandbox.is_empty() {
                                o.insert("sandbox".into(), json!(i.sandbox));
                            }
                            if fam == Family::V1 && !i.socket_path.is_empty() {
                                o.insert("socketPath".into(), json!(i.socket_path));
                            }
                            if fam == Family::V1 && !i.pci_id.is_empty() {
                                o.insert("pciID".into(), json!(i.pci_id));
                            }
                            Value::Object(o)
                        })
                        .collect();
                    m.insert("interfaces".into(), Value::Array(ifs));
                }
                if !self.ips.is_empty() {
                    let ips = self
                        .ips
                        .iter()
                        .map(|ip| {
                            let mut o = Map::new();
                            if fam == Family::V04 {
                                o.insert("version".into(), json!(if ip.address.is_ipv4() { "4" } else { "6" }));
                            }
                            if let Some(i) = ip.interface {
                                o.insert("interface".into(), json!(i));
                            }
                            o.insert("address".into(), json!(ip.address.to_string()));
                            if let Some(gw) = ip.gateway {
                                o.insert("gateway".into(), json!(gw.to_string()));
                            }
                            Value::Object(o)
                        })
                        .collect();
                    m.insert("ips".into(), Value::Array(ips));
                }
                if !self.routes.is_empty() {
                    let routes = self
                        .routes
                        .iter()
                        // libcni has one route type for every version (`types.Route`) and copies it whole
                        // when converting down, so mtu, advmss, priority, table and scope ride along in
                        // 0.x results too (as they already did in 0.1.0/0.2.0 above).
                        .map(route_value)
                        .collect();
                    m.insert("routes".into(), Value::Array(routes));
                }
                // libcni always prints "dns" for 0.3.x/0.4.0; for 1.x it omits an empty one.
                if fam == Family::V04 || !self.dns.is_empty() {
                    m.insert("dns".into(), self.dns.to_value());
                }
            }
        }
        Ok(Value::Object(m))
    }
}

/// The reference's output formatting: 4-space indentation, no trailing newline.
pub fn to_pretty(v: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("serializing a JSON value cannot fail");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface { name: "cni0".into(), mac: "0a:58:0a:58:00:01".into(), ..Default::default() },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:58:00:05".into(),
                    mtu: Some(1450),
                    sandbox: "/run/netns/p".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.88.0.5/24".parse().unwrap(),
                    gateway: Some("10.88.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd88::5/64".parse().unwrap(),
                    gateway: Some("fd88::1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route { mtu: Some(1400), ..Route::new("0.0.0.0/0".parse().unwrap(), None) },
                Route::new("::/0".parse().unwrap(), Some("fd88::1".parse().unwrap())),
            ],
            dns: Dns { nameservers: vec!["10.0.0.10".into()], ..Default::default() },
        }
    }

    #[test]
    fn v1_round_trip_keeps_everything() {
        let r = sample();
        for ver in ["1.0.0", "1.1.0"] {
            let v = r.to_value(ver).unwrap();
            assert_eq!(v["cniVersion"], ver);
            assert!(v["ips"][0].get("version").is_none());
            let back = AddResult::from_value(&v, ver).unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.routes, r.routes);
            assert_eq!(back.interfaces, r.interfaces);
            assert_eq!(back.dns, r.dns);
        }
    }

    #[test]
    fn down_to_04_adds_version_and_drops_11_fields() {
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let v = sample().to_value(ver).unwrap();
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert_eq!(v["ips"][1]["interface"], 1);
            // As libcni's convertTo04x: the route is copied whole, the interface loses its 1.1.0 fields.
            assert_eq!(v["routes"][0]["mtu"], 1400);
            assert!(v["interfaces"][1].get("mtu").is_none());
            assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
            let back = AddResult::from_value(&v, "1.0.0").unwrap();
            assert_eq!(back.cni_version, ver);
            assert_eq!(back.ips, sample().ips);
        }
    }

    #[test]
    fn dns_always_present_in_04_and_omitted_when_empty_in_1x() {
        let mut r = sample();
        r.dns = Dns::default();
        assert_eq!(r.to_value("0.4.0").unwrap()["dns"], json!({}));
        assert!(r.to_value("1.0.0").unwrap().get("dns").is_none());
    }

    #[test]
    fn down_to_02_takes_first_ip_per_family_and_splits_routes() {
        for ver in ["0.1.0", "0.2.0"] {
            let v = sample().to_value(ver).unwrap();
            assert!(v.get("ips").is_none() && v.get("interfaces").is_none());
            assert_eq!(v["ip4"]["ip"], "10.88.0.5/24");
            assert_eq!(v["ip4"]["gateway"], "10.88.0.1");
            assert_eq!(v["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
            assert_eq!(v["ip6"]["routes"][0]["gw"], "fd88::1");
            let back = AddResult::from_value(&v, "1.0.0").unwrap();
            assert_eq!(back.ips.len(), 2);
            assert_eq!(back.ips[0].interface, None);
            assert_eq!(back.routes.len(), 2);
            assert_eq!(back.dns.nameservers, vec!["10.0.0.10".to_string()]);
        }
    }

    #[test]
    fn l2_result_cannot_be_expressed_in_02() {
        let r = AddResult { interfaces: sample().interfaces, ..Default::default() };
        let e = r.to_value("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(r.to_value("0.3.1").is_ok());
    }

    #[test]
    fn up_from_02_parses_ip4_ip6() {
        let v = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::5/64"}});
        let r = AddResult::from_value(&v, "1.0.0").unwrap();
        let out = r.to_value("0.4.0").unwrap();
        assert_eq!(out["ips"][0]["address"], "10.1.0.5/16");
        assert_eq!(out["ips"][1]["version"], "6");
        assert_eq!(out["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn missing_version_uses_fallback() {
        let v = json!({"ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(AddResult::from_value(&v, "1.0.0").unwrap().cni_version, "1.0.0");
        let v = json!({"ip4": {"ip": "10.0.0.2/24"}});
        assert_eq!(AddResult::from_value(&v, "0.2.0").unwrap().ips.len(), 1);
    }

    #[test]
    fn bad_results_are_decode_errors() {
        for bad in [
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "interface": 4}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}),
            json!({"cniVersion": "1.0.0", "dns": []}),
            json!([1, 2]),
        ] {
            assert_eq!(AddResult::from_value(&bad, "1.0.0").unwrap_err().code, 6, "{bad}");
        }
        assert_eq!(AddResult::from_value(&json!({"cniVersion": "7.0.0"}), "1.0.0").unwrap_err().code, 1);
    }

    #[test]
    fn pretty_uses_four_spaces_and_no_trailing_newline() {
        let s = to_pretty(&json!({"a": 1}));
        assert_eq!(s, "{\n    \"a\": 1\n}");
    }

    /// An interface mtu beyond u32 was cast (`m as u32`) into a wrong, small MTU; it is now an error naming
    /// the field. Route fields out of range name theirs too.
    #[test]
    fn oversized_mtus_are_errors_naming_the_field() {
        for (v, field) in [
            (json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 4294968796u64}]}), "interface mtu"),
            (json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "mtu": 4294967296u64}]}), "route mtu"),
            (json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "table": 4294967296u64}]}), "route table"),
            (json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "scope": 256}]}), "route scope"),
        ] {
            let e = AddResult::from_value(&v, "1.1.0").unwrap_err();
            assert_eq!(e.code, 6, "{v}");
            assert!(e.msg.contains(field), "{field} not in {e}");
        }
        let ok = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 9000}]});
        assert_eq!(AddResult::from_value(&ok, "1.1.0").unwrap().interfaces[0].mtu, Some(9000));
    }

    /// Route fields across versions as libcni converts them: one `types.Route` for every version, copied
    /// whole by the down-converters; mtu/advmss/priority are `omitempty` ints (0 = unset, never printed),
    /// table/scope pointers (0 is kept). Every version round-trips the routes.
    #[test]
    fn route_fields_round_trip_in_every_version_like_libcni() {
        let full = Route {
            mtu: Some(1400),
            advmss: Some(1360),
            priority: Some(7),
            table: Some(0),
            scope: Some(0),
            ..Route::new("10.9.0.0/16".parse().unwrap(), Some("10.88.0.1".parse().unwrap()))
        };
        let mut r = sample();
        r.routes = vec![full.clone()];
        for ver in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let v = r.to_value(ver).unwrap();
            let printed =
                if ver.starts_with("0.1") || ver.starts_with("0.2") { &v["ip4"]["routes"][0] } else { &v["routes"][0] };
            assert_eq!(
                printed,
                &json!({"dst": "10.9.0.0/16", "gw": "10.88.0.1", "mtu": 1400, "advmss": 1360,
                                        "priority": 7, "table": 0, "scope": 0}),
                "{ver}"
            );
            assert_eq!(AddResult::from_value(&v, ver).unwrap().routes, vec![full.clone()], "{ver}");
        }
        let zeros =
            json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "mtu": 0, "advmss": 0, "priority": 0}]});
        let parsed = AddResult::from_value(&zeros, "1.0.0").unwrap();
        assert_eq!(parsed.routes, vec![Route::new("0.0.0.0/0".parse().unwrap(), None)]);
        assert_eq!(parsed.to_value("1.0.0").unwrap()["routes"][0], json!({"dst": "0.0.0.0/0"}));
    }
}
