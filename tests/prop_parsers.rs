//! Property tests on the parsers of outside input (stdin config, prevResult, CNI_ARGS, subnet.env, peers
//! file, conflist files, result-cache files): whatever arrives, a parser returns a value or an error with a non-zero code and a message — it
//! never panics — and a result printed in any spec version parses back to what that version can carry.
//! No root, no kernel: everything here is pure parsing.

use ipnetwork::IpNetwork;
use proptest::prelude::*;
use proptest::sample::Index;
use rcni::bridge::config::BridgeConf;
use rcni::cni::args::CniArgs;
use rcni::cni::config::NetConf;
use rcni::cni::result::{AddResult, Dns, Interface, IpConfig, Route};
use rcni::cni::runtime::{cache, conflist};
use rcni::cni::version::{self, Family};
use rcni::cni::{CniError, CniResult};
use rcni::ipam::host_local::config as host_local;
use rcni::overlay::peer::parse_peers;
use rcni::subnet_env::SubnetEnv;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Modest case counts: the whole file must stay quick on a loaded 2-core machine.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn assert_cni_error<T: std::fmt::Debug>(r: CniResult<T>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_ne!(e.code, 0, "error without a code: {:?}", e);
        prop_assert!(!e.msg.is_empty(), "error without a message: {:?}", e);
    }
    Ok(())
}

fn cluster_network() -> Vec<IpNetwork> {
    vec!["10.244.0.0/16".parse().unwrap(), "fd00:244::/48".parse().unwrap()]
}

// ---- generators -------------------------------------------------------------------------------------

/// Strings a careless runtime or operator sends: near-misses of valid values, control bytes, huge numbers.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\0".to_string()),
        Just("br\0x".to_string()),
        Just("10.0.0.0/33".to_string()),
        Just("10.0.0.300/24".to_string()),
        Just("::/129".to_string()),
        Just("10.1.0.5/16".to_string()),
        Just("fd00::5/64".to_string()),
        Just("10.0.0.1".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1.1.0".to_string()),
        Just("0.2.0".to_string()),
        Just("9.9.9".to_string()),
        Just("zz:zz:zz:zz:zz:zz".to_string()),
        Just("ff:ff:ff:ff:ff:ff".to_string()),
        Just("relative/dir".to_string()),
        Just("a".repeat(300)),
        "\\PC{0,12}",
        ".{0,12}",
    ]
}

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![Just(0.5f64), Just(-0.0), Just(1e300), Just(4094.0001)].prop_map(|f| json!(f)),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(4094), Just(4095), Just(65535), Just(65536)]
            .prop_map(|n| json!(n)),
        nasty_string().prop_map(Value::String),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf_value().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One edit of a document: `at` picks a node (in document order), `kind` what happens to it.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Value),
    Remove(Index),
    Insert(Index, String, Value),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<Index>(), any_json()).prop_map(|(i, v)| Edit::Replace(i, v)),
        1 => any::<Index>().prop_map(Edit::Remove),
        1 => (any::<Index>(), nasty_string(), any_json()).prop_map(|(i, k, v)| Edit::Insert(i, k, v)),
    ];
    prop::collection::vec(edit, 1..4)
}

