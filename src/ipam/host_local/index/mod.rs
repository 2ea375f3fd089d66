//! The owner index: who holds each file of a network directory, cached so that a command does not open every
//! reservation file. It is a cache, never the truth: the files are, and the index is thrown away and rebuilt
//! from them whenever it cannot be shown to describe them.
//!
//! ## Where
//! `<dataDir>/.rcni-index.<network>`, a file beside the network directory, not in it: the reference's DEL
//! walks `<dataDir>/<network>` recursively and reads every file, so nothing of ours may live there. Not a
//! directory either: tools that take every directory of dataDir for a network (our own bridge tests do) would
//! count its files as reservations. Network names start with a letter or digit (rcni and the reference both
//! refuse others), so the name is never a network's; `path_for` refuses dot names anyway. The file is read
//! and written only while the network's `lock` is held, never fsynced (losing it costs one full read).
//!
//! ## When the index is believed: the directory stamp
//! The index records the network directory's `(dev, ino, mtime, ctime)` as they were when it was saved, and is
//! used only while they are unchanged. Why that proves no entry was added, removed or renamed since:
//! - every entry change in a directory (create, link, unlink, rename; by the reference, by us, by `rm`) sets
//!   the directory's mtime and ctime both to the current time, so right after one, `mtime == ctime`;
//! - before saving, we make the stamp *distinctive*: when `mtime == ctime` we set the directory's mtime
//!   1 ns back (futimens), which moves its ctime to now, so `mtime != ctime`;
//! - a later entry change makes them equal again, so the stamp cannot match any more. This holds whatever
//!   the timestamp granularity (coarse clock ticks, 1 s filesystems) and across clock steps: no pair of equal
//!   times equals a pair of different ones. ctime cannot be set from user space, so only a deliberate
//!   `touch -m` back to our value within the same ctime tick could forge it;
//! - and a new stamp always differs (by its mtime) from the one in the index file it replaces: with coarse
//!   ticks two commands' marks in one tick would otherwise agree, and if the second died before writing its
//!   index, the first one's would be believed for a directory it does not describe (see `mark`).
//!
//! (Cheaper-looking alternative, rejected: keep reading the directory and trust an entry whose name and
//! inode number are unchanged. ext4 hands a freed inode number straight to the next file created, so a
//! reservation released and re-created for another container, e.g. a pod with a fixed IP restarted by the
//! reference binary, keeps both its name and its inode number; DEL would then miss the new owner's file.)
//!
//! With a matching stamp no directory read is needed at all: the index lists exactly the names present.
//!
//! ## What a stale index can still do
//! A matching stamp says nothing about a file's *content* rewritten in place (the reference and rcni never do
//! that; a person with an editor might), and a writer that ignores the lock could add or remove a file during
//! our command, before the stamp is taken, leaving an index that lacks a file or lists a gone one until the
//! next change by another writer. None of that can hand out or release someone else's address:
//! - ADD creates a reservation with link(2), which fails when the name exists: an address missing from the
//!   index is found taken then, and the command starts over from the files;
//! - every positive answer the index gives is read back from its file before it is acted on: ADD's refusal
//!   of a duplicate or of a taken requested IP, each file DEL unlinks, CHECK's finding; on a mismatch the
//!   command starts over from the files (and saves a fresh index). Negative answers that fail a command
//!   (ADD's "no free address", CHECK's "not found") are confirmed from the files too.
//!
//! What remains are missed positives: the duplicate guard letting an attachment take a second address, DEL
//! not releasing a file the index does not attribute to the attachment (GC releases it later), an address
//! listed but gone staying unused until the index is rebuilt.
//!
//! The argument needs a filesystem that keeps POSIX directory times (ext4, xfs, btrfs, tmpfs: the unit test
//! `marked_stamp_is_distinctive_until_the_next_change` checks the two properties used). The dataDir is local
//! anyway: the `lock` relies on flock.
//!
//! ## Format (text, one record per line, fields separated by one space)
//! ```text
//! rcni-host-local-index 1
//! d <dev> <ino> <mtime s> <mtime ns> <ctime s> <ctime ns>
//! i <ip> <containerID> [<ifname>]        a file named by an address (no ifname: a legacy ID-only file);
//!                                        sorted by address
//! o <name> <containerID> [<ifname>]      any other regular file DEL reads (a leftover temp file)
//! e <records> <checksum of all bytes before this line, 16 hex digits>
//! ```
//! Names and holders are %XX-escaped (bytes up to space, `%`, DEL), so any content survives. A file that does
//! not parse, has the wrong count or checksum (torn by a crash: it is never synced) is ignored.

mod codec;
mod records;
mod stamp;
mod text;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use codec::{decode, encode};
pub use records::{Match, Name, Owner, Records};
pub use stamp::{DirStamp, mark};

/// The index of network `<n>` is `<dataDir>/.rcni-index.<n>`.
pub const INDEX_PREFIX: &str = ".rcni-index.";
pub(super) const HEADER: &[u8] = b"rcni-host-local-index 1\n";

