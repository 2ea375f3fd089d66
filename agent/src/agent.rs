//! The daemon: hold this node's subnet lease, watch everyone else's, keep the kernel at the whole peer
//! set. The kernel changes only after a successful list or watch result; an etcd outage changes nothing.

use crate::flags::Flags;
use crate::health;
use crate::kernel::{Kernel, OWNER, masq_owner};
use crate::netconf::{LeaseAttrs, NetConfig, parse_subnet_key};
use crate::registry::{self, Held};
use crate::status::{Status, now_secs};
use etcd_client::{Client, EventType, WatchOptions};
use ipnetwork::{IpNetwork, Ipv4Network};
use rcni::net::NetHandle;
use rcni::overlay::{self, NodeState, Peer, UnderlayChoice, VtepConf};
use rcni::subnet_env::SubnetEnv;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

/// Events closer together than this are applied in one pass.
const DEBOUNCE: Duration = Duration::from_millis(15);

/// This node's lease as last held, kept so that a restart while etcd is down can serve the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub subnet: Ipv4Network,
    pub lease: i64,
    pub public_ip: IpAddr,
    pub config: NetConfig,
}

pub fn record_path(f: &Flags) -> std::path::PathBuf {
    f.state_dir.join("lease.json")
}

pub fn read_record(f: &Flags) -> Option<Record> {
    let bytes = rcni::fs_private::read_private(&record_path(f), 1 << 20).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("rcni-overlay: {msg}");
}

struct Agent {
    f: Flags,
    state: NodeState,
    node: NetHandle,
    public_ip: IpAddr,
    record: Option<Record>,
    kernel: Option<Kernel>,
    /// The peer set from etcd (by subnet), excluding this node.
    peers: BTreeMap<Ipv4Network, Peer>,
    /// What the kernel was last brought to.
    applied: Vec<Peer>,
    pending_since: Option<Instant>,
    status: Status,
    metrics: health::Shared,
}

impl Agent {
    fn save_status(&mut self) {
        self.status.pid = std::process::id();
        self.status.peers = self.applied.len();
        self.status.peer_list = self.applied.iter().map(|p| format!("{} via {}", p.subnets[0], p.underlay)).collect();
        self.metrics.lock().expect("metrics lock").status = self.status.clone();
        let bytes = serde_json::to_vec_pretty(&self.status).expect("status serializes");
        if let Err(e) = rcni::fs_private::write_atomic(&self.f.state_dir.join("status.json"), &bytes, false) {
            log(format!("cannot write status: {e}"));
        }
    }

    fn error(&mut self, e: String) {
        log(&e);
        self.status.last_error = Some(e);
        self.save_status();
    }

    /// The kernel side for `rec` (none in --lease-only mode).
    async fn kernel_for(&self, rec: &Record) -> Result<Option<Kernel>, String> {
        if self.f.lease_only {
            return Ok(None);
        }
        let underlay = overlay::find_underlay(&self.node, &self.underlay_choice(), ("--iface", "--public-ip"))
            .await
            .map_err(|e| e.to_string())?;
        let vtep = VtepConf {
            name: self.f.vtep_name.clone().unwrap_or_else(|| format!("flannel.{}", rec.config.vni)),
            vni: rec.config.vni,
            port: rec.config.port,
            learning: false,
        };
        let masq = self.f.ip_masq.then(|| masq_owner(&self.f.prefix));
        Ok(Some(Kernel { node: self.node.clone(), vtep, underlay, own: rec.subnet, conf: rec.config.clone(), masq }))
    }

    fn underlay_choice(&self) -> UnderlayChoice {
        let (device, local) = match self.f.iface.as_deref().map(|i| (i, i.parse::<IpAddr>())) {
            Some((_, Ok(ip))) => (None, Some(ip)),
            Some((name, Err(_))) => (Some(name.to_string()), self.f.public_ip),
            None => (None, self.f.public_ip),
        };
        UnderlayChoice { device, local, mtu: None }
    }

