//! The owner index: who holds each file of a network directory, cached so that a command does not open every
//! reservation file. It is a cache, never the truth: the files are, and the index is thrown away and rebuilt
//! from them whenever it cannot be shown to describe them.
//!
//! ## Where
//! `<dataDir>/.rcni-index.<network>`, a file beside the network directory, not in it: the reference's DEL
//! walks `<dataDir>/<network>` recursively and reads every file, so nothing of ours may live there. Not a
//! directory either: tools that take every directory of dataDir for a network (our own bridge tests do) would
//! count its files as reservations. Network names start with a letter or digit (rcni and the reference both
//! refuse others), so the name is never a network's; `path_for` refuses dot names anyway. The file is read
//! and written only while the network's `lock` is held, never fsynced (losing it costs one full read).
//!
//! ## When the index is believed: the directory stamp
//! The index records the network directory's `(dev, ino, mtime, ctime)` as they were when it was saved, and is
//! used only while they are unchanged. Why that proves no entry was added, removed or renamed since:
//! - every entry change in a directory (create, link, unlink, rename; by the reference, by us, by `rm`) sets
//!   the directory's mtime and ctime both to the current time, so right after one, `mtime == ctime`;
//! - before saving, we make the stamp *distinctive*: when `mtime == ctime` we set the directory's mtime
//!   1 ns back (futimens), which moves its ctime to now, so `mtime != ctime`;
//! - a later entry change makes them equal again, so the stamp cannot match any more. This holds whatever
//!   the timestamp granularity (coarse clock ticks, 1 s filesystems) and across clock steps: no pair of equal
//!   times equals a pair of different ones. ctime cannot be set from user space, so only a deliberate
//!   `touch -m` back to our value within the same ctime tick could forge it;
//! - and a new stamp always differs (by its mtime) from the one in the index file it replaces: with coarse
//!   ticks two commands' marks in one tick would otherwise agree, and if the second died before writing its
//!   index, the first one's would be believed for a directory it does not describe (see `mark`).
//!
//! (Cheaper-looking alternative, rejected: keep reading the directory and trust an entry whose name and
//! inode number are unchanged. ext4 hands a freed inode number straight to the next file created, so a
//! reservation released and re-created for another container, e.g. a pod with a fixed IP restarted by the
//! reference binary, keeps both its name and its inode number; DEL would then miss the new owner's file.)
//!
//! With a matching stamp no directory read is needed at all: the index lists exactly the names present.
//!
//! ## What a stale index can still do
//! A matching stamp says nothing about a file's *content* rewritten in place (the reference and rcni never do
//! that; a person with an editor might), and a writer that ignores the lock could add or remove a file during
//! our command, before the stamp is taken, leaving an index that lacks a file or lists a gone one until the
//! next change by another writer. None of that can hand out or release someone else's address:
//! - ADD creates a reservation with link(2), which fails when the name exists: an address missing from the
//!   index is found taken then, and the command starts over from the files;
//! - every positive answer the index gives is read back from its file before it is acted on: ADD's refusal
//!   of a duplicate or of a taken requested IP, each file DEL unlinks, CHECK's finding; on a mismatch the
//!   command starts over from the files (and saves a fresh index). Negative answers that fail a command
//!   (ADD's "no free address", CHECK's "not found") are confirmed from the files too.
//!
//! What remains are missed positives: the duplicate guard letting an attachment take a second address, DEL
//! not releasing a file the index does not attribute to the attachment (GC releases it later), an address
//! listed but gone staying unused until the index is rebuilt.
//!
//! The argument needs a filesystem that keeps POSIX directory times (ext4, xfs, btrfs, tmpfs: the unit test
//! `marked_stamp_is_distinctive_until_the_next_change` checks the two properties used). The dataDir is local
//! anyway: the `lock` relies on flock.
//!
//! ## Format (text, one record per line, fields separated by one space)
//! ```text
//! rcni-host-local-index 1
//! d <dev> <ino> <mtime s> <mtime ns> <ctime s> <ctime ns>
//! i <ip> <containerID> [<ifname>]        a file named by an address (no ifname: a legacy ID-only file);
//!                                        sorted by address
//! o <name> <containerID> [<ifname>]      any other regular file DEL reads (a leftover temp file)
//! e <records> <checksum of all bytes before this line, 16 hex digits>
//! ```
//! Names and holders are %XX-escaped (bytes up to space, `%`, DEL), so any content survives. A file that does
//! not parse, has the wrong count or checksum (torn by a crash: it is never synced) is ignored.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::allocator::{Holder, Reservations};

/// The index of network `<n>` is `<dataDir>/.rcni-index.<n>`.
pub const INDEX_PREFIX: &str = ".rcni-index.";
const HEADER: &[u8] = b"rcni-host-local-index 1\n";

