//! A range set: ranges of one family, pairwise disjoint; one address is taken from each set per ADD. Its
//! iterator gives the reference's round-robin order: after `last_reserved_ip.<N>` when that lies in the set,
//! else from the first range's start, every range in order, wrapping around once.

use std::fmt;
use std::net::IpAddr;

use super::range::{Range, canonical, from_u128, to_u128};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    Empty,
    MixedFamilies,
    Overlap(Box<(Range, Range)>),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Empty => write!(f, "empty range set"),
            SetError::MixedFamilies => write!(
                f,
                "mixed address families: a range set holds either IPv4 or IPv6 ranges; \
                 put the other family in its own range set for dual-stack"
            ),
            SetError::Overlap(p) => write!(f, "subnets {} and {} overlap", p.0, p.1),
        }
    }
}

/// A list of ranges of one family; one address is taken from each range set per ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
    /// Positions in `ranges`, by start address: ranges are disjoint, so the one holding an address is found
    /// by binary search (runtime-supplied sets may be long).
    by_start: Vec<usize>,
}

impl RangeSet {
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, SetError> {
        let Some(first) = ranges.first() else {
            return Err(SetError::Empty);
        };
        if ranges.iter().any(|r| r.is_v4() != first.is_v4()) {
            return Err(SetError::MixedFamilies);
        }
        if let Some((a, b)) = first_overlap(&ranges.iter().collect::<Vec<_>>()) {
            return Err(SetError::Overlap(Box::new((ranges[a].clone(), ranges[b].clone()))));
        }
        let mut by_start: Vec<usize> = (0..ranges.len()).collect();
        by_start.sort_unstable_by_key(|&i| to_u128(ranges[i].start));
        Ok(RangeSet { ranges, by_start })
    }

    pub fn is_v4(&self) -> bool {
        self.ranges[0].is_v4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.position_of(ip).map(|i| &self.ranges[i])
    }

    /// Where in `ranges` the range holding `ip` is.
    fn position_of(&self, ip: IpAddr) -> Option<usize> {
        let n = to_u128(canonical(ip));
        let after = self.by_start.partition_point(|&i| to_u128(self.ranges[i].start) <= n);
        let i = *self.by_start.get(after.checked_sub(1)?)?;
        self.ranges[i].contains(ip).then_some(i)
    }

    pub fn capacity(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Iterate the allocatable addresses in the reference's order: after `last_reserved` if it lies in
    /// the set, else from the first range's start; wrapping once around the whole set.
    pub fn iter_from(&self, last_reserved: Option<IpAddr>) -> SetIter<'_> {
        let mut idx = 0;
        let mut cur = to_u128(self.ranges[0].start);
        if let Some(last) = last_reserved.map(canonical) {
            if let Some(i) = self.position_of(last) {
                let n = to_u128(last);
                let (_, e) = self.ranges[i].bounds();
                if n == e {
                    idx = (i + 1) % self.ranges.len();
                    cur = to_u128(self.ranges[idx].start);
                } else {
                    idx = i;
                    cur = n + 1;
                }
            }
        }
        let total = self
            .ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add((r.bounds().1 - r.bounds().0).saturating_add(1)));
        SetIter { set: self, idx, cur, left: total }
    }
}

/// Two overlapping ranges of `ranges`, by their positions (lower first); None if all are disjoint. Sorted by
/// family and start, two ranges overlap only if some neighbours do (a range that overlaps a later one
/// overlaps the one right after it too), so this is O(n log n): ranges may come from the runtime.
pub fn first_overlap(ranges: &[&Range]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_unstable_by_key(|&i| (!ranges[i].is_v4(), to_u128(ranges[i].start)));
    order.windows(2).find(|w| ranges[w[0]].overlaps(ranges[w[1]])).map(|w| (w[0].min(w[1]), w[0].max(w[1])))
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Yields `(address, range)` pairs; visits every position of the set at most once.
pub struct SetIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: u128,
    left: u128,
}

