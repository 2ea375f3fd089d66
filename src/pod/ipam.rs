//! The IPAM delegate of an attachment: which plugin, and the configuration it gets on stdin. Usually the
//! plugin's own stdin (the spec's rule); a plugin may hand it a generated one (vxlan builds host-local
//! ranges from its `subnet` shorthand), as long as ADD and DEL generate the same.
//!
//! The delegate is found on CNI_PATH and exec'd, as the spec says — except when the `host-local` found
//! there is rcni's own, of this very build (it carries `BUILD_MARKER`): then its logic runs in-process.
//! The result is the same (same code, same files, same lock); what is saved is a process start, about
//! 3–4 ms per command. `RCNI_IPAM_EXEC=1` forces the exec.

use crate::cni::config::NetConf;
use crate::cni::result::AddResult;
use crate::cni::skel::{self, Command, Plugin, Request};
use crate::cni::{CniError, CniResult, delegate, log};
use crate::ipam::host_local::{BUILD_MARKER, HostLocal};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct Ipam {
    pub plugin: String,
    pub stdin: Vec<u8>,
}

/// How a command reaches the delegate.
enum Delegate {
    Exec(PathBuf),
    InProcess,
}

/// Is `path` rcni's own host-local of this build? (A wrapper script, the reference binary or another
/// rcni build is not: they are exec'd.) The file is mapped, not read: a search through the page cache
/// costs a fraction of a copy.
fn is_this_builds_host_local(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let Ok(len) = file.metadata().map(|m| m.len() as usize) else { return false };
    if len == 0 {
        return false;
    }
    // SAFETY: a private read-only mapping of a file we opened, unmapped below; the slice does not outlive it.
    unsafe {
        let addr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
        if addr == libc::MAP_FAILED {
            return false;
        }
        let bytes = std::slice::from_raw_parts(addr as *const u8, len);
        // The marker is a string constant: in .rodata when the file is an ELF with section headers (a tenth of
        // the file, so a tenth of the pages touched); anywhere otherwise.
        let haystack = elf_section(bytes, b".rodata").unwrap_or(bytes);
        let found = memchr::memmem::find(haystack, BUILD_MARKER.as_bytes()).is_some();
        libc::munmap(addr, len);
        found
    }
}

/// The bytes of section `name` of a 64-bit little-endian ELF file; None if `file` is not one or lacks it.
fn elf_section<'a>(file: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let u16_at = |o: usize| file.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| file.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at = |o: usize| file.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if file.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    // A section header: name offset at 0, file offset at 0x18, size at 0x20.
    let range = |h: usize| -> Option<&'a [u8]> {
        let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        file.get(off..off.checked_add(size)?)
    };
    let names = range(header(shstrndx)?)?;
    (0..shnum).find_map(|i| {
        let h = header(i)?;
        let n = names.get(u32_at(h)?..)?;
        let n = &n[..n.iter().position(|&b| b == 0)?];
        if n == name { range(h) } else { None }
    })
}

impl Ipam {
    /// The IPAM named in the request's config, fed the request's own stdin; None for an L2-only network.
    pub fn from_request(req: &Request) -> Option<Ipam> {
        req.conf.ipam.as_ref().map(|i| Ipam { plugin: i.plugin_type.clone(), stdin: req.stdin.clone() })
    }

    fn resolve(&self, req: &Request) -> CniResult<Delegate> {
        let bin = delegate::find_plugin(&self.plugin, &req.path)?;
        let forced_exec = std::env::var_os("RCNI_IPAM_EXEC").is_some_and(|v| v == "1");
        if self.plugin == "host-local" && !forced_exec && is_this_builds_host_local(&bin) {
            return Ok(Delegate::InProcess);
        }
        Ok(Delegate::Exec(bin))
    }

    /// The request the delegate would have received: the same environment, its own stdin and command.
    fn delegate_request(&self, req: &Request, command: Command) -> CniResult<Request> {
        Ok(Request {
            command,
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            args: req.args.clone(),
            path: req.path.clone(),
            stdin: self.stdin.clone(),
            conf: NetConf::from_slice(&self.stdin)?,
        })
    }

    pub fn add(&self, req: &Request) -> CniResult<AddResult> {
        let ver = &req.conf.cni_version;
        match self.resolve(req)? {
            Delegate::Exec(bin) => {
                let out = delegate::exec(&bin, Command::Add, &self.stdin)?;
                AddResult::from_slice(&out, ver)
                    .map_err(|e| e.context(format!("IPAM plugin {} returned an unreadable result", self.plugin)))
            }
            Delegate::InProcess => {
                log::trace(&req.conf.plugin_type, "IPAM in-process");
                let r = HostLocal.add(&self.delegate_request(req, Command::Add)?)?;
                // Through the same version rendering as the executable's output takes.
                AddResult::from_value(&r.to_value(ver)?, ver)
            }
        }
    }

