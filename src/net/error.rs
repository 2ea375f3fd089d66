//! One error type for the kernel layer.
//!
//! Every error carries *what we were doing* (e.g. `create bridge cni0 (netns /run/netns/node)`) and the
//! cause. Callers decide what is benign by **errno** ([`NetError::is_exists`], [`NetError::is_not_found`],
//! ...), never by message text: kernel messages change between versions and locales, errnos do not.

use std::fmt;
use std::io;

use netlink_packet_core::ErrorMessage;

/// Why an operation failed.
#[derive(Debug)]
enum Cause {
    /// The kernel answered a netlink request with a negative errno (stored positive here).
    /// `extack` is the kernel's extended-ACK message, for humans only.
    Kernel { errno: i32, extack: Option<String> },
    /// A system call or file operation failed (sysctl files, setns, socket creation, ...).
    Io(io::Error),
    /// Anything else: an unexpected reply, a timeout, a malformed argument.
    Other(String),
}

/// An error from `rcni::net`: a context (what was being done, on which device/address/netns) and a cause.
#[derive(Debug)]
pub struct NetError {
    context: String,
    cause: Cause,
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;

impl NetError {
    /// An error from a netlink `NLMSG_ERROR` reply.
    pub(crate) fn from_netlink(context: impl Into<String>, msg: &ErrorMessage) -> Self {
        NetError {
            context: context.into(),
            cause: Cause::Kernel {
                // The kernel sends `-errno`; keep it positive like `io::Error::raw_os_error`.
                errno: msg.raw_code().unsigned_abs() as i32,
                extack: extack_message(&msg.header),
            },
        }
    }

    /// An error with a plain errno (positive), as a kernel answer.
    pub fn from_errno(context: impl Into<String>, errno: i32) -> Self {
        NetError { context: context.into(), cause: Cause::Kernel { errno: errno.abs(), extack: None } }
    }

    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        NetError { context: context.into(), cause: Cause::Io(err) }
    }

    pub(crate) fn other(context: impl Into<String>, what: impl Into<String>) -> Self {
        NetError { context: context.into(), cause: Cause::Other(what.into()) }
    }

    /// What was being done when the error happened.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Prefix more context, e.g. the plugin step: `"attach pod: " + "create veth ..."`.
    pub fn with_context(mut self, outer: impl fmt::Display) -> Self {
        self.context = format!("{outer}: {}", self.context);
        self
    }

    /// The positive errno, if the cause has one (kernel NACK or OS error).
    pub fn errno(&self) -> Option<i32> {
        match &self.cause {
            Cause::Kernel { errno, .. } => Some(*errno),
            Cause::Io(e) => e.raw_os_error(),
            Cause::Other(_) => None,
        }
    }

    /// The kernel's extended-ACK text, if it sent one (e.g. "Nexthop has invalid gateway").
    pub fn kernel_message(&self) -> Option<&str> {
        match &self.cause {
            Cause::Kernel { extack, .. } => extack.as_deref(),
            _ => None,
        }
    }

    fn errno_is(&self, set: &[i32]) -> bool {
        self.errno().is_some_and(|e| set.contains(&e))
    }

    /// The object already exists (EEXIST): a link, address, route or neighbour created concurrently.
    pub fn is_exists(&self) -> bool {
        self.errno_is(&[libc::EEXIST])
    }

    /// The object is absent. The kernel spells "not found" differently per object, so this covers all:
    /// ENODEV (link), ENOENT (neighbour, FDB, sysctl file, netns file), ESRCH (route delete),
    /// EADDRNOTAVAIL (address delete).
    pub fn is_not_found(&self) -> bool {
        self.errno_is(&[libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL])
    }

    /// EADDRNOTAVAIL alone (e.g. an address to delete is not on the link, or a VXLAN local IP is not
    /// configured anywhere).
    pub fn is_addr_not_available(&self) -> bool {
        self.errno_is(&[libc::EADDRNOTAVAIL])
    }

    /// EBUSY, e.g. renaming a link that is up.
    pub fn is_busy(&self) -> bool {
        self.errno_is(&[libc::EBUSY])
    }