/// JSON pointers of every node below the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", esc(k));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn mutate(mut doc: Value, edits: &[Edit]) -> Value {
    for e in edits {
        let mut ps = Vec::new();
        pointers(&doc, String::new(), &mut ps);
        if ps.is_empty() {
            break;
        }
        let pick = |i: &Index| ps[i.index(ps.len())].clone();
        match e {
            Edit::Replace(i, v) => *doc.pointer_mut(&pick(i)).unwrap() = v.clone(),
            Edit::Remove(i) => {
                let p = pick(i);
                let (parent, last) = p.rsplit_once('/').unwrap();
                match doc.pointer_mut(parent).unwrap() {
                    Value::Object(m) => {
                        m.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Value::Array(a) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!("a pointer's parent is a container"),
                }
            }
            Edit::Insert(i, k, v) => {
                if let Value::Object(m) = doc.pointer_mut(&pick(i)).unwrap() {
                    m.insert(k.clone(), v.clone());
                } else if let Value::Object(m) = &mut doc {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    doc
}

/// A valid bridge config with host-local IPAM and a prevResult, as a runtime sends it for CHECK.
fn valid_bridge_conf() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "podnet",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "mtu": 1450,
        "vlan": 0,
        "vlanTrunk": [{"id": 5}, {"minID": 10, "maxID": 20}],
        "mac": "0a:58:0a:f4:05:02",
        "args": {"cni": {"ips": ["10.244.5.9"]}},
        "runtimeConfig": {"ips": ["10.244.5.10/24"], "mac": "0a:58:0a:f4:05:03"},
        "ipam": {
            "type": "host-local",
            "dataDir": "/run/rcni/ipam",
            "lockTimeout": 5,
            "resolvConf": "/etc/resolv.conf",
            "ranges": [
                [{"subnet": "10.244.5.0/24", "rangeStart": "10.244.5.2", "rangeEnd": "10.244.5.250", "gateway": "10.244.5.1"}],
                [{"subnet": "fd00:244:5::/64"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:244:5::1"}]
        },
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "0a:58:0a:f4:05:01"}, {"name": "eth0", "sandbox": "/var/run/netns/p"}],
            "ips": [{"interface": 1, "address": "10.244.5.9/24", "gateway": "10.244.5.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.5.1"}],
            "dns": {}
        }
    })
}

fn valid_peers() -> Value {
    json!([
        {"underlay": "198.18.0.2", "subnets": ["10.244.1.0/24"], "mac": "0a:00:00:00:00:02"},
        {"underlay": "198.18.0.3", "subnets": "10.244.2.0/24"},
        {"underlay": "fd00:1::3", "subnets": ["fd00:244:0:3::/64", "10.244.3.0/24"]}
    ])
}

/// Every parser that takes a whole stdin document.
fn parse_all_stdin(bytes: &[u8]) -> Result<(), TestCaseError> {
    assert_cni_error(NetConf::from_slice(bytes))?;
    assert_cni_error(BridgeConf::parse(bytes, true))?;
    assert_cni_error(BridgeConf::parse(bytes, false))?;
    assert_cni_error(BridgeConf::from_json(bytes))?;
    for v in version::SUPPORTED {
        assert_cni_error(AddResult::from_slice(bytes, v))?;
    }
    assert_cni_error(parse_peers(bytes, "peersFile test", &cluster_network()))?;
    if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
        for v in ["0.2.0", "1.0.0"] {
            if let Err(e) = host_local::parse(&doc, v, None) {
                prop_assert!(!e.is_empty());
            }
        }
        if let Err(e) = host_local::parse_location(&doc) {
            prop_assert!(!e.is_empty());
        }
        if let Some(p) = doc.get("prevResult") {
            for v in version::SUPPORTED {
                assert_cni_error(AddResult::from_value(p, v))?;
            }
        }
    }
    Ok(())
}

// ---- results: generated in the 1.1.0 model ---------------------------------------------------------

fn ip_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

fn ip_net() -> impl Strategy<Value = IpNetwork> {
    (ip_addr(), any::<u8>()).prop_map(|(a, p)| {
        let max = if a.is_ipv4() { 32 } else { 128 };
        IpNetwork::new(a, p % (max + 1)).unwrap()
    })
}

fn route() -> impl Strategy<Value = Route> {
    let opt = || prop::option::of(any::<u32>());
    (ip_net(), prop::option::of(ip_addr()), opt(), opt(), opt(), opt(), prop::option::of(any::<u8>())).prop_map(
        |(dst, gw, mtu, advmss, priority, table, scope)| Route { dst, gw, mtu, advmss, priority, table, scope },
    )
}

fn interface() -> impl Strategy<Value = Interface> {
    (".{0,8}", ".{0,8}", prop::option::of(any::<u32>()), ".{0,8}", ".{0,8}", ".{0,8}").prop_map(
        |(name, mac, mtu, sandbox, socket_path, pci_id)| Interface { name, mac, mtu, sandbox, socket_path, pci_id },
    )
}

fn dns() -> impl Strategy<Value = Dns> {
    let strs = || prop::collection::vec(".{0,8}", 0..3);
    (strs(), ".{0,8}", strs(), strs()).prop_map(|(nameservers, domain, search, options)| Dns {
        nameservers,
        domain,
        search,
        options,
    })
}