/// Where the index of network directory `net_dir` lives; `None` when it gets none.
pub fn path_for(net_dir: &Path) -> Option<PathBuf> {
    let name = net_dir.file_name()?;
    if name.as_bytes().first() == Some(&b'.') {
        return None;
    }
    let mut file = OsString::from(INDEX_PREFIX);
    file.push(name);
    Some(net_dir.parent()?.join(file))
}

/// Identity and last-change marker of a directory (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirStamp {
    pub fn of(dir: &File) -> io::Result<DirStamp> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        if unsafe { libc::fstat(dir.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let st = unsafe { st.assume_init() };
        Ok(DirStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// No entry change can produce this stamp: those leave `mtime == ctime`.
    pub fn is_distinctive(&self) -> bool {
        self.mtime != self.ctime
    }
}

/// The directory's stamp, made distinctive first if needed (mtime set back, which moves ctime to now), and
/// never equal to `on_disk`, the stamp of the index file this command is about to replace. `None` if that
/// failed (then no index may be saved).
///
/// Why `on_disk`: with coarse timestamps, two commands whose changes and marks fall in one clock tick τ would
/// both leave `(τ − 1 ns, τ)`. Should the second die after its mark and before its index is written, the
/// first one's index, which lacks the second's change, would match the directory and be believed.
pub fn mark(dir: &File, on_disk: Option<&DirStamp>) -> io::Result<Option<DirStamp>> {
    let st = DirStamp::of(dir)?;
    if st.is_distinctive() && Some(&st) != on_disk {
        return Ok(Some(st));
    }
    let (s, ns) = marked_mtime(&st, on_disk);
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as _ },
    ];
    if unsafe { libc::futimens(dir.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let st = DirStamp::of(dir)?;
    Ok((st.is_distinctive() && Some(&st) != on_disk).then_some(st))
}

/// The mtime `mark` sets on a directory stamped `now`: 1 ns before its mtime, or 2 ns if that is the mtime of
/// `on_disk` — so the stamp after the mark differs from `on_disk` by its mtime alone, whatever ctime becomes.
fn marked_mtime(now: &DirStamp, on_disk: Option<&DirStamp>) -> (i64, i64) {
    let back = |(s, ns): (i64, i64)| if ns > 0 { (s, ns - 1) } else { (s - 1, 999_999_999) };
    let m = back(now.mtime);
    if on_disk.is_some_and(|d| d.mtime == m) { back(m) } else { m }
}

/// Which file a record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Name {
    /// A reservation: the file named by this address.
    Ip(IpAddr),
    /// Any other regular file DEL reads (a leftover temp file).
    Other(OsString),
}

impl Name {
    /// The entry's name: an address as the reference names its file, or the other name.
    pub fn of(file_name: &OsStr) -> Name {
        match super::store::name_ip(file_name) {
            Some(ip) => Name::Ip(ip),
            None => Name::Other(file_name.to_os_string()),
        }
    }

    pub fn file_name(&self) -> OsString {
        match self {
            Name::Ip(ip) => ip.to_string().into(),
            Name::Other(n) => n.clone(),
        }
    }
}

/// One stored line: byte offsets into `Records::buf` (u32: an index of 4 GiB would hold ~50 million
/// reservations; small entries keep the memory a command touches small, which is most of its cost).
#[derive(Debug, Clone, Copy)]
struct Line {
    start: u32,
    /// The escaped container ID field.
    id: (u32, u32),
    /// End of the escaped ifname field, which starts at `id.1 + 1`; `id.1`: no ifname (a legacy file).
    ifname_end: u32,
    /// Just past the line's `\n`.
    end: u32,
}

impl Line {
    fn ifname(&self) -> Option<(u32, u32)> {
        (self.ifname_end != self.id.1).then_some((self.id.1 + 1, self.ifname_end))
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("an index under 4 GiB")
}

/// The records, kept as the escaped lines they are stored as, reservations sorted by address (as saved).
/// Loading an index of N records costs a scan for line and field boundaries and a sorted vector of N small
/// entries: no allocation per record, no hash table; a holder is decoded only when asked for, and owners are
/// compared escaped (escaping is one-to-one). Saving writes the lines back in order, mostly as one run.
#[derive(Debug, Default)]
pub struct Records {
    buf: Vec<u8>,
    ips: Vec<(IpAddr, Line)>,
    others: BTreeMap<OsString, Line>,
}

/// An attachment, escaped as in the records, to compare owners without decoding them.
pub struct Owner {
    id: Vec<u8>,
    ifname: Vec<u8>,
}

impl Owner {
    pub fn new(id: &str, ifname: &str) -> Owner {
        let mut o = Owner { id: Vec::new(), ifname: Vec::new() };
        push_escaped(&mut o.id, id.trim().as_bytes());
        push_escaped(&mut o.ifname, ifname.as_bytes());
        o
    }
}

/// How a record's holder must relate to an [`Owner`] (the matches of [`Holder`]).
#[derive(Clone, Copy)]
pub enum Match {
    /// `Holder::is`: exactly this attachment.
    Exactly,
    /// An ID-only (legacy) file of the container.
    LegacyOf,
    /// `Holder::belongs_to`: either of the above.
    BelongsTo,
}

impl Records {
    pub fn len(&self) -> usize {
        self.ips.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add (or replace) the record of `name`.
    pub fn insert(&mut self, name: Name, h: &Holder) {
        let start = offset(self.buf.len());
        match &name {
            Name::Ip(ip) => {
                self.buf.extend_from_slice(b"i ");
                push_ip(&mut self.buf, ip);
            }
            Name::Other(n) => {
                self.buf.extend_from_slice(b"o ");
                push_escaped(&mut self.buf, n.as_bytes());
            }
        }
        self.buf.push(b' ');
        let id = self.push_field(h.container_id.as_bytes());
        let ifname_end = match &h.ifname {
            Some(i) => {
                self.buf.push(b' ');
                self.push_field(i.as_bytes()).1
            }
            None => id.1,
        };
        self.buf.push(b'\n');
        let line = Line { start, id, ifname_end, end: offset(self.buf.len()) };
        match name {
            Name::Ip(ip) => match self.ips.binary_search_by_key(&ip, |e| e.0) {
                Ok(i) => self.ips[i].1 = line,
                Err(i) => self.ips.insert(i, (ip, line)),
            },
            Name::Other(n) => {
                self.others.insert(n, line);
            }
        }
    }

    fn push_field(&mut self, field: &[u8]) -> (u32, u32) {
        let start = offset(self.buf.len());
        push_escaped(&mut self.buf, field);
        (start, offset(self.buf.len()))
    }

    pub fn remove(&mut self, name: &Name) {
        match name {
            Name::Ip(ip) => {
                if let Ok(i) = self.ips.binary_search_by_key(ip, |e| e.0) {
                    self.ips.remove(i);
                }
            }
            Name::Other(n) => {
                self.others.remove(n);
            }
        }
    }

    fn line_of(&self, name: &Name) -> Option<&Line> {
        match name {
            Name::Ip(ip) => self.ips.binary_search_by_key(ip, |e| e.0).ok().map(|i| &self.ips[i].1),
            Name::Other(n) => self.others.get(n),
        }
    }

    pub fn holder_of(&self, name: &Name) -> Option<Holder> {
        self.line_of(name).map(|l| self.holder_at(l))
    }

    fn field(&self, (a, b): (u32, u32)) -> &[u8] {
        &self.buf[a as usize..b as usize]
    }

    fn holder_at(&self, l: &Line) -> Holder {
        let text = |range| {
            let f = self.field(range);
            let raw = unescape(f).unwrap_or_else(|| f.to_vec());
            String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        };
        Holder { container_id: text(l.id), ifname: l.ifname().map(text) }
    }

    fn matches(&self, l: &Line, owner: &Owner, how: Match) -> bool {
        if self.field(l.id) != owner.id {
            return false;
        }
        let same_ifname = || l.ifname().is_some_and(|f| self.field(f) == owner.ifname);
        match how {
            Match::Exactly => same_ifname(),
            Match::LegacyOf => l.ifname().is_none(),
            Match::BelongsTo => l.ifname().is_none() || same_ifname(),
        }
    }

    /// The records (reservations and other files) whose holder relates to `owner` as `how` says.
    pub fn select(&self, owner: &Owner, how: Match) -> Vec<(Name, Holder)> {
        let ips = self.ips.iter().map(|(ip, l)| (l, Name::Ip(*ip)));
        let all = ips.chain(self.others.iter().map(|(n, l)| (l, Name::Other(n.clone()))));
        all.filter(|(l, _)| self.matches(l, owner, how)).map(|(l, n)| (n, self.holder_at(l))).collect()
    }

    /// Parse the stored line `buf[start..end]` (without its `\n`) and add it (reservations in file order:
    /// `sort_loaded` puts them in order). `None`: malformed.
    fn index_line(&mut self, start: usize, end: usize) -> Option<()> {
        let mut fields = split_at_byte(&self.buf[start..end], b' ').map(|f| f.len());
        let (kind, name, id, ifname) = (fields.next()?, fields.next()?, fields.next()?, fields.next());
        if fields.next().is_some() || kind != 1 {
            return None;
        }
        let name_at = start + 2;
        let id_at = offset(name_at + name + 1);
        let id = (id_at, id_at + offset(id));
        let line = Line {
            start: offset(start),
            id,
            ifname_end: ifname.map_or(id.1, |n| id.1 + 1 + offset(n)),
            end: offset(end + 1),
        };
        // Escapes are checked here, so decoding a holder later cannot fail.
        for f in std::iter::once(line.id).chain(line.ifname()) {
            let f = self.field(f);
            if f.contains(&b'%') && unescape(f).is_none() {
                return None;
            }
        }
        let name = &self.buf[name_at..name_at + name];
        match self.buf[start] {
            b'i' => {
                let ip = std::str::from_utf8(name).ok()?.parse().ok()?;
                self.ips.push((ip, line));
            }
            b'o' => {
                if self.others.insert(OsString::from_vec(unescape(name)?), line).is_some() {
                    return None;
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// After loading: reservations sorted by address (already so when saved by `save`), none twice.
    fn sort_loaded(&mut self) -> Option<()> {
        if !self.ips.is_sorted_by_key(|e| e.0) {
            self.ips.sort_unstable_by_key(|e| e.0);
        }
        self.ips.windows(2).all(|w| w[0].0 != w[1].0).then_some(())
    }
}

impl Reservations for Records {
    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.ips.binary_search_by_key(&ip, |e| e.0).is_ok()
    }

    fn holder(&self, ip: IpAddr) -> Option<Holder> {
        self.holder_of(&Name::Ip(ip))
    }

    fn belonging_to(&self, id: &str, ifname: &str) -> Vec<(IpAddr, Holder)> {
        let owner = Owner::new(id, ifname);
        let mine = self.ips.iter().filter(|(_, l)| self.matches(l, &owner, Match::BelongsTo));
        mine.map(|(ip, l)| (*ip, self.holder_at(l))).collect()
    }
}

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

fn push_escaped(out: &mut Vec<u8>, field: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if !field.iter().any(|&b| needs_escape(b)) {
        out.extend_from_slice(field);
        return;
    }
    for &b in field {
        if needs_escape(b) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

fn unescape(tok: &[u8]) -> Option<Vec<u8>> {
    if !tok.contains(&b'%') {
        return Some(tok.to_vec());
    }
    let mut out = Vec::with_capacity(tok.len());
    let mut i = 0;
    while i < tok.len() {
        if tok[i] == b'%' {
            let hex = std::str::from_utf8(tok.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(tok[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The address as `Display` writes it (the file's name); IPv4 without the formatting machinery, which costs
/// more than everything else per record.
fn push_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, &o) in a.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(a) => out.extend_from_slice(a.to_string().as_bytes()),
    }
}

/// A 64-bit checksum to tell a torn or garbled file (not against forgery): four independent lanes of
/// multiply-rotate over 8-byte words, so it runs at memory speed. Each step is a bijection of the word and
/// of the lane, so any single changed word (byte) changes the result. Fed piece by piece (the file is
/// written from pieces), with the same result as over the whole.
struct Checksum {
    lanes: [u64; 4],
    block: [u8; 32],
    filled: usize,
    len: u64,
}

impl Checksum {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new() -> Checksum {
        let m = Self::M;
        Checksum {
            lanes: [m, m.rotate_left(16), m.rotate_left(32), m.rotate_left(48)],
            block: [0; 32],
            filled: 0,
            len: 0,
        }
    }

    fn mix(&mut self, block: &[u8]) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = (*lane ^ w).wrapping_mul(Self::M).rotate_left(29);
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.filled > 0 {
            let take = (32 - self.filled).min(bytes.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < 32 {
                return;
            }
            let block = self.block;
            self.mix(&block);
            self.filled = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            self.mix(b);
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut h = self.len;
        for lane in self.lanes {
            h = (h ^ lane).wrapping_mul(Self::M).rotate_left(29);
        }
        for &b in &self.block[..self.filled] {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(bytes);
    c.finish()
}

/// The index file in pieces: header and stamp line, the live record lines (each run of adjacent ones as one
/// piece, borrowed from `r`), trailer. Saving writes them with writev: the records are not copied.
fn pieces<'a>(stamp: &DirStamp, r: &'a Records) -> (Vec<u8>, Vec<&'a [u8]>, Vec<u8>) {
    let mut head = HEADER.to_vec();
    let (m, t) = (stamp.mtime, stamp.ctime);
    head.extend_from_slice(format!("d {} {} {} {} {} {}\n", stamp.dev, stamp.ino, m.0, m.1, t.0, t.1).as_bytes());
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for l in r.ips.iter().map(|(_, l)| l).chain(r.others.values()) {
        match runs.last_mut() {
            Some(run) if run.1 == l.start => run.1 = l.end,
            _ => runs.push((l.start, l.end)),
        }
    }
    let runs: Vec<&[u8]> = runs.into_iter().map(|run| r.field(run)).collect();
    let mut sum = Checksum::new();
    sum.update(&head);
    runs.iter().for_each(|run| sum.update(run));
    let trailer = format!("e {} {:016x}\n", r.len(), sum.finish()).into_bytes();
    (head, runs, trailer)
}

/// The whole file, as `save` writes it.
pub fn encode(stamp: &DirStamp, r: &Records) -> Vec<u8> {
    let (head, runs, trailer) = pieces(stamp, r);
    let mut out = head;
    runs.iter().for_each(|run| out.extend_from_slice(run));
    out.extend_from_slice(&trailer);
    out
}

fn parse_stamp(line: &[u8]) -> Option<DirStamp> {
    let s = std::str::from_utf8(line.strip_prefix(b"d ")?).ok()?;
    let mut f = s.split(' ');
    let mut field = || f.next();
    let (dev, ino) = (field()?.parse().ok()?, field()?.parse().ok()?);
    let times: Vec<i64> = std::iter::from_fn(field).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [ms, mns, cs, cns] = times[..] else { return None };
    Some(DirStamp { dev, ino, mtime: (ms, mns), ctime: (cs, cns) })
}

/// The stamp written in the index file at `path`, intact or not (the only index that could ever be believed
/// is the one on disk, so a new stamp must differ from this one); `None` if there is none.
pub fn stamp_on_disk(path: &Path) -> Option<DirStamp> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).ok()?;
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let rest = head[..n].strip_prefix(HEADER)?;
    parse_stamp(&rest[..memchr::memchr(b'\n', rest)?])
}

/// `bytes` cut at every `sep`, found with memchr: splitting byte by byte costs more than the rest of parsing.
fn split_at_byte(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(sep, bytes).chain(std::iter::once(bytes.len()));
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let field = &bytes[start..end];
        start = end + 1;
        Some(field)
    })
}

/// `None` for anything but a whole, intact index.
pub fn decode(bytes: Vec<u8>) -> Option<(DirStamp, Records)> {
    let body = bytes.strip_suffix(b"\n")?;
    let cut = memchr::memrchr(b'\n', body)? + 1;
    let (head, trailer) = (&bytes[..cut], &body[cut..]);
    let (count, sum) = std::str::from_utf8(trailer.strip_prefix(b"e ")?).ok()?.split_once(' ')?;
    // Compared as text: a hex digit changed in case must not pass.
    if sum != format!("{:016x}", checksum(head)) {
        return None;
    }
    let count: usize = count.parse().ok()?;
    let rest = head.strip_prefix(HEADER)?;
    let stamp_end = memchr::memchr(b'\n', rest)?;
    let stamp = parse_stamp(&rest[..stamp_end])?;
    let (mut start, records_end) = (HEADER.len() + stamp_end + 1, cut);
    // The records stay where they were read (no copy); lines added later go after the old trailer, which
    // no line points at. Sized from the trailer (checked above, so not a wild number).
    if bytes.len() > u32::MAX as usize {
        return None;
    }
    let mut r = Records { buf: bytes, ips: Vec::with_capacity(count.min(records_end / 8)), ..Records::default() };
    while start < records_end {
        let end = start + memchr::memchr(b'\n', &r.buf[start..records_end])?;
        r.index_line(start, end)?;
        start = end + 1;
    }
    r.sort_loaded()?;
    (r.len() == count).then_some((stamp, r))
}

/// Read the index; `None` if absent or unreadable (both mean: rebuild).
pub fn load(path: &Path) -> Option<Vec<u8>> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Replace the index with `r` stamped `stamp`, in place, without fsync. Not temp file + rename: creating,
/// renaming and freeing an inode per command cost more than the rest of the index work (and ext4 starts
/// writeback on a rename over a file). A write torn by a crash is caught by the checksum and the index
/// rebuilt; an old but whole index left by a crash carries the stamp of the old directory, so it is believed
/// only if the directory is back to that state too (an entry change and its mtime/ctime are one journal
/// transaction).
pub fn save(path: &Path, stamp: &DirStamp, r: &Records) -> io::Result<()> {
    let (head, runs, trailer) = pieces(stamp, r);
    let mut slices: Vec<IoSlice> =
        std::iter::once(&head[..]).chain(runs).chain(std::iter::once(&trailer[..])).map(IoSlice::new).collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut o = OpenOptions::new();
    o.write(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let mut f = o.open(path)?;
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match f.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    f.set_len(total as u64)
}

/// Remove the index (it can no longer be shown to be right). Best effort.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: &str, ifname: Option<&str>) -> Holder {
        Holder { container_id: id.into(), ifname: ifname.map(Into::into) }
    }

    fn ip(s: &str) -> Name {
        Name::Ip(s.parse().unwrap())
    }

    const STAMP: DirStamp = DirStamp { dev: 2049, ino: 77, mtime: (1_700_000_000, 5), ctime: (1_700_000_000, 6) };

    fn sample() -> Vec<(Name, Holder)> {
        vec![
            (ip("10.0.0.2"), h("c1", Some("eth0"))),
            (ip("fd00::2"), h("c1", Some("eth0"))),
            (ip("10.0.0.3"), h("c1", None)),
            (ip("10.0.0.4"), h("odd id%\r\n x", Some(""))),
            (ip("10.0.0.5"), h("", Some("with space"))),
            (Name::Other(OsString::from_vec(b".rcni-tmp.10.0.0.9 \xff".to_vec())), h("c2", Some("eth1"))),
        ]
    }

    fn records(v: &[(Name, Holder)]) -> Records {
        let mut r = Records::default();
        for (n, h) in v {
            r.insert(n.clone(), h);
        }
        r
    }

    fn contents(r: &Records) -> Vec<(Name, Holder)> {
        let names = r.ips.iter().map(|(i, _)| Name::Ip(*i)).chain(r.others.keys().map(|n| Name::Other(n.clone())));
        let mut v: Vec<(Name, Holder)> = names.map(|n| (n.clone(), r.holder_of(&n).unwrap())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let mut want = sample();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let (stamp, r) = decode(encode(&STAMP, &records(&want))).unwrap();
        assert_eq!((stamp, contents(&r)), (STAMP, want.clone()));
        let (_, empty) = decode(encode(&STAMP, &Records::default())).unwrap();
        assert!(empty.is_empty());
        // Replaced and removed records are gone from what is saved.
        let mut r = records(&want);
        r.insert(ip("10.0.0.2"), &h("c9", Some("eth9")));
        r.remove(&ip("fd00::2"));
        r.remove(&ip("10.9.9.9"));
        let (_, back) = decode(encode(&STAMP, &r)).unwrap();
        assert_eq!(back.len(), want.len() - 1);
        assert_eq!(back.holder_of(&ip("10.0.0.2")), Some(h("c9", Some("eth9"))));
        assert_eq!(back.holder_of(&ip("fd00::2")), None);
    }

    #[test]
    fn checksum_by_pieces_is_the_checksum_of_the_whole() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cuts in [vec![], vec![0], vec![1], vec![31, 32, 33], vec![5, 64, 65, 200], vec![100, 100, 299]] {
            let mut c = Checksum::new();
            let mut at = 0;
            for cut in cuts.iter().copied().chain([data.len()]) {
                c.update(&data[at..cut]);
                at = cut;
            }
            assert_eq!(c.finish(), checksum(&data), "{cuts:?}");
        }
        assert_ne!(checksum(&data[..299]), checksum(&data));
    }

    /// A loaded index is edited and saved again: lines added after the old trailer, removed ones skipped;
    /// `save` writes what `encode` says, also over a longer old file.
    #[test]
    fn edit_a_loaded_index_and_save_it() {
        let mut want = sample();
        let (_, mut r) = decode(encode(&STAMP, &records(&want))).unwrap();
        r.remove(&ip("10.0.0.3"));
        r.insert(ip("10.0.0.2"), &h("c9", Some("eth9")));
        r.insert(ip("10.0.0.77"), &h("c7", Some("eth0")));
        want.retain(|(n, _)| *n != ip("10.0.0.3") && *n != ip("10.0.0.2"));
        want.push((ip("10.0.0.2"), h("c9", Some("eth9"))));
        want.push((ip("10.0.0.77"), h("c7", Some("eth0"))));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let d =
            std::env::temp_dir().join(format!("rcni-hl-save-{}-{:?}", std::process::id(), std::thread::current().id()));
        fs::write(&d, vec![b'x'; 10_000]).unwrap();
        save(&d, &STAMP, &r).unwrap();
        let on_disk = fs::read(&d).unwrap();
        fs::remove_file(&d).unwrap();
        assert_eq!(on_disk, encode(&STAMP, &r));
        let (stamp, back) = decode(on_disk).unwrap();
        assert_eq!((stamp, contents(&back)), (STAMP, want));
    }

    #[test]
    fn owners_compare_like_holders() {
        let r = records(&sample());
        let names = |o: &Owner, how| {
            let mut v: Vec<Name> = r.select(o, how).into_iter().map(|(n, _)| n).collect();
            v.sort();
            v
        };
        let c1 = Owner::new(" c1 ", "eth0");
        assert_eq!(names(&c1, Match::Exactly), [ip("10.0.0.2"), ip("fd00::2")]);
        assert_eq!(names(&c1, Match::LegacyOf), [ip("10.0.0.3")]);
        assert_eq!(names(&c1, Match::BelongsTo), [ip("10.0.0.2"), ip("10.0.0.3"), ip("fd00::2")]);
        assert_eq!(names(&Owner::new("c1", "eth1"), Match::BelongsTo), [ip("10.0.0.3")]);
        assert_eq!(names(&Owner::new("odd id%\r\n x", ""), Match::Exactly), [ip("10.0.0.4")]);
        assert!(names(&Owner::new("odd", ""), Match::BelongsTo).is_empty());
        let other = Name::Other(OsString::from_vec(b".rcni-tmp.10.0.0.9 \xff".to_vec()));
        assert_eq!(names(&Owner::new("c2", "eth1"), Match::Exactly), [other]);
        // The allocator's view: reservations only.
        let mut mine: Vec<IpAddr> = r.belonging_to("c1", "eth0").into_iter().map(|(ip, _)| ip).collect();
        mine.sort();
        assert_eq!(mine, ["10.0.0.2", "10.0.0.3", "fd00::2"].map(|a| a.parse::<IpAddr>().unwrap()));
        assert!(r.is_reserved("10.0.0.5".parse().unwrap()) && !r.is_reserved("10.0.0.9".parse().unwrap()));
        assert_eq!(r.holder("10.0.0.3".parse().unwrap()), Some(h("c1", None)));
    }

    #[test]
    fn torn_or_garbled_is_refused() {
        let bytes = encode(&STAMP, &records(&sample()));
        // Every truncation (a crash before the data reached the disk), and zeros instead of the tail.
        for cut in 0..bytes.len() {
            assert!(decode(bytes[..cut].to_vec()).is_none(), "cut at {cut}");
            let mut z = bytes.clone();
            z[cut..].fill(0);
            assert!(decode(z).is_none(), "zeros from {cut}");
        }
        // One flipped byte anywhere.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(decode(b).is_none(), "flip at {i}");
        }
        // Well-formed but wrong: a wrong count, a record twice, a bad escape (the checksum made to match).
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let head = &text[..text.rfind("e ").unwrap()];
        for (body, n) in [
            (head.to_string(), 5),
            (format!("{head}i 10.0.0.2 c1 eth0\n"), 7),
            (format!("{head}i 10.0.0.7 c%4 eth0\n"), 7),
            (format!("{head}x 10.0.0.7 c eth0\n"), 7),
            (format!("{head}i 10.0.0.7 c eth0 more\n"), 7),
        ] {
            let forged = format!("{body}e {n} {:016x}\n", checksum(body.as_bytes()));
            assert!(decode(forged.into_bytes()).is_none());
        }
        assert!(decode(Vec::new()).is_none());
        assert!(decode(b"rcni-host-local-index 2\n".to_vec()).is_none());
    }

    /// The marker's two properties: the stamp it leaves is one no entry change can produce, and the next entry
    /// change (whatever the clock) leaves a different one.
    #[test]
    fn marked_stamp_is_distinctive_until_the_next_change() {
        let d =
            std::env::temp_dir().join(format!("rcni-hl-mark-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        let dir = File::open(&d).unwrap();
        let change = |n: &str| fs::write(d.join(n), "x").unwrap();
        change("a");
        let natural = DirStamp::of(&dir).unwrap();
        assert!(!natural.is_distinctive(), "an entry change sets mtime and ctime alike: {natural:?}");
        let marked = mark(&dir, None).unwrap().unwrap();
        assert!(marked.is_distinctive());
        let one_ns_back = match natural.mtime {
            (s, 0) => (s - 1, 999_999_999),
            (s, ns) => (s, ns - 1),
        };
        assert_eq!(marked.mtime, one_ns_back);
        assert_eq!(mark(&dir, None).unwrap(), Some(marked), "already distinctive: left alone");
        for (i, op) in ["create", "unlink", "rename"].iter().enumerate() {
            match *op {
                "create" => change("b"),
                "unlink" => fs::remove_file(d.join("b")).unwrap(),
                _ => fs::rename(d.join("a"), d.join("c")).unwrap(),
            }
            let now = DirStamp::of(&dir).unwrap();
            assert!(now != marked && !now.is_distinctive(), "{i}: {op}: {now:?}");
            assert!(mark(&dir, None).unwrap().unwrap().is_distinctive());
        }
        fs::remove_dir_all(&d).unwrap();
    }

    /// Audit finding 4, on a clock with coarse ticks (kernels before multigrain timestamps): command 1's last
    /// change and mark, then command 2's change and mark, all in tick τ. The stamps the two marks leave must
    /// differ, or an index that command 2 never got to write would be replaced in belief by command 1's.
    #[test]
    fn two_marks_in_one_tick_around_an_entry_change_differ() {
        let tau = (1_700_000_000, 4_000_000);
        let changed = DirStamp { dev: 1, ino: 2, mtime: tau, ctime: tau };
        // Command 1: mtime set back; in the same tick ctime stays τ.
        let first = DirStamp { mtime: marked_mtime(&changed, None), ..changed };
        assert!(first.is_distinctive());
        // Command 2 changes the directory in tick τ (mtime = ctime = τ again) and marks, knowing `first`.
        let second = DirStamp { mtime: marked_mtime(&changed, Some(&first)), ..changed };
        assert!(second.is_distinctive());
        assert_ne!(second, first, "same tick, same stamp: the old index would be believed");
        // A third one knows only `second` (the index on disk): it may reuse `first`'s stamp, never `second`'s.
        assert_ne!(DirStamp { mtime: marked_mtime(&changed, Some(&second)), ..changed }, second);
        // Across a second boundary.
        let at_zero = DirStamp { mtime: (5, 0), ctime: (5, 0), ..changed };
        assert_eq!(marked_mtime(&at_zero, None), (4, 999_999_999));
        let first = DirStamp { mtime: (4, 999_999_999), ..at_zero };
        assert_eq!(marked_mtime(&at_zero, Some(&first)), (4, 999_999_998));
    }

    /// Audit finding 4: a command that marked the directory and was killed before writing its index leaves
    /// a directory no index on disk matches, so the next command reads the files.
    #[test]
    fn killed_between_mark_and_index_write_the_old_index_is_not_believed() {
        let d = std::env::temp_dir().join(format!(
            "rcni-hl-killed-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        let net = d.join("net");
        fs::create_dir_all(&net).unwrap();
        let dir = File::open(&net).unwrap();
        let path = path_for(&net).unwrap();
        // Command 1: a reservation, marked, index saved.
        fs::write(net.join("10.0.0.2"), "c1\r\neth0").unwrap();
        let s1 = mark(&dir, stamp_on_disk(&path).as_ref()).unwrap().unwrap();
        let mut r = Records::default();
        r.insert(ip("10.0.0.2"), &h("c1", Some("eth0")));
        save(&path, &s1, &r).unwrap();
        assert_eq!(stamp_on_disk(&path), Some(s1));
        // Command 2: a reservation, marked knowing the index on disk, killed before `save`.
        fs::write(net.join("10.0.0.3"), "c2\r\neth0").unwrap();
        let s2 = mark(&dir, stamp_on_disk(&path).as_ref()).unwrap().unwrap();
        assert_ne!(s2, s1);
        // Command 3: the index on disk is command 1's, and does not match.
        let (on_disk, _) = decode(load(&path).unwrap()).unwrap();
        assert_eq!(on_disk, s1);
        assert_ne!(DirStamp::of(&dir).unwrap(), on_disk);
        fs::remove_dir_all(&d).unwrap();
    }

    /// Audit finding 26: dev and inode numbers are unsigned 64-bit; one at or above 2^63 must load.
    #[test]
    fn stamps_with_huge_inode_numbers_round_trip() {
        let huge = DirStamp { dev: u64::MAX, ino: (1 << 63) + 5, ..STAMP };
        let (stamp, _) = decode(encode(&huge, &records(&sample()))).unwrap();
        assert_eq!(stamp, huge);
    }

    #[test]
    fn no_index_for_dot_names() {
        assert_eq!(path_for(Path::new("/d/net1")), Some(PathBuf::from("/d/.rcni-index.net1")));
        assert_eq!(path_for(Path::new("/d/.rcni-index.net1")), None);
        assert_eq!(path_for(Path::new("/d/.hidden")), None);
    }

    /// Not a test: how long loading and saving an index of 1000 reservations takes.
    /// `cargo nextest run --release --lib --run-ignored only --no-capture codec_speed`
    #[test]
    #[ignore]
    fn codec_speed() {
        let mut r = Records::default();
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0ac8_0002 + i));
            r.insert(Name::Ip(ip), &h(&format!("{i:064x}"), Some("eth0")));
        }
        let runs = 1000;
        let t = std::time::Instant::now();
        let mut b = Vec::new();
        for _ in 0..runs {
            b = encode(&STAMP, &r);
        }
        let e = t.elapsed() / runs;
        let t = std::time::Instant::now();
        for _ in 0..runs {
            assert!(decode(b.clone()).is_some());
        }
        let d = t.elapsed() / runs;
        eprintln!("1000 records, {} bytes: encode {e:?}, decode {d:?}", b.len());
    }
}
