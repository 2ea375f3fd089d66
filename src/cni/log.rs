//! Diagnostics for operators. stdout belongs to the protocol, so logs go to stderr — and, when
//! `RCNI_LOG_FILE` names a file, are appended there too (the runtime often discards a plugin's stderr).

use std::io::Write;

pub fn warn(plugin: &str, msg: impl std::fmt::Display) {
    let line = format!("rcni {plugin}: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("RCNI_LOG_FILE").filter(|p| !p.is_empty()) {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
