//! Typed nf_tables structure: tables, chains, sets and maps, rules, and the interval elements of
//! prefix sets, encoded with the attributes (and in the order) `nft` 1.0.6 sends for the same text, so
//! that `nft list` shows what rcni writes exactly as if `nft -f` had written it. They go into a
//! [`super::Nfnl::batch`] as [`BatchOp`](super::BatchOp)s, in one generation-checked transaction with
//! the elements.
//!
//! Declaring a base chain with one rule, and its set:
//!
//! ```no_run
//! use rcni::net::IpFamily;
//! use rcni::net::nft::{AddrField, BatchOp, Chain, DataType, Hook, NFPROTO_INET, Nfnl, Rule, Set, Stmt};
//!
//! let pods = Set::new("pods4", vec![DataType::Ipv4Addr]).comment("pods of network n");
//! // nft: add chain inet rcni masq { type nat hook postrouting priority srcnat; policy accept; }
//! let chain = Chain::base("masq", Hook::nat_postrouting());
//! // nft: add rule inet rcni masq ip saddr @pods4 masquerade comment "mine"
//! let rule = Rule::new("masq", vec![Stmt::addr_in_set(IpFamily::V4, AddrField::Saddr, "pods4", false),
//!     Stmt::Masquerade]).comment("mine");
//! let mut nl = Nfnl::open()?;
//! let generation = nl.generation()?;
//! nl.batch(Some(generation), NFPROTO_INET, "rcni", &[
//!     BatchOp::AddTable { comment: None },
//!     BatchOp::AddSet(&pods),
//!     BatchOp::AddChain(&chain),
//!     BatchOp::FlushChain { chain: "masq" },
//!     BatchOp::AddRule(&rule),
//! ])?;
//! # Ok::<(), rcni::net::nft::NetlinkError>(())
//! ```

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::codec::{Hook, MsgBuf, udata_comment, udata_comment_and_owner};
use super::rule::Stmt;

pub(super) const NFTA_TABLE_FLAGS: u16 = 2;
pub(super) const NFTA_TABLE_USERDATA: u16 = 6;
pub(super) const NFTA_CHAIN_USERDATA: u16 = 12;
pub(super) const NFTA_SET_TABLE: u16 = 1;
pub(super) const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(super) const NFTA_SET_KEY_LEN: u16 = 5;
pub(super) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(super) const NFTA_SET_DATA_LEN: u16 = 7;
pub(super) const NFTA_SET_DESC: u16 = 9;
pub(super) const NFTA_SET_ID: u16 = 10;
pub(super) const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
pub(super) const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// `NFT_SET_ELEM_INTERVAL_END`: the element ends the interval the one before it started.
pub(super) const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_CONCAT: u32 = 0x80;

/// libnftnl's set userdata TLV types (`enum nftnl_udata_set_types`).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_COMMENT: u8 = 7;
/// What nft records as the "typeof" of a concatenation declared with `type a . b` (expression type
/// 13 = concat, an empty description nest).
const UDATA_TYPEOF_CONCAT: [u8; 8] = [0, 4, 13, 0, 0, 0, 1, 0];
/// nft's `enum byteorder`.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// The element userdata flag nft puts on an interval that runs to the end of the address space (no end
/// element): `NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
const UDATA_ELEM_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// The key and data types rcni's sets and maps use (nft's datatype ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
}

impl DataType {
    fn id(self) -> u32 {
        match self {
            DataType::Ipv4Addr => 7,
            DataType::Ipv6Addr => 8,
            DataType::InetProto => 12,
            DataType::InetService => 13,
        }
    }

    fn len(self) -> u32 {
        match self {
            DataType::Ipv4Addr => 4,
            DataType::Ipv6Addr => 16,
            DataType::InetProto => 1,
            DataType::InetService => 2,
        }
    }

    fn byteorder(self) -> u32 {
        match self {
            DataType::InetProto => BYTEORDER_INVALID,
            _ => BYTEORDER_BIG_ENDIAN,
        }
    }
}

/// (type id, length) of a key or data of `types`: a concatenation packs 6 bits per type id and
/// rounds each field up to 4 bytes (a register word).
fn type_and_len(types: &[DataType]) -> (u32, u32) {
    match types {
        [one] => (one.id(), one.len()),
        many => (many.iter().fold(0, |acc, t| (acc << 6) | t.id()), many.iter().map(|t| t.len().div_ceil(4) * 4).sum()),
    }
}

fn byteorder(types: &[DataType]) -> u32 {
    match types {
        [one] => one.byteorder(),
        _ => BYTEORDER_INVALID,
    }
}

fn tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// A regular chain, or a base chain with its hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub comment: Option<String>,
}

impl Chain {
    /// `add chain <t> <name>`
    pub fn regular(name: &str) -> Chain {
        Chain { name: name.to_string(), hook: None, comment: None }
    }

