//! The plugin side of the protocol: CNI_* environment + stdin in, one typed `Request` to the plugin,
//! result or error JSON out.
//!
//! Validation happens here, before any plugin code runs, so a bad invocation never leaves state behind.

use super::args::CniArgs;
use super::config::NetConf;
use super::error::{CniError, CniResult, code};
use super::result::{AddResult, to_pretty};
use super::version;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Env vars the spec requires for this command. CNI_PATH is required only for GC; for the other commands a
    /// missing path is reported when (and only if) a delegate has to be found.
    fn required_env(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Status | Command::Version => &[],
        }
    }

    /// The lowest config version that allows this command.
    fn min_version(self) -> &'static str {
        match self {
            Command::Check => "0.4.0",
            Command::Gc | Command::Status => "1.1.0",
            _ => "0.1.0",
        }
    }
}

/// One attachment named in GC's valid-attachments list.
pub use crate::attachment::Attachment;

#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    /// The exact bytes received; delegates get these unchanged.
    pub stdin: Vec<u8>,
    pub conf: NetConf,
}

pub trait Plugin {
    fn add(&self, req: &Request) -> CniResult<AddResult>;
    fn del(&self, req: &Request) -> CniResult<()>;
    fn check(&self, req: &Request) -> CniResult<()>;
    /// `valid` is `cni.dev/valid-attachments` (or the older `cni.dev/attachments`); None when the runtime sent
    /// neither key, which means: remove nothing.
    /// The default suits plugins that keep no state outside the attachment's own interfaces.
    fn gc(&self, _req: &Request, _valid: Option<&[Attachment]>) -> CniResult<()> {
        Ok(())
    }
    /// The default suits plugins that depend on nothing but the node's kernel: always ready.
    fn status(&self, _req: &Request) -> CniResult<()> {
        Ok(())
    }
    /// Whether the plugin works in the container's network namespace. Skel opens and checks CNI_NETNS for
    /// those only: an IPAM plugin never enters it, and the reference's host-local accepts any CNI_NETNS.
    fn uses_netns(&self) -> bool {
        true
    }
}

/// What the invocation asks for, after validation.
#[derive(Debug)]
pub enum Invocation {
    /// CNI_COMMAND unset: print the about text on stderr.
    About,
    /// VERSION, with the version the caller put on stdin (if any).
    Version(Option<String>),
    Request(Box<Request>),
}

/// `CNI_CONTAINERID` (code 4, the spec's code for a bad environment variable).
pub fn check_container_id(id: &str) -> CniResult<()> {
    crate::validate::container_id(id).map_err(|e| {
        CniError::new(code::INVALID_ENV, format!("invalid characters in containerID: {e}; {}", e.kind.rule()))
            .with_details(id)
    })
}

/// `CNI_IFNAME` (code 4).
pub fn check_ifname(ifname: &str) -> CniResult<()> {
    crate::validate::device_name(ifname).map_err(|e| CniError::bad_name(code::INVALID_ENV, "CNI_IFNAME", ifname, e))
}

/// Parse env + stdin into an invocation. `env` returns a variable's value (empty counts as unset).
pub fn parse_invocation(env: &dyn Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> CniResult<Invocation> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let Some(cmd) = get("CNI_COMMAND") else { return Ok(Invocation::About) };
    let command = Command::parse(&cmd).ok_or_else(|| {
        CniError::new(code::INVALID_ENV, format!("unknown CNI_COMMAND: {cmd}"))
            .with_details("CNI_COMMAND is one of ADD, DEL, CHECK, GC, STATUS, VERSION")
    })?;
    let mut bytes = Vec::new();
    if command == Command::Version {
        // VERSION may come with an empty or partial stdin; never fail it.
        let _ = stdin.read_to_end(&mut bytes);
        let requested = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(str::to_string));
        return Ok(Invocation::Version(requested));
    }
    let missing: Vec<&str> = command.required_env().iter().copied().filter(|k| get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        )
        .with_details(format!("CNI_COMMAND={cmd} needs them; the container runtime sets them")));
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    if !container_id.is_empty() {
        check_container_id(&container_id)?;
    }
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if !ifname.is_empty() {
        check_ifname(&ifname)?;
    }
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading network config from stdin: {e}")))?;
    let conf = parse_conf(command, &bytes)?;
    if !version::is_supported(&conf.cni_version) {
        return Err(version::incompatible(&conf.cni_version));
    }
    if !version::at_least(&conf.cni_version, command.min_version()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version {} does not allow {}", conf.cni_version, command.as_str()),
        )
        .with_details(format!("{} needs cniVersion {} or later", command.as_str(), command.min_version())));
    }
    let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
    let path = get("CNI_PATH")
        .map(|p| p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default();
    Ok(Invocation::Request(Box::new(Request {
        command,
        container_id,
        netns: get("CNI_NETNS").unwrap_or_default(),
        ifname,
        args,
        path,
        stdin: bytes,
        conf,
    })))
}

