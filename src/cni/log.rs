//! Diagnostics for operators. stdout belongs to the protocol, so logs go to stderr — and, when
//! `RCNI_LOG_FILE` names a file, are appended there too (the runtime often discards a plugin's stderr).

use std::io::Write;

pub fn warn(plugin: &str, msg: impl std::fmt::Display) {
    let line = format!("rcni {plugin}: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("RCNI_LOG_FILE").filter(|p| !p.is_empty()) {
        let _ = append_to(std::path::Path::new(&path), &line);
    }
}

/// Append one line to the log file. The log holds container IDs and addresses and is written by root:
/// created 0600, never through a symlink, never a file someone else owns or a FIFO (that would block).
fn append_to(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    crate::fs_private::open_private(path, true)?.write_all(line.as_bytes())
}

/// With `RCNI_TRACE=1`, print the time since the plugin's `main` started at each step to stderr (and the
/// log file): where an ADD or DEL spends its time, on the operator's own node.
pub fn trace(plugin: &str, step: &str) {
    if *TRACE.get_or_init(|| std::env::var_os("RCNI_TRACE").is_some_and(|v| v == "1")) {
        let ms = START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1000.0;
        warn(plugin, format!("+{ms:.3} ms {step}"));
    }
}

static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Start the trace clock (the skel calls this first thing).
pub fn mark_start() {
    START.get_or_init(std::time::Instant::now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn log_file_is_private_and_never_followed_through_a_symlink() {
        let t = tempfile::TempDir::with_prefix("rcni-log-").unwrap();
        let d = t.path();
        let log = d.join("rcni.log");
        append_to(&log, "one\n").unwrap();
        append_to(&log, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        let target = d.join("target");
        std::fs::write(&target, "").unwrap();
        symlink(&target, d.join("link")).unwrap();
        assert!(append_to(&d.join("link"), "x\n").is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "", "written through a symlink");
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(append_to(&d.join("fifo"), "x\n").is_err(), "a FIFO without reader must not block");
    }
}