/// Where the index of network directory `net_dir` lives; `None` when it gets none.
pub fn path_for(net_dir: &Path) -> Option<PathBuf> {
    let name = net_dir.file_name()?;
    if name.as_bytes().first() == Some(&b'.') {
        return None;
    }
    let mut file = OsString::from(INDEX_PREFIX);
    file.push(name);
    Some(net_dir.parent()?.join(file))
}

/// The stamp written in the index file at `path`, intact or not (the only index that could ever be believed
/// is the one on disk, so a new stamp must differ from this one); `None` if there is none.
pub fn stamp_on_disk(path: &Path) -> Option<DirStamp> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).ok()?;
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let rest = head[..n].strip_prefix(HEADER)?;
    codec::parse_stamp(&rest[..memchr::memchr(b'\n', rest)?])
}

/// Read the index; `None` if absent or unreadable (both mean: rebuild).
pub fn load(path: &Path) -> Option<Vec<u8>> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Replace the index with `r` stamped `stamp`, in place, without fsync. Not temp file + rename: creating,
/// renaming and freeing an inode per command cost more than the rest of the index work (and ext4 starts
/// writeback on a rename over a file). A write torn by a crash is caught by the checksum and the index
/// rebuilt; an old but whole index left by a crash carries the stamp of the old directory, so it is believed
/// only if the directory is back to that state too (an entry change and its mtime/ctime are one journal
/// transaction).
pub fn save(path: &Path, stamp: &DirStamp, r: &Records) -> io::Result<()> {
    let (head, runs, trailer) = codec::pieces(stamp, r);
    let mut slices: Vec<IoSlice> =
        std::iter::once(&head[..]).chain(runs).chain(std::iter::once(&trailer[..])).map(IoSlice::new).collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut o = OpenOptions::new();
    o.write(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let mut f = o.open(path)?;
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match f.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    f.set_len(total as u64)
}

/// Remove the index (it can no longer be shown to be right). Best effort.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::records::tests::{contents, h, ip, records, sample};
    use super::stamp::tests::STAMP;
    use super::*;
    use std::fs::File;

    /// A loaded index is edited and saved again: lines added after the old trailer, removed ones skipped;
    /// `save` writes what `encode` says, also over a longer old file.
    #[test]
    fn edit_a_loaded_index_and_save_it() {
        let mut want = sample();
        let (_, mut r) = decode(encode(&STAMP, &records(&want))).unwrap();
        r.remove(&ip("10.0.0.3"));
        r.insert(ip("10.0.0.2"), &h("c9", Some("eth9")));
        r.insert(ip("10.0.0.77"), &h("c7", Some("eth0")));
        want.retain(|(n, _)| *n != ip("10.0.0.3") && *n != ip("10.0.0.2"));
        want.push((ip("10.0.0.2"), h("c9", Some("eth9"))));
        want.push((ip("10.0.0.77"), h("c7", Some("eth0"))));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let t = tempfile::TempDir::with_prefix("rcni-hl-save-").unwrap();
        let d = t.path().join("index");
        fs::write(&d, vec![b'x'; 10_000]).unwrap();
        save(&d, &STAMP, &r).unwrap();
        let on_disk = fs::read(&d).unwrap();
        assert_eq!(on_disk, encode(&STAMP, &r));
        let (stamp, back) = decode(on_disk).unwrap();
        assert_eq!((stamp, contents(&back)), (STAMP, want));
    }

    /// Audit finding 4: a command that marked the directory and was killed before writing its index leaves
    /// a directory no index on disk matches, so the next command reads the files.
    #[test]
    fn killed_between_mark_and_index_write_the_old_index_is_not_believed() {
        let d = tempfile::TempDir::with_prefix("rcni-hl-killed-").unwrap();
        let net = d.path().join("net");
        fs::create_dir_all(&net).unwrap();
        let dir = File::open(&net).unwrap();
        let path = path_for(&net).unwrap();
        // Command 1: a reservation, marked, index saved.
        fs::write(net.join("10.0.0.2"), "c1\r\neth0").unwrap();
        let s1 = mark(&dir, stamp_on_disk(&path).as_ref()).unwrap().unwrap();
        let mut r = Records::default();
        r.insert(ip("10.0.0.2"), &h("c1", Some("eth0")));
        save(&path, &s1, &r).unwrap();
        assert_eq!(stamp_on_disk(&path), Some(s1));
        // Command 2: a reservation, marked knowing the index on disk, killed before `save`.
        fs::write(net.join("10.0.0.3"), "c2\r\neth0").unwrap();
        let s2 = mark(&dir, stamp_on_disk(&path).as_ref()).unwrap().unwrap();
        assert_ne!(s2, s1);
        // Command 3: the index on disk is command 1's, and does not match.
        let (on_disk, _) = decode(load(&path).unwrap()).unwrap();
        assert_eq!(on_disk, s1);
        assert_ne!(DirStamp::of(&dir).unwrap(), on_disk);
    }

    #[test]
    fn no_index_for_dot_names() {
        assert_eq!(path_for(Path::new("/d/net1")), Some(PathBuf::from("/d/.rcni-index.net1")));
        assert_eq!(path_for(Path::new("/d/.rcni-index.net1")), None);
        assert_eq!(path_for(Path::new("/d/.hidden")), None);
    }
}