    fn write_subnet_env(&self, rec: &Record, mtu: u32) {
        let env = SubnetEnv::for_lease(rec.config.network, rec.subnet, mtu, self.f.ip_masq);
        if let Err(e) = env.write(&self.f.subnet_file) {
            log(format!("cannot write {}: {e}", self.f.subnet_file.display()));
        }
    }

    fn mtu(&self) -> u32 {
        self.kernel.as_ref().map(|k| k.underlay.mtu).unwrap_or(1450)
    }

    /// The peer set to apply now (see [`guard`]), with the status fields that show a held removal.
    fn guarded(&mut self) -> Vec<Peer> {
        let want: Vec<Peer> = self.peers.values().cloned().collect();
        let (peers, held) = guard(&self.applied, want, &mut self.pending_since, self.f.mass_delete_grace);
        if held > 0 && self.status.pending_removals != held {
            log(format!(
                "the registry would remove {held} of {} peers at once: keeping them for the grace period ({:?})",
                self.applied.len(),
                self.f.mass_delete_grace
            ));
        }
        self.status.pending_removals = held;
        self.status.pending_removals_until = self
            .pending_since
            .filter(|_| held > 0)
            .map(|since| now_secs() + self.f.mass_delete_grace.saturating_sub(since.elapsed()).as_secs());
        peers
    }

    /// Brings the kernel to the guarded peer set; whether that worked.
    async fn apply(&mut self) -> bool {
        let peers = self.guarded();
        let Some(k) = &self.kernel else {
            self.applied = peers;
            self.save_status();
            return true;
        };
        match k.apply(&self.state, &peers).await {
            Ok(changes) => {
                for c in &changes {
                    log(c);
                }
                if self.applied != peers {
                    if let Err(e) = self.state.save_peers(OWNER, &peers) {
                        log(format!("cannot save the peer set: {e}"));
                    }
                }
                self.applied = peers;
                self.status.last_error = None;
                self.metrics.lock().expect("metrics lock").last_sync = now_f64();
                self.save_status();
                true
            }
            Err(e) => {
                self.metrics.lock().expect("metrics lock").kernel_errors += 1;
                self.error(format!("kernel update failed (retried at the next resync): {e}"));
                false
            }
        }
    }

    /// Before etcd answers: serve the node from the last lease and peer set on disk.
    async fn serve_from_disk(&mut self) {
        let Some(rec) = self.record.clone() else { return };
        self.applied = self.state.last_peers(OWNER).unwrap_or_default();
        self.peers = self.applied.iter().map(|p| (v4_of(p), p.clone())).collect();
        match self.kernel_for(&rec).await {
            Ok(k) => self.kernel = k,
            Err(e) => return self.error(e),
        }
        self.write_subnet_env(&rec, self.mtu());
        self.status.subnet = Some(rec.subnet.to_string());
        log(format!(
            "serving {} with {} peers from the last known state until etcd answers",
            rec.subnet,
            self.applied.len()
        ));
        self.apply().await;
    }