impl<'a> Iterator for SetIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            self.left -= 1;
            let r = &self.set.ranges[self.idx];
            let n = self.cur;
            if n == r.bounds().1 {
                self.idx = (self.idx + 1) % self.set.ranges.len();
                self.cur = to_u128(self.set.ranges[self.idx].start);
            } else {
                self.cur = n + 1;
            }
            if r.allocatable_n(n) {
                return Some((from_u128(r.is_v4(), n), r));
            }
        }
        None
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ipam::host_local::range::tests::{ip, range, range_se};
    use std::net::Ipv4Addr;

    pub(crate) fn set(r: Vec<Range>) -> RangeSet {
        RangeSet::new(r).unwrap()
    }

    fn all(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        s.iter_from(last.map(ip)).map(|(a, _)| a.to_string()).collect()
    }
    #[test]
    fn small_prefixes() {
        for (c, ok) in [
            ("10.0.0.0/30", true),
            ("10.0.0.0/31", false),
            ("10.0.0.0/32", false),
            ("fd00::/126", true),
            ("fd00::/127", false),
            ("fd00::/128", false),
        ] {
            let (a, p) = c.split_once('/').unwrap();
            let r = Range::new(ip(a), p.parse().unwrap(), None, None, None);
            assert_eq!(r.is_ok(), ok, "{c}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().starts_with(&format!("Network {c} too small to allocate from")), "{e}");
                assert_eq!(e.field(), "subnet");
            }
        }
        // /30: .0 network, .1 gateway, .3 broadcast: only .2 is left.
        let s = set(vec![range("10.0.0.0/30")]);
        assert_eq!(all(&s, None), vec!["10.0.0.2"]);
        assert_eq!(s.capacity(), 1);
        // /126: ::0 network, ::1 gateway; ::2 and ::3 (no broadcast in IPv6).
        let s = set(vec![range("fd00::/126")]);
        assert_eq!(all(&s, None), vec!["fd00::2", "fd00::3"]);
        assert_eq!(s.capacity(), 2);
    }
    #[test]
    fn set_validation() {
        assert_eq!(RangeSet::new(vec![]), Err(SetError::Empty));
        assert_eq!(RangeSet::new(vec![range("10.0.0.0/24"), range("fd00::/64")]), Err(SetError::MixedFamilies));
        let e =
            RangeSet::new(vec![range("10.0.0.0/24"), range_se("10.0.0.0/16", "10.0.0.200", "10.0.1.10")]).unwrap_err();
        assert_eq!(e.to_string(), "subnets 10.0.0.1-10.0.0.254 and 10.0.0.200-10.0.1.10 overlap");
        // Same subnet, disjoint stretches: fine (overlap is tested on start/end like the reference).
        set(vec![range_se("10.0.0.0/24", "10.0.0.1", "10.0.0.9"), range_se("10.0.0.0/24", "10.0.0.10", "10.0.0.20")]);
    }
    #[test]
    fn overlap_check_finds_any_overlapping_pair() {
        let many: Vec<Range> = (0..20_000u32)
            .map(|i| {
                let base = Ipv4Addr::from(0x0a00_0000 + i * 4);
                let start = Ipv4Addr::from(u32::from(base) + 1);
                let end = Ipv4Addr::from(u32::from(base) + 2);
                Range::new(base.into(), 30, Some(start.into()), Some(end.into()), None).unwrap()
            })
            .rev()
            .collect();
        assert!(RangeSet::new(many.clone()).is_ok());
        let mut clash = many.clone();
        clash.insert(7, range_se("10.0.0.0/24", "10.0.0.5", "10.0.0.6"));
        let e = RangeSet::new(clash.clone()).unwrap_err();
        assert_eq!(e.to_string(), "subnets 10.0.0.5-10.0.0.6 and 10.0.0.5-10.0.0.6 overlap");
        let refs: Vec<&Range> = clash.iter().collect();
        let (a, b) = first_overlap(&refs).unwrap();
        assert!(a < b && clash[a].overlaps(&clash[b]), "{a} {b}");
        // Families never overlap each other.
        let mixed = [range("10.0.0.0/24"), range("fd00::/120")];
        assert_eq!(first_overlap(&mixed.iter().collect::<Vec<_>>()), None);
    }
    #[test]
    fn iteration_skips_gateway_network_broadcast() {
        // Gateway in the middle, explicit start at the network address and end at the broadcast.
        let r =
            Range::new(ip("10.0.0.0"), 29, Some(ip("10.0.0.0")), Some(ip("10.0.0.7")), Some(ip("10.0.0.4"))).unwrap();
        let s = set(vec![r]);
        assert_eq!(all(&s, None), vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(s.capacity(), 5);
        // With a non-.1 gateway, .1 is allocatable (the reference's default start).
        let r = Range::new(ip("10.0.0.0"), 29, None, None, Some(ip("10.0.0.6"))).unwrap();
        assert_eq!(all(&set(vec![r]), None), vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        // IPv6: the last address is allocatable, ::0 is not.
        let r = Range::new(ip("fd00::"), 125, Some(ip("fd00::")), None, None).unwrap();
        assert_eq!(all(&set(vec![r]), None).last().unwrap(), "fd00::7");
        assert_eq!(all(&set(vec![range("fd00::/125")]), None).len(), 6);
    }
    #[test]
    fn round_robin_and_wrap() {
        let s = set(vec![range("10.0.0.0/29")]); // .2 .. .6 allocatable
        assert_eq!(all(&s, Some("10.0.0.4")), vec!["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        // Last reserved at the end: wraps to the start.
        assert_eq!(all(&s, Some("10.0.0.6"))[0], "10.0.0.2");
        // Last reserved outside the set (config changed): start from the beginning.
        assert_eq!(all(&s, Some("10.9.0.4"))[0], "10.0.0.2");
        assert_eq!(all(&s, Some("fd00::4"))[0], "10.0.0.2");
    }
    #[test]
    fn multi_range_wrap() {
        let s = set(vec![
            range_se("10.0.0.0/24", "10.0.0.10", "10.0.0.11"),
            range_se("10.0.5.0/24", "10.0.5.1", "10.0.5.3"),
        ]);
        // 10.0.5.1 is range 2's gateway.
        assert_eq!(all(&s, None), vec!["10.0.0.10", "10.0.0.11", "10.0.5.2", "10.0.5.3"]);
        assert_eq!(all(&s, Some("10.0.0.11")), vec!["10.0.5.2", "10.0.5.3", "10.0.0.10", "10.0.0.11"]);
        assert_eq!(all(&s, Some("10.0.5.3")), vec!["10.0.0.10", "10.0.0.11", "10.0.5.2", "10.0.5.3"]);
        assert_eq!(s.to_string(), "10.0.0.10-10.0.0.11,10.0.5.1-10.0.5.3");
        assert_eq!(s.capacity(), 4);
    }
}
