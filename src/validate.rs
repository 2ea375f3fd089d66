//! The rules for names and IDs that arrive from outside: container IDs, network names, interface
//! (device) names and plugin types. The CNI spec's rules, plus ours: no NUL or other control character
//! anywhere (the kernel stops copying a name at NUL, so `"cni0\0x"` would act on `cni0` while every
//! comparison in userspace uses the whole string), no `/`, no `.`/`..`.
//!
//! Pure rules, no error codes: the caller knows where a value came from (an environment variable is
//! code 4, a config field code 7) and names that field in its error.

use std::fmt;

/// Longest interface name the kernel accepts (`IFNAMSIZ` − 1).
pub const IFNAME_MAX: usize = 15;

/// Which rule a value was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Container IDs and network names: `^[A-Za-z0-9][A-Za-z0-9_.\-]*$` (they become file names).
    Id,
    /// Interface names: what the kernel accepts, without control characters.
    Device,
    /// A plugin `type`: a file name looked up on CNI_PATH.
    PluginType,
}

impl NameKind {
    /// The rule, worded for the operator who has to fix the value.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Id => "use a letter or digit first, then only letters, digits, '_', '.' and '-'",
            NameKind::Device => {
                "an interface name has 1 to 15 bytes and no '/', ':', whitespace or control characters, \
                 and is not '.' or '..'"
            }
            NameKind::PluginType => "a plugin type is a file name in CNI_PATH, without '/' or control characters",
        }
    }
}

/// What is wrong with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Empty,
    TooLong {
        len: usize,
        max: usize,
    },
    /// `.` or `..`.
    Reserved,
    /// A character below 0x20 or 0x7f (NUL included).
    ControlChar(char),
    /// A character the rule does not allow (`/`, `:`, whitespace, or outside the ID pattern).
    Forbidden(char),
    /// The first character of an ID must be a letter or digit.
    BadFirst(char),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "empty"),
            Problem::TooLong { len, max } => write!(f, "too long ({len} bytes, at most {max})"),
            Problem::Reserved => write!(f, "reserved name"),
            Problem::ControlChar('\0') => write!(f, "contains a NUL byte"),
            Problem::ControlChar(c) => write!(f, "contains the control character U+{:04X}", *c as u32),
            Problem::Forbidden(c) if c.is_whitespace() => write!(f, "contains whitespace ({c:?})"),
            Problem::Forbidden(c) => write!(f, "contains {c:?}"),
            Problem::BadFirst(c) => write!(f, "starts with {c:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameError {
    pub kind: NameKind,
    pub problem: Problem,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.problem.fmt(f)
    }
}

impl std::error::Error for NameError {}

fn is_control(c: char) -> bool {
    (c as u32) < 0x20 || c as u32 == 0x7f
}

fn check(
    kind: NameKind,
    s: &str,
    max: Option<usize>,
    allowed: impl Fn(usize, char) -> Result<(), Problem>,
) -> Result<(), NameError> {
    let fail = |problem| Err(NameError { kind, problem });
    if s.is_empty() {
        return fail(Problem::Empty);
    }
    // Control characters first: a NUL is the one problem that makes the rest of the name a lie.
    if let Some(c) = s.chars().find(|&c| is_control(c)) {
        return fail(Problem::ControlChar(c));
    }
    if let Some(max) = max.filter(|&m| s.len() > m) {
        return fail(Problem::TooLong { len: s.len(), max });
    }
    if s == "." || s == ".." {
        return fail(Problem::Reserved);
    }
    for (i, c) in s.chars().enumerate() {
        if let Err(problem) = allowed(i, c) {
            return fail(problem);
        }
    }
    Ok(())
}

fn id(s: &str) -> Result<(), NameError> {
    check(NameKind::Id, s, None, |i, c| match c {
        c if c.is_ascii_alphanumeric() => Ok(()),
        '_' | '.' | '-' if i > 0 => Ok(()),
        c if i == 0 => Err(Problem::BadFirst(c)),
        c => Err(Problem::Forbidden(c)),
    })
}

