//! nf_tables expressions, the layer below [`super::rule`]'s statements: each one encoded with the
//! attributes, in the order, that `nft` 1.0.6 sends (libnftnl's `*_build` functions), and decoded back.
//! The bytes are pinned by the tests in `rule.rs` (captured with `scripts/nft-bytes`).

use super::codec::{MsgBuf, attr, attrs};

pub(super) const NFTA_LIST_ELEM: u16 = 1;
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
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_BITWISE_OP: u16 = 6;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_SREG: u16 = 4;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFT_BYTEORDER_HTON: u32 = 1;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
/// `NFT_BITWISE_BOOL` (`(reg & mask) ^ xor`), the operation nft names explicitly in some rules.
const NFT_BITWISE_BOOL: u32 = 0;

pub(super) const NFT_REG_VERDICT: u32 = 0;
pub(super) const NFT_REG_1: u32 = 1;
/// `NFT_LOOKUP_F_INV`: the lookup matches when the key is *not* in the set.
const NFT_LOOKUP_F_INV: u32 = 1;

/// The comparison of a `cmp` expression (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// One expression, as encoded on the wire (register 1 for data, register 0 for verdicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    /// Loads a meta key into `reg`.
    Meta {
        key: u32,
        reg: u32,
    },
    /// Loads `len` bytes at `offset` of header `base` into `reg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        reg: u32,
    },
    Cmp {
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `(reg & mask) ^ xor`; `named_op`: the operation is sent, as nft does for ct keys (the kernel's
    /// default is the same).
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
        named_op: bool,
    },
    /// `set_id`: the set was declared earlier in the same batch (nft then also names it by id). With
    /// `dreg` a map lookup: the element's data goes to that register.
    Lookup {
        set: String,
        set_id: Option<u32>,
        inv: bool,
        dreg: Option<u32>,
    },
    /// Loads a conntrack key (`NFT_CT_*`) into register 1.
    Ct {
        key: u32,
    },
    /// Sets a conntrack key from register 1.
    CtSet {
        key: u32,
    },
    /// A route lookup (`NFTA_FIB_F_*` flags, `NFT_FIB_RESULT_*`) into register 1.
    Fib {
        flags: u32,
        result: u32,
    },
    /// Host to network order of `len` bytes of `reg` in `size`-byte units.
    Hton {
        reg: u32,
        len: u32,
        size: u32,
    },
    /// `NFT_NAT_*` of `family` to the address in `addr_reg` (and the port in `proto_reg`).
    Nat {
        nat_type: u32,
        family: u32,
        addr_reg: u32,
        proto_reg: Option<u32>,
    },
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Counter,
    Masq,
    Unknown(String),
}

fn expr(buf: &mut MsgBuf, name: &str, body: impl FnOnce(&mut MsgBuf)) {
    buf.nest_start(NFTA_LIST_ELEM);
    buf.attr_str(NFTA_EXPR_NAME, name);
    buf.nest_start(NFTA_EXPR_DATA);
    body(buf);
    buf.nest_end();
    buf.nest_end();
}

fn value(buf: &mut MsgBuf, ty: u16, v: &[u8]) {
    buf.nest_start(ty);
    buf.attr(NFTA_DATA_VALUE, v);
    buf.nest_end();
}

