//! The subnet registry in etcd: connect, read the config, list leases, acquire and hold this node's
//! subnet. Every write is a conditional transaction; remote TTLs are never read for peers.

use crate::flags::Flags;
use crate::netconf::{LeaseAttrs, NetConfig, parse_subnet_key, subnet_key};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use ipnetwork::Ipv4Network;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub type Error = String;

/// What to check when talking to etcd failed: where it was looked for, and with TLS flags the
/// certificate side (a server with --client-cert-auth closes connections without one, which the client
/// only sees as a cancelled request).
pub fn context(f: &Flags) -> String {
    let mut s = format!("etcd at {}", f.endpoints.join(","));
    if f.certfile.is_some() || f.keyfile.is_some() || f.cafile.is_some() {
        s.push_str(
            "; TLS: check --etcd-cafile (the CA that signed etcd's certificate) and --etcd-certfile/--etcd-keyfile \
             (a client certificate etcd's --trusted-ca-file accepts, needed with --client-cert-auth)",
        );
    }
    s
}

pub async fn connect(f: &Flags) -> Result<Client, Error> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_require_leader(true);
    if f.certfile.is_some() || f.keyfile.is_some() || f.cafile.is_some() {
        opts = with_tls(opts, f)?;
    }
    Client::connect(&f.endpoints, Some(opts))
        .await
        .map_err(|e| format!("cannot connect to etcd {:?}: {e}", f.endpoints))
}

#[cfg(feature = "tls")]
fn with_tls(opts: ConnectOptions, f: &Flags) -> Result<ConnectOptions, Error> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut tls = TlsOptions::new();
    if let Some(ca) = &f.cafile {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&f.certfile, &f.keyfile) {
        (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => return Err("--etcd-certfile and --etcd-keyfile go together".into()),
    }
    Ok(opts.with_tls(tls))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: ConnectOptions, _: &Flags) -> Result<ConnectOptions, Error> {
    Err("TLS not built: rebuild rcni-overlay with the \"tls\" feature to use --etcd-certfile/keyfile/cafile".into())
}

pub fn config_key(prefix: &str) -> String {
    format!("{prefix}/config")
}

pub fn subnets_prefix(prefix: &str) -> String {
    format!("{prefix}/subnets/")
}

pub async fn read_config(c: &mut Client, prefix: &str) -> Result<NetConfig, Error> {
    let key = config_key(prefix);
    let r = c.get(key.as_str(), None).await.map_err(|e| format!("cannot read {key}: {e}"))?;
    let kv = r
        .kvs()
        .first()
        .ok_or_else(|| format!("no network config at {key}: create it, e.g. {}", crate::netconf::fix_hint(prefix)))?;
    NetConfig::parse(kv.value()).map_err(|e| {
        format!("the network config at {key} is invalid: {e}; fix it, e.g. {}", crate::netconf::fix_hint(prefix))
    })
}

/// One lease as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub attrs: Result<LeaseAttrs, String>,
    pub lease: i64,
    pub mod_revision: i64,
}

/// Every lease under the prefix, and the revision of the listing.
pub async fn list(c: &mut Client, prefix: &str) -> Result<(BTreeMap<Ipv4Network, Entry>, i64), Error> {
    let p = subnets_prefix(prefix);
    let r =
        c.get(p.as_str(), Some(GetOptions::new().with_prefix())).await.map_err(|e| format!("cannot list {p}: {e}"))?;
    let rev = r.header().map(|h| h.revision()).unwrap_or(0);
    let mut out = BTreeMap::new();
    for kv in r.kvs() {
        let Some(s) = kv.key_str().ok().and_then(|k| k.strip_prefix(&p)).and_then(parse_subnet_key) else {
            continue;
        };
        out.insert(s, entry(kv));
    }
    Ok((out, rev))
}

pub fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        attrs: serde_json::from_slice::<LeaseAttrs>(kv.value()).map_err(|e| e.to_string()),
        lease: kv.lease(),
        mod_revision: kv.mod_revision(),
    }
}

/// This node's hold on a subnet.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub subnet: Ipv4Network,
    pub lease: i64,
}

fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() % n.max(1) as u64) as usize
}