    /// Read the config and hold a lease; returns the lease held. A conflict (another node holds the
    /// subnet this node serves) is recorded in `status.conflict` and returned as the error.
    async fn join(&mut self, client: &mut Client) -> Result<Held, String> {
        let conf = registry::read_config(client, &self.f.prefix).await?;
        let mac = overlay::vtep_mac(self.public_ip);
        let value = serde_json::to_vec(&LeaseAttrs::ours(self.public_ip, conf.vni, mac)).expect("serializes");
        let mut previous: Vec<Ipv4Network> = self.record.iter().map(|r| r.subnet).collect();
        if let Ok(env) = SubnetEnv::read(&self.f.subnet_file) {
            previous.extend(env.subnet_network());
        }
        let serving = self.record.as_ref().map(|r| r.subnet);
        let held = match registry::acquire(
            client,
            &self.f.prefix,
            &conf,
            self.public_ip,
            &value,
            &previous,
            serving,
            self.f.lease_ttl,
        )
        .await?
        {
            Ok(h) => h,
            Err(registry::Conflict(msg)) => {
                if self.status.conflict.as_deref() != Some(msg.as_str()) {
                    log(format!("CONFLICT: {msg}"));
                }
                self.status.conflict = Some(msg.clone());
                return Err(msg);
            }
        };
        if self.status.conflict.take().is_some() {
            log(format!("conflict resolved: holding {} again", held.subnet));
        }
        if let Some(old) = self.record.as_ref().filter(|r| r.subnet != held.subnet) {
            log(format!(
                "subnet changed from {} to {} (the old one was taken or no longer fits the config)",
                old.subnet, held.subnet
            ));
        }
        let rec = Record { subnet: held.subnet, lease: held.lease, public_ip: self.public_ip, config: conf };
        let bytes = serde_json::to_vec(&rec).expect("serializes");
        rcni::fs_private::write_atomic(&record_path(&self.f), &bytes, true).map_err(|e| e.to_string())?;
        if self.kernel.as_ref().is_none_or(|k| k.own != rec.subnet || k.conf != rec.config) {
            self.kernel = self.kernel_for(&rec).await?;
        }
        self.write_subnet_env(&rec, self.mtu());
        log(format!("holding {} (lease {:x})", rec.subnet, rec.lease));
        self.status.subnet = Some(rec.subnet.to_string());
        self.status.public_ip = Some(self.public_ip.to_string());
        self.status.lease_id = rec.lease;
        self.record = Some(rec);
        Ok(held)
    }

    /// Apply one lease as seen in a list or watch event. Returns whether it is this node's own key.
    fn observe(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        let p = registry::subnets_prefix(&self.f.prefix);
        let Some(s) = key.strip_prefix(&p).and_then(parse_subnet_key) else { return false };
        if self.record.as_ref().is_some_and(|r| r.subnet == s) {
            return true;
        }
        match value.map(|v| serde_json::from_slice::<LeaseAttrs>(v).map_err(|e| e.to_string()).and_then(|a| a.peer(s)))
        {
            None => {
                self.peers.remove(&s);
            }
            Some(Ok(peer)) => {
                self.peers.insert(s, peer);
            }
            Some(Err(e)) => {
                log(format!("ignoring lease {key}: {e}"));
                self.peers.remove(&s);
            }
        }
        false
    }

    /// List, apply as a full snapshot, then watch from the next revision until something needs a
    /// re-join (own key or lease gone) or etcd fails. Returns `Ok(true)` to re-join at once.
    async fn serve(
        &mut self,
        client: &mut Client,
        held: Held,
        term: &mut tokio::signal::unix::Signal,
    ) -> Result<bool, String> {
        let (mut keeper, mut keepalive) =
            client.lease_keep_alive(held.lease).await.map_err(|e| format!("keepalive: {e}"))?;
        let p = registry::subnets_prefix(&self.f.prefix);
        let r = client
            .get(p.as_str(), Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("cannot list {p}: {e}"))?;
        let mut rev = r.header().map(|h| h.revision()).unwrap_or(0);
        self.peers.clear();
        let mut own_seen = false;
        for kv in r.kvs() {
            own_seen |= self.observe(kv.key_str().unwrap_or_default(), Some(kv.value()));
        }
        if !own_seen {
            return Ok(true);
        }
        self.status.revision = rev;
        self.status.etcd_reachable = true;
        self.status.etcd_unreachable_since = None;
        self.apply().await;
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1).with_progress_notify();
        let mut watch = client.watch(p.as_str(), Some(opts)).await.map_err(|e| format!("watch: {e}"))?;
        let ka_every = (self.f.lease_ttl / 3).min(Duration::from_secs(60)).max(Duration::from_millis(500));
        let mut ka_tick = tokio::time::interval(ka_every);
        let mut resync = tokio::time::interval(self.f.resync);
        resync.tick().await;
        let mut dirty: Option<Instant> = None;
        loop {
            let debounce = dirty.map(|t| t + DEBOUNCE).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = term.recv() => return Err("SIGTERM".into()),
                _ = ka_tick.tick() => keeper.keep_alive().await.map_err(|e| format!("keepalive: {e}"))?,
                m = keepalive.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    Ok(Some(_)) => { log("own lease expired: re-creating the same subnet"); return Ok(true) }
                    Ok(None) => return Err("keepalive stream ended".into()),
                    Err(e) => return Err(format!("keepalive: {e}")),
                },
                m = watch.message() => {
                    let resp = match m {
                        Ok(Some(r)) => r,
                        Ok(None) => return Err("watch stream ended".into()),
                        Err(e) => return Err(format!("watch: {e}")),
                    };
                    if resp.compact_revision() != 0 || resp.canceled() {
                        log(format!("watch cancelled ({}; compacted at {}): re-listing", resp.cancel_reason(), resp.compact_revision()));
                        return Ok(true);
                    }
                    if let Some(h) = resp.header() {
                        rev = rev.max(h.revision());
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                        if self.observe(kv.key_str().unwrap_or_default(), value) {
                            if value.is_none() {
                                log("own key deleted: re-creating the same subnet");
                                return Ok(true);
                            }
                            continue;
                        }
                        dirty.get_or_insert_with(Instant::now);
                    }
                    self.status.revision = rev;
                }
                _ = tokio::time::sleep_until(debounce.into()), if dirty.is_some() => {
                    let first = dirty.take().expect("guarded by the branch condition");
                    if self.apply().await {
                        self.metrics.lock().expect("metrics lock").observe_latency(first.elapsed());
                    }
                }
                _ = resync.tick() => { self.apply().await; }
            }
        }
    }
}

