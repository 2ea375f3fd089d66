//! The directory stamp that says whether the index may be believed (see the module comment of `index`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Identity and last-change marker of a directory (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
}

impl DirStamp {
    pub fn of(dir: &File) -> io::Result<DirStamp> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        if unsafe { libc::fstat(dir.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let st = unsafe { st.assume_init() };
        Ok(DirStamp {
            dev: st.st_dev,
            ino: st.st_ino,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// No entry change can produce this stamp: those leave `mtime == ctime`.
    pub fn is_distinctive(&self) -> bool {
        self.mtime != self.ctime
    }
}

/// The directory's stamp, made distinctive first if needed (mtime set back, which moves ctime to now), and
/// never equal to `on_disk`, the stamp of the index file this command is about to replace. `None` if that
/// failed (then no index may be saved).
///
/// Why `on_disk`: with coarse timestamps, two commands whose changes and marks fall in one clock tick τ would
/// both leave `(τ − 1 ns, τ)`. Should the second die after its mark and before its index is written, the
/// first one's index, which lacks the second's change, would match the directory and be believed.
pub fn mark(dir: &File, on_disk: Option<&DirStamp>) -> io::Result<Option<DirStamp>> {
    let st = DirStamp::of(dir)?;
    if st.is_distinctive() && Some(&st) != on_disk {
        return Ok(Some(st));
    }
    let (s, ns) = marked_mtime(&st, on_disk);
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as _ },
    ];
    if unsafe { libc::futimens(dir.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let st = DirStamp::of(dir)?;
    Ok((st.is_distinctive() && Some(&st) != on_disk).then_some(st))
}

/// The mtime `mark` sets on a directory stamped `now`: 1 ns before its mtime, or 2 ns if that is the mtime of
/// `on_disk` — so the stamp after the mark differs from `on_disk` by its mtime alone, whatever ctime becomes.
fn marked_mtime(now: &DirStamp, on_disk: Option<&DirStamp>) -> (i64, i64) {
    let back = |(s, ns): (i64, i64)| if ns > 0 { (s, ns - 1) } else { (s - 1, 999_999_999) };
    let m = back(now.mtime);
    if on_disk.is_some_and(|d| d.mtime == m) { back(m) } else { m }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::fs;

    pub(crate) const STAMP: DirStamp =
        DirStamp { dev: 2049, ino: 77, mtime: (1_700_000_000, 5), ctime: (1_700_000_000, 6) };

    /// The marker's two properties: the stamp it leaves is one no entry change can produce, and the next entry
    /// change (whatever the clock) leaves a different one.
    #[test]
    fn marked_stamp_is_distinctive_until_the_next_change() {
        let t = tempfile::TempDir::with_prefix("rcni-hl-mark-").unwrap();
        let d = t.path();
        let dir = File::open(d).unwrap();
        let change = |n: &str| fs::write(d.join(n), "x").unwrap();
        change("a");
        let natural = DirStamp::of(&dir).unwrap();
        assert!(!natural.is_distinctive(), "an entry change sets mtime and ctime alike: {natural:?}");
        let marked = mark(&dir, None).unwrap().unwrap();
        assert!(marked.is_distinctive());
        let one_ns_back = match natural.mtime {
            (s, 0) => (s - 1, 999_999_999),
            (s, ns) => (s, ns - 1),
        };
        assert_eq!(marked.mtime, one_ns_back);
        assert_eq!(mark(&dir, None).unwrap(), Some(marked), "already distinctive: left alone");
        for (i, op) in ["create", "unlink", "rename"].iter().enumerate() {
            match *op {
                "create" => change("b"),
                "unlink" => fs::remove_file(d.join("b")).unwrap(),
                _ => fs::rename(d.join("a"), d.join("c")).unwrap(),
            }
            let now = DirStamp::of(&dir).unwrap();
            assert!(now != marked && !now.is_distinctive(), "{i}: {op}: {now:?}");
            assert!(mark(&dir, None).unwrap().unwrap().is_distinctive());
        }
    }

    /// Audit finding 4, on a clock with coarse ticks (kernels before multigrain timestamps): command 1's last
    /// change and mark, then command 2's change and mark, all in tick τ. The stamps the two marks leave must
    /// differ, or an index that command 2 never got to write would be replaced in belief by command 1's.
    #[test]
    fn two_marks_in_one_tick_around_an_entry_change_differ() {
        let tau = (1_700_000_000, 4_000_000);
        let changed = DirStamp { dev: 1, ino: 2, mtime: tau, ctime: tau };
        // Command 1: mtime set back; in the same tick ctime stays τ.
        let first = DirStamp { mtime: marked_mtime(&changed, None), ..changed };
        assert!(first.is_distinctive());
        // Command 2 changes the directory in tick τ (mtime = ctime = τ again) and marks, knowing `first`.
        let second = DirStamp { mtime: marked_mtime(&changed, Some(&first)), ..changed };
        assert!(second.is_distinctive());
        assert_ne!(second, first, "same tick, same stamp: the old index would be believed");
        // A third one knows only `second` (the index on disk): it may reuse `first`'s stamp, never `second`'s.
        assert_ne!(DirStamp { mtime: marked_mtime(&changed, Some(&second)), ..changed }, second);
        // Across a second boundary.
        let at_zero = DirStamp { mtime: (5, 0), ctime: (5, 0), ..changed };
        assert_eq!(marked_mtime(&at_zero, None), (4, 999_999_999));
        let first = DirStamp { mtime: (4, 999_999_999), ..at_zero };
        assert_eq!(marked_mtime(&at_zero, Some(&first)), (4, 999_999_998));
    }
}
