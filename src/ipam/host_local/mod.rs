//! The host-local IPAM plugin's logic: a drop-in for the reference `host-local`, sharing its on-disk state.
//! The `host-local` executable runs it; bridge and vxlan run it in-process (through
//! `crate::ipam::InProcessIpam`) when the `host-local` on CNI_PATH is rcni's own of the same build.
//!
//! - `config`: the `ipam` object (+ requested IPs, runtime ranges), validated with errors naming the field;
//! - `range`, `range_set`: address arithmetic, validated ranges, the round-robin order;
//! - `allocator`: the pure choice of an address from a view of the reservations;
//! - `reservation`: a reservation file's name and content;
//! - `store`: `<dataDir>/<network>/` files, read through snapshots; `store::write`: atomic reservations;
//! - the network's flock with a deadline is `crate::lock`;
//! - `index`: the owner cache that spares a command reading every reservation file (outside the network
//!   directory; see its module comment for why it can be trusted and what a stale one could do).
//!
//! Dependencies go one way: commands (this file) → config, allocator, store; store → index, lock,
//! reservation; index → allocator (the `Reservations` view it answers), reservation; allocator → range_set
//! → range.
//!
//! Every command holds the network's lock for its whole duration. Error codes: 4 a bad CNI_ARGS `IP`, 7 invalid config,
//! 999 allocation failures (as the reference), 5 state-directory I/O, 11 lock not obtained in time,
//! 50 STATUS while a range set is exhausted.

pub mod allocator;
pub mod config;
pub mod index;
pub mod range;
pub mod range_set;
pub mod reservation;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use crate::cni::error::{CniError, CniResult, code};
use crate::cni::result::{AddResult, Dns, IpConfig};
use crate::cni::skel::{Attachment, Plugin, Request};
use crate::ipam::{InProcessIpam, Reserved};

use allocator::{AllocError, Pick, Reservations};
use config::{IpamConf, Location};
use reservation::Holder;
use store::{Snapshot, Store, StoreError};

pub struct HostLocal;

fn store_err(e: StoreError) -> CniError {
    match e {
        StoreError::LockTimeout { .. } => CniError::new(code::TRY_AGAIN, e.to_string()),
        StoreError::Io { .. } => CniError::new(code::IO_FAILURE, e.to_string()),
    }
}

fn load(req: &Request) -> CniResult<IpamConf> {
    req.args.check_known(&["IP"])?;
    // A bad CNI_ARGS value is a bad environment variable (4), not a bad config.
    if let Some(ip) = req.args.get("IP") {
        config::parse_cni_args_ip(ip).map_err(|e| CniError::new(code::INVALID_ENV, e))?;
    }
    config::parse(&req.conf.raw, &req.conf.cni_version, req.args.get("IP")).map_err(CniError::invalid_config)
}

fn location(req: &Request) -> CniResult<Location> {
    config::parse_location(&req.conf.raw).map_err(CniError::invalid_config)
}

fn read_dns(conf: &IpamConf) -> CniResult<Dns> {
    let Some(path) = &conf.resolv_conf else { return Ok(Dns::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("ipam.resolvConf: cannot read {}: {e}", path.display()))
    })?;
    let d = config::parse_resolv_conf(&text);
    Ok(Dns { nameservers: d.nameservers, domain: d.domain, search: d.search, options: d.options })
}

fn alloc_err(e: allocator::AllocError) -> CniError {
    CniError::internal(e.to_string())
}

/// Reserve one address per range set; on failure, release what this ADD reserved and nothing else.
fn allocate(conf: &IpamConf, store: &Store, id: &str, ifname: &str) -> CniResult<Vec<Pick>> {
    let requested = allocator::assign_requested(&conf.range_sets, &conf.requested).map_err(alloc_err)?;
    let mut snap = store.snapshot().map_err(store_err)?;
    loop {
        let picks = match choose(conf, store, &snap, &requested, id, ifname) {
            Ok(Some(picks)) => picks,
            // The index was wrong about an address: decide again from the files.
            Ok(None) => {
                snap = store.snapshot_from_files().map_err(store_err)?;
                continue;
            }
            // A refusal changes nothing on disk: keep what was learnt (a rebuilt index).
            Err(e) => {
                store.save_index(&mut snap);
                return Err(e);
            }
        };
        match place(store, &picks, id, ifname)? {
            None => {
                for p in &picks {
                    snap.insert(
                        p.ip,
                        Some(Holder { container_id: id.trim().to_string(), ifname: Some(ifname.into()) }),
                    );
                }
                store.save_index(&mut snap);
                return Ok(picks);
            }
            // The index missed a reservation: it is wrong, read the files.
            Some(_) if snap.from_index => snap = store.snapshot_from_files().map_err(store_err)?,
            // Appeared since the scan: only a writer that ignores the lock can do that. Skip it.
            Some(ip) => snap.insert(ip, None),
        }
    }
}