/// The mass-delete guard: a change that removes at least two and more than a fifth of the applied peers
/// at once looks like etcd data loss, a wrong prefix or a restored backup, not like nodes leaving. The
/// removed peers are kept until `grace` has passed since the change was first seen (additions and
/// updates apply at once). Returns the set to apply and how many removals are held back.
fn guard(
    applied: &[Peer],
    want: Vec<Peer>,
    pending_since: &mut Option<Instant>,
    grace: Duration,
) -> (Vec<Peer>, usize) {
    let keep: BTreeSet<IpNetwork> = want.iter().flat_map(|p| p.subnets.iter().copied()).collect();
    let removed: Vec<Peer> = applied.iter().filter(|p| !p.subnets.iter().any(|s| keep.contains(s))).cloned().collect();
    let suspect = removed.len() >= 2 && removed.len() * 5 > applied.len();
    if !suspect {
        *pending_since = None;
        return (want, 0);
    }
    let since = *pending_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= grace {
        log(format!("grace period over: removing {} peers", removed.len()));
        *pending_since = None;
        return (want, 0);
    }
    let held = removed.len();
    (want.into_iter().chain(removed).collect(), held)
}

fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn v4_of(p: &Peer) -> Ipv4Network {
    match p.subnets[0] {
        IpNetwork::V4(n) => n,
        IpNetwork::V6(_) => Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 32).unwrap(),
    }
}

