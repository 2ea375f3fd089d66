//! What a reservation file is: `<dataDir>/<network>/<ip>`, named by the address as the reference writes
//! it, holding `<containerID>\r\n<ifname>` (or, from very old versions, the container ID only).

use std::fmt;
use std::net::IpAddr;

/// Names that are addresses (reservation files). Rejects `lock`, `last_reserved_ip.*`, temp files.
pub fn name_ip(name: &std::ffi::OsStr) -> Option<IpAddr> {
    let s = name.to_str()?;
    s.parse::<IpAddr>().ok().filter(|ip| ip.to_string() == s)
}

/// Who holds a reservation, as read from `<dataDir>/<network>/<ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub container_id: String,
    /// `None` for files written by very old versions (container ID only).
    pub ifname: Option<String>,
}

impl Holder {
    /// Parse file content: `containerID` CRLF `ifname`, or a bare container ID. Whitespace-trimmed.
    pub fn parse(content: &str) -> Holder {
        let t = content.trim();
        match t.split_once("\r\n") {
            Some((id, ifname)) => Holder { container_id: id.to_string(), ifname: Some(ifname.to_string()) },
            None => Holder { container_id: t.to_string(), ifname: None },
        }
    }

    /// Exactly this attachment (new-format file).
    pub fn is(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id.trim() && self.ifname.as_deref() == Some(ifname)
    }

    /// This attachment, or a legacy file of the same container.
    pub fn belongs_to(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id.trim() && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ifname {
            Some(i) => write!(f, "container {} interface {}", self.container_id, i),
            None => write!(f, "container {}", self.container_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, ifn: &str) -> Holder {
        Holder { container_id: id.into(), ifname: Some(ifn.into()) }
    }
    use proptest::prelude::*;

    proptest! {
        /// Any file content gives a holder (never a panic); any name is an address or not one.
        #[test]
        fn any_content_or_name_parses(content in any::<String>(), name in prop::collection::vec(any::<u8>(), 0..60)) {
            let _ = Holder::parse(&content);
            let name: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(name);
            if let Some(ip) = name_ip(&name) {
                prop_assert_eq!(Some(ip.to_string()), name.to_str().map(str::to_string));
            }
        }

        /// What the store writes (`<containerID>\r\n<ifname>`, both validated names) reads back as its holder.
        #[test]
        fn written_reservations_round_trip(id in "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", ifname in "[a-z][a-z0-9_-]{0,14}") {
            let back = Holder::parse(&format!("{id}\r\n{ifname}"));
            prop_assert!(back.is(&id, &ifname), "{:?}", back);
        }

        /// `last_reserved_ip.N` holds an address as `Display` writes it: every address reads back.
        #[test]
        fn addresses_round_trip_through_their_file_name(b in any::<[u8; 16]>(), v4 in any::<bool>()) {
            let ip = if v4 { IpAddr::from([b[0], b[1], b[2], b[3]]) } else { IpAddr::from(b) };
            prop_assert_eq!(name_ip(std::ffi::OsStr::new(&ip.to_string())), Some(ip));
        }
    }

    #[test]
    fn holder_parsing() {
        assert_eq!(Holder::parse("abc\r\neth0"), holder("abc", "eth0"));
        assert_eq!(Holder::parse("  abc\r\neth0\n"), holder("abc", "eth0"));
        assert_eq!(Holder::parse("abc\n"), Holder { container_id: "abc".into(), ifname: None });
        assert!(holder("abc", "eth0").is("abc", "eth0"));
        assert!(!holder("abc", "eth0").is("abc", "eth1"));
        assert!(Holder::parse("abc").belongs_to("abc", "eth1"));
        assert!(!Holder::parse("abc").is("abc", "eth1"));
    }

    #[test]
    fn only_canonical_address_names_are_reservations() {
        for (name, ip) in [
            ("10.0.0.2", Some("10.0.0.2")),
            ("fd00::2", Some("fd00::2")),
            ("FD00::2", None),
            ("010.0.0.2", None),
            ("lock", None),
            ("last_reserved_ip.0", None),
        ] {
            assert_eq!(name_ip(std::ffi::OsStr::new(name)), ip.map(|i| i.parse().unwrap()), "{name}");
        }
    }
}
