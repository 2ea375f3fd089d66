//! Byte-level pieces of the index's text format: %XX escaping of fields, the address as its file name,
//! splitting at a byte.

use std::net::IpAddr;

pub(super) fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

pub(super) fn push_escaped(out: &mut Vec<u8>, field: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if !field.iter().any(|&b| needs_escape(b)) {
        out.extend_from_slice(field);
        return;
    }
    for &b in field {
        if needs_escape(b) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

pub(super) fn unescape(tok: &[u8]) -> Option<Vec<u8>> {
    if !tok.contains(&b'%') {
        return Some(tok.to_vec());
    }
    let mut out = Vec::with_capacity(tok.len());
    let mut i = 0;
    while i < tok.len() {
        if tok[i] == b'%' {
            let hex = std::str::from_utf8(tok.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(tok[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The address as `Display` writes it (the file's name); IPv4 without the formatting machinery, which costs
/// more than everything else per record.
pub(super) fn push_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, &o) in a.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(a) => out.extend_from_slice(a.to_string().as_bytes()),
    }
}

/// `bytes` cut at every `sep`, found with memchr: splitting byte by byte costs more than the rest of parsing.
pub(super) fn split_at_byte(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(sep, bytes).chain(std::iter::once(bytes.len()));
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let field = &bytes[start..end];
        start = end + 1;
        Some(field)
    })
}
