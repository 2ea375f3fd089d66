//! Expressions read from the kernel back to statements; what rcni does not write is [`Stmt::Other`].

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::*;
use crate::net::nft::expr::{Expr, decode_list};

fn fam_of_byte(b: u8) -> Option<IpFamily> {
    match i32::from(b) {
        libc::NFPROTO_IPV4 => Some(IpFamily::V4),
        libc::NFPROTO_IPV6 => Some(IpFamily::V6),
        _ => None,
    }
}

/// The prefix length of a contiguous mask, if it is one.
fn mask_prefix(mask: &[u8]) -> Option<u8> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous =
        mask.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1)).skip(ones as usize).all(|b| b == 0);
    contiguous.then_some(ones as u8)
}

/// The network of `data` (the first bytes of an address of `fam`) with `prefix` bits.
fn net_of(fam: IpFamily, data: &[u8], prefix: u8) -> Option<IpNetwork> {
    let mut full = vec![0u8; if fam == IpFamily::V4 { 4 } else { 16 }];
    full.get_mut(..data.len())?.copy_from_slice(data);
    let ip = match fam {
        IpFamily::V4 => IpAddr::from(<[u8; 4]>::try_from(full.as_slice()).ok()?),
        IpFamily::V6 => IpAddr::from(<[u8; 16]>::try_from(full.as_slice()).ok()?),
    };
    IpNetwork::new(ip, prefix).ok()
}

/// One statement from the start of `list`, with how many expressions it used. `known`: the family an
/// earlier `meta nfproto` established (a load at offset 8 is the IPv4 TTL, or the IPv6 source).
fn take_stmt(list: &[Expr], known: Option<IpFamily>) -> (Stmt, usize) {
    let at = |i: usize| list.get(i);
    match (&list[0], at(1), at(2)) {
        (Expr::Meta { key, .. }, Some(Expr::Cmp { op, data }), _) => {
            let s = match (*key, *op, data.as_slice()) {
                (NFT_META_IIFNAME | NFT_META_OIFNAME, op, name) if !name.is_empty() && name.len() <= IFNAMSIZ => {
                    let dir = if *key == NFT_META_IIFNAME { IfDir::In } else { IfDir::Out };
                    let name = if name.len() == IFNAMSIZ {
                        String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
                    } else {
                        format!("{}*", String::from_utf8_lossy(name))
                    };
                    Stmt::IfName { dir, op, name }
                }
                (NFT_META_NFPROTO, CmpOp::Eq, [b]) => match fam_of_byte(*b) {
                    Some(f) => Stmt::NfProto(f),
                    None => Stmt::Other(format!("meta nfproto {b}")),
                },
                (NFT_META_L4PROTO, op, [p]) => Stmt::L4Proto(op, *p),
                (key, _, _) => Stmt::Other(format!("meta {key}")),
            };
            (s, 2)
        }
        (
            Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: 6, len: 6, .. },
            Some(Expr::Cmp { op: CmpOp::Eq, data }),
            _,
        ) if data.len() == 6 => {
            let mac = data.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            (Stmt::EtherSaddr(mac), 2)
        }
        (Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, .. }, next, after) => {
            let Some((fam, field)) = AddrField::at(*offset, *len).filter(|(f, _)| known.is_none_or(|k| k == *f)) else {
                return (Stmt::Other(format!("{:?}", list[0])), 1);
            };
            let full = field.place(fam).1;
            match (next, after) {
                (Some(Expr::Lookup { set, inv, .. }), _) if *len == full => {
                    (Stmt::AddrInSet { fam, field, set: set.clone(), neg: *inv }, 2)
                }
                (Some(Expr::Cmp { op, data }), _) if data.len() == *len as usize => {
                    match net_of(fam, data, (*len * 8) as u8) {
                        Some(net) => (Stmt::Addr { field, op: *op, net }, 2),
                        None => (Stmt::Other(format!("{:?}", list[0])), 1),
                    }
                }
                (Some(Expr::Bitwise { mask, xor, .. }), Some(Expr::Cmp { op, data }))
                    if *len == full && mask.len() == full as usize && xor.iter().all(|b| *b == 0) =>
                {
                    match mask_prefix(mask).and_then(|p| net_of(fam, data, p)) {
                        Some(net) if net.network() == net.ip() => (Stmt::Addr { field, op: *op, net }, 3),
                        _ => (Stmt::Other(format!("{:?}", list[0])), 1),
                    }
                }
                _ => (Stmt::Other(format!("{:?}", list[0])), 1),
            }
        }
        (Expr::Verdict { code, chain }, _, _) => {
            let s = match (*code, chain) {
                (NFT_JUMP, Some(c)) => Stmt::Jump(c.clone()),
                (NFT_GOTO, Some(c)) => Stmt::Goto(c.clone()),
                (NFT_RETURN, _) => Stmt::Return,
                (NF_DROP, _) => Stmt::Drop,
                (NF_ACCEPT, _) => Stmt::Accept,
                (code, _) => Stmt::Other(format!("verdict {code}")),
            };
            (s, 1)
        }
        (Expr::Counter, _, _) => (Stmt::Counter, 1),
        (Expr::Masq, _, _) => (Stmt::Masquerade, 1),
        (e, _, _) => (Stmt::Other(format!("{e:?}")), 1),
    }
}

/// The statements of a rule from its NFTA_RULE_EXPRESSIONS payload.
pub(crate) fn decode(exprs: &[u8]) -> Vec<Stmt> {
    let list = decode_list(exprs);
    let mut out: Vec<Stmt> = Vec::new();
    let mut known = None;
    let mut i = 0;
    while i < list.len() {
        let (stmt, used) = take_stmt(&list[i..], known);
        if let Stmt::NfProto(f) = stmt {
            known = Some(f);
        }
        // The `meta nfproto` nft puts before an ip/ip6 match is implied by it (nft does not list it).
        if let (Some(Stmt::NfProto(f)), Some(g)) = (out.last(), stmt.ip_family()) {
            if *f == g {
                out.pop();
            }
        }
        out.push(stmt);
        i += used;
    }
    out
}
