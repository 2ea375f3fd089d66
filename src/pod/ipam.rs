//! The IPAM delegate of an attachment: which plugin, and the configuration it gets on stdin. Usually the
//! plugin's own stdin (the spec's rule); a plugin may hand it a generated one (vxlan builds host-local
//! ranges from its `subnet` shorthand), as long as ADD and DEL generate the same.
//!
//! The delegate is found on CNI_PATH and exec'd, as the spec says — except when rcni has the plugin's logic
//! (`crate::ipam::in_process`) and the executable found there is rcni's own of this very build (it carries
//! the plugin's build marker): then that logic runs in-process. The result is the same (same code, same
//! files, same lock), minus a process start. `RCNI_IPAM_EXEC=1` forces the exec.

use crate::cni::result::AddResult;
use crate::cni::skel::{self, Attachment, Command, Request};
use crate::cni::{CniError, CniResult, delegate, log};
use crate::ipam::{self, InProcessIpam, Reserved};
use std::fs::File;
use std::os::unix::fs::FileExt;
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
    InProcess(&'static dyn InProcessIpam),
}

/// Does the file at `path` contain `marker`, i.e. is it that plugin's executable of this build? (A wrapper
/// script, the reference binary or another rcni build does not.) Also used by flannel for its bridge delegate. Read with pread, never mapped: the file
/// may be replaced in place by an upgrade while we read it, and a mapping of a truncated file faults
/// (SIGBUS), while a read just ends early.
pub fn is_same_build(path: &Path, marker: &str) -> bool {
    let Ok(file) = File::open(path) else { return false };
    let Ok(len) = file.metadata().map(|m| m.len()) else { return false };
    // The marker is a string constant: in .rodata when the file is an ELF with section headers (a tenth of
    // the file); anywhere otherwise.
    let (start, size) = elf_section(&file, len, b".rodata").unwrap_or((0, len));
    contains_at(&file, start, size, marker.as_bytes())
}