fn add_result() -> impl Strategy<Value = AddResult> {
    prop::collection::vec(interface(), 0..3)
        .prop_flat_map(|interfaces| {
            let n = interfaces.len();
            let ip = (prop::option::of(any::<Index>()), ip_net(), prop::option::of(ip_addr())).prop_map(
                move |(i, address, gateway)| IpConfig {
                    interface: if n == 0 { None } else { i.map(|i| i.index(n)) },
                    address,
                    gateway,
                },
            );
            (Just(interfaces), prop::collection::vec(ip, 0..4), prop::collection::vec(route(), 0..4), dns())
        })
        .prop_map(|(interfaces, ips, routes, dns)| AddResult {
            cni_version: String::new(),
            interfaces,
            ips,
            routes,
            dns,
        })
}

/// What a result printed in `ver` can carry, in the order that version's parser reads it back.
fn representable(r: &AddResult, ver: &str) -> AddResult {
    // libcni's route mtu/advmss/priority and interface mtu are `omitempty` ints: 0 is "unset".
    let unset_zero = |v: Option<u32>| v.filter(|&x| x != 0);
    let route = |x: &Route| Route {
        mtu: unset_zero(x.mtu),
        advmss: unset_zero(x.advmss),
        priority: unset_zero(x.priority),
        ..x.clone()
    };
    let mut out = AddResult { cni_version: ver.to_string(), ..r.clone() };
    for i in &mut out.interfaces {
        i.mtu = unset_zero(i.mtu);
    }
    // One route type in every version, copied whole when converting down (as libcni does).
    out.routes = r.routes.iter().map(route).collect();
    match version::family(ver).unwrap() {
        Family::V02 => {
            out.interfaces.clear();
            out.ips.clear();
            out.routes.clear();
            for v4 in [true, false] {
                if let Some(ip) = r.ips.iter().find(|i| i.address.is_ipv4() == v4) {
                    out.ips.push(IpConfig { interface: None, ..ip.clone() });
                    out.routes.extend(r.routes.iter().filter(|x| x.dst.is_ipv4() == v4).map(route));
                }
            }
        }
        Family::V04 => {
            for i in &mut out.interfaces {
                i.mtu = None;
                i.socket_path.clear();
                i.pci_id.clear();
            }
        }
        Family::V1 => {}
    }
    out
}

