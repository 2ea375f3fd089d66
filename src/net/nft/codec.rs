//! The nf_tables netlink codec: wire constants, message and attribute encoding, and batches (split so
//! that no attribute outgrows its 16-bit length). The kernel's answers are parsed in `parse`, userdata
//! TLVs in `udata`; both re-exported here. (The byte-level tests below pin the encoding to what `nft`
//! sends.) Over 500 lines because it is one format: the uapi constants and one encoder per batch
//! operation, which only make sense side by side.
//!
//! Encoding (kernel uapi `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`): every message
//! is `nlmsghdr` + `nfgenmsg {family, version = 0, res_id (big endian)}` + attributes. Attribute
//! integers are big endian, strings NUL-terminated, nested attributes flagged `NLA_F_NESTED`. Changes go
//! in a batch: `NFNL_MSG_BATCH_BEGIN` (res_id = NFNL_SUBSYS_NFTABLES, optional `NFNL_BATCH_GENID`), the
//! messages, `NFNL_MSG_BATCH_END`; the kernel applies it atomically while processing our `sendmsg`.
//! Comments ("userdata") are libnftnl's TLV list: type u8, length u8, value (comment text + NUL);
//! type 0 is the comment for elements, rules and chains alike.

use std::fmt;
use std::io;

use ipnetwork::IpNetwork;

use super::object::{self, Chain, Rule, Set};
use super::rule::{self, Stmt};
// Parsing and userdata live in their own modules; re-exported so that `codec::` stays the one path.
pub use super::parse::*;
pub use super::udata::*;

pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const NFPROTO_BRIDGE: u8 = 7;
pub(super) const AF_UNSPEC: u8 = 0;

pub(super) const NLMSG_HDRLEN: usize = 16;
pub(super) const NFGENMSG_LEN: usize = 4;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;

pub(super) const NLM_F_REQUEST: u16 = 0x01;
/// Set by the kernel on a dump message when the ruleset changed while the dump ran.
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const NLM_F_ACK: u16 = 0x04;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;

pub(super) const NLA_F_NESTED: u16 = 0x8000;
/// Attribute (and nest) lengths are 16 bits on the wire.
pub(super) const MAX_ATTR_LEN: usize = u16::MAX as usize;
/// Bytes of elements per set element message; keeps every nest well below [`MAX_ATTR_LEN`].
pub(super) const MAX_ELEMS_PER_MSG_BYTES: usize = 32 * 1024;
/// How often a dump is repeated when the kernel marks it interrupted (NLM_F_DUMP_INTR). Every commit of
/// another process during a dump interrupts it, and a node with hundreds of ADDs at once commits all the
/// time: a few attempts in a row starve there, so the repeats back off (see `retry_interrupted`).
pub(super) const DUMP_ATTEMPTS: usize = 64;
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFNL_BATCH_GENID: u16 = 1;

pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_DELCHAIN: u16 = 5;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_DELRULE: u16 = 8;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
pub(super) const NFT_MSG_DELSET: u16 = 11;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_GETSETELEM: u16 = 13;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NFT_MSG_NEWGEN: u16 = 15;
pub(super) const NFT_MSG_GETGEN: u16 = 16;

pub(super) const NLM_F_APPEND: u16 = 0x800;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_HANDLE: u16 = 3;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
/// A map element's data (nested `NFTA_DATA_VALUE`).
pub(super) const NFTA_SET_ELEM_DATA: u16 = 2;
/// The end of a range element of a concatenated interval set (pipapo), nested like the key.
pub(super) const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(super) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_GEN_ID: u16 = 1;

/// libnftnl's userdata TLV type of a comment (elements, rules, chains).
pub(super) const UDATA_COMMENT: u8 = 0;
/// rcni's userdata TLV type for the owner of a rule (the network that made it). nft shows only the
/// types it knows (comment, ebtables policy), so the tag is invisible in listings and leaves rules
/// byte-identical in `nft list` to the reference plugins' layout.
pub const UDATA_RCNI_OWNER: u8 = 0xc0;

