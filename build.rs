//! RCNI_BUILD_ID: a hash of the source tree, embedded in the binaries. A plugin that finds rcni's own
//! `host-local` of the same build on CNI_PATH runs its logic in-process instead of exec'ing it.

use std::hash::Hasher;
use std::path::Path;

/// FNV-1a over (path, contents) of every .rs file below `dir`, in sorted order.
fn hash_dir(dir: &Path, h: &mut Fnv) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else if p.extension().is_some_and(|e| e == "rs") {
            h.write(p.to_string_lossy().as_bytes());
            h.write(&std::fs::read(&p).unwrap_or_default());
        }
    }
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn main() {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for dir in ["src", "ipam", "plugins", "tools"] {
        println!("cargo:rerun-if-changed={dir}");
        hash_dir(Path::new(dir), &mut h);
    }
    h.write(std::env::var("PROFILE").unwrap_or_default().as_bytes());
    println!("cargo:rustc-env=RCNI_BUILD_ID={}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish());
}