// ---- properties -------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn stdin_parsers_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        parse_all_stdin(&bytes)?;
    }

    #[test]
    fn stdin_parsers_survive_arbitrary_json(doc in any_json()) {
        parse_all_stdin(doc.to_string().as_bytes())?;
    }

    #[test]
    fn cni_args_parse_or_answer_code_4(s in "[A-Za-z0-9_=; .:,\\-]{0,40}|\\PC{0,30}") {
        match CniArgs::parse(&s) {
            Ok(args) => {
                // Every non-empty piece became a pair with a key; printing and parsing again is stable.
                let again = CniArgs::parse(&args.to_env_string()).unwrap();
                prop_assert_eq!(&again, &args);
                for (k, _) in &args.pairs {
                    prop_assert!(!k.is_empty());
                }
                for known in [&[][..], &["IP", "MAC"][..]] {
                    if let Err(e) = args.check_known(known) {
                        prop_assert_eq!(e.code, 4, "{:?}", e);
                    }
                }
                if let Err(e) = args.parsed("IP", "an IP list", host_local::parse_cni_args_ip) {
                    prop_assert_eq!(e.code, 4, "{:?}", e);
                }
            }
            Err(e) => prop_assert_eq!(e.code, 4, "{:?}", e),
        }
    }

    #[test]
    fn cni_args_pairs_round_trip(pairs in prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", "[^;\\s][^;]{0,10}[^;\\s]|"), 0..5)) {
        let s: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args = CniArgs::parse(&s.join(";")).unwrap();
        let expect: Vec<(String, String)> = pairs.into_iter().collect();
        prop_assert_eq!(args.pairs, expect);
    }

    #[test]
    fn subnet_env_parses_or_names_the_problem(
        lines in prop::collection::vec(
            (prop_oneof![
                Just("FLANNEL_NETWORK"), Just("FLANNEL_SUBNET"), Just("FLANNEL_IPV6_NETWORK"),
                Just("FLANNEL_IPV6_SUBNET"), Just("FLANNEL_MTU"), Just("FLANNEL_IPMASQ"), Just("OTHER"),
            ], prop_oneof![nasty_string(), Just("true".into()), Just("1450".into()), Just("10.244.0.0/16,fd00::/8".into())]),
            0..8),
        junk in "\\PC{0,20}",
    ) {
        let mut text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        text.push_str(&junk);
        match SubnetEnv::parse(&text, Path::new("/run/flannel/subnet.env")) {
            Ok(env) => {
                // What parses renders back to a file that parses to the same networks and settings.
                let again = SubnetEnv::parse(&env.render(), Path::new("again")).unwrap();
                prop_assert_eq!(again.mtu, env.mtu);
                prop_assert_eq!(again.ipmasq, env.ipmasq);
                if env.subnet.is_some() {
                    prop_assert_eq!(&again.networks, &env.networks);
                }
                if env.ipv6_subnet.is_some() {
                    prop_assert_eq!(&again.ipv6_networks, &env.ipv6_networks);
                }
                let _ = env.network_routes();
                let _ = (env.subnet_network(), env.ipv6_subnet_network());
            }
            Err(e) => prop_assert!(e.to_string().contains("subnet.env"), "{}", e),
        }
    }

    #[test]
    fn subnet_env_round_trips(
        net in (any::<u32>(), 8u8..=30), lease_len in 0u8..=2, mtu in 68u32..=9000, ipmasq in any::<bool>(),
        v6 in prop::option::of((any::<u128>(), 32u8..=64)),
    ) {
        let network = ipnetwork::Ipv4Network::new(Ipv4Addr::from(net.0), net.1).unwrap();
        let network = ipnetwork::Ipv4Network::new(network.network(), net.1).unwrap();
        let lease = ipnetwork::Ipv4Network::new(network.network(), net.1 + lease_len).unwrap();
        let mut env = SubnetEnv::for_lease(network, lease, mtu, ipmasq);
        if let Some((a, len)) = v6 {
            let n6 = ipnetwork::Ipv6Network::new(Ipv6Addr::from(a), len).unwrap();
            let n6 = ipnetwork::Ipv6Network::new(n6.network(), len).unwrap();
            let l6 = ipnetwork::Ipv6Network::new(n6.network(), len + 16).unwrap();
            env = env.with_ipv6_lease(n6, l6);
        }
        let parsed = SubnetEnv::parse(&env.render(), Path::new("subnet.env")).unwrap();
        prop_assert_eq!(parsed, env);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_bridge_conf_never_panics(edits in edits()) {
        let doc = mutate(valid_bridge_conf(), &edits);
        parse_all_stdin(doc.to_string().as_bytes())?;
    }

    #[test]
    fn mutated_peers_file_never_panics(edits in edits()) {
        let doc = mutate(valid_peers(), &edits);
        parse_all_stdin(doc.to_string().as_bytes())?;
        // The wrapped form too.
        parse_all_stdin(json!({"peers": doc}).to_string().as_bytes())?;
    }

    #[test]
    fn mutated_prev_result_never_panics(result in add_result(), ver in prop::sample::select(&version::SUPPORTED[..]), edits in edits()) {
        if let Ok(printed) = result.to_value(ver) {
            let doc = mutate(printed, &edits);
            for fallback in version::SUPPORTED {
                assert_cni_error(AddResult::from_value(&doc, fallback))?;
            }
            let conf = json!({"cniVersion": ver, "name": "net", "type": "bridge", "prevResult": doc});
            assert_cni_error(NetConf::from_slice(conf.to_string().as_bytes()))?;
        }
    }

    /// A result printed in any version parses back, as that version's prevResult in a config, to exactly
    /// the part of it that version can carry; printing that again gives the same JSON.
    #[test]
    fn prev_result_round_trips_in_every_version(result in add_result()) {
        for ver in version::SUPPORTED {
            let printed = match result.to_value(ver) {
                Ok(p) => p,
                Err(e) => {
                    // Only 0.1.0/0.2.0 can refuse, and only a result without any IP.
                    prop_assert_eq!(version::family(ver).unwrap(), Family::V02);
                    prop_assert!(result.ips.is_empty());
                    prop_assert_eq!(e.code, 1);
                    continue;
                }
            };
            let conf = json!({"cniVersion": ver, "name": "net", "type": "bridge", "prevResult": printed});
            let parsed = NetConf::from_slice(conf.to_string().as_bytes())
                .map_err(|e: CniError| TestCaseError::fail(format!("{ver}: {e:?}\n{printed}")))?;
            let prev = parsed.prev_result.expect("prevResult kept");
            prop_assert_eq!(&prev, &representable(&result, ver), "version {}: {}", ver, printed);
            prop_assert_eq!(prev.to_value(ver).unwrap(), printed, "version {}", ver);
        }
    }
}

