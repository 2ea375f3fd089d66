//! Statements to the expressions nft generates for them (the table in the module documentation).

use std::net::IpAddr;

use super::*;
use crate::net::nft::codec::{MsgBuf, NFPROTO_INET};
use crate::net::nft::expr::Expr;

/// What the encoding of a rule depends on besides its statements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The table's family (`NFPROTO_*`): in `inet`, `ip`/`ip6` matches need `meta nfproto` first.
    pub family: u8,
    /// Sets declared earlier in the same batch, with the id the batch gave them.
    pub set_ids: &'a [(&'a str, u32)],
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn padded_ifname(name: &str) -> Vec<u8> {
    let mut padded = vec![0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    padded[..n].copy_from_slice(&name.as_bytes()[..n]);
    padded
}

/// A wildcard name (`eth*`) compares its bytes without the NUL; a name, all of IFNAMSIZ.
fn ifname_data(name: &str) -> Vec<u8> {
    match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => padded_ifname(name),
    }
}

/// The loads of a concatenation's keys into consecutive registers.
fn key_loads(keys: &[Key], ranges: bool) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut word = 0;
    for k in keys {
        let reg = reg_at(word);
        match k {
            Key::Addr(fam, field) => {
                let (offset, len) = field.place(*fam);
                out.push(Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg });
            }
            Key::L4Proto => {
                out.push(Expr::Meta { key: NFT_META_L4PROTO, reg });
                if ranges {
                    out.push(Expr::Hton { reg, len: 1, size: 2 });
                }
            }
            Key::ThDport => {
                out.push(Expr::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: TH_DPORT.0, len: TH_DPORT.1, reg })
            }
        }
        word += k.words();
    }
    out
}

/// The expressions of one statement.
fn exprs_of(s: &Stmt, ctx: &Ctx<'_>) -> Vec<Expr> {
    let meta = |key, op, data: Vec<u8>| vec![Expr::Meta { key, reg: NFT_REG_1 }, Expr::Cmp { op, data }];
    let meta_eq = |key, data: Vec<u8>| meta(key, CmpOp::Eq, data);
    let verdict = |code, chain: Option<&String>| vec![Expr::Verdict { code, chain: chain.cloned() }];
    let set_id = |set: &str| ctx.set_ids.iter().find(|(n, _)| *n == set).map(|(_, id)| *id);
    let ct_bits = |key: CtKey, mask: u32, xor: u32| {
        [
            Expr::Ct { key: key.id() },
            Expr::Bitwise { mask: mask.to_ne_bytes().to_vec(), xor: xor.to_ne_bytes().to_vec(), named_op: true },
        ]
    };
    match s {
        Stmt::IfName { dir, op, name } => {
            let key = if *dir == IfDir::In { NFT_META_IIFNAME } else { NFT_META_OIFNAME };
            meta(key, *op, ifname_data(name))
        }
        Stmt::EtherSaddr(mac) => vec![
            Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: ETHER_SADDR.0, len: ETHER_SADDR.1, reg: NFT_REG_1 },
            Expr::Cmp { op: CmpOp::Eq, data: mac.parse::<Mac>().map(|m| m.octets().to_vec()).unwrap_or_default() },
        ],
        Stmt::NfProto(fam) => meta_eq(NFT_META_NFPROTO, vec![fam.nfproto()]),
        Stmt::L4Proto(op, p) => meta(NFT_META_L4PROTO, *op, vec![*p]),
        Stmt::Addr { field, op, net } => {
            let fam = s.ip_family().expect("an address match");
            let (offset, full) = field.place(fam);
            let bytes = octets(net.network());
            let prefix = u32::from(net.prefix());
            if prefix % 8 == 0 {
                // nft compares only the bytes the prefix covers.
                let len = prefix / 8;
                vec![
                    Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg: NFT_REG_1 },
                    Expr::Cmp { op: *op, data: bytes[..len as usize].to_vec() },
                ]
            } else {
                let mask = octets(net.mask());
                vec![
                    Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len: full, reg: NFT_REG_1 },
                    Expr::Bitwise { mask, xor: vec![0; full as usize], named_op: false },
                    Expr::Cmp { op: *op, data: bytes },
                ]
            }
        }
        Stmt::AddrInSet { fam, field, set, neg } => {
            let (offset, len) = field.place(*fam);
            vec![
                Expr::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg: NFT_REG_1 },
                Expr::Lookup { set: set.clone(), set_id: set_id(set), inv: *neg, dreg: None },
            ]
        }
        Stmt::FibDaddrLocal => vec![
            Expr::Fib { flags: NFTA_FIB_F_DADDR, result: NFT_FIB_RESULT_ADDRTYPE },
            Expr::Cmp { op: CmpOp::Eq, data: RTN_LOCAL.to_ne_bytes().to_vec() },
        ],
        Stmt::CtMasked { key, mask, op, value } => {
            let mut v = ct_bits(*key, *mask, 0).to_vec();
            v.push(Expr::Cmp { op: *op, data: value.to_ne_bytes().to_vec() });
            v
        }
        Stmt::CtMarkOr(bits) => {
            let mut v = ct_bits(CtKey::Mark, !bits, *bits).to_vec();
            v.push(Expr::CtSet { key: NFT_CT_MARK });
            v
        }
        Stmt::Lookup { keys, set, ranges } => {
            let mut v = key_loads(keys, *ranges);
            v.push(Expr::Lookup { set: set.clone(), set_id: set_id(set), inv: false, dreg: None });
            v
        }
        Stmt::DnatMap { fam, keys, map, ranges } => {
            let mut v = key_loads(keys, *ranges);
            v.push(Expr::Lookup { set: map.clone(), set_id: set_id(map), inv: false, dreg: Some(NFT_REG_1) });
            let addr_words = Key::Addr(*fam, AddrField::Daddr).words();
            let proto_reg = (!ranges).then(|| reg_at(addr_words));
            v.push(Expr::Nat {
                nat_type: NFT_NAT_DNAT,
                family: u32::from(fam.nfproto()),
                addr_reg: NFT_REG_1,
                proto_reg,
            });
            v
        }
        Stmt::Masquerade => vec![Expr::Masq],
        Stmt::Jump(c) => verdict(NFT_JUMP, Some(c)),
        Stmt::Goto(c) => verdict(NFT_GOTO, Some(c)),
        Stmt::Return => verdict(NFT_RETURN, None),
        Stmt::Drop => verdict(NF_DROP, None),
        Stmt::Accept => verdict(NF_ACCEPT, None),
        Stmt::Counter => vec![Expr::Counter],
        // Only produced by decoding: what it was is not known, so nothing can be written.
        Stmt::Other(_) => Vec::new(),
    }
}

/// Appends the expressions of `stmts` (inside an open NFTA_RULE_EXPRESSIONS nest).
pub(crate) fn encode(buf: &mut MsgBuf, ctx: &Ctx<'_>, stmts: &[Stmt]) {
    let mut known: Option<IpFamily> = None;
    for s in stmts {
        if let Stmt::NfProto(f) = s {
            known = Some(*f);
        }
        if let Some(fam) = s.ip_family().filter(|f| ctx.family == NFPROTO_INET && known != Some(*f)) {
            for e in exprs_of(&Stmt::NfProto(fam), ctx) {
                e.encode(buf);
            }
            known = Some(fam);
        }
        for e in exprs_of(s, ctx) {
            e.encode(buf);
        }
    }
}
