//! Delegation: run another plugin (usually IPAM) found on CNI_PATH with the same environment, only
//! CNI_COMMAND changed — as the spec and libcni's DelegateArgs do — and CNI_NETNS handed over as the
//! namespace skel opened (`super::process`), so the delegate acts on the namespace this plugin checked.
//! `rcni::pod::ipam` builds on this.

use super::error::{CniError, CniResult};
pub use super::lookup::find_plugin;
use super::process::{ChildNetns, run_with_netns};
use super::skel::{self, Command};
use std::path::Path;
use std::process::Stdio;

/// Run `binary` with `command`, `stdin` and our environment (CNI_COMMAND replaced; for ADD and DEL, when
/// skel opened `netns` for this command, CNI_NETNS the open namespace). Its stderr is passed on to ours; its error JSON
/// comes back unchanged (the spec says not to wrap a delegate's error).
pub fn exec(binary: &Path, command: Command, stdin: &[u8], netns: &str) -> CniResult<Vec<u8>> {
    let mut cmd = std::process::Command::new(binary);
    cmd.env("CNI_COMMAND", command.as_str()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // Not opened by skel (DEL of a vanished netns, a request built in memory): the path goes as it is.
    // CHECK too: it changes nothing, and plugins compare prevResult's `sandbox` with CNI_NETNS as a string
    // (the reference's CHECK does), which the fd path would never match.
    let opened = skel::opened_netns(netns).flatten().filter(|_| matches!(command, Command::Add | Command::Del));
    let child_netns = opened.as_ref().map(|file| ChildNetns { file, path: netns });
    let out = run_with_netns(&mut cmd, stdin, child_netns)
        .map_err(|e| CniError::internal(format!("failed to run {}: {e}", binary.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let name = binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(CniError::internal(format!("plugin {name} failed with no error message ({})", out.status)));
    }
    match serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().as_ref().and_then(CniError::from_value) {
        Some(e) => Err(e),
        None => Err(CniError::internal(format!(
            "plugin {name} failed ({}) and its output is not a CNI error: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// `exec`, again while the script is "text file busy": another test's child, forked while `script` had
    /// the file open for writing, holds that descriptor until its own exec.
    fn run(binary: &Path, command: Command, stdin: &[u8], netns: &str) -> CniResult<Vec<u8>> {
        for _ in 0..50 {
            match exec(binary, command, stdin, netns) {
                Err(e) if e.msg.contains("Text file busy") => std::thread::sleep(std::time::Duration::from_millis(10)),
                other => return other,
            }
        }
        exec(binary, command, stdin, netns)
    }

    fn tempdir(tag: &str) -> tempfile::TempDir {
        tempfile::TempDir::with_prefix(format!("rcni-delegate-{tag}-")).unwrap()
    }

    #[test]
    fn passes_stdin_command_and_errors_through() {
        let d = tempdir("exec");
        let echo = script(d.path(), "echo", "[ \"$CNI_COMMAND\" = ADD ] || exit 3; cat");
        assert_eq!(run(&echo, Command::Add, b"{\"x\":1}", "").unwrap(), b"{\"x\":1}");
        assert!(run(&echo, Command::Del, b"", "").is_err());
        let fail = script(d.path(), "fail", "echo '{\"code\":11,\"msg\":\"busy\",\"details\":\"d\"}'; exit 1");
        let e = run(&fail, Command::Add, b"", "").unwrap_err();
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (11, "busy", "d"));
        let silent = script(d.path(), "silent", "exit 2");
        assert!(run(&silent, Command::Add, b"", "").unwrap_err().msg.contains("no error message"));
        let junk = script(d.path(), "junk", "echo oops; exit 1");
        assert!(run(&junk, Command::Add, b"", "").unwrap_err().msg.contains("oops"));
    }

    /// A delegate that prints more than a pipe holds before reading its (also larger) stdin: both sides must
    /// make progress at once.
    #[test]
    fn large_output_before_large_input_does_not_deadlock() {
        let d = tempdir("big");
        let big = script(d.path(), "big", "head -c 200000 /dev/zero | tr '\\0' x; cat >/dev/null");
        let stdin = vec![b' '; 200_000];
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(run(&big, Command::Add, &stdin, ""));
        });
        let out = wait.recv_timeout(std::time::Duration::from_secs(120)).expect("delegate exec deadlocked");
        assert_eq!(out.unwrap().len(), 200_000);
    }
}