pub async fn run(f: Flags) -> Result<(), String> {
    if !f.ip_masq && !f.lease_only {
        // Started without --ip-masq after a run with it: the rule would masquerade what the flannel
        // plugin's bridge delegates now masquerade themselves (FLANNEL_IPMASQ=false).
        match rcni::net::masq::cluster::remove(&masq_owner(&f.prefix)) {
            Ok(true) => log("--ip-masq is off: removed the cluster masquerade rule of an earlier run"),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot remove the cluster masquerade rule of an earlier run: {e}")),
        }
    }
    let state = NodeState::open(&f.state_dir).map_err(|e| e.to_string())?;
    let node = NetHandle::current().map_err(|e| e.to_string())?;
    let record = read_record(&f);
    let mut a = Agent {
        state,
        node,
        public_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        record,
        kernel: None,
        peers: BTreeMap::new(),
        applied: Vec::new(),
        pending_since: None,
        status: Status::default(),
        metrics: health::Shared::default(),
        f,
    };
    if a.f.healthz_port != 0 {
        let addr = std::net::SocketAddr::new(a.f.healthz_ip, a.f.healthz_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--healthz-ip/--healthz-port: cannot listen on {addr}: {e}"))?;
        tokio::spawn(health::serve(listener, a.metrics.clone()));
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    a.public_ip = match a.f.public_ip {
        Some(ip) => ip,
        None => {
            overlay::find_underlay(&a.node, &a.underlay_choice(), ("--iface", "--public-ip"))
                .await
                .map_err(|e| e.to_string())?
                .local
        }
    };
    a.save_status();
    a.serve_from_disk().await;
    let mut backoff = Duration::from_millis(100);
    let mut client: Option<Client> = None;
    loop {
        let result = async {
            if client.is_none() {
                client = Some(registry::connect(&a.f).await?);
            }
            let c = client.as_mut().expect("set above");
            let held = a.join(c).await?;
            a.serve(c, held, &mut term).await
        }
        .await;
        let wait = match result {
            Ok(_) => Duration::ZERO,
            Err(e) if e == "SIGTERM" => break,
            Err(e) if a.status.conflict.as_deref() == Some(e.as_str()) => {
                // etcd answered; the subnet is someone else's. Retry calmly until that changes.
                a.status.etcd_reachable = true;
                a.status.etcd_unreachable_since = None;
                a.save_status();
                Duration::from_secs(2)
            }
            Err(e) => {
                a.metrics.lock().expect("metrics lock").etcd_errors += 1;
                if a.status.etcd_reachable || a.status.etcd_unreachable_since.is_none() {
                    a.status.etcd_reachable = false;
                    a.status.etcd_unreachable_since = Some(now_secs());
                }
                a.error(format!(
                    "{e} ({}; the kernel keeps the last good peer set; retrying)",
                    registry::context(&a.f)
                ));
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                w
            }
        };
        if wait.is_zero() {
            backoff = Duration::from_millis(100);
            continue;
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // SIGTERM: keep the lease (a restart must not churn peers) and the kernel state.
    log("stopping; the lease and the kernel state stay (use `rcni-overlay leave` to give the subnet up)");
    Ok(())
}

/// `leave`: revoke this node's lease (its key goes with it), for decommissioning.
pub async fn leave(f: Flags) -> Result<(), String> {
    let rec = read_record(&f).ok_or_else(|| format!("no lease recorded in {}", record_path(&f).display()))?;
    let mut c = registry::connect(&f).await?;
    c.lease_revoke(rec.lease).await.map_err(|e| format!("cannot revoke lease {:x}: {e}", rec.lease))?;
    let _ = std::fs::remove_file(record_path(&f));
    println!("left: lease {:x} for {} revoked", rec.lease, rec.subnet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u8) -> Vec<Peer> {
        (1..=n)
            .map(|i| Peer {
                underlay: format!("198.18.0.{i}").parse().unwrap(),
                subnets: vec![format!("10.244.{i}.0/24").parse().unwrap()],
                mac: None,
            })
            .collect()
    }

    #[test]
    fn mass_removal_waits_for_the_grace_period_single_leaves_do_not() {
        let applied = peers(10);
        let mut since = None;
        let grace = Duration::from_secs(300);
        let (one_left, held) = guard(&applied, applied[1..].to_vec(), &mut since, grace);
        assert_eq!((one_left.len(), held, since.is_some()), (9, 0, false), "one node leaving applies at once");
        let (kept, held) = guard(&applied, Vec::new(), &mut since, grace);
        assert_eq!((kept.len(), held), (10, 10), "an empty snapshot removes nothing yet");
        let mut grown = applied[..2].to_vec();
        grown.extend(peers(11)[10..].iter().cloned());
        let (kept, held) = guard(&applied, grown, &mut since, grace);
        assert_eq!((kept.len(), held), (11, 8), "additions apply, the removals stay held");
        let (gone, held) = guard(&applied, Vec::new(), &mut since, Duration::ZERO);
        assert_eq!((gone.len(), held), (0, 0), "after the grace period it applies");
        let (back, held) = guard(&applied, applied.clone(), &mut since, grace);
        assert_eq!((back.len(), held, since), (10, 0, None));
    }
}
