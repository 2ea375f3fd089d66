//! The one runner for the external commands rcni still executes (`iptables-save`/`iptables-restore` for
//! the reference-compatible backends; no nftables state is written with `nft`).
//!
//! Every run has a deadline: a command that does not finish in time is killed (SIGKILL) and reported,
//! so a stuck tool cannot hang a CNI call. stdin is written and stdout/stderr are read by helper
//! threads, so a command that fills a pipe before reading its input cannot deadlock us either.
//! Errors name the command line, what happened and, when it ran, its stderr.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a command may run unless the caller says otherwise (the reference plugins allow `nft` 55 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(55);

/// A command to run: program (looked up with [`find_binary`]), arguments, optional stdin.
#[derive(Debug, Clone)]
pub struct Command {
    program: PathBuf,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

/// What a successful command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum CommandError {
    /// It could not be started (not installed, not executable).
    Spawn { command: String, err: io::Error },
    /// It ran past its deadline and was killed.
    TimedOut { command: String, after: Duration },
    /// It exited unsuccessfully.
    Failed { command: String, status: ExitStatus, stderr: String },
    /// Talking to it failed (waiting, writing its input).
    Io { command: String, err: io::Error },
}

impl CommandError {
    /// The command line that failed.
    pub fn command(&self) -> &str {
        match self {
            CommandError::Spawn { command, .. }
            | CommandError::TimedOut { command, .. }
            | CommandError::Failed { command, .. }
            | CommandError::Io { command, .. } => command,
        }
    }

    /// The command's stderr, if it ran to completion and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            CommandError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Whether the program is missing (so there is nothing it could have made).
    pub fn is_not_installed(&self) -> bool {
        matches!(self, CommandError::Spawn { err, .. } if err.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Spawn { command, err } => write!(f, "`{command}` could not be started: {err}"),
            CommandError::TimedOut { command, after } => write!(
                f,
                "`{command}` did not finish within {} s and was killed (huge ruleset or overloaded node?)",
                after.as_secs()
            ),
            CommandError::Failed { command, status, stderr } => write!(f, "`{command}` failed ({status}): {stderr}"),
            CommandError::Io { command, err } => write!(f, "`{command}`: {err}"),
        }
    }
}

impl std::error::Error for CommandError {}

impl Command {
    /// `program` is a bare name (looked up on `PATH` and the sbin directories) or a path.
    pub fn new(program: &str) -> Command {
        Command {
            program: find_binary(program),
            args: Vec::new(),
            stdin: None,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Command {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Command {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Command {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Command {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Runs the command to completion (or its deadline). Success means exit status 0.
    pub fn run(&self) -> Result<Output, CommandError> {
        let command = self.line();
        let mut child = std::process::Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| CommandError::Spawn { command: command.clone(), err })?;
        let input = self.stdin.clone();
        let pipe_in = child.stdin.take();
        let writer = std::thread::spawn(move || match (input, pipe_in) {
            (Some(data), Some(mut pipe)) => pipe.write_all(&data),
            _ => Ok(()),
        });
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let status = match wait_timeout(&mut child, self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::TimedOut { command, after: self.timeout });
            }
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Io { command, err });
            }
        };
        let written = writer.join().unwrap_or(Ok(()));
        let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).trim().to_string();
        if !status.success() {
            return Err(CommandError::Failed { command, status, stderr });
        }
        // A broken pipe after a successful exit means the command did not want all of its input.
        written.map_err(|err| CommandError::Io { command, err })?;
        Ok(Output { stdout, stderr })
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit, at most `timeout`; `None` if it is still running. Sleeps in `poll` on a
/// pidfd (no added latency); on kernels without pidfds it polls `try_wait` every millisecond.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; the child is not reaped
    // before we are done with the fd (only try_wait below reaps it), so the pid cannot be reused.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as libc::c_int;
    let result = loop {
        if let Some(status) = child.try_wait()? {
            break Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ok(None);
        }
        if fd >= 0 {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd; EINTR just loops.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        } else {
            std::thread::sleep(Duration::from_millis(1).min(left));
        }
    };
    if fd >= 0 {
        // SAFETY: we own the fd.
        unsafe { libc::close(fd) };
    }
    result
}

/// Locates an executable: `$PATH` first, then the usual sbin directories (runtimes often exec plugins
/// with a minimal `PATH`). A path with a `/` is taken as is; an unknown name is returned bare, so the
/// spawn error names it.
pub fn find_binary(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_feeds_stdin() {
        let out = Command::new("sh").args(["-c", "cat; echo err >&2"]).stdin("hello\n").run().unwrap();
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.stderr, "err");
    }

    #[test]
    fn failure_names_the_command_and_carries_stderr() {
        let e = Command::new("sh").args(["-c", "echo broken >&2; exit 3"]).run().unwrap_err();
        assert!(matches!(e, CommandError::Failed { .. }), "{e:?}");
        assert_eq!(e.stderr(), Some("broken"));
        let s = e.to_string();
        assert!(s.contains("sh -c echo broken") && s.contains("exit status: 3") && s.contains("broken"), "{s}");
    }

    #[test]
    fn missing_program() {
        let e = Command::new("rcni-no-such-tool").run().unwrap_err();
        assert!(e.is_not_installed(), "{e:?}");
        assert!(e.to_string().contains("rcni-no-such-tool"), "{e}");
    }

    #[test]
    fn a_stuck_command_is_killed_at_its_deadline() {
        let started = Instant::now();
        let e = Command::new("sleep").arg("30").timeout(Duration::from_millis(200)).run().unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(25), "the child was waited for, not killed");
        assert!(e.to_string().contains("sleep 30"), "{e}");
    }

    #[test]
    fn a_large_output_before_reading_stdin_does_not_deadlock() {
        // 1 MiB out before reading 1 MiB in: both pipes would fill without the helper threads.
        let input = vec![b'x'; 1 << 20];
        let out = Command::new("sh")
            .args(["-c", "head -c 1048576 /dev/zero | tr '\\0' y; wc -c"])
            .stdin(input)
            .timeout(Duration::from_secs(50))
            .run()
            .unwrap();
        assert!(out.stdout.trim_end().ends_with("1048576"), "{}", &out.stdout[out.stdout.len() - 20..]);
    }
}
