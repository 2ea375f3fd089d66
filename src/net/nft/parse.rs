//! Parsing of the kernel's nf_tables answers: messages, attributes, and the objects a listing reports
//! (set elements, rules, chains) as rcni's types.

use super::codec::{
    NFGENMSG_LEN, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_DATA_VALUE, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE, NFTA_RULE_USERDATA, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_USERDATA, NLA_TYPE_MASK, NLMSG_HDRLEN, NetlinkError, NlResult, align4,
};
use super::rule::{self, Stmt};
use super::udata::{parse_udata_comment, parse_udata_owner};

/// One received netlink message.
pub struct Msg<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// Payload after nlmsghdr (for NFT messages: nfgenmsg + attributes).
    pub payload: &'a [u8],
}

/// Splits a receive buffer into messages.
pub fn parse_msgs(buf: &[u8]) -> NlResult<Vec<Msg<'_>>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(NetlinkError::Protocol(format!("bad message length {len} at offset {off} of {}", buf.len())));
        }
        let msg_type = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
        let flags = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().unwrap());
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
        out.push(Msg { msg_type, flags, seq, payload: &buf[off + NLMSG_HDRLEN..off + len] });
        off += align4(len);
    }
    Ok(out)
}

/// Iterates the attributes in `buf`: (type without flags, payload).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes(buf[off..off + 2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[off + 2..off + 4].try_into().unwrap()) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let payload = &buf[off + 4..off + len];
        off += align4(len);
        Some((ty, payload))
    })
}

pub(crate) fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// Error code of an NLMSG_ERROR payload: 0 = ack, else positive errno.
pub(crate) fn error_code(payload: &[u8]) -> NlResult<i32> {
    let raw = payload.get(0..4).ok_or_else(|| NetlinkError::Protocol("short NLMSG_ERROR".into()))?;
    Ok(-i32::from_ne_bytes(raw.try_into().unwrap()))
}

/// A set element as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElem {
    pub key: Vec<u8>,
    pub comment: Option<String>,
}

/// A set or map element in full: key, the range end of a concatenated interval set, a map's data and
/// the comment (owner). What [`BatchOp::AddFull`] writes and [`parse_full_elems`] reads back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FullElem {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// Parses the elements of a NEWSETELEM message with their range ends and map data.
pub fn parse_full_elems(payload: &[u8]) -> NlResult<Vec<FullElem>> {
    let attrs_buf =
        payload.get(NFGENMSG_LEN..).ok_or_else(|| NetlinkError::Protocol("short set element message".into()))?;
    let mut out = Vec::new();
    let Some(list) = attr(attrs_buf, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    let value = |elem: &[u8], ty: u16| attr(elem, ty).and_then(|k| attr(k, NFTA_DATA_VALUE)).map(<[u8]>::to_vec);
    for (ty, elem) in attrs(list) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let key =
            value(elem, NFTA_SET_ELEM_KEY).ok_or_else(|| NetlinkError::Protocol("set element without a key".into()))?;
        out.push(FullElem {
            key,
            key_end: value(elem, NFTA_SET_ELEM_KEY_END),
            data: value(elem, NFTA_SET_ELEM_DATA),
            comment: attr(elem, NFTA_SET_ELEM_USERDATA).and_then(parse_udata_comment),
        });
    }
    Ok(out)
}

/// Parses the elements of a NEWSETELEM message (payload after nlmsghdr).
pub fn parse_setelem_msg(payload: &[u8]) -> NlResult<Vec<SetElem>> {
    let attrs_buf =
        payload.get(NFGENMSG_LEN..).ok_or_else(|| NetlinkError::Protocol("short set element message".into()))?;
    let mut out = Vec::new();
    let Some(list) = attr(attrs_buf, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for (ty, elem) in attrs(list) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let key = attr(elem, NFTA_SET_ELEM_KEY)
            .and_then(|k| attr(k, NFTA_DATA_VALUE))
            .ok_or_else(|| NetlinkError::Protocol("set element without a key".into()))?;
        let comment = attr(elem, NFTA_SET_ELEM_USERDATA).and_then(parse_udata_comment);
        out.push(SetElem { key: key.to_vec(), comment });
    }
    Ok(out)
}

/// A rule as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
    /// The rcni owner tag ([`UDATA_RCNI_OWNER`]), if the rule has one.
    pub owner: Option<String>,
    pub stmts: Vec<Stmt>,
}

pub(super) fn nul_str(v: &[u8]) -> String {
    String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned()
}

pub(super) fn parse_rule_msg(payload: &[u8]) -> NlResult<RuleInfo> {
    let attrs_buf = payload.get(NFGENMSG_LEN..).ok_or_else(|| NetlinkError::Protocol("short rule message".into()))?;
    let handle = attr(attrs_buf, NFTA_RULE_HANDLE).and_then(|h| h.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
    let udata = attr(attrs_buf, NFTA_RULE_USERDATA).unwrap_or_default();
    Ok(RuleInfo {
        chain: attr(attrs_buf, NFTA_RULE_CHAIN).map(nul_str).unwrap_or_default(),
        handle,
        comment: parse_udata_comment(udata),
        owner: parse_udata_owner(udata),
        stmts: attr(attrs_buf, NFTA_RULE_EXPRESSIONS).map(rule::decode).unwrap_or_default(),
    })
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat`, `route`.
    pub chain_type: String,
    /// The family's hook number (bridge: 0 = prerouting).
    pub hooknum: u32,
    pub priority: i32,
    /// NF_ACCEPT (1) or NF_DROP (0).
    pub policy: u32,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    /// `None` for a regular chain.
    pub hook: Option<Hook>,
}

pub(super) fn parse_chain_msg(payload: &[u8]) -> NlResult<(String, ChainInfo)> {
    let a = payload.get(NFGENMSG_LEN..).ok_or_else(|| NetlinkError::Protocol("short chain message".into()))?;
    let be32 = |v: &[u8]| v.try_into().ok().map(u32::from_be_bytes);
    let hook = attr(a, NFTA_CHAIN_HOOK).map(|h| Hook {
        chain_type: attr(a, NFTA_CHAIN_TYPE).map(nul_str).unwrap_or_default(),
        hooknum: attr(h, NFTA_HOOK_HOOKNUM).and_then(be32).unwrap_or(u32::MAX),
        priority: attr(h, NFTA_HOOK_PRIORITY).and_then(be32).unwrap_or(0) as i32,
        policy: attr(a, NFTA_CHAIN_POLICY).and_then(be32).unwrap_or(1),
    });
    let table = attr(a, NFTA_CHAIN_TABLE).map(nul_str).unwrap_or_default();
    Ok((table, ChainInfo { name: attr(a, NFTA_CHAIN_NAME).map(nul_str).unwrap_or_default(), hook }))
}
