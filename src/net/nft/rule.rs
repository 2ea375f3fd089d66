//! Rules as typed statements: what rcni writes (and reads back) in a chain, encoded as the nf_tables
//! expressions `nft` itself generates for the same text, so that `nft list` shows them identically.
//!
//! | statement               | expressions                                                     |
//! |-------------------------|-----------------------------------------------------------------|
//! | `iifname "veth1"`       | `meta load iifname => reg 1`, `cmp eq reg 1 <16 bytes, NUL-padded>` |
//! | `ether saddr <mac>`     | `payload load 6b @ link header + 6 => reg 1`, `cmp eq reg 1 <mac>`  |
//! | `jump c`, `goto c`, `return`, `drop`, `accept` | `immediate reg 0 <verdict>`              |
//!
//! Reading goes the other way; anything else is kept as [`Stmt::Other`] (so a rule with foreign
//! statements never looks like ours), and `counter` is recognised because operators add it.

use std::fmt;

use super::codec::{MsgBuf, attr, attrs};
use crate::net::Mac;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_META_IIFNAME: u32 = 6;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const IFNAMSIZ: usize = 16;
/// Offset and length of the source MAC in the Ethernet header.
const ETHER_SADDR: (u32, u32) = (6, 6);

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// One statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `iifname "<name>"`
    IifName(String),
    /// `ether saddr <mac>` (lower case, as nft prints it).
    EtherSaddr(String),
    Jump(String),
    Goto(String),
    Return,
    Drop,
    Accept,
    /// `counter` (ignored when comparing: an operator may add counters).
    Counter,
    /// Anything else, described by its expression names.
    Other(String),
}

impl Stmt {
    pub fn target(&self) -> Option<&str> {
        match self {
            Stmt::Jump(t) | Stmt::Goto(t) => Some(t),
            _ => None,
        }
    }

    /// `ether saddr <mac>`.
    pub fn ether_saddr(mac: Mac) -> Stmt {
        Stmt::EtherSaddr(mac.to_string())
    }
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::IifName(n) => write!(f, "iifname {n:?}"),
            Stmt::EtherSaddr(m) => write!(f, "ether saddr {m}"),
            Stmt::Jump(t) => write!(f, "jump {t}"),
            Stmt::Goto(t) => write!(f, "goto {t}"),
            Stmt::Return => write!(f, "return"),
            Stmt::Drop => write!(f, "drop"),
            Stmt::Accept => write!(f, "accept"),
            Stmt::Counter => write!(f, "counter"),
            Stmt::Other(j) => write!(f, "{j}"),
        }
    }
}

fn u32_attr(buf: &mut MsgBuf, ty: u16, v: u32) {
    buf.attr_u32_be(ty, v);
}

fn expr(buf: &mut MsgBuf, name: &str, body: impl FnOnce(&mut MsgBuf)) {
    buf.nest_start(NFTA_LIST_ELEM);
    buf.attr_str(NFTA_EXPR_NAME, name);
    buf.nest_start(NFTA_EXPR_DATA);
    body(buf);
    buf.nest_end();
    buf.nest_end();
}

fn cmp_eq(buf: &mut MsgBuf, data: &[u8]) {
    expr(buf, "cmp", |b| {
        u32_attr(b, NFTA_CMP_SREG, NFT_REG_1);
        u32_attr(b, NFTA_CMP_OP, NFT_CMP_EQ);
        b.nest_start(NFTA_CMP_DATA);
        b.attr(NFTA_DATA_VALUE, data);
        b.nest_end();
    });
}

fn verdict(buf: &mut MsgBuf, code: i32, chain: Option<&str>) {
    expr(buf, "immediate", |b| {
        u32_attr(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        b.nest_start(NFTA_IMMEDIATE_DATA);
        b.nest_start(NFTA_DATA_VERDICT);
        u32_attr(b, NFTA_VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            b.attr_str(NFTA_VERDICT_CHAIN, c);
        }
        b.nest_end();
        b.nest_end();
    });
}

/// Appends the expressions of `stmts` (inside an open NFTA_RULE_EXPRESSIONS nest). Statements that
/// only exist for reading ([`Stmt::Other`]) cannot be written and are refused by the caller's
/// construction; `counter` is written as a plain counter.
pub(crate) fn encode(buf: &mut MsgBuf, stmts: &[Stmt]) {
    for s in stmts {
        match s {
            Stmt::IifName(name) => {
                expr(buf, "meta", |b| {
                    u32_attr(b, NFTA_META_DREG, NFT_REG_1);
                    u32_attr(b, NFTA_META_KEY, NFT_META_IIFNAME);
                });
                let mut padded = [0u8; IFNAMSIZ];
                let n = name.len().min(IFNAMSIZ - 1);
                padded[..n].copy_from_slice(&name.as_bytes()[..n]);
                cmp_eq(buf, &padded);
            }
            Stmt::EtherSaddr(mac) => {
                expr(buf, "payload", |b| {
                    u32_attr(b, NFTA_PAYLOAD_DREG, NFT_REG_1);
                    u32_attr(b, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_LL_HEADER);
                    u32_attr(b, NFTA_PAYLOAD_OFFSET, ETHER_SADDR.0);
                    u32_attr(b, NFTA_PAYLOAD_LEN, ETHER_SADDR.1);
                });
                let bytes = mac.parse::<Mac>().map(|m| m.octets()).unwrap_or_default();
                cmp_eq(buf, &bytes);
            }
            Stmt::Jump(c) => verdict(buf, NFT_JUMP, Some(c)),
            Stmt::Goto(c) => verdict(buf, NFT_GOTO, Some(c)),
            Stmt::Return => verdict(buf, NFT_RETURN, None),
            Stmt::Drop => verdict(buf, NF_DROP, None),
            Stmt::Accept => verdict(buf, NF_ACCEPT, None),
            Stmt::Counter => expr(buf, "counter", |_| {}),
            Stmt::Other(_) => {}
        }
    }
}

/// One decoded expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Meta { key: u32 },
    Payload { base: u32, offset: u32, len: u32 },
    CmpEq(Vec<u8>),
    Verdict { code: i32, chain: Option<String> },
    Counter,
    Unknown(String),
}