/// One address per range set, from `snap`. `None`: `snap` came from the index and the file of an address
/// it refuses for does not confirm the refusal (so the caller rereads the files).
fn choose(
    conf: &IpamConf,
    store: &Store,
    snap: &Snapshot,
    requested: &[Option<IpAddr>],
    id: &str,
    ifname: &str,
) -> CniResult<Option<Vec<Pick>>> {
    let mut picks = Vec::with_capacity(conf.range_sets.len());
    for (i, set) in conf.range_sets.iter().enumerate() {
        match allocator::pick(set, i, requested[i], store.last_reserved(i), &snap.records, id, ifname) {
            Ok(p) => picks.push(p),
            Err(e) if !snap.from_index => return Err(alloc_err(e)),
            Err(e) => return confirm_refusal(store, e, id, ifname),
        }
    }
    Ok(Some(picks))
}

/// A refusal decided from the index stands only if the file it rests on says the same (`Err`); `Ok(None)`
/// otherwise (an unreadable file included: the full read decides). "No free address" rests on every file:
/// always reread.
fn confirm_refusal(store: &Store, e: AllocError, id: &str, ifname: &str) -> CniResult<Option<Vec<Pick>>> {
    let ip = match &e {
        AllocError::Duplicate { ip, .. } | AllocError::RequestedTaken { ip, .. } => *ip,
        _ => return Ok(None),
    };
    let now = store.read_holder(ip.to_string().as_ref()).ok().flatten();
    match (e, now) {
        (AllocError::Duplicate { set, ip, .. }, Some(h)) if h.belongs_to(id, ifname) => {
            Err(alloc_err(AllocError::Duplicate { set, ip, id: h.container_id, ifname: h.ifname }))
        }
        (AllocError::RequestedTaken { set, ip, range_set, .. }, Some(holder)) => {
            Err(alloc_err(AllocError::RequestedTaken { set, ip, range_set, holder }))
        }
        _ => Ok(None),
    }
}

/// Write and sync every reservation (together: `sync_all`), link them, and only when all are in place
/// write the `last_reserved_ip` files (so a link that fails leaves `last_reserved_ip` as it was, like the
/// reference). `Ok(Some(ip))`: `ip` turned out to be taken; nothing of this attempt is left. On error, what
/// this attempt reserved is released.
fn place(store: &Store, picks: &[Pick], id: &str, ifname: &str) -> CniResult<Option<IpAddr>> {
    let mut staged = Vec::with_capacity(picks.len());
    for p in picks {
        staged.push(store.stage_reservation(p.ip, id, ifname).map_err(store_err)?);
    }
    store::sync_all(&staged).map_err(store_err)?;
    let rollback = |done: &[Pick]| {
        for p in done {
            if let Err(e) = store.unreserve(p.ip, id, ifname) {
                crate::cni::log::warn("host-local", format!("rollback: {e}"));
            }
        }
    };
    for (i, s) in staged.into_iter().enumerate() {
        match store.link_reservation(s) {
            Ok(true) => {}
            Ok(false) => {
                rollback(&picks[..i]);
                return Ok(Some(picks[i].ip));
            }
            Err(e) => {
                rollback(&picks[..i]);
                return Err(store_err(e));
            }
        }
    }
    for p in picks {
        if let Err(e) = store.set_last_reserved(p.set, p.ip) {
            rollback(picks);
            return Err(store_err(e));
        }
    }
    Ok(None)
}

