//! The host-local IPAM plugin (logic in `rcni::ipam::host_local`). See ipam/host-local/README.md.

#![cfg_attr(not(test), no_main)]

use rcni::cni::skel;
use rcni::ipam::host_local::{BUILD_MARKER, HostLocal};

rcni::plugin_main!(run);

fn run() -> ! {
    // Keep the build marker in the binary: callers look for it to know this executable is theirs.
    std::hint::black_box(BUILD_MARKER.as_ptr());
    skel::run(concat!("CNI host-local plugin (rcni ", env!("CARGO_PKG_VERSION"), ")"), &HostLocal)
}
