//! The index file's bytes: header, stamp line, records, and a checksummed trailer; encode and decode.

use super::HEADER;
use super::records::Records;
use super::stamp::DirStamp;

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
pub(super) fn pieces<'a>(stamp: &DirStamp, r: &'a Records) -> (Vec<u8>, Vec<&'a [u8]>, Vec<u8>) {
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

pub(super) fn parse_stamp(line: &[u8]) -> Option<DirStamp> {
    let s = std::str::from_utf8(line.strip_prefix(b"d ")?).ok()?;
    let mut f = s.split(' ');
    let mut field = || f.next();
    let (dev, ino) = (field()?.parse().ok()?, field()?.parse().ok()?);
    let times: Vec<i64> = std::iter::from_fn(field).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [ms, mns, cs, cns] = times[..] else { return None };
    Some(DirStamp { dev, ino, mtime: (ms, mns), ctime: (cs, cns) })
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

#[cfg(test)]
mod tests {
    use super::super::records::Name;
    use super::super::records::tests::{contents, h, ip, records, sample};
    use super::super::stamp::tests::STAMP;
    use super::*;
    use std::net::IpAddr;

    use crate::ipam::host_local::reservation::Holder;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Name> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Name::Ip(IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Name::Ip(IpAddr::from(b).to_canonical())),
            prop::collection::vec(any::<u8>(), 1..20)
                .prop_filter("a file name", |v| !v.contains(&b'/') && !v.contains(&0))
                .prop_map(|v| Name::Other(std::os::unix::ffi::OsStringExt::from_vec(v))),
        ]
    }

    fn holder() -> impl Strategy<Value = Holder> {
        (any::<String>(), prop::option::of(any::<String>()))
            .prop_map(|(id, ifname)| Holder { container_id: id, ifname })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the holders and names (any bytes, CR, LF, spaces), what is saved reads back the same.
        #[test]
        fn any_records_round_trip(v in prop::collection::vec((name(), holder()), 0..12)) {
            let r = records(&v);
            let want = contents(&r);
            let (stamp, back) = decode(encode(&STAMP, &r)).expect("an index just written decodes");
            prop_assert_eq!(stamp, STAMP);
            prop_assert_eq!(contents(&back), want);
        }

        /// A damaged file (bytes changed, inserted, cut) is either refused or read as some index: no panic.
        #[test]
        fn damaged_index_never_panics(
            v in prop::collection::vec((name(), holder()), 0..6),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
        ) {
            let mut bytes = encode(&STAMP, &records(&v));
            for (at, b, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] = b,
                    1 => bytes.insert(i, b),
                    _ => bytes.truncate(i),
                }
            }
            let _ = decode(bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(bytes.clone());
            // The same after a valid header, so the parser gets past its first check.
            let mut with_header = HEADER.to_vec();
            with_header.append(&mut bytes);
            let _ = decode(with_header);
        }
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

    /// Audit finding 26: dev and inode numbers are unsigned 64-bit; one at or above 2^63 must load.
    #[test]
    fn stamps_with_huge_inode_numbers_round_trip() {
        let huge = DirStamp { dev: u64::MAX, ino: (1 << 63) + 5, ..STAMP };
        let (stamp, _) = decode(encode(&huge, &records(&sample()))).unwrap();
        assert_eq!(stamp, huge);
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