/// The config on stdin for `command`. DEL needs no prevResult (teardown finds what ADD made by owner and by
/// derived names), so a prevResult that cannot be read must not make an attachment impossible to delete:
/// DEL then goes on without it. Any other error in the config fails DEL as it fails every command.
pub fn parse_conf(command: Command, bytes: &[u8]) -> CniResult<NetConf> {
    let strict = NetConf::from_slice(bytes);
    let Err(e) = &strict else { return strict };
    if command != Command::Del {
        return strict;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(bytes) else { return strict };
    if obj.remove("prevResult").is_none() {
        return strict;
    }
    match NetConf::from_value(Value::Object(obj)) {
        Ok(conf) => {
            super::log::warn(&conf.plugin_type, format!("{e}; DEL goes on without prevResult"));
            Ok(conf)
        }
        Err(_) => strict,
    }
}

/// GC's list of attachments that are still in use.
pub fn valid_attachments(conf: &NetConf) -> CniResult<Option<Vec<Attachment>>> {
    let obj = conf.raw.as_object();
    let list = obj.and_then(|o| o.get("cni.dev/valid-attachments").or_else(|| o.get("cni.dev/attachments")));
    let Some(list) = list else { return Ok(None) };
    let bad = || CniError::new(code::DECODE, "cni.dev/valid-attachments must be a list of {containerID, ifname}");
    let items = list.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|i| {
            Ok(Attachment {
                container_id: i.get("containerID").and_then(Value::as_str).ok_or_else(bad)?.to_string(),
                ifname: i.get("ifname").and_then(Value::as_str).ok_or_else(bad)?.to_string(),
            })
        })
        .collect::<CniResult<Vec<_>>>()
        .map(Some)
}

/// CNI_NETNS as skel opened it, for the duration of one dispatch: every later step of the command (pod netns
/// handles, sysctl writes in the pod, an in-process delegate) gets a duplicate of this fd through
/// [`opened_netns`] instead of opening the path again, so a path swapped under the plugin mid-command
/// (audit finding 14) cannot make it act on a namespace it never checked. Keyed by path: one process
/// serves one invocation, but library tests run several dispatches at once.
static OPENED_NETNS: std::sync::Mutex<Vec<OpenedEntry>> = std::sync::Mutex::new(Vec::new());
/// (registration number, CNI_NETNS path, the open namespace file or None when nothing was there).
type OpenedEntry = (u64, String, Option<std::sync::Arc<std::fs::File>>);
static OPENED_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What skel found at CNI_NETNS `path` for the command now running: `Some(Some(file))` a checked network
/// namespace (a new fd on the same open file), `Some(None)` nothing there (DEL of a pod whose netns is
/// gone), `None` when skel did not open this path (a request built in memory).
pub fn opened_netns(path: &str) -> Option<Option<std::fs::File>> {
    let list = OPENED_NETNS.lock().unwrap_or_else(|p| p.into_inner());
    let (_, _, file) = list.iter().rev().find(|(_, p, _)| p == path)?;
    Some(file.as_ref().and_then(|f| f.try_clone().ok()))
}

/// Removes its entry of `OPENED_NETNS` when the dispatch ends.
struct OpenedNetns(u64);