impl Expr {
    pub(super) fn encode(&self, buf: &mut MsgBuf) {
        match self {
            Expr::Meta { key, reg } => expr(buf, "meta", |b| {
                b.attr_u32_be(NFTA_META_KEY, *key);
                b.attr_u32_be(NFTA_META_DREG, *reg);
            }),
            Expr::Payload { base, offset, len, reg } => expr(buf, "payload", |b| {
                b.attr_u32_be(NFTA_PAYLOAD_DREG, *reg);
                b.attr_u32_be(NFTA_PAYLOAD_BASE, *base);
                b.attr_u32_be(NFTA_PAYLOAD_OFFSET, *offset);
                b.attr_u32_be(NFTA_PAYLOAD_LEN, *len);
            }),
            Expr::Cmp { op, data } => expr(buf, "cmp", |b| {
                b.attr_u32_be(NFTA_CMP_SREG, NFT_REG_1);
                b.attr_u32_be(NFTA_CMP_OP, *op as u32);
                value(b, NFTA_CMP_DATA, data);
            }),
            Expr::Bitwise { mask, xor, named_op } => expr(buf, "bitwise", |b| {
                b.attr_u32_be(NFTA_BITWISE_SREG, NFT_REG_1);
                b.attr_u32_be(NFTA_BITWISE_DREG, NFT_REG_1);
                if *named_op {
                    b.attr_u32_be(NFTA_BITWISE_OP, NFT_BITWISE_BOOL);
                }
                b.attr_u32_be(NFTA_BITWISE_LEN, mask.len() as u32);
                value(b, NFTA_BITWISE_MASK, mask);
                value(b, NFTA_BITWISE_XOR, xor);
            }),
            Expr::Lookup { set, set_id, inv, dreg } => expr(buf, "lookup", |b| {
                b.attr_u32_be(NFTA_LOOKUP_SREG, NFT_REG_1);
                if let Some(d) = dreg {
                    b.attr_u32_be(NFTA_LOOKUP_DREG, *d);
                }
                b.attr_str(NFTA_LOOKUP_SET, set);
                if let Some(id) = set_id {
                    b.attr_u32_be(NFTA_LOOKUP_SET_ID, *id);
                }
                if *inv {
                    b.attr_u32_be(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }),
            Expr::Verdict { code, chain } => expr(buf, "immediate", |b| {
                b.attr_u32_be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                b.nest_start(NFTA_IMMEDIATE_DATA);
                b.nest_start(NFTA_DATA_VERDICT);
                b.attr_u32_be(NFTA_VERDICT_CODE, *code as u32);
                if let Some(c) = chain {
                    b.attr_str(NFTA_VERDICT_CHAIN, c);
                }
                b.nest_end();
                b.nest_end();
            }),
            Expr::Ct { key } => expr(buf, "ct", |b| {
                b.attr_u32_be(NFTA_CT_KEY, *key);
                b.attr_u32_be(NFTA_CT_DREG, NFT_REG_1);
            }),
            Expr::CtSet { key } => expr(buf, "ct", |b| {
                b.attr_u32_be(NFTA_CT_KEY, *key);
                b.attr_u32_be(NFTA_CT_SREG, NFT_REG_1);
            }),
            Expr::Fib { flags, result } => expr(buf, "fib", |b| {
                b.attr_u32_be(NFTA_FIB_FLAGS, *flags);
                b.attr_u32_be(NFTA_FIB_RESULT, *result);
                b.attr_u32_be(NFTA_FIB_DREG, NFT_REG_1);
            }),
            Expr::Hton { reg, len, size } => expr(buf, "byteorder", |b| {
                b.attr_u32_be(NFTA_BYTEORDER_SREG, *reg);
                b.attr_u32_be(NFTA_BYTEORDER_DREG, *reg);
                b.attr_u32_be(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
                b.attr_u32_be(NFTA_BYTEORDER_LEN, *len);
                b.attr_u32_be(NFTA_BYTEORDER_SIZE, *size);
            }),
            Expr::Nat { nat_type, family, addr_reg, proto_reg } => expr(buf, "nat", |b| {
                b.attr_u32_be(NFTA_NAT_TYPE, *nat_type);
                b.attr_u32_be(NFTA_NAT_FAMILY, *family);
                b.attr_u32_be(NFTA_NAT_REG_ADDR_MIN, *addr_reg);
                if let Some(p) = proto_reg {
                    b.attr_u32_be(NFTA_NAT_REG_PROTO_MIN, *p);
                }
            }),
            Expr::Counter => expr(buf, "counter", |_| {}),
            Expr::Masq => expr(buf, "masq", |_| {}),
            // Only produced by decoding; a caller never builds one.
            Expr::Unknown(_) => {}
        }
    }
}

fn be32(v: &[u8]) -> Option<u32> {
    v.try_into().ok().map(u32::from_be_bytes)
}

fn nul_str(v: &[u8]) -> String {
    String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned()
}

/// Decodes one `NFTA_LIST_ELEM`; what rcni does not write (another register, another operator) is
/// [`Expr::Unknown`], so a rule holding it never compares equal to one of ours.
fn decode_one(elem: &[u8]) -> Expr {
    let name = attr(elem, NFTA_EXPR_NAME).map(nul_str).unwrap_or_default();
    let data = attr(elem, NFTA_EXPR_DATA).unwrap_or_default();
    let get = |ty| attr(data, ty).and_then(be32);
    let val = |ty| attr(data, ty).and_then(|d| attr(d, NFTA_DATA_VALUE)).map(<[u8]>::to_vec);
    let reg1 = |ty| get(ty) == Some(NFT_REG_1);
    let decoded = match name.as_str() {
        "meta" if reg1(NFTA_META_DREG) => get(NFTA_META_KEY).map(|key| Expr::Meta { key, reg: NFT_REG_1 }),
        "payload" if reg1(NFTA_PAYLOAD_DREG) => Some(Expr::Payload {
            base: get(NFTA_PAYLOAD_BASE).unwrap_or(u32::MAX),
            offset: get(NFTA_PAYLOAD_OFFSET).unwrap_or(u32::MAX),
            len: get(NFTA_PAYLOAD_LEN).unwrap_or(u32::MAX),
            reg: NFT_REG_1,
        }),
        "cmp" if reg1(NFTA_CMP_SREG) => {
            let op = match get(NFTA_CMP_OP) {
                Some(0) => Some(CmpOp::Eq),
                Some(1) => Some(CmpOp::Neq),
                _ => None,
            };
            op.zip(val(NFTA_CMP_DATA)).map(|(op, data)| Expr::Cmp { op, data })
        }
        "bitwise" if reg1(NFTA_BITWISE_SREG) && reg1(NFTA_BITWISE_DREG) => val(NFTA_BITWISE_MASK)
            .zip(val(NFTA_BITWISE_XOR))
            .map(|(mask, xor)| Expr::Bitwise { mask, xor, named_op: get(NFTA_BITWISE_OP).is_some() }),
        // What a set lookup of ours reads back as: only plain lookups are decoded, map lookups and
        // the other expressions of the portmap structure are recognised by their rule comment.
        "lookup" if reg1(NFTA_LOOKUP_SREG) && get(NFTA_LOOKUP_DREG).is_none() => {
            attr(data, NFTA_LOOKUP_SET).map(|s| Expr::Lookup {
                set: nul_str(s),
                set_id: None,
                inv: get(NFTA_LOOKUP_FLAGS).is_some_and(|f| f & NFT_LOOKUP_F_INV != 0),
                dreg: None,
            })
        }
        "immediate" if get(NFTA_IMMEDIATE_DREG) == Some(NFT_REG_VERDICT) => {
            attr(data, NFTA_IMMEDIATE_DATA).and_then(|d| attr(d, NFTA_DATA_VERDICT)).and_then(|v| {
                let code = attr(v, NFTA_VERDICT_CODE).and_then(be32)? as i32;
                Some(Expr::Verdict { code, chain: attr(v, NFTA_VERDICT_CHAIN).map(nul_str) })
            })
        }
        "counter" => Some(Expr::Counter),
        "masq" if data.is_empty() => Some(Expr::Masq),
        _ => None,
    };
    decoded.unwrap_or(Expr::Unknown(name))
}

/// The expressions of an NFTA_RULE_EXPRESSIONS payload.
pub(super) fn decode_list(exprs: &[u8]) -> Vec<Expr> {
    attrs(exprs).filter(|(t, _)| *t == NFTA_LIST_ELEM).map(|(_, e)| decode_one(e)).collect()
}
