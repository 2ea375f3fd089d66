//! Running a plugin process with bytes on its stdin and collecting its output — shared by the runtime
//! ([`super::runtime::invoke`]) and delegation ([`super::delegate`]).
//!
//! A child plugin that is to act on a network namespace this process already opened gets that open file,
//! not the path: CNI_NETNS becomes `/proc/<our pid>/fd/<n>`, with fd `n` left open across its exec. A path
//! can be re-pointed (a bind mount moved, a symlink replaced, a pid recycled) between our open and the
//! child's; the fd cannot, so the child configures the namespace that was checked.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Spawn `cmd` with `stdin` written to its standard input and wait for it; stdout and stderr are as `cmd`
/// configures them (piped ones are collected into the [`Output`]). stdin is written from a thread while
/// the output is read, so a plugin that prints a lot before reading all its input cannot deadlock us.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::piped()).spawn()?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    std::thread::scope(|s| {
        s.spawn(move || {
            // A plugin may exit without reading stdin; EPIPE is not our problem then (its exit status tells).
            let _ = pipe.write_all(stdin);
        });
        child.wait_with_output()
    })
}

/// The network namespace a child plugin is to act on: the file this process opened for the path the
/// runtime gave (`path`, what results and logs name).
#[derive(Clone, Copy)]
pub struct ChildNetns<'a> {
    pub file: &'a File,
    pub path: &'a str,
}

/// [`run_with_stdin`] with CNI_NETNS handed over as an open fd (module docs). The fd lives until the child
/// has exited (this call waits for it). An ADD result naming the fd path as an interface's `sandbox` gets
/// the runtime's path back, so what is cached and reported does not name a path that dies with us.
pub fn run_with_netns(cmd: &mut Command, stdin: &[u8], netns: Option<ChildNetns>) -> std::io::Result<Output> {
    let Some(ns) = netns else { return run_with_stdin(cmd, stdin) };
    // A duplicate at 3 or above: the child's stdio setup (dup2 onto 0-2) cannot overwrite it.
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own (or -1).
    let raw = unsafe { libc::fcntl(ns.file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by fcntl and nothing else owns it.
    let held = unsafe { OwnedFd::from_raw_fd(raw) };
    let handed = format!("/proc/{}/fd/{raw}", std::process::id());
    cmd.env("CNI_NETNS", &handed);
    // SAFETY: runs in the child between fork and exec; fcntl is async-signal-safe and the closure touches
    // only the fd number. Clearing CLOEXEC there (not here) keeps the fd out of every other child this
    // process starts meanwhile.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut out = run_with_stdin(cmd, stdin);
    drop(held);
    if let Ok(o) = &mut out {
        restore_sandbox(&mut o.stdout, &handed, ns.path);
    }
    out
}

/// In a result printed on `stdout`, every `interfaces[].sandbox` equal to `handed` becomes `path`.
fn restore_sandbox(stdout: &mut Vec<u8>, handed: &str, path: &str) {
    let Ok(mut v) = serde_json::from_slice::<Value>(stdout) else { return };
    let mut changed = false;
    for iface in v.get_mut("interfaces").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(sandbox) = iface.get_mut("sandbox").filter(|s| s.as_str() == Some(handed)) {
            *sandbox = Value::String(path.to_string());
            changed = true;
        }
    }
    if changed {
        *stdout = serde_json::to_vec(&v).expect("a JSON value serializes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child reaches the namespace through the fd path whatever happens to the original path: here the
    /// "namespace" is this process's own netns file and the path a symlink removed before the child runs.
    #[test]
    fn child_gets_the_open_file_and_results_name_the_runtime_path() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::TempDir::with_prefix("rcni-process-").unwrap();
        let link = dir.path().join("ns");
        std::os::unix::fs::symlink("/proc/self/ns/net", &link).unwrap();
        let file = File::open(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        let path = link.to_str().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"printf '{"interfaces":[{"name":"eth0","sandbox":"%s"},{"name":"h"}],"ino":%s}' "$CNI_NETNS" "$(stat -L -c %i "$CNI_NETNS")""#)
            .stdout(Stdio::piped());
        let out = run_with_netns(&mut cmd, b"", Some(ChildNetns { file: &file, path })).unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ino"], file.metadata().unwrap().ino(), "the child opened the file we hold: {v}");
        assert_eq!(v["interfaces"][0]["sandbox"], path, "{v}");
        assert!(v["interfaces"][1].get("sandbox").is_none(), "{v}");
    }
}