impl OpenedNetns {
    fn register(path: &str, file: Option<std::fs::File>) -> OpenedNetns {
        let seq = OPENED_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut list = OPENED_NETNS.lock().unwrap_or_else(|p| p.into_inner());
        list.push((seq, path.to_string(), file.map(std::sync::Arc::new)));
        OpenedNetns(seq)
    }
}

impl Drop for OpenedNetns {
    fn drop(&mut self) {
        let mut list = OPENED_NETNS.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|(seq, _, _)| *seq != self.0);
    }
}

/// Open CNI_NETNS once, before any plugin code (IPAM included) runs. ADD and CHECK need a network namespace
/// there: anything else is code 4, the spec's code for an invalid environment variable, naming CNI_NETNS
/// (a wrong path and a vanished container look the same from here, so not 3, which would tell the runtime
/// that no cleanup is needed). DEL tolerates a missing netns (the pod is gone; teardown works by name) and
/// leaves an unusable one to the plugin's best effort.
fn open_netns(req: &Request) -> CniResult<Option<OpenedNetns>> {
    let strict = match req.command {
        Command::Add | Command::Check => true,
        Command::Del if !req.netns.is_empty() => false,
        _ => return Ok(None),
    };
    match crate::nsfile::open(std::path::Path::new(&req.netns)) {
        Ok(f) => Ok(Some(OpenedNetns::register(&req.netns, Some(f)))),
        Err(e) if !strict && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Some(OpenedNetns::register(&req.netns, None)))
        }
        Err(_) if !strict => Ok(None),
        Err(e) => {
            let why = if crate::nsfile::is_not_netns(&e) {
                "not a network namespace file".to_string()
            } else {
                e.to_string()
            };
            Err(CniError::new(code::INVALID_ENV, format!("CNI_NETNS {:?} cannot be used: {why}", req.netns)).with_details(
                "CNI_NETNS must name the container's network namespace file, such as /run/netns/<name> or /proc/<pid>/ns/net",
            ))
        }
    }
}

/// Refuse CNI_NETNS when it is the plugin's own network namespace: configuring "the pod" there would
/// rewire the node itself. Checked on the fd skel opened, before any work (the Go skel checks only
/// afterwards).
fn check_not_own_netns(
    netns: &str,
    file: Option<&std::fs::File>,
    env: &dyn Fn(&str) -> Option<String>,
) -> CniResult<()> {
    use std::os::unix::fs::MetadataExt;
    if matches!(env("CNI_NETNS_OVERRIDE").as_deref(), Some("1" | "true")) {
        return Ok(());
    }
    let (Some(Ok(target)), Ok(own)) = (file.map(|f| f.metadata()), std::fs::metadata("/proc/thread-self/ns/net"))
    else {
        return Ok(()); // nothing opened: a DEL without a netns
    };
    if target.dev() == own.dev() && target.ino() == own.ino() {
        return Err(CniError::new(
            code::INVALID_NETNS,
            format!("CNI_NETNS {netns} is the plugin's own network namespace"),
        )
        .with_details("a container must have its own network namespace; set CNI_NETNS_OVERRIDE=1 to allow this"));
    }
    Ok(())
}

/// Execute a parsed request against a plugin. Returns the JSON to print on success (None for no output).
pub fn dispatch(plugin: &dyn Plugin, req: &Request, env: &dyn Fn(&str) -> Option<String>) -> CniResult<Option<Value>> {
    let _netns = if plugin.uses_netns() { open_netns(req)? } else { None };
    if _netns.is_some() {
        check_not_own_netns(&req.netns, opened_netns(&req.netns).flatten().as_ref(), env)?;
    } else if !plugin.uses_netns() && matches!(req.command, Command::Add | Command::Check) {
        // Not entered, so any path goes (as with the reference); only the node's own netns is refused, as the
        // reference's skel refuses it for every plugin.
        let file = crate::nsfile::open(std::path::Path::new(&req.netns)).ok();
        check_not_own_netns(&req.netns, file.as_ref(), env)?;
    }
    match req.command {
        Command::Add => {
            let mut result = plugin.add(req)?;
            result.cni_version = req.conf.cni_version.clone();
            Ok(Some(result.to_value(&req.conf.cni_version)?))
        }
        Command::Del => plugin.del(req).map(|_| None),
        Command::Check => plugin.check(req).map(|_| None),
        Command::Gc => {
            let valid = valid_attachments(&req.conf)?;
            plugin.gc(req, valid.as_deref()).map(|_| None)
        }
        Command::Status => plugin.status(req).map(|_| None),
        Command::Version => Ok(Some(version::version_info(Some(&req.conf.cni_version)))),
    }
}