    /// `add chain <t> <name> { type .. hook .. priority ..; policy ..; }`
    pub fn base(name: &str, hook: Hook) -> Chain {
        Chain { name: name.to_string(), hook: Some(hook), comment: None }
    }

    pub fn comment(mut self, comment: &str) -> Chain {
        self.comment = Some(comment.to_string());
        self
    }
}

/// A set, or a map when it has data types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Vec<DataType>,
    pub data: Option<Vec<DataType>>,
    /// `flags interval`: elements are ranges (prefixes).
    pub interval: bool,
    /// `flags timeout`: elements may expire.
    pub timeout: bool,
    pub comment: Option<String>,
}

impl Set {
    /// `add set <t> <name> { type <key . key ...>; }`
    pub fn new(name: &str, key: Vec<DataType>) -> Set {
        Set { name: name.to_string(), key, data: None, interval: false, timeout: false, comment: None }
    }

    /// `add map <t> <name> { type <key> : <data>; }`
    pub fn map(name: &str, key: Vec<DataType>, data: Vec<DataType>) -> Set {
        Set { data: Some(data), ..Set::new(name, key) }
    }

    pub fn interval(mut self) -> Set {
        self.interval = true;
        self
    }

    pub fn timeout(mut self) -> Set {
        self.timeout = true;
        self
    }

    pub fn comment(mut self, comment: &str) -> Set {
        self.comment = Some(comment.to_string());
        self
    }

    fn concat(&self) -> bool {
        self.key.len() > 1
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.interval {
            f |= NFT_SET_INTERVAL;
            if self.concat() {
                f |= NFT_SET_CONCAT;
            }
        }
        if self.data.is_some() {
            f |= NFT_SET_MAP;
        }
        if self.timeout {
            f |= NFT_SET_TIMEOUT;
        }
        f
    }

    fn udata(&self) -> Vec<u8> {
        let mut u = Vec::new();
        tlv(&mut u, UDATA_SET_KEYBYTEORDER, &byteorder(&self.key).to_ne_bytes());
        if let Some(data) = &self.data {
            tlv(&mut u, UDATA_SET_DATABYTEORDER, &byteorder(data).to_ne_bytes());
        }
        if self.concat() {
            tlv(&mut u, UDATA_SET_KEY_TYPEOF, &UDATA_TYPEOF_CONCAT);
        }
        if let Some(data) = &self.data {
            if data.len() > 1 {
                tlv(&mut u, UDATA_SET_DATA_TYPEOF, &UDATA_TYPEOF_CONCAT);
            }
            tlv(&mut u, UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes());
        }
        if let Some(c) = &self.comment {
            let mut v = c.as_bytes()[..c.len().min(250)].to_vec();
            v.push(0);
            tlv(&mut u, UDATA_SET_COMMENT, &v);
        }
        u
    }

    /// The NEWSET attributes after the table and name.
    pub(super) fn encode(&self, buf: &mut MsgBuf, id: u32) {
        buf.attr_u32_be(NFTA_SET_FLAGS, self.flags());
        let (key_type, key_len) = type_and_len(&self.key);
        buf.attr_u32_be(NFTA_SET_KEY_TYPE, key_type);
        buf.attr_u32_be(NFTA_SET_KEY_LEN, key_len);
        if let Some(data) = &self.data {
            let (data_type, data_len) = type_and_len(data);
            buf.attr_u32_be(NFTA_SET_DATA_TYPE, data_type);
            buf.attr_u32_be(NFTA_SET_DATA_LEN, data_len);
        }
        buf.attr_u32_be(NFTA_SET_ID, id);
        if self.interval && self.concat() {
            // The field lengths let the kernel pick the concatenated-range backend (pipapo).
            buf.nest_start(NFTA_SET_DESC);
            buf.nest_start(NFTA_SET_DESC_CONCAT);
            for t in &self.key {
                buf.nest_start(super::expr::NFTA_LIST_ELEM);
                buf.attr_u32_be(NFTA_SET_FIELD_LEN, t.len());
                buf.nest_end();
            }
            buf.nest_end();
            buf.nest_end();
        }
        buf.attr(NFTA_SET_USERDATA, &self.udata());
    }
}

/// A rule to append to a chain, with its comment and rcni owner tag (see [`super::codec::UDATA_RCNI_OWNER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
    pub owner: Option<String>,
}

impl Rule {
    pub fn new(chain: &str, stmts: Vec<Stmt>) -> Rule {
        Rule { chain: chain.to_string(), stmts, comment: None, owner: None }
    }

    pub fn comment(mut self, comment: &str) -> Rule {
        self.comment = Some(comment.to_string());
        self
    }

    pub fn owner(mut self, owner: &str) -> Rule {
        self.owner = Some(owner.to_string());
        self
    }