/// errno values the callers distinguish.
pub const ENOENT: i32 = libc::ENOENT;
pub const EEXIST: i32 = libc::EEXIST;
/// The batch's generation id is stale: someone changed the ruleset since we read it.
pub const ERESTART: i32 = libc::ERESTART;

#[derive(Debug)]
pub enum NetlinkError {
    /// The socket could not be opened / used.
    Io(io::Error),
    /// The kernel answered with an error (positive errno).
    Kernel(i32),
    /// The answer could not be understood, or the request could not be encoded.
    Protocol(String),
    /// The ruleset kept changing while a listing ran (NLM_F_DUMP_INTR on every attempt).
    DumpInterrupted,
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Io(e) => write!(f, "nf_tables netlink socket: {e}"),
            NetlinkError::Kernel(e) => {
                write!(f, "kernel said: {}", io::Error::from_raw_os_error(*e))?;
                match *e {
                    libc::EPERM => write!(f, " (needs CAP_NET_ADMIN in the node's network namespace)"),
                    libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
                        write!(f, " (is nf_tables / nft_masq available in this kernel? try `modprobe nft_masq`)")
                    }
                    _ => Ok(()),
                }
            }
            NetlinkError::Protocol(m) => write!(f, "nf_tables netlink: {m}"),
            NetlinkError::DumpInterrupted => {
                write!(f, "the ruleset kept changing while it was listed ({DUMP_ATTEMPTS} attempts); retry")
            }
        }
    }
}

impl std::error::Error for NetlinkError {}

pub type NlResult<T> = Result<T, NetlinkError>;

// ---------------------------------------------------------------------------------------------
// Message building