/// A bug that panics must still answer in the protocol: the runtime gets an error JSON on stdout (code 999)
/// instead of an empty stdout from an aborted process (release builds abort on panic).
fn install_panic_reporter() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Once: a panic passed from a helper thread to the main one must not print a second document.
        if PANIC_REPORTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return default(info);
        }
        let err = panic_error(&info.to_string());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(to_pretty(&err.to_value(version::CURRENT)).as_bytes());
        let _ = out.flush();
        default(info);
    }));
}

/// Set once a panic has printed its error JSON; nothing else is printed after it.
static PANIC_REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn panic_error(what: &str) -> CniError {
    CniError::internal(format!("internal error in the plugin: {what}"))
        .with_details("this is a bug in rcni; please report it with the plugin's stderr")
}

/// The about text printed when CNI_COMMAND is unset.
pub fn about_text(about: &str) -> String {
    format!("{about}\nCNI protocol versions supported: {}\n", version::SUPPORTED.join(", "))
}

/// The C `main` of a plugin binary (whose crate is `#![cfg_attr(not(test), no_main)]`): [`start_bare`],
/// then `$run`, a `fn() -> !` that ends in [`run`] or `std::process::exit` (which flushes stdout, as
/// std's own exit does). A plugin is exec'd for every pod and its start-up is part of every command's
/// latency.
#[macro_export]
macro_rules! plugin_main {
    ($run:path) => {
        // Under `cargo test` the harness has the `main` (the crate is `no_main` only outside tests).
        #[cfg(test)]
        const _: fn() -> ! = $run;
        #[cfg(not(test))]
        #[unsafe(no_mangle)]
        extern "C" fn main(_argc: ::std::ffi::c_int, _argv: *const *const ::std::ffi::c_char) -> ::std::ffi::c_int {
            $crate::cni::skel::start_bare();
            $run()
        }
    };
}

