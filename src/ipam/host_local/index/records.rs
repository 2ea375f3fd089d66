//! The index's records: who holds each file of the network directory, kept as the escaped lines they are
//! stored as.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::text::{push_escaped, push_ip, split_at_byte, unescape};
use crate::ipam::host_local::allocator::Reservations;
use crate::ipam::host_local::reservation::{Holder, name_ip};

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
        match name_ip(file_name) {
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
pub(super) struct Line {
    pub(super) start: u32,
    /// The escaped container ID field.
    id: (u32, u32),
    /// End of the escaped ifname field, which starts at `id.1 + 1`; `id.1`: no ifname (a legacy file).
    ifname_end: u32,
    /// Just past the line's `\n`.
    pub(super) end: u32,
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
    pub(super) buf: Vec<u8>,
    pub(super) ips: Vec<(IpAddr, Line)>,
    pub(super) others: BTreeMap<OsString, Line>,
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

    pub(super) fn field(&self, (a, b): (u32, u32)) -> &[u8] {
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
    pub(super) fn index_line(&mut self, start: usize, end: usize) -> Option<()> {
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
    pub(super) fn sort_loaded(&mut self) -> Option<()> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn h(id: &str, ifname: Option<&str>) -> Holder {
        Holder { container_id: id.into(), ifname: ifname.map(Into::into) }
    }

    pub(crate) fn ip(s: &str) -> Name {
        Name::Ip(s.parse().unwrap())
    }

    pub(crate) fn sample() -> Vec<(Name, Holder)> {
        vec![
            (ip("10.0.0.2"), h("c1", Some("eth0"))),
            (ip("fd00::2"), h("c1", Some("eth0"))),
            (ip("10.0.0.3"), h("c1", None)),
            (ip("10.0.0.4"), h("odd id%\r\n x", Some(""))),
            (ip("10.0.0.5"), h("", Some("with space"))),
            (Name::Other(OsString::from_vec(b".rcni-tmp.10.0.0.9 \xff".to_vec())), h("c2", Some("eth1"))),
        ]
    }

    pub(crate) fn records(v: &[(Name, Holder)]) -> Records {
        let mut r = Records::default();
        for (n, h) in v {
            r.insert(n.clone(), h);
        }
        r
    }

    pub(crate) fn contents(r: &Records) -> Vec<(Name, Holder)> {
        let names = r.ips.iter().map(|(i, _)| Name::Ip(*i)).chain(r.others.keys().map(|n| Name::Other(n.clone())));
        let mut v: Vec<(Name, Holder)> = names.map(|n| (n.clone(), r.holder_of(&n).unwrap())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
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
}