    /// The rule's NFTA_RULE_USERDATA (empty: no attribute).
    pub(super) fn udata(&self) -> Vec<u8> {
        match (&self.comment, &self.owner) {
            (Some(c), owner) => udata_comment_and_owner(c, owner.as_deref()),
            (None, Some(o)) => {
                let mut v = Vec::new();
                tlv(&mut v, super::codec::UDATA_RCNI_OWNER, &o.as_bytes()[..o.len().min(254)]);
                v
            }
            (None, None) => Vec::new(),
        }
    }
}

/// Table and chain comments are libnftnl userdata with the comment TLV (type 0).
pub(super) fn comment_udata(comment: &str) -> Vec<u8> {
    udata_comment(comment)
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The first address after `net`, or `None` when `net` runs to the end of the address space.
fn after(net: &IpNetwork) -> Option<Vec<u8>> {
    let mut b = octets(net.broadcast());
    for byte in b.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(b);
        }
    }
    None
}

/// One element of an interval set as nft sends it: (flags, key, userdata).
pub(super) type IntervalElem = (u32, Vec<u8>, Option<&'static [u8]>);

/// The elements of a prefix list in an interval set: per prefix its network address, and the first
/// address after it flagged as an interval end (or, at the end of the address space, an open interval).
pub(super) fn interval_elems(prefixes: &[IpNetwork]) -> Vec<IntervalElem> {
    let mut out = Vec::new();
    for p in prefixes {
        let start = octets(p.network());
        match after(p) {
            Some(end) => {
                out.push((0, start, None));
                out.push((NFT_SET_ELEM_INTERVAL_END, end, None));
            }
            None => out.push((0, start, Some(&UDATA_ELEM_INTERVAL_OPEN[..]))),
        }
    }
    out
}

/// `hook` constants for the inet, ip and ip6 families (`enum nf_inet_hooks`) and nft's named
/// priorities.
pub mod hooks {
    pub const PREROUTING: u32 = 0;
    pub const INPUT: u32 = 1;
    pub const FORWARD: u32 = 2;
    pub const OUTPUT: u32 = 3;
    pub const POSTROUTING: u32 = 4;
    /// `priority dstnat`
    pub const DSTNAT: i32 = -100;
    /// `priority filter`
    pub const FILTER: i32 = 0;
    /// `priority srcnat`
    pub const SRCNAT: i32 = 100;
}

impl Hook {
    /// `type <chain_type> hook <hooknum> priority <priority>; policy accept;`
    pub fn accept(chain_type: &str, hooknum: u32, priority: i32) -> Hook {
        Hook { chain_type: chain_type.to_string(), hooknum, priority, policy: libc::NF_ACCEPT as u32 }
    }

    /// `type nat hook postrouting priority srcnat; policy accept;`
    pub fn nat_postrouting() -> Hook {
        Hook::accept("nat", hooks::POSTROUTING, hooks::SRCNAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::codec::{BatchOp, NFPROTO_INET, attr, attrs, encode_batch, parse_msgs};

    /// `<NFT_MSG type> <attribute> <hex>` per top-level attribute of every nf_tables message, as
    /// `scripts/nft-bytes` prints them.
    fn lines(ops: &[BatchOp<'_>]) -> Vec<String> {
        let mut b = MsgBuf::default();
        encode_batch(&mut b, 1, None, NFPROTO_INET, "t", ops);
        let mut out = Vec::new();
        for m in parse_msgs(b.finish().unwrap()).unwrap() {
            if m.msg_type >> 8 != 10 {
                continue;
            }
            for (ty, payload) in attrs(&m.payload[4..]) {
                let hex: String = payload.iter().map(|x| format!("{x:02x}")).collect();
                out.push(format!("{} {ty} {hex}", m.msg_type & 0xff));
            }
        }
        out
    }

    /// Table, sets, maps and chains against what nft 1.0.6 sends for (`scripts/nft-bytes`):
    /// add table inet t { comment "tc"; }
    /// add set inet t a { type ipv4_addr; comment "x"; }
    /// add set inet t b { type ipv6_addr; flags interval; }
    /// add map inet t m { type inet_proto . inet_service : ipv4_addr . inet_service; comment "pm"; }
    /// add set inet t h { type ipv4_addr . ipv4_addr; flags interval; }
    /// add set inet t to { type ipv4_addr; flags timeout; }
    /// add chain inet t r
    /// add chain inet t g { type filter hook input priority 0; policy accept; }
    /// flush set inet t b; delete set inet t a; delete chain inet t r; flush chain inet t g
    #[test]
    fn structure_encodes_as_nft() {
        use DataType::*;
        let sets = [
            Set::new("a", vec![Ipv4Addr]).comment("x"),
            Set::new("b", vec![Ipv6Addr]).interval(),
            Set::map("m", vec![InetProto, InetService], vec![Ipv4Addr, InetService]).comment("pm"),
            Set::new("h", vec![Ipv4Addr, Ipv4Addr]).interval(),
            Set::new("to", vec![Ipv4Addr]).timeout(),
        ];
        let chains = [Chain::regular("r"), Chain::base("g", Hook::accept("filter", hooks::INPUT, hooks::FILTER))];
        let mut ops = vec![BatchOp::AddTable { comment: Some("tc") }];
        ops.extend(sets.iter().map(BatchOp::AddSet));
        ops.extend(chains.iter().map(BatchOp::AddChain));
        ops.extend([
            BatchOp::FlushSet { set: "b" },
            BatchOp::DelSet { set: "a" },
            BatchOp::DelChain { chain: "r" },
            BatchOp::FlushChain { chain: "g" },
        ]);
        let want = "0 1 7400|0 2 00000000|0 6 0003746300|\
            9 1 7400|9 2 6100|9 3 00000000|9 4 00000007|9 5 00000004|9 10 00000001|9 13 00040200000007027800|\
            9 1 7400|9 2 6200|9 3 00000004|9 4 00000008|9 5 00000010|9 10 00000002|9 13 000402000000|\
            9 1 7400|9 2 6d00|9 3 00000008|9 4 0000030d|9 5 00000008|9 6 000001cd|9 7 00000008|9 10 00000003|\
            9 13 000400000000010400000000030800040d0000000100040800040d00000001000604000000000703706d00|\
            9 1 7400|9 2 6800|9 3 00000084|9 4 000001c7|9 5 00000008|9 10 00000004|\
            9 9 1c0002800c00018008000100000000040c0001800800010000000004|9 13 000400000000030800040d0000000100|\
            9 1 7400|9 2 746f00|9 3 00000010|9 4 00000007|9 5 00000004|9 10 00000005|9 13 000402000000|\
            3 1 7400|3 3 7200|\
            3 1 7400|3 3 6700|3 7 66696c74657200|3 5 00000001|3 4 08000100000000010800020000000000|\
            14 2 6200|14 1 7400|11 1 7400|11 2 6100|5 1 7400|5 3 7200|8 1 7400|8 2 6700";
        assert_eq!(lines(&ops), want.split('|').collect::<Vec<_>>());
    }

    /// A base chain with a comment, and a rule's comment (`add chain inet rcni m { type nat hook
    /// postrouting priority srcnat; policy accept; comment "cc"; }`, `... comment "rc"`).
    #[test]
    fn comments_encode_as_nft() {
        let chain = Chain::base("m", Hook::nat_postrouting()).comment("cc");
        let rule = Rule::new("m", vec![Stmt::Masquerade]).comment("rc");
        let got = lines(&[BatchOp::AddChain(&chain), BatchOp::AddRule(&rule)]);
        assert_eq!(got[2..5], ["3 7 6e617400", "3 5 00000001", "3 4 08000100000000040800020000000064"]);
        assert_eq!(got[5], "3 12 0003636300");
        assert_eq!(got.last().unwrap(), "6 7 0003726300");
        let owned = Rule::new("m", vec![]).owner("net");
        assert_eq!(lines(&[BatchOp::AddRule(&owned)]).last().unwrap(), "6 7 c0036e6574");
    }

    /// `add element inet t b { fd00::/64, ff00::/8 }`: nft sends a start, an end flagged
    /// INTERVAL_END, and for the prefix that runs to the end of the space an open start (its udata flag).
    #[test]
    fn prefixes_are_interval_elements() {
        let set = Set::new("b", vec![DataType::Ipv6Addr]).interval();
        let prefixes = vec!["fd00::/64".parse().unwrap(), "ff00::/8".parse().unwrap()];
        let mut b = MsgBuf::default();
        encode_batch(
            &mut b,
            1,
            None,
            NFPROTO_INET,
            "t",
            &[BatchOp::AddSet(&set), BatchOp::AddPrefixes { set: "b", prefixes }],
        );
        let msgs = parse_msgs(b.finish().unwrap()).unwrap();
        let a = &msgs[2].payload[4..];
        assert_eq!(attr(a, 4), Some(&[0, 0, 0, 1][..]), "set id of the set declared in the batch");
        let elems: Vec<String> = attrs(attr(a, 3).unwrap())
            .map(|(_, e)| {
                attrs(e)
                    .map(|(t, v)| format!("{t}:{}", v.iter().map(|x| format!("{x:02x}")).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            elems,
            [
                "1:14000100fd000000000000000000000000000000",
                "3:00000001 1:14000100fd000000000000010000000000000000",
                "1:14000100ff000000000000000000000000000000 6:010401000000",
            ]
        );
    }
}