fn be32(v: &[u8]) -> Option<u32> {
    v.try_into().ok().map(u32::from_be_bytes)
}

fn decode_expr(elem: &[u8]) -> Expr {
    let name =
        attr(elem, NFTA_EXPR_NAME).map(|n| String::from_utf8_lossy(n.strip_suffix(&[0]).unwrap_or(n)).into_owned());
    let data = attr(elem, NFTA_EXPR_DATA).unwrap_or_default();
    let get = |ty| attr(data, ty).and_then(be32);
    let name = name.unwrap_or_default();
    let decoded = match name.as_str() {
        "meta" if get(NFTA_META_DREG).is_some() => get(NFTA_META_KEY).map(|key| Expr::Meta { key }),
        "payload" if get(NFTA_PAYLOAD_DREG).is_some() => Some(Expr::Payload {
            base: get(NFTA_PAYLOAD_BASE).unwrap_or(u32::MAX),
            offset: get(NFTA_PAYLOAD_OFFSET).unwrap_or(u32::MAX),
            len: get(NFTA_PAYLOAD_LEN).unwrap_or(u32::MAX),
        }),
        "cmp" if get(NFTA_CMP_OP) == Some(NFT_CMP_EQ) => {
            attr(data, NFTA_CMP_DATA).and_then(|d| attr(d, NFTA_DATA_VALUE)).map(|v| Expr::CmpEq(v.to_vec()))
        }
        "immediate" if get(NFTA_IMMEDIATE_DREG) == Some(NFT_REG_VERDICT) => {
            attr(data, NFTA_IMMEDIATE_DATA).and_then(|d| attr(d, NFTA_DATA_VERDICT)).and_then(|v| {
                let code = attr(v, NFTA_VERDICT_CODE).and_then(be32)? as i32;
                let chain = attr(v, NFTA_VERDICT_CHAIN)
                    .map(|c| String::from_utf8_lossy(c.strip_suffix(&[0]).unwrap_or(c)).into_owned());
                Some(Expr::Verdict { code, chain })
            })
        }
        "counter" => Some(Expr::Counter),
        _ => None,
    };
    decoded.unwrap_or(Expr::Unknown(name))
}

/// The statements of a rule from its NFTA_RULE_EXPRESSIONS payload.
pub(crate) fn decode(exprs: &[u8]) -> Vec<Stmt> {
    let list: Vec<Expr> = attrs(exprs).filter(|(t, _)| *t == NFTA_LIST_ELEM).map(|(_, e)| decode_expr(e)).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let next = list.get(i + 1);
        let (stmt, used) = match (&list[i], next) {
            (Expr::Meta { key: NFT_META_IIFNAME }, Some(Expr::CmpEq(v))) if v.len() == IFNAMSIZ => {
                let name = v.split(|b| *b == 0).next().unwrap_or_default();
                (Stmt::IifName(String::from_utf8_lossy(name).into_owned()), 2)
            }
            (Expr::Payload { base: NFT_PAYLOAD_LL_HEADER, offset: 6, len: 6 }, Some(Expr::CmpEq(v)))
                if v.len() == 6 =>
            {
                let mac = v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
                (Stmt::EtherSaddr(mac), 2)
            }
            (Expr::Verdict { code, chain }, _) => {
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
            (Expr::Counter, _) => (Stmt::Counter, 1),
            (e, _) => (Stmt::Other(format!("{e:?}")), 1),
        };
        out.push(stmt);
        i += used;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `nft --debug=netlink` shows for the same statements (see the module table).
    #[test]
    fn encoding_matches_nft_and_reads_back() {
        let stmts = vec![
            Stmt::IifName("veth1".into()),
            Stmt::Jump("c1".into()),
            Stmt::EtherSaddr("02:00:00:00:00:01".into()),
            Stmt::Return,
            Stmt::Drop,
            Stmt::Counter,
        ];
        let mut b = MsgBuf::default();
        b.nest_start(4);
        encode(&mut b, &stmts);
        b.nest_end();
        let nest = attrs(&b.data).next().unwrap().1;
        let exprs: Vec<&[u8]> = attrs(nest).map(|(_, e)| e).collect();
        let cmp = attr(attr(exprs[1], NFTA_EXPR_DATA).unwrap(), NFTA_CMP_DATA).unwrap();
        assert_eq!(attr(cmp, NFTA_DATA_VALUE).unwrap(), b"veth1\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(decode(nest), stmts);
    }

    #[test]
    fn foreign_expressions_are_other() {
        let mut b = MsgBuf::default();
        b.nest_start(4);
        expr(&mut b, "meta", |b| {
            u32_attr(b, NFTA_META_DREG, NFT_REG_1);
            u32_attr(b, NFTA_META_KEY, 7); // oifname
        });
        cmp_eq(&mut b, &[0; 16]);
        expr(&mut b, "lookup", |_| {});
        b.nest_end();
        let nest = attrs(&b.data).next().unwrap().1;
        let s = decode(nest);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|s| matches!(s, Stmt::Other(_))), "{s:?}");
    }
}