impl InProcessIpam for HostLocal {
    /// Reservation files name their holder (`containerID` CRLF `ifname`, the reference's format too); legacy
    /// files with a container ID only are left out (no interface to derive anything from).
    fn holders(&self, req: &Request) -> CniResult<Option<Vec<Attachment>>> {
        let loc = location(req)?;
        let dir = loc.net_dir();
        let Some(store) = Store::open_existing(&dir, loc.lock_timeout).map_err(store_err)? else {
            return Ok(Some(Vec::new()));
        };
        let io_err = |e: std::io::Error| CniError::new(code::IO_FAILURE, format!("cannot read {}: {e}", dir.display()));
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).map_err(io_err)? {
            let name = ent.map_err(io_err)?.file_name();
            if reservation::name_ip(&name).is_none() {
                continue;
            }
            if let Some(Holder { container_id, ifname: Some(ifname) }) = store.read_holder(&name).map_err(store_err)? {
                out.push(Attachment { container_id, ifname });
            }
        }
        Ok(Some(out))
    }

    fn add_reserving(&self, req: &Request) -> CniResult<(AddResult, Reserved)> {
        let conf = load(req)?;
        let dns = read_dns(&conf)?;
        // Fail on requests no range set can satisfy before touching any file.
        allocator::assign_requested(&conf.range_sets, &conf.requested).map_err(alloc_err)?;
        let store = Store::open(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)?;
        let picks = allocate(&conf, &store, &req.container_id, &req.ifname)?;
        drop(store);
        let ips = picks
            .iter()
            .map(|p| IpConfig {
                interface: None,
                address: ipnetwork::IpNetwork::new(p.ip, p.prefix).expect("prefix validated"),
                gateway: Some(p.gateway),
            })
            .collect();
        let result = AddResult {
            cni_version: req.conf.cni_version.clone(),
            interfaces: Vec::new(),
            ips,
            routes: conf.routes.clone(),
            dns,
        };
        Ok((result, Reserved { ips: picks.iter().map(|p| p.ip).collect() }))
    }

    /// Remove each reservation of `reserved` that still names exactly this attachment.
    fn undo_add(&self, req: &Request, reserved: &Reserved) -> CniResult<()> {
        let loc = location(req)?;
        let Some(store) = Store::open_existing(&loc.net_dir(), loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        for ip in &reserved.ips {
            store.unreserve(*ip, &req.container_id, &req.ifname).map_err(store_err)?;
        }
        Ok(())
    }

    fn build_marker(&self) -> &'static str {
        BUILD_MARKER
    }
}

impl Plugin for HostLocal {
    /// IPAM: addresses come from files, the pod's netns is never entered.
    fn uses_netns(&self) -> bool {
        false
    }

    fn add(&self, req: &Request) -> CniResult<AddResult> {
        self.add_reserving(req).map(|(result, _)| result)
    }