    /// EOPNOTSUPP / ENOTSUP / EAFNOSUPPORT: the kernel lacks the feature (e.g. no vxlan module, IPv6 off).
    pub fn is_not_supported(&self) -> bool {
        self.errno_is(&[libc::EOPNOTSUPP, libc::EAFNOSUPPORT, libc::EPROTONOSUPPORT])
    }

    /// The operation ran out of time (oper-up wait, dump retries).
    pub fn is_timeout(&self) -> bool {
        self.errno_is(&[libc::ETIMEDOUT])
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Kernel { errno, extack } => {
                let os = io::Error::from_raw_os_error(*errno);
                write!(f, "{}: {}", self.context, os)?;
                if let Some(m) = extack {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Cause::Io(e) => write!(f, "{}: {}", self.context, e),
            Cause::Other(s) => write!(f, "{}: {}", self.context, s),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// `NLMSGERR_ATTR_MSG`: the human-readable string the kernel attaches with extended ACKs.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`; with `NETLINK_CAP_ACK` the error payload echoes only this header.
const NLMSGHDR_LEN: usize = 16;

/// Pull the extended-ACK message out of an error payload.
///
/// netlink-packet-core hands us everything after the errno as `header`. Our sockets set
/// `NETLINK_CAP_ACK`, so the kernel echoes only the 16-byte request header, and `NETLINK_EXT_ACK`, so TLVs
/// follow it. Only used for display, never for classification.
pub(crate) fn extack_message(payload: &[u8]) -> Option<String> {
    scan_tlvs(payload.get(NLMSGHDR_LEN..)?)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn scan_tlvs(mut buf: &[u8]) -> Option<String> {
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &buf[4..len];
            let s = s.split(|b| *b == 0).next().unwrap_or(&[]);
            let s = String::from_utf8_lossy(s).trim().to_string();
            return (!s.is_empty()).then_some(s);
        }
        buf = buf.get(align4(len)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(errno: i32, payload: Vec<u8>) -> ErrorMessage {
        let mut m = ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-errno);
        m.header = payload;
        m
    }

    #[test]
    fn classifies_by_errno() {
        let e = NetError::from_netlink("create bridge cni0", &nack(libc::EEXIST, vec![]));
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.errno(), Some(libc::EEXIST));
        for errno in [libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL] {
            let e = NetError::from_netlink("x", &nack(errno, vec![]));
            assert!(e.is_not_found(), "errno {errno}");
            assert!(!e.is_exists());
        }
        let e = NetError::io("read sysctl", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(e.is_not_found());
        let e = NetError::other("wait", "nope");
        assert_eq!(e.errno(), None);
        assert!(!e.is_not_found());
        assert!(NetError::from_errno("t", libc::ETIMEDOUT).is_timeout());
        assert!(NetError::from_errno("t", -libc::EBUSY).is_busy());
    }

    #[test]
    fn display_has_context_and_os_text() {
        let e = NetError::from_netlink("delete link veth0", &nack(libc::ENODEV, vec![]));
        let s = e.to_string();
        assert!(s.starts_with("delete link veth0: "), "{s}");
        assert!(s.contains("No such device"), "{s}");
        let e = e.with_context("DEL");
        assert_eq!(e.context(), "DEL: delete link veth0");
    }

    #[test]
    fn parses_extack_message_with_capped_echo() {
        // nlmsghdr echo (len field says 40: the original request), then a MSG TLV.
        let mut p = Vec::new();
        p.extend_from_slice(&40u32.to_ne_bytes());
        p.extend_from_slice(&[0u8; 12]);
        let msg = b"Nexthop has invalid gateway\0";
        let tlv_len = (4 + msg.len()) as u16;
        p.extend_from_slice(&tlv_len.to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(msg);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        let e = NetError::from_netlink("add route", &nack(libc::EINVAL, p));
        assert_eq!(e.kernel_message(), Some("Nexthop has invalid gateway"));
        assert!(e.to_string().ends_with("(Nexthop has invalid gateway)"));
    }

    #[test]
    fn no_extack_on_short_payload() {
        assert_eq!(extack_message(&[1, 2, 3]), None);
        assert_eq!(extack_message(&[0u8; 16]), None);
    }
}