    fn run(&self, req: &Request, command: Command) -> CniResult<()> {
        match self.resolve(req)? {
            Delegate::Exec(bin) => delegate::exec(&bin, command, &self.stdin).map(|_| ()),
            Delegate::InProcess => {
                let r = self.delegate_request(req, command)?;
                match command {
                    Command::Del => HostLocal.del(&r),
                    Command::Check => HostLocal.check(&r),
                    Command::Gc => HostLocal.gc(&r, skel::valid_attachments(&r.conf)?.as_deref()),
                    Command::Status => HostLocal.status(&r),
                    Command::Add | Command::Version => unreachable!("ADD has its own path; VERSION is never delegated"),
                }
            }
        }
    }

    pub fn del(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Del)
    }

    pub fn check(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Check)
    }

    pub fn gc(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Gc)
    }

    pub fn status(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Status)
    }
}

/// The IPAM ADD of one attachment, started on its own thread before the interfaces are built and collected
/// when the pod's addresses are needed: the allocation (a file lock, a directory read, two synced files, or
/// a whole IPAM process) overlaps the kernel work on the veth pair instead of following it.
///
/// The thread starts in its creator's network namespace, the node's, like an exec'd IPAM plugin would run.
pub struct Allocation<'a> {
    ipam: &'a Ipam,
    state: AllocState,
}

enum AllocState {
    Running(JoinHandle<CniResult<AddResult>>),
    /// Ran inline (no thread could be started).
    Done(CniResult<AddResult>),
    /// The result was handed out; whether it was a success.
    Taken {
        ok: bool,
    },
}

impl<'a> Allocation<'a> {
    pub fn start(ipam: &'a Ipam, req: &Request) -> Allocation<'a> {
        let (job_ipam, job_req) = (ipam.clone(), req.clone());
        let state = match std::thread::Builder::new().name("rcni-ipam".into()).spawn(move || job_ipam.add(&job_req)) {
            Ok(job) => AllocState::Running(job),
            Err(e) => {
                log::warn(&req.conf.plugin_type, format!("no thread for IPAM ({e}); running it inline"));
                AllocState::Done(ipam.add(req))
            }
        };
        Allocation { ipam, state }
    }

    /// The IPAM plugin's name, for messages.
    pub fn plugin(&self) -> &str {
        &self.ipam.plugin
    }

    /// Wait for the IPAM ADD and take its result (once).
    pub fn result(&mut self) -> CniResult<AddResult> {
        let r = match std::mem::replace(&mut self.state, AllocState::Taken { ok: false }) {
            AllocState::Running(job) => job.join().unwrap_or_else(|_| Err(CniError::internal("IPAM ADD panicked"))),
            AllocState::Done(r) => r,
            AllocState::Taken { .. } => return Err(CniError::internal("IPAM ADD result taken twice")),
        };
        self.state = AllocState::Taken { ok: r.is_ok() };
        r
    }

    /// Undo for a failed ADD: wait for an ADD still running, then DEL what it allocated. Only after a
    /// successful IPAM ADD (as the reference does): a failed one cleans up after itself, and the failure
    /// may be "this attachment already has an address" — a live attachment's, which DEL would release.
    pub fn release(mut self, req: &Request) {
        let ok = match self.state {
            AllocState::Taken { ok } => ok,
            _ => self.result().is_ok(),
        };
        if ok {
            if let Err(e) = self.ipam.del(req) {
                log::warn(&req.conf.plugin_type, format!("rollback: IPAM DEL: {e}"));
            }
        }
    }
}

/// STATUS of an attachment-making plugin: its IPAM's STATUS, or ready when there is none.
pub fn status(ipam: Option<&Ipam>, req: &Request) -> CniResult<()> {
    ipam.map_or(Ok(()), |i| i.status(req))
}

#[cfg(test)]
mod tests {
    use super::elf_section;

    #[test]
    fn elf_section_finds_rodata_of_a_real_binary_and_refuses_other_files() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let rodata = elf_section(&exe, b".rodata").expect("this test binary has .rodata");
        assert!(!rodata.is_empty() && rodata.len() < exe.len());
        // A string constant of this binary lies in it.
        let needle = b"this test binary has .rodata";
        assert!(memchr::memmem::find(rodata, needle).is_some());
        assert!(elf_section(&exe, b".no-such-section").is_none());
        assert!(elf_section(b"#!/bin/sh\necho hi\n", b".rodata").is_none());
        assert!(elf_section(&exe[..64], b".rodata").is_none(), "truncated: headers out of range");
    }
}