/// A buffer of netlink messages under construction.
#[derive(Default)]
pub struct MsgBuf {
    pub data: Vec<u8>,
    nests: Vec<usize>,
    msg_start: Option<usize>,
    /// Set when an attribute or nest got longer than its 16-bit length field can say.
    oversized: bool,
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl MsgBuf {
    /// Starts a message: nlmsghdr + nfgenmsg.
    pub fn begin(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        debug_assert!(self.msg_start.is_none());
        self.msg_start = Some(self.data.len());
        self.data.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        self.data.extend_from_slice(&msg_type.to_ne_bytes());
        self.data.extend_from_slice(&flags.to_ne_bytes());
        self.data.extend_from_slice(&seq.to_ne_bytes());
        self.data.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.data.push(family);
        self.data.push(0); // NFNETLINK_V0
        self.data.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Starts an nf_tables message of type `NFT_MSG_*`.
    pub fn begin_nft(&mut self, nft_msg: u16, flags: u16, seq: u32, family: u8) {
        self.begin((NFNL_SUBSYS_NFTABLES << 8) | nft_msg, flags | NLM_F_REQUEST, seq, family, 0);
    }

    pub fn end(&mut self) {
        let start = self.msg_start.take().expect("end() without begin()");
        debug_assert!(self.nests.is_empty());
        let len = (self.data.len() - start) as u32;
        self.data[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.oversized |= len > MAX_ATTR_LEN;
        self.data.extend_from_slice(&(len as u16).to_ne_bytes());
        self.data.extend_from_slice(&ty.to_ne_bytes());
        self.data.extend_from_slice(payload);
        self.data.resize(align4(self.data.len()), 0);
    }

    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    pub fn attr_u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest_start(&mut self, ty: u16) {
        self.nests.push(self.data.len());
        self.data.extend_from_slice(&0u16.to_ne_bytes());
        self.data.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn nest_end(&mut self) {
        let start = self.nests.pop().expect("nest_end() without nest_start()");
        let len = self.data.len() - start;
        self.oversized |= len > MAX_ATTR_LEN;
        self.data[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }

    /// The encoded messages, or an error if a length did not fit its field (the kernel would misparse
    /// the message).
    pub fn finish(&self) -> NlResult<&[u8]> {
        if self.oversized {
            return Err(NetlinkError::Protocol(format!(
                "an attribute is longer than {MAX_ATTR_LEN} bytes; the request cannot be encoded"
            )));
        }
        Ok(&self.data)
    }

    /// Bytes since the innermost open nest started.
    fn nest_len(&self) -> usize {
        self.nests.last().map_or(0, |start| self.data.len() - start)
    }
}

/// One change in a batch.
pub enum BatchOp<'a> {
    /// Add elements (key, comment) to `set`; `excl` = fail with EEXIST if a key is present.
    AddElems { set: &'a str, elems: Vec<(Vec<u8>, String)>, excl: bool },
    /// Delete elements (by key) from `set`; fails with ENOENT if one is missing.
    DelElems { set: &'a str, keys: Vec<Vec<u8>> },
    /// Delete a rule by handle; fails with ENOENT if it is gone.
    DelRule { chain: &'a str, handle: u64 },
    /// Create the table if it does not exist.
    NewTable,
    /// Create the chain if it does not exist (a base chain with `hook`; an existing chain must have
    /// the same hook, else EEXIST/EBUSY).
    NewChain { chain: &'a str, hook: Option<Hook> },
    /// Delete every rule of the chain.
    FlushChain { chain: &'a str },
    /// Delete the chain with its rules; EBUSY while another rule jumps to it.
    DelChain { chain: &'a str },
    /// Append a rule with the given userdata (comment, owner).
    NewRule { chain: &'a str, stmts: Vec<Stmt>, udata: Vec<u8> },
    /// Add full elements (map data, range ends, comments); `excl` = EEXIST if a key is present.
    AddFull { set: &'a str, elems: Vec<FullElem>, excl: bool },
    /// Delete full elements (key and, for concatenated ranges, key end); ENOENT if one is missing.
    DelFull { set: &'a str, elems: Vec<FullElem> },
    /// Create the table if it does not exist (`add table`), with a comment.
    AddTable { comment: Option<&'a str> },
    /// `add chain`: create the chain if it does not exist (an existing one keeps its rules).
    AddChain(&'a Chain),
    /// `add set` / `add map`: create it if it does not exist (one of another type: EEXIST).
    AddSet(&'a Set),
    /// `add rule`: append a rule.
    AddRule(&'a Rule),
    /// `flush set`: delete every element.
    FlushSet { set: &'a str },
    /// `delete set`; EBUSY while a rule refers to it.
    DelSet { set: &'a str },
    /// `add element` of prefixes to an interval set (`flags interval`, not concatenated).
    AddPrefixes { set: &'a str, prefixes: Vec<IpNetwork> },
}

impl BatchOp<'_> {
    /// What the change does, for messages (`add map hostport4`).
    pub fn describe(&self) -> String {
        let kind = |s: &Set| if s.data.is_some() { "map" } else { "set" };
        match self {
            BatchOp::AddElems { set, .. } | BatchOp::AddFull { set, .. } | BatchOp::AddPrefixes { set, .. } => {
                format!("add elements to {set}")
            }
            BatchOp::DelElems { set, .. } | BatchOp::DelFull { set, .. } => format!("delete elements of {set}"),
            BatchOp::DelRule { chain, handle } => format!("delete rule {handle} of chain {chain}"),
            BatchOp::NewTable | BatchOp::AddTable { .. } => "add table".to_string(),
            BatchOp::NewChain { chain, .. } => format!("add chain {chain}"),
            BatchOp::AddChain(c) => format!("add chain {}", c.name),
            BatchOp::FlushChain { chain } => format!("flush chain {chain}"),
            BatchOp::DelChain { chain } => format!("delete chain {chain}"),
            BatchOp::NewRule { chain, stmts, .. } => format!("add rule to chain {chain}: {}", rule_text(stmts)),
            BatchOp::AddRule(r) => format!("add rule to chain {}: {}", r.chain, rule_text(&r.stmts)),
            BatchOp::AddSet(s) => format!("add {} {}", kind(s), s.name),
            BatchOp::FlushSet { set } => format!("flush set {set}"),
            BatchOp::DelSet { set } => format!("delete set {set}"),
        }
    }
}

fn rule_text(stmts: &[Stmt]) -> String {
    stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ")
}

/// Appends the message(s) for `op` on `family table`, with sequence numbers from `seq`; returns how
/// many. An element list is split over several messages so that no nest outgrows its 16-bit length;
/// all of them stay in the caller's batch, so the change is still applied all or nothing.
pub fn encode_op(buf: &mut MsgBuf, seq: u32, family: u8, table: &str, op: &BatchOp<'_>) -> usize {
    encode_op_in(buf, seq, family, table, op, &[])
}

/// [`encode_op`] in a batch that declared the sets `set_ids` before `op` (nft refers to them by id too).
fn encode_op_in(
    buf: &mut MsgBuf,
    seq: u32,
    family: u8,
    table: &str,
    op: &BatchOp<'_>,
    set_ids: &[(&str, u32)],
) -> usize {
    let set_id = |set: &str| set_ids.iter().find(|(n, _)| *n == set).map(|(_, id)| *id);
    match op {
        BatchOp::AddElems { .. } | BatchOp::DelElems { .. } | BatchOp::AddFull { .. } | BatchOp::DelFull { .. } => {}
        BatchOp::AddTable { comment } => {
            buf.begin_nft(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_TABLE_NAME, table);
            buf.attr_u32_be(object::NFTA_TABLE_FLAGS, 0);
            if let Some(c) = comment {
                buf.attr(object::NFTA_TABLE_USERDATA, &object::comment_udata(c));
            }
            buf.end();
            return 1;
        }
        BatchOp::AddChain(chain) => {
            buf.begin_nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, seq, family);
            encode_chain(buf, table, &chain.name, chain.hook.as_ref());
            if let Some(c) = &chain.comment {
                buf.attr(object::NFTA_CHAIN_USERDATA, &object::comment_udata(c));
            }
            buf.end();
            return 1;
        }
        BatchOp::AddSet(set) => {
            buf.begin_nft(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_ACK, seq, family);
            buf.attr_str(object::NFTA_SET_TABLE, table);
            buf.attr_str(object::NFTA_SET_NAME, &set.name);
            set.encode(buf, set_id(&set.name).unwrap_or(0));
            buf.end();
            return 1;
        }
        BatchOp::AddRule(r) => {
            buf.begin_nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_RULE_TABLE, table);
            buf.attr_str(NFTA_RULE_CHAIN, &r.chain);
            buf.nest_start(NFTA_RULE_EXPRESSIONS);
            rule::encode(buf, &rule::Ctx { family, set_ids }, &r.stmts);
            buf.nest_end();
            let udata = r.udata();
            if !udata.is_empty() {
                buf.attr(NFTA_RULE_USERDATA, &udata);
            }
            buf.end();
            return 1;
        }
        BatchOp::FlushSet { set } => {
            // nft's order: the set, then the table.
            buf.begin_nft(NFT_MSG_DELSETELEM, NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            buf.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            buf.end();
            return 1;
        }
        BatchOp::DelSet { set } => {
            buf.begin_nft(NFT_MSG_DELSET, NLM_F_ACK, seq, family);
            buf.attr_str(object::NFTA_SET_TABLE, table);
            buf.attr_str(object::NFTA_SET_NAME, set);
            buf.end();
            return 1;
        }
        BatchOp::AddPrefixes { set, prefixes } => {
            buf.begin_nft(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            buf.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            if let Some(id) = set_id(set) {
                buf.attr_u32_be(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            buf.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (flags, key, udata) in object::interval_elems(prefixes) {
                buf.nest_start(NFTA_LIST_ELEM);
                if flags != 0 {
                    buf.attr_u32_be(object::NFTA_SET_ELEM_FLAGS, flags);
                }
                buf.nest_start(NFTA_SET_ELEM_KEY);
                buf.attr(NFTA_DATA_VALUE, &key);
                buf.nest_end();
                if let Some(u) = udata {
                    buf.attr(NFTA_SET_ELEM_USERDATA, u);
                }
                buf.nest_end();
            }
            buf.nest_end();
            buf.end();
            return 1;
        }
        BatchOp::DelRule { chain, handle } => {
            buf.begin_nft(NFT_MSG_DELRULE, NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_RULE_TABLE, table);
            buf.attr_str(NFTA_RULE_CHAIN, chain);
            buf.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
            buf.end();
            return 1;
        }
        BatchOp::NewTable => return encode_op_in(buf, seq, family, table, &BatchOp::AddTable { comment: None }, &[]),
        BatchOp::NewChain { chain, hook } => {
            buf.begin_nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, seq, family);
            encode_chain(buf, table, chain, hook.as_ref());
            buf.end();
            return 1;
        }
        BatchOp::FlushChain { chain } => {
            buf.begin_nft(NFT_MSG_DELRULE, NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_RULE_TABLE, table);
            buf.attr_str(NFTA_RULE_CHAIN, chain);
            buf.end();
            return 1;
        }
        BatchOp::DelChain { chain } => {
            buf.begin_nft(NFT_MSG_DELCHAIN, NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_CHAIN_TABLE, table);
            buf.attr_str(NFTA_CHAIN_NAME, chain);
            buf.end();
            return 1;
        }
        BatchOp::NewRule { chain, stmts, udata } => {
            buf.begin_nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, family);
            buf.attr_str(NFTA_RULE_TABLE, table);
            buf.attr_str(NFTA_RULE_CHAIN, chain);
            buf.nest_start(NFTA_RULE_EXPRESSIONS);
            rule::encode(buf, &rule::Ctx { family, set_ids }, stmts);
            buf.nest_end();
            if !udata.is_empty() {
                buf.attr(NFTA_RULE_USERDATA, udata);
            }
            buf.end();
            return 1;
        }
    }
    let (msg, flags, set, count) = match op {
        BatchOp::AddElems { set, excl, elems } => {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK | if *excl { NLM_F_EXCL } else { 0 }, *set, elems.len())
        }
        BatchOp::DelElems { set, keys } => (NFT_MSG_DELSETELEM, NLM_F_ACK, *set, keys.len()),
        BatchOp::AddFull { set, excl, elems } => {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK | if *excl { NLM_F_EXCL } else { 0 }, *set, elems.len())
        }
        BatchOp::DelFull { set, elems } => (NFT_MSG_DELSETELEM, NLM_F_ACK, *set, elems.len()),
        _ => unreachable!("handled above"),
    };
    let begin = |buf: &mut MsgBuf, seq: u32| {
        buf.begin_nft(msg, flags, seq, family);
        buf.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        buf.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        if let Some(id) = set_id(set) {
            buf.attr_u32_be(NFTA_SET_ELEM_LIST_SET_ID, id);
        }
        buf.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
    };
    let finish = |buf: &mut MsgBuf| {
        buf.nest_end();
        buf.end();
    };
    let mut messages = 1;
    begin(buf, seq);
    for i in 0..count {
        if i > 0 && buf.nest_len() >= MAX_ELEMS_PER_MSG_BYTES {
            finish(buf);
            begin(buf, seq + messages as u32);
            messages += 1;
        }
        buf.nest_start(NFTA_LIST_ELEM);
        if let BatchOp::AddFull { elems, .. } | BatchOp::DelFull { elems, .. } = op {
            encode_full_elem(buf, &elems[i], matches!(op, BatchOp::AddFull { .. }));
            buf.nest_end();
            continue;
        }
        buf.nest_start(NFTA_SET_ELEM_KEY);
        match op {
            BatchOp::AddElems { elems, .. } => {
                buf.attr(NFTA_DATA_VALUE, &elems[i].0);
                buf.nest_end();
                buf.attr(NFTA_SET_ELEM_USERDATA, &udata_comment(&elems[i].1));
            }
            BatchOp::DelElems { keys, .. } => {
                buf.attr(NFTA_DATA_VALUE, &keys[i]);
                buf.nest_end();
            }
            _ => unreachable!("handled above"),
        }
        buf.nest_end();
    }
    finish(buf);
    messages
}

/// A chain's attributes as nft orders them: table, name, and for a base chain type, policy, hook.
fn encode_chain(buf: &mut MsgBuf, table: &str, name: &str, hook: Option<&Hook>) {
    buf.attr_str(NFTA_CHAIN_TABLE, table);
    buf.attr_str(NFTA_CHAIN_NAME, name);
    if let Some(h) = hook {
        buf.attr_str(NFTA_CHAIN_TYPE, &h.chain_type);
        buf.attr_u32_be(NFTA_CHAIN_POLICY, h.policy);
        buf.nest_start(NFTA_CHAIN_HOOK);
        buf.attr_u32_be(NFTA_HOOK_HOOKNUM, h.hooknum);
        buf.attr_u32_be(NFTA_HOOK_PRIORITY, h.priority as u32);
        buf.nest_end();
    }
}

/// One element inside an open `NFTA_LIST_ELEM`: key, key end, and (when adding) data and comment.
fn encode_full_elem(buf: &mut MsgBuf, e: &FullElem, adding: bool) {
    let nested = |buf: &mut MsgBuf, ty: u16, v: &[u8]| {
        buf.nest_start(ty);
        buf.attr(NFTA_DATA_VALUE, v);
        buf.nest_end();
    };
    nested(buf, NFTA_SET_ELEM_KEY, &e.key);
    if let Some(end) = &e.key_end {
        nested(buf, NFTA_SET_ELEM_KEY_END, end);
    }
    if !adding {
        return;
    }
    if let Some(d) = &e.data {
        nested(buf, NFTA_SET_ELEM_DATA, d);
    }
    if let Some(c) = &e.comment {
        buf.attr(NFTA_SET_ELEM_USERDATA, &udata_comment(c));
    }
}

/// Appends a whole batch (begin, ops, end) with sequence numbers from `seq`. Returns the number of
/// messages that will be acknowledged (the batch begin and end are not). The tests' view of
/// [`encode_transaction`], which the socket uses.
#[cfg(test)]
pub(super) fn encode_batch(
    buf: &mut MsgBuf,
    seq: u32,
    genid: Option<u32>,
    family: u8,
    table: &str,
    ops: &[BatchOp<'_>],
) -> usize {
    encode_transaction(buf, seq, genid, family, table, ops, true).len()
}

/// The messages of a batch, and for each one the index of the op it is part of; without `commit` the
/// batch has no end, so the kernel checks every change and then aborts them all (what `nft --check`
/// sends).
pub(super) fn encode_transaction(
    buf: &mut MsgBuf,
    seq: u32,
    genid: Option<u32>,
    family: u8,
    table: &str,
    ops: &[BatchOp<'_>],
    commit: bool,
) -> Vec<usize> {
    buf.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    if let Some(g) = genid {
        buf.attr_u32_be(NFNL_BATCH_GENID, g);
    }
    buf.end();
    let mut op_of_message = Vec::new();
    // Sets declared in this batch get ids 1, 2, ... in order, as nft numbers them.
    let mut set_ids: Vec<(&str, u32)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let BatchOp::AddSet(s) = op {
            let id = set_ids.len() as u32 + 1;
            set_ids.push((&s.name, id));
        }
        let n = encode_op_in(buf, seq + 1 + op_of_message.len() as u32, family, table, op, &set_ids);
        op_of_message.extend(std::iter::repeat_n(i, n));
    }
    if commit {
        let end = seq + 1 + op_of_message.len() as u32;
        buf.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
        buf.end();
    }
    op_of_message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udata_roundtrip() {
        // As nft encodes `comment "ctr1/eth0"` (seen in `nft --debug=netlink`): \x00\x0actr1/eth0\x00
        let u = udata_comment("ctr1/eth0");
        assert_eq!(u, b"\x00\x0actr1/eth0\x00");
        assert_eq!(parse_udata_comment(&u).as_deref(), Some("ctr1/eth0"));
        // other TLVs before the comment are skipped
        let mut v = vec![1u8, 1, 7];
        v.extend_from_slice(&u);
        assert_eq!(parse_udata_comment(&v).as_deref(), Some("ctr1/eth0"));
        assert_eq!(parse_udata_comment(&[1, 1, 7]), None);
        assert_eq!(parse_udata_comment(&[0, 9, 1]), None); // truncated
    }

    #[test]
    fn attribute_padding_and_nesting() {
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_GETSETELEM, NLM_F_ACK, 7, NFPROTO_INET);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, "rcni"); // 4 + 5 -> padded to 12
        b.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        b.attr(NFTA_DATA_VALUE, &[10, 0, 0, 1]);
        b.nest_end();
        b.end();
        let d = &b.data;
        assert_eq!(u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize, d.len());
        assert_eq!(d.len(), 16 + 4 + 12 + 4 + 8);
        assert_eq!(u16::from_ne_bytes(d[4..6].try_into().unwrap()), (10 << 8) | 13);
        assert_eq!(u16::from_ne_bytes(d[6..8].try_into().unwrap()), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(d[8..12].try_into().unwrap()), 7);
        assert_eq!(&d[16..20], &[NFPROTO_INET, 0, 0, 0]);
        // table attribute: len 9, type 1, "rcni\0", 3 bytes padding
        assert_eq!(&d[20..24], &[9, 0, 1, 0]);
        assert_eq!(&d[24..32], b"rcni\0\0\0\0");
        // nested: len 12, type 3 | NLA_F_NESTED
        assert_eq!(u16::from_ne_bytes(d[32..34].try_into().unwrap()), 12);
        assert_eq!(u16::from_ne_bytes(d[34..36].try_into().unwrap()), 3 | NLA_F_NESTED);
        assert_eq!(&d[36..44], &[8, 0, 1, 0, 10, 0, 0, 1]);
        // and it parses back
        let msgs = parse_msgs(d).unwrap();
        assert_eq!(msgs.len(), 1);
        let a: Vec<_> = attrs(&msgs[0].payload[4..]).collect();
        assert_eq!(a[0], (1, &b"rcni\0"[..]));
        assert_eq!(a[1].0, 3);
        assert_eq!(attr(a[1].1, NFTA_DATA_VALUE), Some(&[10u8, 0, 0, 1][..]));
    }

    #[test]
    fn batch_layout_and_element_roundtrip() {
        let mut b = MsgBuf::default();
        let ops = [
            BatchOp::DelElems { set: "pods4-x", keys: vec![vec![10, 0, 0, 5]] },
            BatchOp::AddElems { set: "pods4-x", elems: vec![(vec![10, 0, 0, 5], "c2/eth0".to_string())], excl: true },
        ];
        let n = encode_batch(&mut b, 100, Some(0x01020304), NFPROTO_INET, "rcni", &ops);
        assert_eq!(n, 2);
        let msgs = parse_msgs(&b.data).unwrap();
        let types: Vec<_> = msgs.iter().map(|m| (m.msg_type, m.seq)).collect();
        assert_eq!(
            types,
            vec![
                (NFNL_MSG_BATCH_BEGIN, 100),
                ((10 << 8) | NFT_MSG_DELSETELEM, 101),
                ((10 << 8) | NFT_MSG_NEWSETELEM, 102),
                (NFNL_MSG_BATCH_END, 103)
            ]
        );
        // batch begin: AF_UNSPEC, res_id = NFNL_SUBSYS_NFTABLES big endian, genid attribute big endian
        assert_eq!(&msgs[0].payload[0..4], &[0, 0, 0, 10]);
        assert_eq!(&msgs[0].payload[4..12], &[8, 0, 1, 0, 1, 2, 3, 4]);
        // the NEWSETELEM message parses back as the kernel's answer would
        let elems = parse_setelem_msg(msgs[2].payload).unwrap();
        assert_eq!(elems, vec![SetElem { key: vec![10, 0, 0, 5], comment: Some("c2/eth0".into()) }]);
        let flags = u16::from_ne_bytes(b.data[6..8].try_into().unwrap());
        assert_eq!(flags, NLM_F_REQUEST);
    }

    /// Map data and range ends go in nested attributes 2 and 10 like the key, and parse back.
    #[test]
    fn full_elements_roundtrip() {
        let e = FullElem {
            key: vec![10, 88, 0, 0, 10, 88, 0, 2],
            key_end: Some(vec![10, 88, 0, 255, 10, 88, 0, 2]),
            data: Some(vec![10, 88, 0, 2, 0, 80, 0, 0]),
            comment: Some("net/c1/eth0".into()),
        };
        let mut b = MsgBuf::default();
        let ops = [BatchOp::AddFull { set: "hostport4", elems: vec![e.clone()], excl: true }];
        assert_eq!(encode_batch(&mut b, 1, None, NFPROTO_INET, "rcni", &ops), 1);
        let msgs = parse_msgs(b.finish().unwrap()).unwrap();
        assert_eq!(parse_full_elems(msgs[1].payload).unwrap(), vec![e.clone()]);
        let list = attr(&msgs[1].payload[4..], NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        let (_, one) = attrs(list).next().unwrap();
        let types: Vec<u16> = attrs(one).map(|(t, _)| t).collect();
        assert_eq!(types, vec![NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_USERDATA]);
        // A deletion carries the key and range end only.
        let mut b = MsgBuf::default();
        encode_batch(&mut b, 1, None, NFPROTO_INET, "rcni", &[BatchOp::DelFull { set: "s", elems: vec![e] }]);
        let msgs = parse_msgs(b.finish().unwrap()).unwrap();
        let got = parse_full_elems(msgs[1].payload).unwrap();
        assert_eq!((got[0].data.as_ref(), got[0].comment.as_ref(), got[0].key_end.is_some()), (None, None, true));
    }

    /// Audit finding 11: 5000 keys in one DELSETELEM used to make a nest of 80 000 bytes whose length
    /// field wrapped.
    #[test]
    fn long_element_lists_are_split_into_messages_that_fit() {
        let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| (0x0af1_0000 + i).to_be_bytes().to_vec()).collect();
        let ops = [BatchOp::DelElems { set: "pods4-x", keys: keys.clone() }];
        let mut b = MsgBuf::default();
        let n = encode_batch(&mut b, 1, Some(7), NFPROTO_INET, "rcni", &ops);
        assert!(n > 1, "5000 keys need more than one message");
        let data = b.finish().unwrap();
        let msgs = parse_msgs(data).unwrap();
        assert_eq!(msgs.len(), n + 2);
        let mut parsed = Vec::new();
        for (i, m) in msgs[1..=n].iter().enumerate() {
            assert_eq!(m.msg_type, (10 << 8) | NFT_MSG_DELSETELEM);
            assert_eq!(m.seq, 2 + i as u32);
            let list = attr(&m.payload[4..], NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
            assert!(list.len() + 4 <= MAX_ATTR_LEN);
            assert_eq!(attr(&m.payload[4..], NFTA_SET_ELEM_LIST_SET), Some(&b"pods4-x\0"[..]));
            for (_, e) in attrs(list) {
                parsed.push(attr(attr(e, NFTA_SET_ELEM_KEY).unwrap(), NFTA_DATA_VALUE).unwrap().to_vec());
            }
        }
        assert_eq!(parsed, keys);
        assert_eq!(msgs[n + 1].msg_type, NFNL_MSG_BATCH_END);
    }

    #[test]
    fn an_attribute_too_long_for_its_length_field_is_an_error() {
        let mut b = MsgBuf::default();
        b.begin_nft(NFT_MSG_NEWSETELEM, NLM_F_ACK, 1, NFPROTO_INET);
        b.attr(NFTA_SET_ELEM_USERDATA, &vec![0; 70_000]);
        b.end();
        assert!(b.finish().is_err());
    }

    #[test]
    fn error_codes() {
        assert_eq!(error_code(&(-2i32).to_ne_bytes()).unwrap(), 2);
        assert_eq!(error_code(&0i32.to_ne_bytes()).unwrap(), 0);
        assert!(error_code(&[0, 0]).is_err());
        let s = NetlinkError::Kernel(libc::EPERM).to_string();
        assert!(s.contains("CAP_NET_ADMIN"), "{s}");
    }
}
