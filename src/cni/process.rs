//! Running a plugin process with bytes on its stdin and collecting its output — shared by the runtime
//! ([`super::runtime::invoke`]) and delegation ([`super::delegate`]).

use std::io::Write;
use std::process::{Command, Output, Stdio};

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