/// `CNI_CONTAINERID`: the spec's pattern.
pub fn container_id(s: &str) -> Result<(), NameError> {
    id(s)
}

/// A network (or conflist) name: the same pattern as container IDs, since it becomes a directory and
/// file name (host-local's dataDir, the result cache).
pub fn network_name(s: &str) -> Result<(), NameError> {
    id(s)
}

/// An interface name: `CNI_IFNAME`, a bridge, a VXLAN device, an underlay device.
pub fn device_name(s: &str) -> Result<(), NameError> {
    check(NameKind::Device, s, Some(IFNAME_MAX), |_, c| {
        if c == '/' || c == ':' || c.is_whitespace() { Err(Problem::Forbidden(c)) } else { Ok(()) }
    })
}

/// A plugin `type` (or `ipam.type`): a file name on CNI_PATH, never a path, so a config cannot make
/// the runtime or a plugin execute an arbitrary binary.
pub fn plugin_type(s: &str) -> Result<(), NameError> {
    check(NameKind::PluginType, s, None, |_, c| if c == '/' { Err(Problem::Forbidden(c)) } else { Ok(()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(r: Result<(), NameError>) -> Option<Problem> {
        r.err().map(|e| e.problem)
    }

    #[test]
    fn ids_follow_the_spec_pattern() {
        for ok in ["cbr0", "k8s-pod-network", "net_1.a", "0abc", "A"] {
            assert_eq!(container_id(ok), Ok(()), "{ok}");
            assert_eq!(network_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(problem(network_name("")), Some(Problem::Empty));
        assert_eq!(problem(network_name(".")), Some(Problem::Reserved));
        assert_eq!(problem(network_name("..")), Some(Problem::Reserved));
        assert_eq!(problem(network_name(".hidden")), Some(Problem::BadFirst('.')));
        assert_eq!(problem(container_id("-x")), Some(Problem::BadFirst('-')));
        assert_eq!(problem(network_name("a/b")), Some(Problem::Forbidden('/')));
        assert_eq!(problem(network_name("a b")), Some(Problem::Forbidden(' ')));
        assert_eq!(problem(network_name("é")), Some(Problem::BadFirst('é')));
        assert_eq!(problem(network_name("n\0x")), Some(Problem::ControlChar('\0')));
    }

    #[test]
    fn device_names_refuse_nul_and_control_characters() {
        for ok in ["eth0", "cni0", "rcni.1", "123456789012345", "br-x_y@z"] {
            assert_eq!(device_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(problem(device_name("cni0\0x")), Some(Problem::ControlChar('\0')));
        assert_eq!(problem(device_name("cni\u{1}")), Some(Problem::ControlChar('\u{1}')));
        assert_eq!(problem(device_name("cni\u{7f}")), Some(Problem::ControlChar('\u{7f}')));
        assert_eq!(problem(device_name("cni\n")), Some(Problem::ControlChar('\n')));
        assert_eq!(problem(device_name("")), Some(Problem::Empty));
        assert_eq!(problem(device_name("1234567890123456")), Some(Problem::TooLong { len: 16, max: 15 }));
        assert_eq!(problem(device_name("..")), Some(Problem::Reserved));
        assert_eq!(problem(device_name("a/b")), Some(Problem::Forbidden('/')));
        assert_eq!(problem(device_name("a:b")), Some(Problem::Forbidden(':')));
        assert_eq!(problem(device_name("a b")), Some(Problem::Forbidden(' ')));
        assert_eq!(problem(device_name("a\u{a0}b")), Some(Problem::Forbidden('\u{a0}')));
        assert!(device_name("cni0\0x").unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn plugin_types_are_file_names() {
        assert_eq!(plugin_type("host-local"), Ok(()));
        assert_eq!(problem(plugin_type("../x")), Some(Problem::Forbidden('/')));
        assert_eq!(problem(plugin_type("/bin/sh")), Some(Problem::Forbidden('/')));
        assert_eq!(problem(plugin_type("..")), Some(Problem::Reserved));
        assert_eq!(problem(plugin_type("x\0")), Some(Problem::ControlChar('\0')));
    }
}
