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