    /// Release by owner across the whole network directory, whatever the ranges say now. Idempotent.
    fn del(&self, req: &Request) -> CniResult<()> {
        let loc = location(req)?;
        let Some(store) = Store::open_existing(&loc.net_dir(), loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let r = store.release(&req.container_id, &req.ifname).map_err(store_err)?;
        if r.errors.is_empty() { Ok(()) } else { Err(CniError::new(code::IO_FAILURE, r.errors.join("; "))) }
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = load(req)?;
        let (id, ifname) = (req.container_id.as_str(), req.ifname.as_str());
        let missing = || {
            CniError::internal(format!(
                "host-local: Failed to find address added by container {id} (interface {ifname}) in {}: \
                 DEL and ADD the attachment again",
                conf.loc.net_dir().display()
            ))
        };
        let Some(store) = Store::open_existing(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)? else {
            return Err(missing());
        };
        let mut snap = store.snapshot().map_err(store_err)?;
        let mut found = holds_any(&store, &snap, id, ifname);
        if !found && snap.from_index {
            // Confirm from the files before failing.
            snap = store.snapshot_from_files().map_err(store_err)?;
            found = holds_any(&store, &snap, id, ifname);
        }
        store.save_index(&mut snap);
        if !found {
            return Err(missing());
        }
        // Every address of ours in prevResult must still be reserved for this attachment: its file says.
        if let Some(prev) = &req.conf.prev_result {
            for ipc in &prev.ips {
                let ip = ipc.address.ip();
                if !conf.range_sets.iter().any(|s| s.contains(ip)) {
                    continue;
                }
                match store.read_holder(ip.to_string().as_ref()).map_err(store_err)? {
                    Some(h) if h.belongs_to(id, ifname) => {}
                    Some(h) => {
                        return Err(CniError::internal(format!(
                            "host-local: {ip} from prevResult is reserved for {h}, not for container {id} \
                             interface {ifname}: DEL and ADD the attachment again"
                        )));
                    }
                    None => {
                        return Err(CniError::internal(format!(
                            "host-local: {ip} from prevResult is not reserved in {}: DEL and ADD the attachment again",
                            conf.loc.net_dir().display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: Option<&[Attachment]>) -> CniResult<()> {
        let Some(valid) = valid else { return Ok(()) };
        let loc = location(req)?;
        let Some(store) = Store::open_existing(&loc.net_dir(), loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let valid: HashSet<Attachment> =
            valid.iter().map(|a| Attachment::new(a.container_id.trim(), &a.ifname)).collect();
        let r = store.gc(&valid).map_err(store_err)?;
        if !r.ips.is_empty() {
            let list: Vec<String> = r.ips.iter().map(IpAddr::to_string).collect();
            crate::cni::log::warn("host-local", format!("gc {}: released {}", loc.name, list.join(" ")));
        }
        if r.errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(code::IO_FAILURE, format!("host-local gc: {}", r.errors.join("; "))))
        }
    }

    /// Not available (50) while any range set has no free address.
    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = load(req)?;
        let Some(store) = Store::open_existing(&conf.loc.net_dir(), conf.loc.lock_timeout).map_err(store_err)? else {
            return Ok(());
        };
        let names = store.scan_names().map_err(store_err)?;
        let mut full = Vec::new();
        for (i, set) in conf.range_sets.iter().enumerate() {
            if !allocator::has_free(set, store.last_reserved(i), &|ip| names.contains(ip)) {
                full.push(format!("range set {i} ({set}, {} addresses)", set.capacity()));
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::NOT_AVAILABLE,
                format!("no IP addresses available in {}: all reserved", full.join(", ")),
            )
            .with_details("release stale reservations with DEL or GC, or add a range"))
        }
    }
}

/// Some reservation in `snap` belongs to `(id, ifname)`; from the index, one whose file confirms it.
fn holds_any(store: &Store, snap: &Snapshot, id: &str, ifname: &str) -> bool {
    let confirmed =
        |ip: IpAddr| matches!(store.read_holder(ip.to_string().as_ref()), Ok(Some(now)) if now.belongs_to(id, ifname));
    snap.records.belonging_to(id, ifname).into_iter().any(|(ip, _)| !snap.from_index || confirmed(ip))
}

/// Embedded in every binary built from this source tree (see build.rs): a `host-local` executable that
/// contains this exact string was built from the same code as the caller, so running its logic in-process
/// is the same as exec'ing it.
pub static BUILD_MARKER: &str = concat!("rcni-host-local-build:", env!("RCNI_BUILD_ID"), ";");

#[cfg(test)]
mod tests {
    use super::index::{self, DirStamp, Name, Records};
    use super::*;
    use std::fs;

    fn setup(tag: &str) -> (tempfile::TempDir, IpamConf) {
        let t = tempfile::TempDir::with_prefix(format!("rcni-hl-mod-{tag}-")).unwrap();
        let stdin = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": {
            "type": "host-local", "dataDir": t.path(), "ranges": [[{"subnet": "10.0.0.0/24"}]]}});
        (t, config::parse(&stdin, "1.0.0", None).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn holder(id: &str) -> Holder {
        Holder { container_id: id.into(), ifname: Some("eth0".into()) }
    }

    /// Save an index that claims `records` for the directory exactly as it is now: the stamp matches, so it is
    /// believed (the situation a writer that ignores the lock, or an edit in place, could leave).
    fn forge_index(conf: &IpamConf, records: &[(&str, &str)]) {
        let mut r = Records::default();
        for (a, id) in records {
            r.insert(Name::Ip(ip(a)), &holder(id));
        }
        let dir = fs::File::open(conf.loc.net_dir()).unwrap();
        let stamp = DirStamp::of(&dir).unwrap();
        let path = index::path_for(&conf.loc.net_dir()).unwrap();
        index::save(&path, &stamp, &r).unwrap();
    }

    fn open(conf: &IpamConf) -> Store {
        Store::open(&conf.loc.net_dir(), conf.loc.lock_timeout).unwrap()
    }

    fn request(conf: &IpamConf, command: crate::cni::skel::Command, id: &str, ip_arg: &str) -> Request {
        let stdin = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": {
            "type": "host-local", "dataDir": conf.loc.data_dir, "ranges": [[{"subnet": "10.0.0.0/24"}]]}});
        let bytes = serde_json::to_vec(&stdin).unwrap();
        Request {
            command,
            container_id: id.into(),
            netns: "/nonexistent".into(),
            ifname: "eth0".into(),
            args: crate::cni::args::CniArgs::parse(ip_arg).unwrap(),
            path: Vec::new(),
            conf: crate::cni::config::NetConf::from_slice(&bytes).unwrap(),
            stdin: bytes,
        }
    }

    /// Audit finding 1: the undo of an ADD removes what that ADD reserved, never the attachment's other
    /// reservations (a live pod's), nor a file that meanwhile belongs to someone else.
    #[test]
    fn undo_add_releases_exactly_what_that_add_reserved() {
        use crate::cni::skel::Command;
        let (_t, conf) = setup("undo");
        let (first, _) = HostLocal.add_reserving(&request(&conf, Command::Add, "c1", "IP=10.0.0.5")).unwrap();
        assert_eq!(first.ips[0].address.to_string(), "10.0.0.5/24");
        // Another address for the same attachment (here: handed over by hand; in life, a changed range).
        let store = open(&conf);
        assert!(store.reserve(ip("10.0.0.6"), "c1", "eth0").unwrap());
        assert!(store.reserve(ip("10.0.0.7"), "c2", "eth0").unwrap());
        drop(store);
        let undo = Reserved { ips: vec![ip("10.0.0.6"), ip("10.0.0.7")] };
        HostLocal.undo_add(&request(&conf, Command::Del, "c1", ""), &undo).unwrap();
        let dir = conf.loc.net_dir();
        assert_eq!(fs::read(dir.join("10.0.0.5")).unwrap(), b"c1\r\neth0", "the other reservation stays");
        assert!(!dir.join("10.0.0.6").exists(), "the undone one goes");
        assert_eq!(fs::read(dir.join("10.0.0.7")).unwrap(), b"c2\r\neth0", "someone else's stays");
    }

    /// Audit finding 1: host-local refuses a second address for a live attachment also when one is requested.
    #[test]
    fn a_requested_ip_for_an_attachment_that_holds_one_is_refused() {
        use crate::cni::skel::Command;
        let (_t, conf) = setup("dupreq");
        HostLocal.add(&request(&conf, Command::Add, "c1", "IP=10.0.0.5")).unwrap();
        let e = HostLocal.add(&request(&conf, Command::Add, "c1", "IP=10.0.0.6")).unwrap_err();
        assert!(e.msg.contains("10.0.0.5 has been allocated to c1, duplicate allocation is not allowed"), "{e:?}");
        assert!(!conf.loc.net_dir().join("10.0.0.6").exists());
    }

    #[test]
    fn an_address_missing_from_the_index_is_found_taken_by_link() {
        let (_t, conf) = setup("missing");
        let store = open(&conf);
        assert_eq!(allocate(&conf, &store, "c1", "eth0").unwrap()[0].ip, ip("10.0.0.2"));
        fs::remove_file(conf.loc.net_dir().join("last_reserved_ip.0")).unwrap();
        // The index forgets .2: the allocator picks it, link(2) refuses, the files decide.
        forge_index(&conf, &[]);
        assert!(store.snapshot().unwrap().from_index);
        assert_eq!(allocate(&conf, &store, "c2", "eth0").unwrap()[0].ip, ip("10.0.0.3"));
        assert_eq!(fs::read(conf.loc.net_dir().join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        let snap = store.snapshot().unwrap();
        assert!(snap.from_index && snap.records.len() == 2, "saved again, whole: {snap:?}");
    }

    #[test]
    fn a_refusal_from_the_index_is_confirmed_by_the_file() {
        let (_t, conf) = setup("refusal");
        let store = open(&conf);
        allocate(&conf, &store, "c1", "eth0").unwrap();
        // The index puts c1 at .7 (no such file): the refusal names the address c1 really holds.
        forge_index(&conf, &[("10.0.0.2", "c1"), ("10.0.0.7", "c1")]);
        let e = allocate(&conf, &store, "c1", "eth0").unwrap_err();
        assert!(e.to_string().contains("10.0.0.2 has been allocated to c1"), "{e}");
        // The index says the whole range is taken: confirmed from the files, which say otherwise.
        let all: Vec<String> = (2..=254).map(|i| format!("10.0.0.{i}")).collect();
        let claims: Vec<(&str, &str)> = all.iter().map(|a| (a.as_str(), "ghost")).collect();
        forge_index(&conf, &claims);
        assert_eq!(allocate(&conf, &store, "c2", "eth0").unwrap()[0].ip, ip("10.0.0.3"));
    }

    #[test]
    fn del_with_a_wrong_index_removes_only_what_the_files_say() {
        let (_t, conf) = setup("del");
        let store = open(&conf);
        allocate(&conf, &store, "c1", "eth0").unwrap();
        allocate(&conf, &store, "c2", "eth0").unwrap();
        // The index gives c1 both addresses (and a ghost): only .2 goes.
        forge_index(&conf, &[("10.0.0.2", "c1"), ("10.0.0.3", "c1"), ("10.0.0.9", "c1")]);
        assert_eq!(store.release("c1", "eth0").unwrap().ips, [ip("10.0.0.2")]);
        assert_eq!(fs::read(conf.loc.net_dir().join("10.0.0.3")).unwrap(), b"c2\r\neth0");
        let snap = store.snapshot().unwrap();
        assert!(snap.from_index);
        assert_eq!(snap.records.holder(ip("10.0.0.3")), Some(holder("c2")));
        assert_eq!(snap.records.len(), 1);
    }
}