/// A conflist as cnitool finds it in NETCONFPATH: the good one the mutations start from.
fn valid_conflist() -> Value {
    json!({"cniVersion": "1.0.0", "name": "net", "disableCheck": false, "plugins": [
        valid_bridge_conf(),
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "capabilities": {"mac": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
    ]})
}

/// libcni's result cache file (`cniCacheV1`) of an attachment.
fn valid_cache_file() -> Value {
    json!({"kind": "cniCacheV1", "containerId": "c1", "config": "e30=", "ifName": "eth0", "networkName": "net",
           "cniArgs": [["K8S_POD_NAME", "p"]], "capabilityArgs": {"mac": "02:00:00:00:00:01"},
           "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.244.5.7/24"}]}})
}

/// Write `bytes` to a fresh file and read it as a cache file both ways.
fn read_cache_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let file = tempfile::Builder::new().prefix("rcni-prop-cache-").tempfile().unwrap();
    let path = file.path();
    std::fs::write(path, bytes).unwrap();
    let info = cache::read_info(path);
    let result = cache::read_result(path);
    assert_cni_error(info)?;
    assert_cni_error(result)
}

proptest! {
    #![proptest_config(config(128))]

    /// Conflist files and single-plugin conf files: a list or an error with a code, never a panic; a list
    /// that parses keeps its name and at least one plugin whose type is a plain file name.
    #[test]
    fn conflist_files_parse_or_answer_an_error(edits in edits(), junk in prop::collection::vec(any::<u8>(), 0..80)) {
        let doc = mutate(valid_conflist(), &edits);
        let bytes = doc.to_string().into_bytes();
        match conflist::conf_list_from_bytes(&bytes) {
            Ok(list) => {
                prop_assert_eq!(Some(list.name.as_str()), doc.get("name").and_then(Value::as_str));
            }
            Err(e) => assert_cni_error::<()>(Err(e))?,
        }
        for plugin in doc.get("plugins").and_then(Value::as_array).into_iter().flatten() {
            assert_cni_error(conflist::plugin_conf_from_bytes(plugin.to_string().as_bytes()))?;
        }
        assert_cni_error(conflist::conf_list_from_bytes(&junk))?;
        assert_cni_error(conflist::plugin_conf_from_bytes(&junk))?;
    }

    /// The result cache files cnitool reads back: a value, "no cache" or an error with a code.
    #[test]
    fn cache_files_parse_or_answer_an_error(edits in edits(), junk in prop::collection::vec(any::<u8>(), 0..80)) {
        read_cache_bytes(mutate(valid_cache_file(), &edits).to_string().as_bytes())?;
        read_cache_bytes(&junk)?;
    }
}

/// The documents the mutations start from are valid, so the mutated ones reach the deep checks.
#[test]
fn mutation_bases_are_valid() {
    let conf = valid_bridge_conf();
    let bytes = conf.to_string();
    let parsed = NetConf::from_slice(bytes.as_bytes()).unwrap();
    assert_eq!(parsed.prev_result.unwrap().ips.len(), 1);
    BridgeConf::parse(bytes.as_bytes(), true).unwrap();
    let ipam = host_local::parse(&conf, "1.0.0", Some("10.244.5.7")).unwrap();
    assert_eq!(ipam.range_sets.len(), 2);
    assert_eq!(parse_peers(valid_peers().to_string().as_bytes(), "peers", &cluster_network()).unwrap().len(), 3);
    assert_eq!(conflist::conf_list_from_bytes(valid_conflist().to_string().as_bytes()).unwrap().plugins.len(), 3);
    let file = tempfile::Builder::new().prefix("rcni-prop-cache-base-").tempfile().unwrap();
    std::fs::write(file.path(), valid_cache_file().to_string()).unwrap();
    assert!(cache::read_info(file.path()).unwrap().is_some());
    assert!(cache::read_result(file.path()).unwrap().is_some());
}
