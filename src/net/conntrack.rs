//! Connection tracking entries over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK): one dump of the
//! table, then deletion of exactly the entries a caller selects by their tuples. Used by portmap to flush
//! the UDP/SCTP flows of a host port whose target changed, so that a client sending from the same source
//! port follows the new pod instead of the stale entry (kernel uapi `linux/netfilter/nfnetlink_conntrack.h`).
//!
//! Works in the calling thread's network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::net::nft::NetlinkError;
use crate::net::nft::codec::{MsgBuf, attr, error_code, parse_msgs};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFGENMSG_LEN: usize = 4;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// One direction of a connection: addresses, protocol number, ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry: the original direction (as the first packet came) and the reply direction (after NAT:
/// a DNATed flow's reply source is the DNAT target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub zone: u16,
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let ip = attr(buf, CTA_TUPLE_IP)?;
    let proto = attr(buf, CTA_TUPLE_PROTO)?;
    let v4 = |ty| attr(ip, ty).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(|b| IpAddr::V4(Ipv4Addr::from(b)));
    let v6 = |ty| attr(ip, ty).and_then(|v| <[u8; 16]>::try_from(v).ok()).map(|b| IpAddr::V6(Ipv6Addr::from(b)));
    let (src, dst) = match (v4(CTA_IP_V4_SRC), v4(CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (s, d),
        _ => (v6(CTA_IP_V6_SRC)?, v6(CTA_IP_V6_DST)?),
    };
    let port = |ty| attr(proto, ty).and_then(|v| <[u8; 2]>::try_from(v).ok()).map(u16::from_be_bytes).unwrap_or(0);
    Some(Tuple {
        src,
        dst,
        proto: *attr(proto, CTA_PROTO_NUM)?.first()?,
        sport: port(CTA_PROTO_SRC_PORT),
        dport: port(CTA_PROTO_DST_PORT),
    })
}

fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let a = payload.get(NFGENMSG_LEN..)?;
    let zone = attr(a, CTA_ZONE).and_then(|v| <[u8; 2]>::try_from(v).ok()).map(u16::from_be_bytes).unwrap_or(0);
    Some(Entry { orig: parse_tuple(attr(a, CTA_TUPLE_ORIG)?)?, reply: parse_tuple(attr(a, CTA_TUPLE_REPLY)?)?, zone })
}

fn encode_tuple(b: &mut MsgBuf, ty: u16, t: &Tuple) {
    b.nest_start(ty);
    b.nest_start(CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.attr(CTA_IP_V4_SRC, &s.octets());
            b.attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            b.attr(CTA_IP_V6_SRC, &v6(s));
            b.attr(CTA_IP_V6_DST, &v6(d));
        }
    }
    b.nest_end();
    b.nest_start(CTA_TUPLE_PROTO);
    b.attr(CTA_PROTO_NUM, &[t.proto]);
    b.attr(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    b.attr(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    b.nest_end();
    b.nest_end();
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    sock: Socket,
    seq: u32,
}

impl Conntrack {
    pub fn open() -> Result<Conntrack, NetlinkError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Io)?;
        sock.bind_auto().map_err(NetlinkError::Io)?;
        sock.set_cap_ack(true).map_err(NetlinkError::Io)?;
        Ok(Conntrack { sock, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` (sequence `seq`) and feeds the messages of the answer to `on_msg` until the ack or the
    /// end of the dump.
    fn request(&mut self, req: &[u8], seq: u32, mut on_msg: impl FnMut(&[u8])) -> Result<(), NetlinkError> {
        self.sock.send(req, 0).map_err(NetlinkError::Io)?;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0).map_err(NetlinkError::Io)?;
            for m in parse_msgs(&buf)? {
                if m.seq != seq {
                    continue;
                }
                match m.msg_type {
                    NLMSG_ERROR => {
                        return match error_code(m.payload)? {
                            0 => Ok(()),
                            e => Err(NetlinkError::Kernel(e)),
                        };
                    }
                    NLMSG_DONE => return Ok(()),
                    t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => on_msg(m.payload),
                    _ => {}
                }
            }
        }
    }

    /// Every entry of every address family.
    pub fn dump(&mut self) -> Result<Vec<Entry>, NetlinkError> {
        let seq = self.next_seq();
        let mut b = MsgBuf::default();
        b.begin((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, 0);
        b.end();
        let mut out = Vec::new();
        self.request(b.finish()?, seq, |p| out.extend(parse_entry(p)))?;
        Ok(out)
    }

    /// Deletes one entry by its original tuple; `Ok(false)` when it is already gone.
    pub fn delete(&mut self, e: &Entry) -> Result<bool, NetlinkError> {
        let seq = self.next_seq();
        let family = if e.orig.src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        let mut b = MsgBuf::default();
        b.begin((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0);
        encode_tuple(&mut b, CTA_TUPLE_ORIG, &e.orig);
        if e.zone != 0 {
            b.attr(CTA_ZONE, &e.zone.to_be_bytes());
        }
        b.end();
        match self.request(b.finish()?, seq, |_| {}) {
            Ok(()) => Ok(true),
            Err(NetlinkError::Kernel(libc::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the entries `doomed` selects from one dump; returns how many went.
    pub fn delete_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> Result<usize, NetlinkError> {
        let mut n = 0;
        for e in self.dump()?.iter().filter(|e| doomed(e)) {
            n += usize::from(self.delete(e)?);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::codec::attrs;

    #[test]
    fn tuples_encode_and_parse_back() {
        for (s, d) in [("198.18.0.2", "198.18.0.1"), ("fd18::2", "fd18::1")] {
            let t = Tuple { src: s.parse().unwrap(), dst: d.parse().unwrap(), proto: 17, sport: 40000, dport: 5300 };
            let mut b = MsgBuf::default();
            b.begin(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST, 1, 2, 0);
            encode_tuple(&mut b, CTA_TUPLE_ORIG, &t);
            b.end();
            let msgs = parse_msgs(b.finish().unwrap()).unwrap();
            let a = &msgs[0].payload[NFGENMSG_LEN..];
            let (ty, inner) = attrs(a).next().unwrap();
            assert_eq!(ty, CTA_TUPLE_ORIG);
            assert_eq!(parse_tuple(inner), Some(t));
        }
    }
}