/// `len` bytes of `file` at `offset`; None if the file is shorter.
fn read_at(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// Is `needle` in `file[start..start + size]`? Read in chunks that overlap by `needle.len() - 1`, so a
/// match across a chunk boundary is found and memory stays small.
fn contains_at(file: &File, start: u64, size: u64, needle: &[u8]) -> bool {
    const CHUNK: usize = 64 * 1024;
    if needle.is_empty() || needle.len() > CHUNK {
        return false;
    }
    let end = start.saturating_add(size);
    let mut buf = vec![0u8; CHUNK];
    let (mut at, mut kept) = (start, 0usize);
    while at < end {
        let want = (CHUNK - kept).min(usize::try_from(end - at).unwrap_or(usize::MAX));
        let n = match file.read_at(&mut buf[kept..kept + want], at) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let filled = kept + n;
        if memchr::memmem::find(&buf[..filled], needle).is_some() {
            return true;
        }
        kept = (needle.len() - 1).min(filled);
        buf.copy_within(filled - kept..filled, 0);
        at += n as u64;
    }
    false
}

/// Offset and size of section `name` of a 64-bit little-endian ELF `file` of `len` bytes; None if it is not
/// one, lacks the section, or its headers point outside the file.
fn elf_section(file: &File, len: u64, name: &[u8]) -> Option<(u64, u64)> {
    let u16_at = |b: &[u8], o: usize| b.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64);
    let u32_at = |b: &[u8], o: usize| b.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at = |b: &[u8], o: usize| b.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let within = |off: u64, size: u64| off.checked_add(size).is_some_and(|e| e <= len).then_some((off, size));
    let head = read_at(file, 0, 64.min(len))?;
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize) = (u64_at(&head, 0x28)?, u16_at(&head, 0x3a)?);
    let (shnum, shstrndx) = (u16_at(&head, 0x3c)?, u16_at(&head, 0x3e)? as usize);
    // A section header: name offset at 0, file offset at 0x18, size at 0x20.
    if shentsize < 0x28 {
        return None;
    }
    let table = read_at(file, within(shoff, shnum * shentsize)?.0, shnum * shentsize)?;
    let header = |i: usize| table.get(i * shentsize as usize..(i + 1) * shentsize as usize);
    let section = |h: &[u8]| within(u64_at(h, 0x18)?, u64_at(h, 0x20)?);
    let (names_at, names_size) = section(header(shstrndx)?)?;
    let names = read_at(file, names_at, names_size.min(64 * 1024))?;
    (0..shnum as usize).find_map(|i| {
        let h = header(i)?;
        let n = names.get(u32_at(h, 0)?..)?;
        let n = &n[..n.iter().position(|&b| b == 0)?];
        if n == name { section(h) } else { None }
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
        match ipam::in_process(&self.plugin) {
            Some(own) if !forced_exec && is_same_build(&bin, own.build_marker()) => Ok(Delegate::InProcess(own)),
            _ => Ok(Delegate::Exec(bin)),
        }
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
            conf: skel::parse_conf(command, &self.stdin)?,
        })
    }

    pub fn add(&self, req: &Request) -> CniResult<AddResult> {
        self.add_undoable(req).map(|(result, _)| result)
    }

    /// ADD, and how to undo exactly it.
    fn add_undoable(&self, req: &Request) -> CniResult<(AddResult, Undo)> {
        let ver = &req.conf.cni_version;
        match self.resolve(req)? {
            Delegate::Exec(bin) => {
                let out = delegate::exec(&bin, Command::Add, &self.stdin, &req.netns)?;
                let result = AddResult::from_slice(&out, ver)
                    .map_err(|e| e.context(format!("IPAM plugin {} returned an unreadable result", self.plugin)))?;
                Ok((result, Undo::Del))
            }
            Delegate::InProcess(own) => {
                log::trace(&req.conf.plugin_type, "IPAM in-process");
                let (r, reserved) = own.add_reserving(&self.delegate_request(req, Command::Add)?)?;
                // Through the same version rendering as the executable's output takes.
                let result = AddResult::from_value(&r.to_value(ver)?, ver);
                Ok((result?, Undo::Exactly(own, reserved)))
            }
        }
    }

    fn run(&self, req: &Request, command: Command) -> CniResult<()> {
        match self.resolve(req)? {
            Delegate::Exec(bin) => delegate::exec(&bin, command, &self.stdin, &req.netns).map(|_| ()),
            Delegate::InProcess(own) => {
                let r = self.delegate_request(req, command)?;
                match command {
                    Command::Del => own.del(&r),
                    Command::Check => own.check(&r),
                    Command::Gc => own.gc(&r, skel::valid_attachments(&r.conf)?.as_deref()),
                    Command::Status => own.status(&r),
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

    /// The attachments holding addresses of this network, if the IPAM's state can be read here (host-local,
    /// whichever build wrote it); `None` otherwise.
    pub fn holders(&self, req: &Request) -> CniResult<Option<Vec<Attachment>>> {
        match crate::ipam::in_process(&self.plugin) {
            Some(own) => own.holders(&self.delegate_request(req, Command::Gc)?),
            None => Ok(None),
        }
    }

    pub fn status(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Status)
    }
}

/// How to undo one successful IPAM ADD.
enum Undo {
    /// In-process: release exactly what that ADD reserved.
    Exactly(&'static dyn InProcessIpam, Reserved),
    /// An exec'd plugin can only be told DEL, which releases by owner: everything the attachment holds.
    Del,
}

/// The IPAM ADD of one attachment, started on its own thread before the interfaces are built and collected
/// when the pod's addresses are needed: the allocation (a file lock, a directory read, two synced files, or
/// a whole IPAM process) overlaps the kernel work on the veth pair instead of following it.
///
/// The thread starts in its creator's network namespace, the node's, like an exec'd IPAM plugin would run.
pub struct Allocation<'a> {
    ipam: &'a Ipam,
    state: AllocState,
    /// The ADD failed because the attachment is already live (see `attachment_is_live`).
    live: bool,
}

enum AllocState {
    Running(JoinHandle<CniResult<(AddResult, Undo)>>),
    /// Ran inline (no thread could be started).
    Done(CniResult<(AddResult, Undo)>),
    /// The result was handed out; how to undo it if it was a success.
    Taken(Option<Undo>),
}

impl<'a> Allocation<'a> {
    pub fn start(ipam: &'a Ipam, req: &Request) -> Allocation<'a> {
        let (job_ipam, job_req) = (ipam.clone(), req.clone());
        let job = move || job_ipam.add_undoable(&job_req);
        let state = match std::thread::Builder::new().name("rcni-ipam".into()).spawn(job) {
            Ok(job) => AllocState::Running(job),
            Err(e) => {
                log::warn(&req.conf.plugin_type, format!("no thread for IPAM ({e}); running it inline"));
                AllocState::Done(ipam.add_undoable(req))
            }
        };
        Allocation { ipam, state, live: false }
    }

    /// The IPAM plugin's name, for messages.
    pub fn plugin(&self) -> &str {
        &self.ipam.plugin
    }

    /// Wait for the IPAM ADD to finish, keeping its result for [`Allocation::result`]; its error if it failed.
    pub fn wait(&mut self) -> CniResult<()> {
        if let AllocState::Running(_) = self.state {
            let AllocState::Running(job) = std::mem::replace(&mut self.state, AllocState::Taken(None)) else {
                unreachable!("matched just above")
            };
            let r = job.join().unwrap_or_else(|_| Err(CniError::internal("IPAM ADD panicked")));
            self.state = AllocState::Done(r);
        }
        match &self.state {
            AllocState::Done(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Wait for the IPAM ADD and take its result (once).
    pub fn result(&mut self) -> CniResult<AddResult> {
        let r = match std::mem::replace(&mut self.state, AllocState::Taken(None)) {
            AllocState::Running(job) => job.join().unwrap_or_else(|_| Err(CniError::internal("IPAM ADD panicked"))),
            AllocState::Done(r) => r,
            AllocState::Taken(_) => return Err(CniError::internal("IPAM ADD result taken twice")),
        };
        match r {
            Ok((result, undo)) => {
                self.state = AllocState::Taken(Some(undo));
                Ok(result)
            }
            Err(e) => Err(e),
        }
    }

    /// The ADD is failing because this attachment (container ID, ifname) is already live: what IPAM holds for
    /// it by owner is the live pod's, so an IPAM DEL must not be the undo.
    pub fn attachment_is_live(&mut self) {
        self.live = true;
    }

    /// Undo for a failed ADD: wait for an ADD still running, then release what it allocated and only that.
    /// Nothing after a failed IPAM ADD (it cleans up after itself, and the failure may be "this attachment
    /// already has an address"). In-process, exactly the addresses this ADD reserved go; an exec'd plugin
    /// gets DEL, which releases by owner, so it is skipped when the attachment is live.
    pub fn release(mut self, req: &Request) {
        if !matches!(self.state, AllocState::Taken(_)) {
            let _ = self.result();
        }
        let AllocState::Taken(Some(undo)) = std::mem::replace(&mut self.state, AllocState::Taken(None)) else {
            return;
        };
        let outcome = match undo {
            Undo::Exactly(own, reserved) => {
                self.ipam.delegate_request(req, Command::Del).and_then(|r| own.undo_add(&r, &reserved))
            }
            Undo::Del if self.live => {
                log::warn(
                    &req.conf.plugin_type,
                    format!("rollback: the attachment is live; its {} allocation is left as it is", self.ipam.plugin),
                );
                Ok(())
            }
            Undo::Del => self.ipam.del(req),
        };
        if let Err(e) = outcome {
            log::warn(&req.conf.plugin_type, format!("rollback: IPAM: {e}"));
        }
    }
}

/// STATUS of an attachment-making plugin: its IPAM's STATUS, or ready when there is none.
pub fn status(ipam: Option<&Ipam>, req: &Request) -> CniResult<()> {
    ipam.map_or(Ok(()), |i| i.status(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe() -> (File, u64, Vec<u8>) {
        let path = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (File::open(&path).unwrap(), bytes.len() as u64, bytes)
    }

    #[test]
    fn elf_section_finds_rodata_of_a_real_binary_and_refuses_other_files() {
        let (file, len, bytes) = exe();
        let (at, size) = elf_section(&file, len, b".rodata").expect("this test binary has .rodata");
        assert!(size > 0 && size < len);
        // A string constant of this binary lies in it, also when read in chunks.
        let needle = b"this test binary has .rodata";
        let rodata = &bytes[at as usize..(at + size) as usize];
        assert!(memchr::memmem::find(rodata, needle).is_some());
        assert!(contains_at(&file, at, size, needle));
        // Made at run time: a literal would be in .rodata.
        let absent = vec![b'q'; 40];
        assert!(!contains_at(&file, at, size, &absent));
        assert!(elf_section(&file, len, b".no-such-section").is_none());
        let tmp = tempfile::TempDir::with_prefix("rcni-ipam-elf-").unwrap();
        let dir = tmp.path();
        let script = dir.join("script");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let f = File::open(&script).unwrap();
        assert!(elf_section(&f, 18, b".rodata").is_none());
        // Truncated (an upgrade caught half-way): headers out of range, and a search that ends early.
        let cut = dir.join("cut");
        std::fs::write(&cut, &bytes[..(at + size / 2) as usize]).unwrap();
        let f = File::open(&cut).unwrap();
        assert!(elf_section(&f, 64, b".rodata").is_none());
        assert!(!contains_at(&f, at + size / 2 - 8, size, &absent));
        assert!(!is_same_build(&cut, std::str::from_utf8(&absent).unwrap()));
    }

    /// Audit finding 12: the file is rewritten in place (an upgrade's `cp -f`) while it is searched. A
    /// mapping of it faults (SIGBUS, the test process dies) when the file shrinks under it; reads end early.
    #[test]
    fn a_file_truncated_while_it_is_searched_is_not_a_crash() {
        let (_, _, bytes) = exe();
        let dir = tempfile::TempDir::with_prefix("rcni-ipam-cut-").unwrap();
        let path = dir.path().join("host-local");
        std::fs::write(&path, &bytes).unwrap();
        // In the copy's .rodata (a literal of this binary); the other is made at run time, so no search for it
        // stops early.
        let marker = "a marker of this test binary, found in its copy";
        let absent = String::from_utf8(vec![b'q'; 40]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rewriter = {
            let (path, stop, bytes) = (path.clone(), stop.clone(), bytes.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut rounds = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // O_TRUNC then a rewrite: what `cp -f` over an existing file does.
                    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
                    f.write_all(&bytes[..bytes.len() / 3]).unwrap();
                    f.write_all(&bytes[bytes.len() / 3..]).unwrap();
                    rounds += 1;
                }
                rounds
            })
        };
        let started = std::time::Instant::now();
        let mut searches = 0;
        while searches < 200 || started.elapsed() < std::time::Duration::from_millis(500) {
            // Either answer while the file is rewritten; what matters is that the search returns.
            is_same_build(&path, marker);
            assert!(!is_same_build(&path, &absent));
            searches += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = rewriter.join().unwrap();
        assert!(rounds > 0 && searches > 0, "{rounds} rewrites, {searches} searches");
        // And once the file is whole again, a marker that is in it is found.
        assert!(is_same_build(&path, marker));
    }

    /// A match that straddles two chunks of the chunked search is found.
    #[test]
    fn contains_at_finds_a_needle_across_chunk_boundaries() {
        let dir = tempfile::TempDir::with_prefix("rcni-ipam-chunks-").unwrap();
        let p = dir.path().join("f");
        for at in [0usize, 65_530, 65_536, 131_067, 200_000 - 6] {
            let mut data = vec![b'x'; 200_000];
            data[at..at + 6].copy_from_slice(b"needle");
            std::fs::write(&p, &data).unwrap();
            let f = File::open(&p).unwrap();
            assert!(contains_at(&f, 0, 200_000, b"needle"), "at {at}");
            assert!(!contains_at(&f, 0, at as u64 + 5, b"needle"), "range ends inside it: {at}");
        }
    }
}