/// Create `subnet`'s key if nobody has it: `Txn(create_revision == 0) → put(with lease)`.
pub async fn create(
    c: &mut Client,
    prefix: &str,
    subnet: Ipv4Network,
    value: &[u8],
    ttl: Duration,
) -> Result<Option<Held>, Error> {
    let lease = c.lease_grant(ttl.as_secs() as i64, None).await.map_err(|e| format!("lease grant: {e}"))?.id();
    let key = format!("{}{}", subnets_prefix(prefix), subnet_key(&subnet));
    let txn = Txn::new().when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
        key.as_str(),
        value,
        Some(PutOptions::new().with_lease(lease)),
    )]);
    let r = c.txn(txn).await.map_err(|e| format!("create {key}: {e}"))?;
    if r.succeeded() {
        Ok(Some(Held { subnet, lease }))
    } else {
        let _ = c.lease_revoke(lease).await;
        Ok(None)
    }
}

/// Re-write an existing key we own (found by PublicIP) if it changed since the listing.
async fn update(
    c: &mut Client,
    prefix: &str,
    subnet: Ipv4Network,
    e: &Entry,
    value: &[u8],
    ttl: Duration,
) -> Result<Option<Held>, Error> {
    let key = format!("{}{}", subnets_prefix(prefix), subnet_key(&subnet));
    let alive = e.lease != 0 && c.lease_time_to_live(e.lease, None).await.map(|r| r.ttl() > 0).unwrap_or(false);
    let same_value = e.attrs.as_ref().ok().map(|a| serde_json::to_vec(a).unwrap_or_default()) == Some(value.to_vec());
    if alive && same_value {
        return Ok(Some(Held { subnet, lease: e.lease }));
    }
    let lease = if alive {
        e.lease
    } else {
        c.lease_grant(ttl.as_secs() as i64, None).await.map_err(|e| format!("lease grant: {e}"))?.id()
    };
    let txn = Txn::new()
        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, e.mod_revision)])
        .and_then([TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(lease)))]);
    let r = c.txn(txn).await.map_err(|e| format!("update {key}: {e}"))?;
    Ok(r.succeeded().then_some(Held { subnet, lease }))
}

/// Why this node cannot have the subnet it already serves.
#[derive(Debug, Clone)]
pub struct Conflict(pub String);

/// Acquire this node's subnet: the lease with our PublicIP, else `previous` (local state, then
/// subnet.env) if free, else a random one of the first 100 free. A lost race retries.
///
/// `serving` is the subnet this node's pods already use (the agent's record of this boot): if another
/// node holds it now, renumbering would cut those pods off, so that is a [`Conflict`], not a reason to
/// pick another subnet; the other node's key is left alone.
#[allow(clippy::too_many_arguments)]
pub async fn acquire(
    c: &mut Client,
    prefix: &str,
    conf: &NetConfig,
    public_ip: IpAddr,
    value: &[u8],
    previous: &[Ipv4Network],
    serving: Option<Ipv4Network>,
    ttl: Duration,
) -> Result<Result<Held, Conflict>, Error> {
    for _ in 0..10 {
        let (leases, _) = list(c, prefix).await?;
        let mine =
            leases.iter().find(|(s, e)| conf.fits(s) && e.attrs.as_ref().is_ok_and(|a| a.public_ip == public_ip));
        if let Some((s, e)) = mine {
            if let Some(h) = update(c, prefix, *s, e, value, ttl).await? {
                return Ok(Ok(h));
            }
            continue;
        }
        if let Some((s, e)) = serving.filter(|s| conf.fits(s)).and_then(|s| leases.get(&s).map(|e| (s, e))) {
            let holder = match &e.attrs {
                Ok(a) => format!("node {}", a.public_ip),
                Err(err) => format!("an unreadable lease ({err})"),
            };
            return Ok(Err(Conflict(format!(
                "subnet {s} that this node's pods use is held in etcd by {holder} (key {}{}): not taking \
                 another subnet and not touching that key; remove the stale lease (etcdctl del) or run \
                 `rcni-overlay leave` on the node that should give it up",
                subnets_prefix(prefix),
                subnet_key(&s)
            ))));
        }
        let pick = previous.iter().find(|p| conf.fits(p) && !leases.contains_key(p)).copied().or_else(|| {
            let free: Vec<Ipv4Network> = conf.candidates().filter(|s| !leases.contains_key(s)).take(100).collect();
            (!free.is_empty()).then(|| free[random_below(free.len())])
        });
        let Some(s) = pick else {
            return Err(format!(
                "the network {} is exhausted: all {} /{} subnets between {} and {} are leased; widen Network or SubnetMin/SubnetMax, or remove stale leases (rcni-overlay leave on decommissioned nodes)",
                conf.network,
                conf.candidates().count(),
                conf.subnet_len,
                conf.subnet_min,
                conf.subnet_max
            ));
        };
        if let Some(h) = create(c, prefix, s, value, ttl).await? {
            return Ok(Ok(h));
        }
    }
    Err("lost the race for a subnet 10 times in a row".into())
}
