//! The conntrack step: after a host port changes target, delete exactly the UDP/SCTP flows of that host
//! port that do not go where the mapping now says (TCP is left alone: a stale TCP flow fails visibly and the
//! client reconnects, a UDP "flow" from a fixed source port would stick to the old target forever). One
//! dump of the table per command, not one per mapping as in the reference, and filtered by the flow's
//! destination and NAT target rather than by port alone, so unrelated flows on the same port stay.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Element, Proto, Result, nl_err};
use crate::net::conntrack::{Conntrack, Entry};
use crate::net::nft::absent;

/// The host ports `first..=last` forwarded to `target`'s ports from `target_first` on (a mapping is a
/// span of one port; a range keeps the port).
struct Span {
    proto: Proto,
    first: u16,
    last: u16,
    host_ip: Option<IpAddr>,
    target: IpAddr,
    target_first: u16,
}

impl Span {
    /// The target port of host port `port`, if the span has it.
    fn target_port(&self, port: u16) -> Option<u16> {
        (self.first..=self.last).contains(&port).then(|| self.target_first + (port - self.first))
    }
}

/// The UDP/SCTP spans of `elements` (TCP is left alone).
fn spans(elements: &[Element]) -> Vec<Span> {
    elements
        .iter()
        .filter_map(|e| match e {
            Element::Mapping(m) => Some(Span {
                proto: m.proto,
                first: m.host_port,
                last: m.host_port,
                host_ip: m.host_ip,
                target: m.target,
                target_first: m.target_port,
            }),
            Element::Range(r) => Some(Span {
                proto: r.proto,
                first: r.first,
                last: r.last,
                host_ip: r.host_ip,
                target: r.target,
                target_first: r.first,
            }),
            Element::Hairpin(_) => None,
        })
        .filter(|s| matches!(s.proto, Proto::Udp | Proto::Sctp))
        .collect()
}

/// After ADD: flows to a local address (or to the mapping's host IP) on a host port of `elements`,
/// except those already DNATed to the new target. `local` are the node's local prefixes (the `local`
/// routing table).
pub fn after_add(elements: &[Element], local: &[IpNetwork]) -> Result<usize> {
    let ss = spans(elements);
    if ss.is_empty() {
        return Ok(0);
    }
    let is_local = |a: &IpAddr| local.iter().any(|n| n.contains(*a));
    delete(|e| {
        ss.iter().any(|s| {
            e.orig.proto == s.proto.number()
                && e.orig.dst.is_ipv4() == s.target.is_ipv4()
                && s.target_port(e.orig.dport).is_some_and(|tp| !(e.reply.src == s.target && e.reply.sport == tp))
                && s.host_ip.map_or_else(|| is_local(&e.orig.dst), |h| e.orig.dst == h)
        })
    })
}

/// After DEL: the flows DNATed to a removed mapping's target through its host port.
pub fn after_del(elements: &[Element]) -> Result<usize> {
    let ss = spans(elements);
    if ss.is_empty() {
        return Ok(0);
    }
    delete(|e| {
        ss.iter().any(|s| {
            e.orig.proto == s.proto.number()
                && e.reply.src == s.target
                && s.target_port(e.orig.dport) == Some(e.reply.sport)
        })
    })
}

fn delete(doomed: impl Fn(&Entry) -> bool) -> Result<usize> {
    let mut ct = match Conntrack::open() {
        Ok(c) => c,
        Err(e) if absent(&e) => return Ok(0),
        Err(e) => return Err(nl_err("opening the ctnetlink socket", e)),
    };
    match ct.delete_where(doomed) {
        Ok(n) => Ok(n),
        // No conntrack in this kernel / namespace: nothing is tracked, nothing is stale.
        Err(e) if absent(&e) => Ok(0),
        Err(e) => Err(nl_err("flushing the host port's conntrack entries", e)),
    }
}
