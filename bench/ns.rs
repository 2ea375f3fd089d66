//! The benchmark's own network namespaces and temporary files, and the guarantee that they go away.
//!
//! Every name starts with `rcni-bench-<run-id>-` (run id = `--run-id`, default the pid). Three layers
//! of cleanup, because the release profile aborts on panic (no unwinding, so no `Drop`):
//! * [`Ns`] holds the test kit's guard ([`kit::NsGuard`], `tests/support/netns.rs`), which deletes the
//!   namespace on drop (the normal path, after every repetition);
//! * [`install_cleanup`]: a panic hook and a SIGINT/SIGTERM/SIGHUP handler that kill every process
//!   inside our namespaces and delete every namespace with our prefix, and the temp directory;
//! * `bench/run` has an EXIT trap that does the same by prefix after the program is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../tests/support/netns.rs"]
mod kit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

static PREFIX: OnceLock<String> = OnceLock::new();
static TMP: OnceLock<PathBuf> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);
static STOPPING: AtomicBool = AtomicBool::new(false);
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Sets the run id (once, before any namespace is created) and creates the temp directory.
pub fn init(run_id: &str) -> &'static Path {
    let prefix = format!("rcni-bench-{run_id}-");
    PREFIX.set(prefix.clone()).expect("ns::init called twice");
    let tmp = std::env::temp_dir().join(prefix.trim_end_matches('-'));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create the benchmark's temp directory");
    TMP.set(tmp).unwrap();
    TMP.get().unwrap()
}

pub fn prefix() -> &'static str {
    PREFIX.get().expect("ns::init not called")
}

/// A fresh directory under the run's temp directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let p = TMP.get().expect("ns::init not called").join(format!("{tag}-{n}"));
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

/// Our namespaces still present (`ip netns list`, filtered by our prefix).
pub fn leftovers() -> Vec<String> {
    PREFIX.get().map(|prefix| kit::list(prefix)).unwrap_or_default()
}

/// Kills every process inside our namespaces, deletes the namespaces and the temp directory.
pub fn cleanup_all() {
    STOPPING.store(true, Ordering::SeqCst);
    for name in leftovers() {
        if !kit::delete(&name) {
            eprintln!("rcni-bench: cannot delete netns {name}");
        }
    }
    if let Some(t) = TMP.get() {
        let _ = std::fs::remove_dir_all(t);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe lives for the whole process.
    unsafe {
        libc::write(fd, &b as *const u8 as *const libc::c_void, 1);
    }
}

/// Panic hook and signal handler that clean up everything of this run before the process dies.
pub fn install_cleanup() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("rcni-bench: panic, removing the benchmark's namespaces");
        cleanup_all();
    }));
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds; the handler only writes to the write end.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    SIGNAL_PIPE.store(fds[1], Ordering::SeqCst);
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            let mut b = 0u8;
            // SAFETY: blocking read of one byte from our own pipe.
            let n = unsafe { libc::read(read_fd, &mut b as *mut u8 as *mut libc::c_void, 1) };
            if n == 1 {
                eprintln!("rcni-bench: signal {b}, removing the benchmark's namespaces");
                cleanup_all();
                std::process::exit(130);
            }
        })
        .expect("spawn the signal thread");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// A network namespace of this run, deleted on drop with everything running in it.
pub struct Ns {
    guard: kit::NsGuard,
}

impl Ns {
    /// `rcni-bench-<run>-<tag><n>`.
    pub fn create(tag: &str) -> Ns {
        assert!(!STOPPING.load(Ordering::SeqCst), "stopping: no new namespaces");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Ns { guard: kit::NsGuard::add(format!("{}{tag}{n}", prefix())) }
    }

    /// `count` namespaces, created by a few threads at once (creation is not measured).
    pub fn create_many(tag: &str, count: usize) -> Vec<Ns> {
        let threads = 4.min(count.max(1));
        let mut slots: Vec<Option<Ns>> = (0..count).map(|_| None).collect();
        std::thread::scope(|s| {
            for chunk in slots.chunks_mut(count.div_ceil(threads).max(1)) {
                s.spawn(move || {
                    for slot in chunk {
                        *slot = Some(Ns::create(tag));
                    }
                });
            }
        });
        slots.into_iter().map(|s| s.unwrap()).collect()
    }

    pub fn name(&self) -> &str {
        self.guard.name()
    }

    pub fn path_str(&self) -> &str {
        self.guard.path().to_str().unwrap()
    }

    /// `ip netns exec <ns> <program>`: a command to run inside this namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name()]).arg(program);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CNI_") || k == "NETCONFPATH" || k == "CAP_ARGS" || k == "RCNI_LOG_FILE" {
                c.env_remove(k.as_ref());
            }
        }
        c
    }

    /// `ip <args>` inside this namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let out = self.cmd("ip").args(args).stdin(Stdio::null()).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip netns exec {} ip {args:?}: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Brings `lo` up (a node's loopback).
    pub fn lo_up(&self) -> &Ns {
        self.ip(&["link", "set", "lo", "up"]);
        self
    }
}

/// Drops many namespaces with a few threads at once.
pub fn delete_many(v: Vec<Ns>) {
    let threads = 4;
    let mut v = v;
    let per = v.len().div_ceil(threads).max(1);
    let mut parts = Vec::new();
    while !v.is_empty() {
        let rest = v.split_off(per.min(v.len()));
        parts.push(std::mem::replace(&mut v, rest));
    }
    std::thread::scope(|s| {
        for p in parts {
            s.spawn(move || drop(p));
        }
    });
}
