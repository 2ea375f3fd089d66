//! The conntrack step: after a host port changes target, delete exactly the UDP/SCTP flows of that host
//! port that do not go where the mapping now says (TCP is left alone: a stale TCP flow fails visibly and the
//! client reconnects, a UDP "flow" from a fixed source port would stick to the old target forever). One
//! dump of the table per command, not one per mapping as in the reference, and filtered by the flow's
//! destination and NAT target rather than by port alone, so unrelated flows on the same port stay.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Mapping, Proto, Result, nl_err};
use crate::net::conntrack::{Conntrack, Entry};
use crate::net::nft::absent;

fn flushable(p: Proto) -> bool {
    matches!(p, Proto::Udp | Proto::Sctp)
}

/// After ADD: flows to a local address (or to the mapping's host IP) on the host port, except those
/// already DNATed to the new target. `local` are the node's local prefixes (the `local` routing table).
pub fn after_add(mappings: &[Mapping], local: &[IpNetwork]) -> Result<usize> {
    let ms: Vec<&Mapping> = mappings.iter().filter(|m| flushable(m.proto)).collect();
    if ms.is_empty() {
        return Ok(0);
    }
    let is_local = |a: &IpAddr| local.iter().any(|n| n.contains(*a));
    delete(|e| {
        ms.iter().any(|m| {
            e.orig.proto == m.proto.number()
                && e.orig.dport == m.host_port
                && e.orig.dst.is_ipv4() == m.target.is_ipv4()
                && m.host_ip.map_or_else(|| is_local(&e.orig.dst), |h| e.orig.dst == h)
                && !(e.reply.src == m.target && e.reply.sport == m.target_port)
        })
    })
}

/// After DEL: the flows DNATed to a removed mapping's target through its host port.
pub fn after_del(mappings: &[Mapping]) -> Result<usize> {
    let ms: Vec<&Mapping> = mappings.iter().filter(|m| flushable(m.proto)).collect();
    if ms.is_empty() {
        return Ok(0);
    }
    delete(|e| {
        ms.iter().any(|m| {
            e.orig.proto == m.proto.number()
                && e.orig.dport == m.host_port
                && e.reply.src == m.target
                && e.reply.sport == m.target_port
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
