//! Userdata of nf_tables objects: libnftnl's TLV list (type u8, length u8, value), which carries the
//! comment (type 0, text + NUL) of elements, rules and chains, and rcni's owner tag.

use super::codec::{UDATA_COMMENT, UDATA_RCNI_OWNER};

/// Encodes a comment as libnftnl userdata (TLV, value NUL-terminated).
pub fn udata_comment(comment: &str) -> Vec<u8> {
    let bytes = comment.as_bytes();
    let n = bytes.len().min(254);
    let mut v = Vec::with_capacity(n + 3);
    v.push(UDATA_COMMENT);
    v.push((n + 1) as u8);
    v.extend_from_slice(&bytes[..n]);
    v.push(0);
    v
}

/// Userdata with a comment and an owner tag (TLVs; the owner only when given).
pub fn udata_comment_and_owner(comment: &str, owner: Option<&str>) -> Vec<u8> {
    let mut v = udata_comment(comment);
    if let Some(o) = owner {
        let bytes = &o.as_bytes()[..o.len().min(254)];
        v.push(UDATA_RCNI_OWNER);
        v.push(bytes.len() as u8);
        v.extend_from_slice(bytes);
    }
    v
}

/// The owner tag in rule userdata, if any.
pub fn parse_udata_owner(udata: &[u8]) -> Option<String> {
    udata_tlv(udata, UDATA_RCNI_OWNER).map(|v| String::from_utf8_lossy(v).into_owned())
}

pub(super) fn udata_tlv(udata: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        if rest.len() < 2 + len {
            return None;
        }
        if ty == wanted {
            return Some(&rest[2..2 + len]);
        }
        rest = &rest[2 + len..];
    }
    None
}

/// Extracts the comment from libnftnl userdata; `None` if there is none.
pub fn parse_udata_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        if rest.len() < 2 + len {
            return None;
        }
        let value = &rest[2..2 + len];
        if ty == UDATA_COMMENT {
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}