/// What a plugin needs of std's runtime start, for binaries that skip it ([`plugin_main!`]). std's start
/// also finds the main thread's stack bounds (glibc reads and parses /proc/self/maps for that) and puts a
/// stack-overflow handler on an alternate stack, CPU time on every exec (figures in bench/RESULTS.md).
/// Without the handler a stack overflow still ends the plugin, by SIGSEGV, without std's message. Kept: fds 0-2 open (a closed one would be taken by the next `open` — a lock or state
/// file — and the answer written into it), and SIGPIPE ignored (a runtime gone away is a write error,
/// not a signal death).
pub fn start_bare() {
    // SAFETY: poll on a local array; open and signal with constant arguments; nothing else runs yet.
    unsafe {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
        if libc::poll(fds.as_mut_ptr(), 3, 0) >= 0 {
            for f in fds.iter().filter(|f| f.revents & libc::POLLNVAL != 0) {
                // The lowest free fd is this one.
                if libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != f.fd {
                    libc::abort();
                }
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The entry point of every plugin binary: read env + stdin, validate, dispatch, print, exit.
pub fn run(about: &str, plugin: &dyn Plugin) -> ! {
    super::log::mark_start();
    // One malloc arena for the whole process: the few short-lived threads a plugin starts (IPAM, a socket
    // in the pod's netns, masquerade) then do not each map and trim a fresh 64 MiB arena.
    // SAFETY: mallopt only adjusts glibc's allocator settings; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    install_panic_reporter();
    let env = |k: &str| std::env::var(k).ok();
    let outcome = parse_invocation(&env, &mut std::io::stdin().lock());
    let (text, ok) = match outcome {
        Ok(Invocation::About) => {
            eprint!("{}", about_text(about));
            std::process::exit(0);
        }
        Ok(Invocation::Version(requested)) => {
            // VERSION is compact JSON with a newline, like the reference.
            (format!("{}\n", version::version_info(requested.as_deref())), true)
        }
        Ok(Invocation::Request(req)) => match dispatch(plugin, &req, &env)
            .inspect(|_| super::log::trace(&req.conf.plugin_type, &format!("{} done", req.command.as_str())))
        {
            Ok(Some(v)) => (to_pretty(&v), true),
            Ok(None) => (String::new(), true),
            Err(e) => (to_pretty(&e.to_value(&req.conf.cni_version)), false),
        },
        Err(e) => (to_pretty(&e.to_value(version::CURRENT)), false),
    };
    if PANIC_REPORTED.load(std::sync::atomic::Ordering::SeqCst) {
        // A helper thread panicked (and was caught): its error JSON is already on stdout.
        std::process::exit(1);
    }
    // Locked only now: a panic hook on another thread must never wait for a lock this thread holds.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    std::process::exit(if ok { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A plugin started with fds 0-2 closed gets /dev/null there from `start_bare`, before anything it opens
    /// could take those numbers (and then receive the answer), and SIGPIPE ignored.
    #[test]
    fn bare_start_reopens_closed_stdio_on_dev_null_and_ignores_sigpipe() {
        // SAFETY: the child makes async-signal-safe calls only (close, the syscalls of start_bare,
        // readlink, sigaction) and ends with _exit; the parent reaps it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                for fd in 0..3 {
                    libc::close(fd);
                }
                start_bare();
                let mut failed = 0;
                let links = [c"/proc/self/fd/0", c"/proc/self/fd/1", c"/proc/self/fd/2"];
                for (fd, link) in links.iter().enumerate() {
                    let mut buf = [0u8; 64];
                    let n = libc::readlink(link.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                    if n < 0 || &buf[..n as usize] != b"/dev/null" {
                        failed |= 1 << fd;
                    }
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old);
                if old.sa_sigaction != libc::SIG_IGN {
                    failed |= 8;
                }
                libc::_exit(failed);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "status {status:#x}");
            // Bits 0-2: that fd is not /dev/null; bit 3: SIGPIPE not ignored.
            assert_eq!(libc::WEXITSTATUS(status), 0);
        }
    }

    fn invoke(env: &[(&str, &str)], stdin: &str) -> CniResult<Invocation> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_invocation(&|k| map.get(k).cloned(), &mut stdin.as_bytes())
    }

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"n1","type":"loopback"}"#;
    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut env: Vec<_> = ADD.iter().filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).copied().collect();
        env.extend(over.iter().filter(|(_, v)| !v.is_empty()).copied());
        env
    }

    #[test]
    fn good_add_parses() {
        let Invocation::Request(r) = invoke(ADD, CONF).unwrap() else { panic!() };
        assert_eq!(r.command, Command::Add);
        assert_eq!(r.path, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(r.stdin, CONF.as_bytes());
    }

    #[test]
    fn unset_command_is_about_and_version_never_fails() {
        assert!(matches!(invoke(&[], "").unwrap(), Invocation::About));
        assert!(matches!(invoke(&[("CNI_COMMAND", "VERSION")], "garbage").unwrap(), Invocation::Version(None)));
        let Invocation::Version(Some(v)) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(v, "0.4.0");
    }

    #[test]
    fn env_validation_table() {
        let long = "a".repeat(16);
        let long: &'static str = Box::leak(long.into_boxed_str());
        type Case = (Vec<(&'static str, &'static str)>, u32, &'static str);
        let cases: Vec<Case> = vec![
            (with(&[("CNI_COMMAND", "FROB")]), 4, "unknown CNI_COMMAND"),
            (with(&[("CNI_NETNS", "")]), 4, "[CNI_NETNS]"),
            (with(&[("CNI_CONTAINERID", ""), ("CNI_IFNAME", "")]), 4, "[CNI_CONTAINERID,CNI_IFNAME]"),
            (with(&[("CNI_CONTAINERID", "-bad")]), 4, "invalid characters in containerID"),
            (with(&[("CNI_CONTAINERID", "a/b")]), 4, "invalid characters in containerID"),
            (with(&[("CNI_IFNAME", long)]), 4, "too long"),
            (with(&[("CNI_IFNAME", "..")]), 4, "reserved"),
            (with(&[("CNI_IFNAME", "eth 0")]), 4, "whitespace"),
            (with(&[("CNI_IFNAME", "eth:0")]), 4, "':'"),
            (with(&[("CNI_ARGS", "garbage")]), 4, "ARGS"),
            (with(&[("CNI_COMMAND", "GC")]), 1, "does not allow GC"),
        ];
        for (env, code, needle) in cases {
            let conf = if needle.contains("GC") { r#"{"cniVersion":"1.0.0","name":"n"}"# } else { CONF };
            let e = invoke(&env, conf).unwrap_err();
            assert_eq!(e.code, code, "{env:?} -> {e}");
            assert!(e.msg.contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn gc_needs_path_del_does_not_need_netns() {
        let gc = [("CNI_COMMAND", "GC")];
        assert_eq!(invoke(&gc, CONF).unwrap_err().msg, "required env variables [CNI_PATH] missing");
        let del = with(&[("CNI_COMMAND", "DEL"), ("CNI_NETNS", "")]);
        assert!(invoke(&del, CONF).is_ok());
        let status = [("CNI_COMMAND", "STATUS")];
        assert!(invoke(&status, CONF).is_ok());
    }

    #[test]
    fn config_errors_have_codes() {
        let cases = [
            ("{", 6),
            (r#"{"cniVersion":"1.0.0"}"#, 7),
            (r#"{"cniVersion":"1.2.0","name":"n"}"#, 1),
            (r#"{"cniVersion":"0.3.1","name":"n"}"#, 0),
        ];
        for (conf, want) in cases {
            match invoke(ADD, conf) {
                Ok(_) => assert_eq!(want, 0, "{conf}"),
                Err(e) => assert_eq!(e.code, want, "{conf}: {e}"),
            }
        }
        let check = with(&[("CNI_COMMAND", "CHECK")]);
        assert_eq!(invoke(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap_err().code, 1);
        assert!(invoke(&check, r#"{"cniVersion":"0.4.0","name":"n"}"#).is_ok());
    }

    #[test]
    fn gc_attachments_prefer_valid_key_and_absent_means_none() {
        let c = NetConf::from_slice(
            br#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[{"containerID":"old","ifname":"eth0"}],
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(valid_attachments(&c).unwrap().unwrap()[0].container_id, "a");
        let c = NetConf::from_slice(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(valid_attachments(&c).unwrap(), Some(vec![]));
        let c = NetConf::from_slice(br#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert_eq!(valid_attachments(&c).unwrap(), None);
        let c = NetConf::from_slice(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[1]}"#).unwrap();
        assert_eq!(valid_attachments(&c).unwrap_err().code, 6);
    }

    #[test]
    fn del_goes_on_without_an_unreadable_prev_result() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge",
            "prevResult":{"cniVersion":"1.0.0","interfaces":[],"ips":[{"address":"10.1.0.2/24","interface":7}]}}"#;
        assert!(invoke(ADD, conf).is_err(), "ADD still reads prevResult strictly");
        let Invocation::Request(r) = invoke(&with(&[("CNI_COMMAND", "DEL")]), conf).unwrap() else { panic!() };
        assert!(r.conf.prev_result.is_none());
        assert_eq!(r.stdin, conf.as_bytes(), "delegates still get the bytes as received");
        let bad_name = conf.replace(r#""name":"n""#, r#""name":"../x""#);
        assert_eq!(invoke(&with(&[("CNI_COMMAND", "DEL")]), &bad_name).unwrap_err().code, 7);
    }

    #[test]
    fn panics_become_code_999() {
        let e = panic_error("panicked at src/x.rs:1:1: boom");
        assert_eq!(e.code, 999);
        assert!(e.msg.contains("boom"));
    }

    #[test]
    fn own_netns_is_refused() {
        let env = |_: &str| None;
        let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let e = check_not_own_netns("/proc/thread-self/ns/net", Some(&own), &env).unwrap_err();
        assert_eq!(e.code, 8);
        assert!(check_not_own_netns("/nonexistent/netns", None, &env).is_ok());
        let over = |k: &str| (k == "CNI_NETNS_OVERRIDE").then(|| "1".to_string());
        assert!(check_not_own_netns("/proc/thread-self/ns/net", Some(&own), &over).is_ok());
    }

    struct Nop;
    impl Plugin for Nop {
        fn add(&self, req: &Request) -> CniResult<AddResult> {
            // The fd skel opened is what the plugin gets, whatever the path names by now.
            let f = opened_netns(&req.netns).expect("registered").expect("opened");
            std::fs::remove_file(&req.netns).unwrap();
            std::fs::write(&req.netns, "swapped").unwrap();
            assert!(crate::nsfile::open(std::path::Path::new(&req.netns)).is_err());
            let reopened = opened_netns(&req.netns).unwrap().unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(f.metadata().unwrap().ino(), reopened.metadata().unwrap().ino());
            assert_eq!(reopened.metadata().unwrap().dev(), std::fs::metadata("/proc/self/ns/net").unwrap().dev());
            Ok(AddResult::default())
        }
        fn del(&self, req: &Request) -> CniResult<()> {
            assert!(matches!(opened_netns(&req.netns), Some(None)), "DEL of a vanished netns is registered as absent");
            Ok(())
        }
        fn check(&self, _: &Request) -> CniResult<()> {
            unreachable!("CHECK with an unusable netns never reaches the plugin")
        }
    }

    /// CNI_NETNS is opened once, in skel: an unusable one is code 4 before the plugin runs, the plugin sees
    /// the fd skel checked even after the path is replaced, and the registration ends with the dispatch.
    #[test]
    fn netns_is_opened_once_before_the_plugin_and_unusable_ones_are_code_4() {
        let tmp = tempfile::TempDir::with_prefix("rcni-skel-netns-").unwrap();
        let dir = tmp.path();
        let plain = dir.join("plain");
        std::fs::write(&plain, "x").unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let none = dir.join("none");
        let env = |_: &str| None;
        let request = |cmd: &'static str, netns: &std::path::Path| {
            let netns: &'static str = Box::leak(netns.display().to_string().into_boxed_str());
            let Invocation::Request(r) = invoke(&with(&[("CNI_COMMAND", cmd), ("CNI_NETNS", netns)]), CONF).unwrap()
            else {
                panic!()
            };
            r
        };
        for (cmd, bad) in [("ADD", &plain), ("ADD", &fifo), ("ADD", &none), ("CHECK", &plain)] {
            let e = dispatch(&Nop, &request(cmd, bad), &env).unwrap_err();
            assert_eq!(e.code, 4, "{cmd} {bad:?}: {e}");
            assert!(e.msg.contains("CNI_NETNS") && e.details.contains("network namespace"), "{e}");
        }
        let uts = request("ADD", std::path::Path::new("/proc/self/ns/uts"));
        assert_eq!(dispatch(&Nop, &uts, &env).unwrap_err().code, 4);
        assert!(dispatch(&Nop, &request("DEL", &none), &env).is_ok());
        // A bind mount of a real network namespace file that is then swapped for a plain file: emulated
        // with a symlink to this thread's netns, replaced by a regular file inside the plugin.
        let link = dir.join("ns");
        std::os::unix::fs::symlink("/proc/self/ns/net", &link).unwrap();
        let over = |k: &str| (k == "CNI_NETNS_OVERRIDE").then(|| "1".to_string());
        dispatch(&Nop, &request("ADD", &link), &over).unwrap();
        assert!(opened_netns(&link.display().to_string()).is_none(), "registration ends with the dispatch");
    }
}
